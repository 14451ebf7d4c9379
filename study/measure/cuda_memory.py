"""CUDA peak memory predicted on a machine without a GPU: fake CUDA tensors, the allocator's rules.

`predict_cuda_memory` runs one no-grad forward on fake tensors whose device is "cuda"
(FakeTensorMode needs no GPU for that) and feeds every storage the forward creates and frees to
`CachingAllocator`, a small model of PyTorch's CUDA caching allocator
(c10/cuda/CUDACachingAllocator.cpp: constants kMinBlockSize, kSmallSize, kSmallBuffer,
kMinLargeAlloc, kLargeBuffer, kRoundLarge; functions round_size, get_allocation_size,
should_split, free_block):

- every request is rounded up to a multiple of 512 bytes (at least 512): `round_size`;
- requests up to 1 MiB come from the small pool, whose segments are 2 MiB; larger ones from the
  large pool, whose segments are 20 MiB for requests under 10 MiB, else the request rounded up
  to 2 MiB: `get_allocation_size`;
- a cached free block is reused best-fit (smallest that fits, same pool); it is split when the
  rest is at least 512 bytes (small pool) or more than 1 MiB (large pool), otherwise the whole
  block is handed out and counted as allocated: `should_split`;
- freed blocks merge with free neighbours of the same segment; segments are never returned
  (no empty_cache), so "reserved" only grows.

"allocated" is what `torch.cuda.max_memory_allocated()` reports (block sizes, rounding included),
"reserved" what `torch.cuda.max_memory_reserved()` reports (segments). Not modelled: the CUDA
context and cuBLAS/cuDNN workspaces (outside or beside the allocator's statistics), streams,
expandable segments and the PYTORCH_CUDA_ALLOC_CONF options.

Two things differ from a CPU prediction because the device differs:
- autocast: `torch.autocast("cuda")` disables itself without a GPU, so the CUDA autocast state is
  switched on directly; the fake tensors carry the CUDA autocast key, so its casts run;
- fused attention: SDPA asks the device which kernel it can run and, with no GPU, falls back to
  the math path (the full attention matrix). `_CudaSdpa` sends the call to the kernel a
  sm_80/sm_90 GPU picks (aten/src/ATen/native/transformers/cuda/sdp_utils.cpp, priority flash,
  then memory-efficient, then math): flash for float16/bfloat16 with head_dim <= 256 and no mask;
  else memory-efficient (any float dtype, head_dim <= 512 here). Their outputs (output and
  logsumexp, float32 (batch, heads, L) for flash: aten/src/ATen/native/transformers/cuda/
  flash_attn/flash_api.cpp, mha_fwd) are counted as any op's outputs. Memory-efficient attention
  also allocates a float32 output accumulator when the output is not float32 or the head does not
  fit one value iteration (head_dim > 128): attention.cu `_efficient_attention_forward`,
  `Kernel::kNeedsOutputAccumulatorBuffer`. Flash's split-KV accumulators (small grids only) are not
  modelled.

Our own ops' workspaces (`kernels.workspace`, e.g. the Triton scan's) are added while their op runs,
as on the CPU, each as one allocator request.
"""

import bisect
import contextlib
import math
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.func import functional_call
from torch.overrides import TorchFunctionMode

from kernels.workspace import workspace_bytes
from study.measure.memory import MIB, StorageTracker

MIN_BLOCK_BYTES = 512  # kMinBlockSize: every request is rounded up to a multiple of this
SMALL_REQUEST_BYTES = 1 << 20  # kSmallSize: the largest small-pool request
SMALL_SEGMENT_BYTES = 2 << 20  # kSmallBuffer: small-pool segments
MIN_LARGE_ALLOC_BYTES = 10 << 20  # kMinLargeAlloc: below this, large requests get a 20 MiB segment
LARGE_SEGMENT_BYTES = 20 << 20  # kLargeBuffer
ROUND_LARGE_BYTES = 2 << 20  # kRoundLarge: larger segments are rounded to 2 MiB


