"""The worker hands freed memory back to the system (worker/memory.py)."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from lg_deploy.worker.memory import malloc_trim

pytestmark = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's; elsewhere it is a no-op"
)


def _resident_kb() -> int:
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0])


def test_trimming_returns_a_fragmented_heap_to_the_system() -> None:
    """Memory freed between blocks still in use (a heap fragmented by many executions'
    buffers) stays resident until malloc_trim hands it back."""
    trim = malloc_trim()
    assert trim is not None
    blocks = [bytearray(1000) for _ in range(100_000)]  # about 100 MB, each from malloc
    kept = blocks[::100]  # one block in a hundred stays, so the heap cannot shrink by itself
    del blocks
    before = _resident_kb()
    trim()
    after = _resident_kb()
    assert len(kept) == 1000
    assert before - after > 50_000, (before, after)
