"""``caractrl edit`` against a real server, with a scripted editor: a valid change is
saved with the resourceVersion it was opened at; an invalid one reopens the editor with the
error as a comment; an unchanged file cancels."""

from __future__ import annotations

import sys
from pathlib import Path

from test_cli_e2e import PROJECT_YAML, Server, caractrl, env, server

__all__ = ["env", "server"]  # fixtures used by name

# Round 1 empties the image (refused); round 2 must see the error, then sets a good image.
EDITOR = """
import pathlib, sys
path = pathlib.Path(sys.argv[1])
text = path.read_text()
rounds = pathlib.Path(sys.argv[0]).with_suffix(".rounds")
n = int(rounds.read_text()) if rounds.exists() else 0
rounds.write_text(str(n + 1))
if n == 0:
    path.write_text(text.replace("image: nginx:alpine", "image: ''"))
else:
    assert "# error: " in text, text
    path.write_text(text.replace("image: ''", "image: nginx:1.27"))
"""


def test_edit_reopens_on_error_then_saves(
    server: Server, env: dict[str, str], tmp_path: Path
) -> None:
    assert caractrl(env, "apply", "-f", "-", stdin=PROJECT_YAML).returncode == 0
    script = tmp_path / "editor.py"
    script.write_text(EDITOR)
    edit_env = {**env, "EDITOR": f"{sys.executable} {script}"}
    r = caractrl(edit_env, "edit", "project", "my-project")
    assert (r.returncode, r.stdout) == (0, 'project "my-project" edited\n'), r.stderr
    assert (tmp_path / "editor.rounds").read_text() == "2"
    live = server.get_raw("/api/v1/projects/my-project")
    assert live["spec"]["services"][0]["image"] == "nginx:1.27"
    assert live["metadata"]["generation"] == 2

    r = caractrl({**env, "EDITOR": "true"}, "edit", "project", "my-project")
    assert (r.returncode, r.stdout) == (0, "Edit cancelled, no changes made.\n")
    r = caractrl({**env, "EDITOR": "true"}, "edit", "project", "nope")
    assert (r.returncode, r.stderr) == (1, 'Error: project "nope" not found\n')
