"""Give freed memory back to the operating system.

glibc's malloc keeps what a burst freed (a flood of 1 MB bodies, a watch cache that filled
and drained) in its heap and per-thread arenas, so the server's RSS after an abusive client
stays near its peak even though Python released the objects (issue 12's soak measured
+143 MB of the +194 MB kept after the flood to be this). Allocations of 128 KiB and more are
served by mmap and unmapped on free, the heap is trimmed past 128 KiB of free space, and
at most two arenas exist (the event loop plus psycopg's and the resolver's threads).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

from caravanserai.logging import get_logger

log = get_logger("caravanserai.server")

# mallopt parameters (<malloc.h>)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
_THRESHOLD = 128 * 1024


def return_freed_memory() -> bool:
    """Tune glibc malloc as above; False (and nothing changed) on another libc or OS."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = all(
        mallopt(param, value) == 1
        for param, value in (
            (_M_MMAP_THRESHOLD, _THRESHOLD),
            (_M_TRIM_THRESHOLD, _THRESHOLD),
            (_M_ARENA_MAX, 2),
        )
    )
    if not ok:
        log.warning("malloc.tuning_refused")
    return ok
