"""Peak memory of one inference forward: measured for real, or predicted on fake tensors.

Without a GPU, memory is tracked at the dispatcher: `StorageTracker` sees every op's outputs, counts
each new tensor storage once, and forgets it when the storage is freed (a weakref finalizer), so
`peak_bytes` is the high-water mark of live storages. Under FakeTensorMode the same tracker sees the
same ops with shapes but no data, which predicts the peak for any batch and size in well under a
second. Parameter storages are registered first, so views of weights are not new memory.
On CUDA, "measured" is `torch.cuda.max_memory_allocated()` around one forward after a warm-up.
"""

import math
import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Literal

import torch
import torch.nn as nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.func import functional_call
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from kernels.ops.selective_scan import resolve_backend
from kernels.workspace import workspace_bytes
from study.measure.flops import EXTRA_FORMULAS, FLOPS_PER_MAC, fake_state
from study.measure.rss import os_peak_memory

MIB = 2**20
Precision = Literal["float32", "bfloat16"]


class StorageTracker(TorchDispatchMode):
    """Live storages at the dispatcher: `live_bytes` now, `peak_bytes` the high-water mark."""

    def __init__(self) -> None:
        super().__init__()
        self.live_bytes = 0
        self.peak_bytes = 0
        self._live: set[int] = set()  # storage ids (C++ pointers) counted and not yet freed

    def _forget(self, key: int, nbytes: int) -> None:
        self._live.discard(key)
        self.live_bytes -= nbytes

    @property
    def counted_bytes(self) -> int:
        """What the tracker counts as live now: exact storage bytes here (an allocator's blocks in
        cuda_memory.AllocatorTracker)."""
        return self.live_bytes

    @property
    def counted_peak_bytes(self) -> int:
        """The high-water mark of `counted_bytes`."""
        return self.peak_bytes

    def track(self, tensor: torch.Tensor) -> None:
        """Count `tensor`'s storage if it is new; it is uncounted when the storage is freed."""
        try:
            storage = tensor.untyped_storage()
        except (NotImplementedError, RuntimeError):  # sparse and other storage-less layouts
            return
        key = storage._cdata
        if key in self._live:
            return
        nbytes = storage.nbytes()
        self._live.add(key)
        self.live_bytes += nbytes
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        weakref.finalize(storage, self._forget, key, nbytes)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                self.track(t)
        # What the op allocated inside and freed before returning: live beside its outputs.
        inside = workspace_bytes(func, args, kwargs)
        self.peak_bytes = max(self.peak_bytes, self.live_bytes + inside)
        return out


def _autocast(device: str, precision: Precision):
    if precision not in ("float32", "bfloat16"):
        raise ValueError(f"unknown precision {precision!r}; allowed: float32, bfloat16")
    device_type = torch.device(device).type
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bfloat16")


def _state_bytes(state: dict[str, torch.Tensor]) -> int:
    storages = {t.untyped_storage()._cdata: t.untyped_storage().nbytes() for t in state.values()}
    return sum(storages.values())


def _tracked_forward(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    shape: tuple[int, ...],
    device: str,
    precision: Precision,
    channels_last: bool,
    also: AbstractContextManager | None = None,
) -> dict[str, float]:
    """One no-grad forward of a random input under a StorageTracker that already holds `state`.

    `also`: another mode for the same forward (a FlopCounterMode: one fake pass, two answers).
    """
    tracker = StorageTracker()
    for t in state.values():
        tracker.track(t)
    params_bytes = tracker.live_bytes
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(shape, device=device).contiguous(memory_format=fmt)
    tracker.track(x)
    input_bytes = tracker.live_bytes - params_bytes
    with also or nullcontext(), tracker, torch.no_grad(), _autocast(device, precision):
        out = functional_call(model, state, (x,))
        del x, out
    return _summary(params_bytes, input_bytes, tracker.peak_bytes)


def _summary(params_bytes: int, input_bytes: int, peak_bytes: int) -> dict[str, float]:
    return {
        "params_mib": params_bytes / MIB,
        "input_mib": input_bytes / MIB,
        "activations_mib": (peak_bytes - params_bytes - input_bytes) / MIB,
        "peak_mib": peak_bytes / MIB,
    }


def _cuda_measured(
    model: nn.Module,
    shape: tuple[int, ...],
    device: str,
    precision: Precision,
    channels_last: bool,
) -> dict[str, float]:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    params_bytes = _state_bytes(state)
    with torch.no_grad():
        with _autocast(device, precision):  # warm-up: kernels chosen, workspaces allocated
            model(torch.randn(shape, device=device).contiguous(memory_format=fmt))
        torch.cuda.synchronize(device)
        x = torch.randn(shape, device=device).contiguous(memory_format=fmt)
        base = torch.cuda.memory_allocated(device)  # params, buffers, input, workspaces
        torch.cuda.reset_peak_memory_stats(device)
        # A fresh autocast region: its bf16 weight copies count, as they do in the prediction.
        with _autocast(device, precision):
            out = model(x)
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        del x, out
    input_bytes = math.prod(shape) * 4
    return _summary(params_bytes, input_bytes, params_bytes + input_bytes + peak - base)


