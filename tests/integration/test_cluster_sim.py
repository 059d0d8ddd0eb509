"""The small cluster simulation (issue 13; 20 nodes, 100 projects, 2 servers, so it stays
within a minute or two on a busy CI machine): real servers, hollow nodes running the real agent
code over an in-memory runtime, a project workload; asserts correctness only (figures are
the benchmark's business: hack/bench/cluster.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
def test_every_project_runs_and_goes_and_no_event_is_lost(
    database_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(REPO / "hack" / "bench" / "cluster.py"), "--dsn", database_url,
         "--nodes", "20", "--projects", "100", "--servers", "2", "--rate", "50",
         "--timeout", "240", "--out", str(out)],
        capture_output=True, text=True, timeout=580,
    )
    assert (out / "cluster.json").exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "cluster.json").read_text())
    assert report["created"] == 100 and report["all_running"], report
    assert report["deleted"] == 100 and report["all_deleted"], report
    assert report["events_lost"] == 0
    assert report["events_duplicated"] == 0
    assert report["watch_events"] > 0
    assert (out / "latency-cdf.svg").read_text().startswith("<svg")
    assert (out / "timeline.svg").read_text().startswith("<svg")
    assert proc.returncode == 0, proc.stdout[-3000:]
