#!/usr/bin/env python3
"""Regenerate the JSON Schemas in schemas/ from the pydantic models.

    .venv/bin/python hack/gen-schemas.py           # rewrite schemas/project.json, schemas/node.json
    .venv/bin/python hack/gen-schemas.py --check   # exit 1 if they are stale (CI)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from caravanserai.api.jsonschema import generate

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when a file is stale")
    parser.add_argument(
        "--dir", type=Path, default=ROOT / "schemas", help="output folder (default: schemas/)"
    )
    args = parser.parse_args(argv)
    stale = []
    for name, text in generate().items():
        path = args.dir / name
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path}")
    if args.check and stale:
        for path in stale:
            print(f"stale: {path}", file=sys.stderr)
        print("run: .venv/bin/python hack/gen-schemas.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