def peak_memory(
    model: nn.Module,
    img_size: int,
    batch: int = 1,
    mode: Literal["predicted", "measured"] = "predicted",
    device: str = "cpu",
    precision: Precision = "float32",
    channels_last: bool = False,
    in_chans: int = 3,
    rss: bool = True,
) -> dict[str, float | str]:
    """Peak memory of one inference forward of (batch, in_chans, img_size, img_size) images.

    `model` must already be on `device` (for "predicted" it may be on "meta"). Returns
    {"params_mib", "input_mib", "activations_mib", "peak_mib"}: parameters and buffers, the input
    batch, the high-water mark of everything the forward allocates, and the peak of all three
    together. "predicted" runs on fake tensors (no compute, no memory); "measured" runs for real.

    "measured" on the CPU also asks the operating system (`rss.os_peak_memory`, unless
    `rss=False`): "rss_activations_mib" is the resident-set growth of one forward in a fresh
    process, "rss_peak_mib" that process's whole peak, "rss_note" why they are NaN, if they are.
    """
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    return memory_of(_tracked_forward, _cuda_measured, "predict_cuda_memory", lambda: state,
                     model, img_size, batch, mode, device, precision, channels_last, in_chans,
                     rss)  # fmt: skip


def memory_of(
    tracked: Callable[..., dict[str, float]],
    cuda_measured: Callable[..., dict[str, float]],
    cuda_name: str,
    real_state: Callable[[], dict[str, torch.Tensor]],
    model: nn.Module,
    img_size: int,
    batch: int,
    mode: str,
    device: str,
    precision: Precision,
    channels_last: bool,
    in_chans: int,
    rss: bool,
    train: bool = False,
) -> dict[str, float | str]:
    """What `peak_memory` (a forward) and `train_memory` (a step) share: measured on CUDA by
    `cuda_measured`, on the CPU by `tracked` on `real_state()` and by the operating system (a
    fresh process runs the same forward or step), predicted by `predicted`."""
    if batch < 1 or img_size < 1:
        raise ValueError(f"batch and img_size must be positive, got batch={batch}, {img_size=}")
    if mode not in ("predicted", "measured"):
        raise ValueError(f"unknown mode {mode!r}; allowed: predicted, measured")
    shape = (batch, in_chans, img_size, img_size)
    if mode == "measured" and torch.device(device).type == "cuda":
        return cuda_measured(model, shape, device, precision, channels_last)
    if mode == "measured":
        mem = tracked(model, real_state(), shape, device, precision, channels_last)
        if rss:
            backend = resolve_backend("auto", torch.device(device))  # what runs here, for the child
            mem.update(os_peak_memory(model, img_size, batch, precision, channels_last, in_chans,
                                      scan_backend=backend, train=train))  # fmt: skip
        return mem
    return predicted(tracked, cuda_name, model, shape, device, precision, channels_last)


def predict(
    model: nn.Module,
    img_size: int,
    batch: int = 1,
    device: str = "cpu",
    precision: Precision = "float32",
    channels_last: bool = False,
    in_chans: int = 3,
) -> dict[str, float]:
    """`count_flops` and predicted `peak_memory` from one fake forward (half the time of both).

    Returns peak_memory's keys plus "gmacs" for the whole batch.
    """
    if batch < 1 or img_size < 1:
        raise ValueError(f"batch and img_size must be positive, got batch={batch}, {img_size=}")
    shape = (batch, in_chans, img_size, img_size)
    counter = FlopCounterMode(display=False, custom_mapping=EXTRA_FORMULAS)
    mem = predicted(_tracked_forward, "predict_cuda_memory", model, shape, device, precision,
                    channels_last, counter)  # fmt: skip
    return {"gmacs": counter.get_total_flops() / FLOPS_PER_MAC / 1e9, **mem}


def predicted(
    tracked: Callable[..., dict[str, float]],
    cuda_name: str,
    model: nn.Module,
    shape: tuple[int, ...],
    device: str,
    precision: Precision,
    channels_last: bool,
    also: AbstractContextManager | None = None,
) -> dict[str, float]:
    """One fake run: on a CUDA device `study.measure.cuda_memory.<cuda_name>` (the caching
    allocator's rules, no GPU needed), else `tracked(model, fake_state, shape, device, precision,
    channels_last, also)` on fake tensors of `device`. `also`: a mode for the same run."""
    if torch.device(device).type == "cuda":
        from study.measure import cuda_memory

        return getattr(cuda_memory, cuda_name)(model, shape, precision, channels_last, also)
    with FakeTensorMode(allow_non_fake_inputs=True) as fake:
        state = fake_state(model, fake, torch.device(device))
        return tracked(model, state, shape, device, precision, channels_last, also)
