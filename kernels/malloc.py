"""What the C allocator does with freed memory while a CPU timing runs.

PyTorch's CPU tensors come from the C library's malloc (c10's alloc_cpu: posix_memalign). glibc's
defaults give every block above a dynamic threshold (128 KiB, growing to at most 32 MiB) its own
mmap and unmap it at free, and trim the heap top past 128 KiB; a model whose activations are large
then touches fresh pages at every forward, which the kernel zeroes on first touch (about 680,000
minor page faults per ResNet-50 forward at 1024 px, tools/allocator_bench.py). How much time that
costs differs by family (convolutions with big feature maps lose most), so it would bias the
comparison. jemalloc and tcmalloc, the allocators PyTorch's CPU performance-tuning guide
recommends, keep freed memory for reuse; `set_malloc("keep_freed")` makes glibc do the same
through mallopt(3), without installing anything:

- M_MMAP_MAX 0: no block gets its own mapping; all come from the heap and go back to it,
- M_TRIM_THRESHOLD 2 GiB: freed memory at the heap top stays unless it passes 2 GiB,
- M_TOP_PAD 256 MiB: the heap grows in large steps.

`release()` (malloc_trim) hands the kept memory back, between sweep cells, so the next cell's
memory limit sees it. The OS memory figure (study/measure/rss.py) runs in its own process with its
own settings and is not affected. Settings, in a row's `malloc` column: "keep_freed" or "system"
(the C library's defaults; see set_malloc for "system (after keep_freed)"); where the C library is
not glibc, nothing can be set and the row says "system (not glibc)".
"""

import ctypes
import ctypes.util
from functools import lru_cache

MALLOC_SETTINGS: tuple[str, ...] = ("keep_freed", "system")
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -2, -3, -4  # <malloc.h>
KEEP_FREED = {_M_MMAP_MAX: 0, _M_TRIM_THRESHOLD: 2**31 - 1, _M_TOP_PAD: 256 * 2**20}  # int args
# mallopt(3)'s documented defaults; the mmap threshold's dynamic growth does not come back
_DEFAULTS = {
    _M_MMAP_MAX: 65536,
    _M_TRIM_THRESHOLD: 128 * 2**10,
    _M_TOP_PAD: 128 * 2**10,
    _M_MMAP_THRESHOLD: 128 * 2**10,
}
_changed = [False]  # whether keep_freed was ever set in this process


@lru_cache
def _glibc() -> ctypes.CDLL | None:
    """The process's C library if it is glibc (it has mallopt and malloc_trim), else None."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 (only glibc has it)
        libc.mallopt, libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def set_malloc(setting: str) -> str:
    """Apply `setting` (one of MALLOC_SETTINGS) to this process; return what is in force, for
    the row: "keep_freed", "system", "system (after keep_freed)" or "system (not glibc)".

    "system" leaves a process that never had keep_freed untouched. After keep_freed it puts
    mallopt(3)'s documented defaults back, but the memory the heap kept still serves later blocks
    (glibc maps a big block only when the heap cannot hold it), hence its own label: compare the
    two settings in separate processes.
    """
    if setting not in MALLOC_SETTINGS:
        raise ValueError(
            f"unknown malloc setting {setting!r}; allowed: {', '.join(MALLOC_SETTINGS)}"
        )
    libc = _glibc()
    if libc is None:
        return "system (not glibc)"
    if setting == "system" and not _changed[0]:
        return setting
    for param, value in (KEEP_FREED if setting == "keep_freed" else _DEFAULTS).items():
        if libc.mallopt(param, value) != 1:
            raise RuntimeError(f"mallopt({param}, {value}) failed")
    _changed[0] = True
    return setting if setting == "keep_freed" else "system (after keep_freed)"


def release() -> None:
    """Give freed memory the allocator keeps back to the operating system (malloc_trim(0))."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
