"""Keep freed memory inside a CPU training process (glibc ``malloc`` settings).

A CPU training step allocates and frees the same large activations every step (the image ResNet's stem output
alone is 64 x 16 x 64 x 64 floats, 16.8 MB, at batch 64). With glibc's defaults the allocator hands memory of
that size back to the kernel when it is freed (``munmap`` of ``mmap``-ed chunks, ``sbrk`` trimming of the heap
top), so the next step page-faults it in again: 10,000-35,000 minor page faults a ``small`` step on the 2-core
development VM. PyTorch has no caching allocator on the CPU; the usual remedy is jemalloc/tcmalloc via
``LD_PRELOAD``, which needs a system package and a relaunch. :func:`keep_freed_memory_in_process` gets the same
effect from glibc itself at run time, through ``mallopt``:

- ``M_MMAP_THRESHOLD`` = 32 MiB (glibc's largest on 64-bit): chunks below it come from the heap, not ``mmap``;
- ``M_TRIM_THRESHOLD`` = 2 GiB: the heap top is not given back while it is below that.

The maths is untouched; the cost is that the process keeps up to its peak heap use until it exits, as it would
under jemalloc's defaults. Settings apply to allocations made afterwards. Elsewhere (macOS, Windows, musl) the
call does nothing and says why. ``benchmarks/pretrain_speed.py`` measures the effect against glibc's defaults in
separate processes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys
from typing import Any

logger = logging.getLogger("mmsa_hf.training")

#: the ``--keep_freed_memory`` help of the training commands
KEEP_FREED_MEMORY_HELP = ("CPU: glibc keeps freed activation memory in the process instead of page-faulting it in "
                          "again every step (mallopt; same maths, holds the peak heap until exit; see "
                          "mmsa_hf/training/malloc.py)")

#: ``mallopt`` parameter numbers (glibc ``malloc.h``)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: glibc's ceiling for ``M_MMAP_THRESHOLD`` on 64-bit (``DEFAULT_MMAP_THRESHOLD_MAX``)
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
#: the largest value ``mallopt`` takes (a C ``int``)
TRIM_THRESHOLD_BYTES = 2**31 - 1


def _glibc():
    """The process's glibc, or ``None`` where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
        libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
        return libc
    except (OSError, AttributeError):  # musl and other C libraries have no gnu_get_libc_version / mallopt
        return None


def keep_freed_memory_in_process() -> dict[str, Any]:
    """Make glibc keep freed memory of up to 32 MiB chunks in the process (see the module docstring).

    Returns ``{"applied": bool, "reason": str, "settings": {...}}`` for the run's logs.
    """
    libc = _glibc()
    if libc is None:
        return {"applied": False, "reason": f"the C library is not glibc ({sys.platform})", "settings": {}}
    settings = {"M_MMAP_THRESHOLD": MMAP_THRESHOLD_BYTES, "M_TRIM_THRESHOLD": TRIM_THRESHOLD_BYTES}
    accepted = [libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES), libc.mallopt(M_TRIM_THRESHOLD,
                                                                                    TRIM_THRESHOLD_BYTES)]
    if not all(accepted):
        return {"applied": False, "reason": "glibc refused the mallopt settings", "settings": settings}
    version = libc.gnu_get_libc_version().decode()
    return {"applied": True, "reason": f"glibc {version}", "settings": settings}


def keep_freed_memory_for_run(enabled: bool, device) -> dict[str, Any] | None:
    """:func:`keep_freed_memory_in_process` when ``enabled`` and training runs on the CPU (``device``), logged;
    ``None`` when not asked for."""
    if not enabled or device.type != "cpu":
        return None
    outcome = keep_freed_memory_in_process()
    logger.info("keep freed memory in the process: %s (%s)", outcome["applied"], outcome["reason"])
    return outcome