def round_size(nbytes: int) -> int:
    """The block size the allocator hands out for a request of `nbytes`."""
    if nbytes < MIN_BLOCK_BYTES:
        return MIN_BLOCK_BYTES
    return MIN_BLOCK_BYTES * math.ceil(nbytes / MIN_BLOCK_BYTES)


def segment_size(block_bytes: int) -> int:
    """The cudaMalloc size of a new segment for a (rounded) block of `block_bytes`."""
    if block_bytes <= SMALL_REQUEST_BYTES:
        return SMALL_SEGMENT_BYTES
    if block_bytes < MIN_LARGE_ALLOC_BYTES:
        return LARGE_SEGMENT_BYTES
    return ROUND_LARGE_BYTES * math.ceil(block_bytes / ROUND_LARGE_BYTES)


@dataclass(eq=False)
class _Block:
    size: int
    small: bool
    free: bool = True
    prev: "_Block | None" = None
    next: "_Block | None" = None


@dataclass
class CachingAllocator:
    """Allocated and reserved bytes of the CUDA caching allocator, peak of each (one stream)."""

    allocated_bytes: int = 0
    reserved_bytes: int = 0
    peak_allocated_bytes: int = 0
    peak_reserved_bytes: int = 0
    _free: dict[bool, list[tuple[int, int, _Block]]] = field(
        default_factory=lambda: {True: [], False: []}
    )  # pool (small?) -> sorted (size, id, block) of free blocks

    def _insert(self, block: _Block) -> None:
        bisect.insort(self._free[block.small], (block.size, id(block), block))

    def _remove(self, block: _Block) -> None:
        pool = self._free[block.small]
        pool.pop(bisect.bisect_left(pool, (block.size, id(block), block)))

    def malloc(self, nbytes: int) -> _Block:
        """Serve a request of `nbytes` as the allocator would; returns the block handed out."""
        size = round_size(nbytes)
        small = size <= SMALL_REQUEST_BYTES
        pool = self._free[small]
        i = bisect.bisect_left(pool, (size, -1))
        if i < len(pool):
            block = pool.pop(i)[2]
        else:  # no cached block fits: a new segment
            block = _Block(segment_size(size), small)
            self.reserved_bytes += block.size
            self.peak_reserved_bytes = max(self.peak_reserved_bytes, self.reserved_bytes)
        rest = block.size - size
        if rest >= MIN_BLOCK_BYTES if small else rest > SMALL_REQUEST_BYTES:  # should_split
            tail = _Block(rest, small, prev=block, next=block.next)
            if block.next is not None:
                block.next.prev = tail
            block.next, block.size = tail, size
            self._insert(tail)
        block.free = False
        self.allocated_bytes += block.size
        self.peak_allocated_bytes = max(self.peak_allocated_bytes, self.allocated_bytes)
        return block

    def free(self, block: _Block) -> None:
        """Return `block` to its pool, merged with free neighbours of its segment."""
        self.allocated_bytes -= block.size
        block.free = True
        for other in (block.prev, block.next):
            if other is not None and other.free:
                self._remove(other)
                block.size += other.size
                if other is block.prev:
                    block.prev = other.prev
                    if other.prev is not None:
                        other.prev.next = block
                else:
                    block.next = other.next
                    if other.next is not None:
                        other.next.prev = block
        self._insert(block)


class AllocatorTracker(StorageTracker):
    """A StorageTracker whose storages (and op workspaces) go through a `CachingAllocator`."""

    def __init__(self) -> None:
        super().__init__()
        self.allocator = CachingAllocator()

    def _release(self, key: int, nbytes: int, block: _Block) -> None:
        self._forget(key, nbytes)
        self.allocator.free(block)

    @property
    def counted_bytes(self) -> int:
        return self.allocator.allocated_bytes

    @property
    def counted_peak_bytes(self) -> int:
        return self.allocator.peak_allocated_bytes

    def track(self, tensor: torch.Tensor) -> None:
        try:
            storage = tensor.untyped_storage()
        except (NotImplementedError, RuntimeError):
            return
        key = storage._cdata
        if key in self._live:
            return
        nbytes = storage.nbytes()
        self._live.add(key)
        self.live_bytes += nbytes
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        block = self.allocator.malloc(nbytes)
        weakref.finalize(storage, self._release, key, nbytes, block)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.track(t)
        inside = workspace_bytes(func, args, kwargs) + _efficient_attention_workspace(func, args)
        if inside:
            self.peak_bytes = max(self.peak_bytes, self.live_bytes + inside)
            self.allocator.free(self.allocator.malloc(inside))
        return out


