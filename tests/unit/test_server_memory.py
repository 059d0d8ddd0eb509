"""The server's malloc tuning (server/memory.py) takes effect on this platform's glibc."""

from __future__ import annotations

import platform

from caravanserai.server.memory import return_freed_memory


def test_glibc_accepts_the_tuning() -> None:
    # CI and the supported servers run Linux with glibc: every mallopt call must succeed
    # there (a wrong parameter number answers 0 and this fails).
    assert platform.libc_ver()[0] == "glibc"
    assert return_freed_memory() is True
