"""A one-line progress display for long waits, shown only on a terminal.

When stderr is not a TTY (CI logs, pipes) nothing is written at all: scripts get exactly the
result lines and no carriage-return noise.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import TextIO

_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class Progress:
    def __init__(self, stream: TextIO | None = None, *, enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.text = ""
        self._start = time.monotonic()
        self._frame = 0
        self._task: asyncio.Task[None] | None = None
        self._shown = False

    def update(self, text: str) -> None:
        self.text = text
        self._render()

    def _render(self) -> None:
        if not self.enabled or not self.text:
            return
        elapsed = int(time.monotonic() - self._start)
        spin = _SPINNER[self._frame % len(_SPINNER)]
        self._frame += 1
        # \r + "erase to end of line": redraw in place without leftovers of a longer line.
        self.stream.write(f"\r\x1b[K{spin} {self.text} ({elapsed}s)")
        self.stream.flush()
        self._shown = True

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self._render()

    async def __aenter__(self) -> Progress:
        if self.enabled:
            self._task = asyncio.create_task(self._tick())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.clear()

    def clear(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False