def _efficient_attention_workspace(func, args: tuple) -> int:
    """The float32 output accumulator of memory-efficient attention (see the module's doc)."""
    if func is not torch.ops.aten._scaled_dot_product_efficient_attention.default:
        return 0
    q = args[0]
    if q.dtype == torch.float32 and q.shape[-1] <= 128:
        return 0
    return q.numel() // q.shape[-1] * args[2].shape[-1] * 4  # (batch, heads, L, head_dim_v)


class _CudaSdpa(TorchFunctionMode):
    """F.scaled_dot_product_attention -> the fused CUDA kernel a sm_80/sm_90 GPU would choose."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        return _fused_sdpa(*args, **kwargs)


def _fused_sdpa(
    q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False
):
    if torch.is_autocast_enabled("cuda"):  # SDPA is on autocast's lower-precision list
        dtype = torch.get_autocast_dtype("cuda")
        q, k, v = (t.to(dtype) for t in (q, k, v))
    head_dim = q.shape[-1]
    if q.dtype in (torch.float16, torch.bfloat16) and attn_mask is None and head_dim <= 256:
        out = torch.ops.aten._scaled_dot_product_flash_attention(
            q, k, v, dropout_p, is_causal, False, scale=scale
        )[0]
    elif head_dim <= 512:
        out = torch.ops.aten._scaled_dot_product_efficient_attention(
            q, k, v, attn_mask, False, dropout_p, is_causal, scale=scale
        )[0]
    else:
        raise ValueError(f"head_dim {head_dim} has no fused CUDA attention kernel; allowed: <= 512")
    return out


@contextlib.contextmanager
def cuda_autocast(enabled: bool, dtype: torch.dtype = torch.bfloat16) -> Iterator[None]:
    """CUDA autocast switched on directly: torch.autocast("cuda") turns itself off without a GPU."""
    if not enabled:
        yield
        return
    was_enabled, was_dtype = torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda")
    torch.set_autocast_enabled("cuda", True)
    torch.set_autocast_dtype("cuda", dtype)
    torch.autocast_increment_nesting()
    try:
        yield
    finally:
        if torch.autocast_decrement_nesting() == 0:
            torch.clear_autocast_cache()
        torch.set_autocast_enabled("cuda", was_enabled)
        torch.set_autocast_dtype("cuda", was_dtype)


def fake_cuda_state(model: torch.nn.Module, mode: FakeTensorMode) -> dict[str, torch.Tensor]:
    """The model's parameters and buffers as fake CUDA tensors (same shapes, strides, dtypes)."""
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    with mode:
        return {
            name: torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="cuda")
            for name, t in state.items()
        }


