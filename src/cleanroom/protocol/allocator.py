"""1 MiB records without page faults: glibc's malloc thresholds, set once per process.

Every record is a buffer of about 1 MiB, made and freed about a thousand times per GiB.
With glibc's defaults such a buffer comes from fresh pages (mmap, or a heap top that is
trimmed again after each free), so the kernel maps and zeroes 256 pages per record:
measured at 0.5 ms of system time per MiB on an uploading client, more than AES-GCM
and the copies together (docs/benchmarks.md, "The profile"). A fixed mmap threshold
of 4 MiB and a trim threshold of 64 MiB keep them on the heap. Elsewhere than glibc
this does nothing. It lives with the protocol because the Worker (whose code is
measured) calls it too.
"""

from __future__ import annotations

import ctypes

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 4 << 20
TRIM_THRESHOLD = 64 << 20

_tuned: bool | None = None


def tune_allocator() -> bool:
    """Set the thresholds (once per process); whether this C library took them."""
    global _tuned
    if _tuned is None:
        try:
            mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
        except (OSError, AttributeError):  # not glibc
            _tuned = False
        else:
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            _tuned = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
                mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
            )
    return _tuned
