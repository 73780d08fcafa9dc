"""training.common.bounded_heap: what a training worker sets first (run_trainer), so that freed
batches go back to the system instead of staying in glibc's heap (benchmarks/train_memory.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Free one block of 1 MiB, then allocate 200 (touched), free every other one: resident MiB.
_HOLES = """
import sys
from training.common import bounded_heap
if sys.argv[1] == "bounded":
    assert bounded_heap()
import numpy as np
def rss():
    status = open("/proc/self/status").read()
    return int(status.split("VmRSS:")[1].split()[0]) // 1024
np.ones(1 << 17)  # made and freed at once: glibc then raises its mmap threshold to 1 MiB
before = rss()
blocks = [np.ones(1 << 17) for _ in range(200)]  # 1 MiB each
del blocks[::2]
print(rss() - before)
"""


def _held_mib(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _HOLES, mode], capture_output=True, text=True, check=True
    )
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_freed_blocks_leave_the_process_once_the_heap_is_bounded():
    # glibc's default: the first freed 1 MiB block raises its mmap threshold, the later ones
    # come from the heap, and the freed ones between the kept ones stay resident.
    default, bounded = _held_mib("default"), _held_mib("bounded")
    assert default >= 150  # ~200 MiB: the freed half still held
    assert 90 <= bounded <= 120  # ~100 MiB: only the kept half