def predict_cuda_memory(
    model: torch.nn.Module,
    shape: tuple[int, ...],
    precision: str = "float32",
    channels_last: bool = False,
    also: contextlib.AbstractContextManager | None = None,
) -> dict[str, float]:
    """Peak CUDA memory of one no-grad forward of a `shape` input, predicted on fake CUDA tensors.

    The model may live anywhere (CPU, meta); nothing is computed. Returns params_mib, input_mib,
    activations_mib and peak_mib as the allocator counts them (block sizes: what
    `torch.cuda.max_memory_allocated()` reports), reserved_peak_mib (its segments: what
    `max_memory_reserved()` reports) and unrounded_peak_mib (the same forward in exact storage
    bytes, as the CPU prediction counts). `also`: another mode for the same forward (a
    FlopCounterMode)."""
    if precision not in ("float32", "bfloat16"):
        raise ValueError(f"unknown precision {precision!r}; allowed: float32, bfloat16")
    tracker = AllocatorTracker()
    with FakeTensorMode(allow_non_fake_inputs=True) as fake:
        state = fake_cuda_state(model, fake)
        for t in state.values():
            tracker.track(t)
        params_bytes = tracker.allocator.allocated_bytes
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        x = torch.randn(shape, device="cuda").contiguous(memory_format=fmt)
        tracker.track(x)
        input_bytes = tracker.allocator.allocated_bytes - params_bytes
        with also or contextlib.nullcontext(), tracker, torch.no_grad(), _CudaSdpa():
            with cuda_autocast(precision == "bfloat16"):
                out = functional_call(model, state, (x,))
            del x, out
    peak = tracker.allocator.peak_allocated_bytes
    return {
        "params_mib": params_bytes / MIB,
        "input_mib": input_bytes / MIB,
        "activations_mib": (peak - params_bytes - input_bytes) / MIB,
        "peak_mib": peak / MIB,
        "reserved_peak_mib": tracker.allocator.peak_reserved_bytes / MIB,
        "unrounded_peak_mib": tracker.peak_bytes / MIB,
    }


def predict_cuda_train_memory(
    model: torch.nn.Module,
    shape: tuple[int, ...],
    precision: str = "float32",
    channels_last: bool = False,
    also: contextlib.AbstractContextManager | None = None,
) -> dict[str, float]:
    """Peak CUDA memory of one training step (study.measure.train_step: forward, cross-entropy,
    backward, AdamW step, at the second step), predicted on fake tensors.

    Through the same allocator model and fused attention as `predict_cuda_memory`, with AdamW's
    multi-tensor (foreach) implementation, which torch picks for real CUDA tensors
    (torch/optim/optimizer.py `_default_to_fused_or_foreach`; not for fake ones): its temporaries
    (e.g. the square roots of every exp_avg_sq at once) are live together.

    The autograd engine needs a CUDA context for a backward on CUDA tensors, fake ones included
    (pytorch/pytorch#92627), so without a GPU the step runs on fake CPU tensors with the Triton
    scan's ops and workspaces (what a GPU runs): same shapes, same allocator requests. Checked for
    the forward against `predict_cuda_memory` (tests/test_cuda_memory.py): equal in float32 for
    every family. Not in bfloat16: CPU autocast casts other ops than CUDA autocast
    (aten/src/ATen/autocast_mode.cpp; -19% to +47% on the forward), so without a GPU only
    float32 is predicted. Returns `train_memory`'s keys as the allocator counts them (blocks),
    plus reserved_peak_mib and unrounded_peak_mib. `also`: a mode around forward and backward."""
    from kernels import use_backend
    from study.measure.flops import fake_state
    from study.measure.train_step import _tracked_step

    if precision not in ("float32", "bfloat16"):
        raise ValueError(f"unknown precision {precision!r}; allowed: float32, bfloat16")
    on_gpu = torch.cuda.is_available()
    if precision == "bfloat16" and not on_gpu:
        raise ValueError(
            "a bfloat16 training step's CUDA memory is predicted on a machine with a GPU only "
            "(CPU autocast casts other ops); allowed here: float32"
        )
    if on_gpu:
        torch.empty(1, device="cuda")  # the CUDA context the backward needs (#92627)
    tracker = AllocatorTracker()
    with FakeTensorMode(allow_non_fake_inputs=True) as fake, _CudaSdpa(), use_backend("triton"):
        if on_gpu:
            state, device = fake_cuda_state(model, fake), "cuda"
        else:
            state, device = fake_state(model, fake, torch.device("cpu")), "cpu"
        mem = _tracked_step(model, state, shape, device, precision, channels_last, also, tracker,
                            autocast=lambda: cuda_autocast(precision == "bfloat16"),
                            foreach=True)  # fmt: skip
    return {
        **mem,
        "reserved_peak_mib": tracker.allocator.peak_reserved_bytes / MIB,
        "unrounded_peak_mib": tracker.peak_bytes / MIB,
    }
