#!/usr/bin/env python3
"""How long caractrl takes to start: ``--help``, ``version --client`` and ``get --help``.

Each command runs N times as a subprocess (the installed ``caractrl`` console script of this
venv, exactly what a user types), after one unmeasured warm-up run that fills the OS page
cache. It times the wall clock from just before the process is spawned until it has exited,
and prints min / median / p90 per command. Nothing talks to a server.

The goal (issue 16): ``--help`` and ``version --client`` within 0.15 s on the dev machine.
A loaded machine makes every figure larger; compare min and median, and run it twice.

    .venv/bin/python hack/bench/cli.py [-n 20] [--python-baseline]

``--python-baseline`` also times ``python -c pass`` (the interpreter's own start-up, the
floor no import trimming can go below).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time

from harness import BIN, ms, pct

COMMANDS = (
    ("caractrl --help", [str(BIN / "caractrl"), "--help"]),
    ("caractrl version --client", [str(BIN / "caractrl"), "version", "--client"]),
    ("caractrl get --help", [str(BIN / "caractrl"), "get", "--help"]),
)


def time_runs(argv: list[str], runs: int) -> list[float]:
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", "--runs", type=int, default=20, help="runs per command")
    parser.add_argument("--python-baseline", action="store_true",
                        help="also time the bare interpreter (python -c pass)")
    args = parser.parse_args()
    commands = list(COMMANDS)
    if args.python_baseline:
        commands.insert(0, ("python -c pass", [str(BIN / "python"), "-c", "pass"]))
    print(f"{'command':<28} {'runs':>4} {'min':>10} {'median':>10} {'p90':>10}")
    for name, argv in commands:
        t = time_runs(argv, args.runs)
        print(f"{name:<28} {len(t):>4} {ms(min(t)):>10} {ms(statistics.median(t)):>10} "
              f"{ms(pct(t, 90)):>10}")


if __name__ == "__main__":
    main()
