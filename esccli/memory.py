"""How much memory this machine has, and how a training process gets its memory: keep what it frees for the next
step rather than hand it back.

A training step allocates and frees the same tensors over and over, several of them megabytes large. glibc's
malloc serves blocks that large with fresh pages from the kernel (mmap) and returns them when they are freed, so
every step pays thousands of page faults, each page zeroed by the kernel: 1,900-6,600 per step of the fast preset
on two threads of an AVX-512 Xeon (benchmarks/step_cost.py --give-back-memory), where keeping the memory made its
epochs 0.91x as long, with the same weights (round 11, docs/ablation.md). Raising malloc's thresholds keeps those
blocks in the process's heap instead, to be reused by the next step.
"""

import ctypes
import os
import sys

# mallopt's parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1  # free memory at the top of the heap kept rather than returned to the kernel
M_MMAP_THRESHOLD = -3  # blocks at least this large get pages of their own from the kernel (mmap)
KEEP_BYTES = 1 << 30  # 1 GiB: above anything a training of esc allocates at once, so every block is reused


def keep_freed_memory(limit: int = KEEP_BYTES) -> bool:
    """Ask the C library's malloc to serve blocks of up to `limit` bytes from its heap and to keep up to `limit`
    bytes of freed memory for reuse. It applies to the whole process, which then does not give back the memory
    it has freed (its peak). Only glibc on Linux has these settings; elsewhere nothing changes. Returns whether
    both settings were taken."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the process already uses
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_TRIM_THRESHOLD, limit)) & bool(mallopt(M_MMAP_THRESHOLD, limit))


# where Linux says how much memory a container (cgroup v2, then v1) may use: less than the machine has, or a
# number larger than it, or "max"
CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def physical_memory() -> int | None:
    """The memory this process may use, in bytes: the machine's physical memory, or its container's limit where
    that is lower; None where the system does not say (os.sysconf is POSIX only)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
    if total <= 0:
        return None
    for limit_file in CGROUP_LIMITS:
        try:
            with open(limit_file) as f:
                limit = int(f.read().strip())
        except (OSError, ValueError):  # absent, or "max" (no limit)
            continue
        if 0 < limit < total:
            return limit
    return total
