"""One training step as a measurement: forward, cross-entropy, backward, AdamW step.

The step (`train_step`) is the same everywhere: predicted on fake tensors, tracked for real,
measured by the operating system in a fresh process (rss.py), timed (speed.py). Memory is taken at
the second step, when AdamW's state (exp_avg, exp_avg_sq, a step counter per parameter) exists,
as in every step of a real run after the first:

- `params_mib`: parameters and buffers; `optimizer_mib`: AdamW's state; `input_mib`: the batch;
- `activations_mib`: the high-water mark of everything the step allocates beyond those three:
  saved activations, the gradients (set to None after each step, so they are live from the
  backward to the optimizer step) and the optimizer's temporaries;
- `peak_mib`: all of it together.

The prediction runs the whole step, AdamW included, under FakeTensorMode with autograd: the
optimizer's state is fake tensors of the parameters' shapes, counted by the same tracker, not
added analytically. Forward + backward GMACs come from the same fake step (FlopCounterMode;
the optimizer's element-wise updates count 0 multiply-adds, fvcore's convention).
"""

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode

from study.measure.flops import EXTRA_FORMULAS, FLOPS_PER_MAC
from study.measure.memory import (
    MIB,
    Precision,
    StorageTracker,
    _autocast,
    memory_of,
    predicted,
)

LEARNING_RATE = 1e-4  # any value: the step's cost does not depend on it


def make_optimizer(
    params: list[torch.Tensor], foreach: bool | None = None
) -> torch.optim.Optimizer:
    """AdamW with torch's defaults (foreach/fused chosen by torch for the device). `foreach`: force
    the multi-tensor implementation on or off (torch turns it on for real CUDA tensors only)."""
    return torch.optim.AdamW(params, lr=LEARNING_RATE, foreach=foreach)


def train_step(
    forward: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    target: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    precision: Precision = "float32",
    also: AbstractContextManager | None = None,
    autocast: AbstractContextManager | None = None,
) -> None:
    """Forward (under autocast for bfloat16), cross-entropy in float32, backward, AdamW step,
    gradients set to None. `also`: a mode around forward and backward only (a FlopCounterMode);
    `autocast`: the autocast context to use instead of `torch.autocast(x.device.type)`."""
    with also or nullcontext():
        with autocast or _autocast(x.device.type, precision):
            out = forward(x)
            logits = out if out.dim() == 2 else out.flatten(1)
            loss = F.cross_entropy(logits.float(), target)
        loss.backward()
    del out, logits, loss
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]


def _trainable(model: nn.Module, state: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    return [state[name].requires_grad_() for name in names]


def _tracked_step(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    shape: tuple[int, ...],
    device: str,
    precision: Precision,
    channels_last: bool,
    also: AbstractContextManager | None = None,
    tracker: StorageTracker | None = None,
    autocast: Callable[[], AbstractContextManager] | None = None,
    foreach: bool | None = None,
) -> dict[str, float]:
    """A warm-up step (AdamW's state appears), then one step under `tracker` (a new
    StorageTracker by default). `autocast`: makes each step's autocast context (see train_step);
    `foreach`: AdamW's implementation (see make_optimizer)."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(shape, device=device).contiguous(memory_format=fmt)
    target = torch.zeros(shape[0], dtype=torch.long, device=device)
    optimizer = make_optimizer(_trainable(model, state), foreach)
    autocast = autocast or (lambda: None)

    def forward(inp: torch.Tensor) -> torch.Tensor:
        return functional_call(model, state, (inp,))

    was_training = model.training
    model.train()
    try:
        train_step(forward, x, target, optimizer, precision, autocast=autocast())
        tracker = tracker or StorageTracker()
        for t in state.values():
            tracker.track(t)
        params_bytes = tracker.counted_bytes
        for t in _optimizer_tensors(optimizer):
            tracker.track(t)
        optimizer_bytes = tracker.counted_bytes - params_bytes
        tracker.track(x)
        tracker.track(target)
        input_bytes = tracker.counted_bytes - params_bytes - optimizer_bytes
        with tracker:
            train_step(forward, x, target, optimizer, precision, also, autocast())
    finally:
        model.train(was_training)
    fixed = params_bytes + optimizer_bytes + input_bytes
    return {
        "params_mib": params_bytes / MIB,
        "optimizer_mib": optimizer_bytes / MIB,
        "input_mib": input_bytes / MIB,
        "activations_mib": (tracker.counted_peak_bytes - fixed) / MIB,
        "peak_mib": tracker.counted_peak_bytes / MIB,
    }


def _real_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of the parameters and buffers: the caller's model keeps its weights."""
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    return {name: t.detach().clone() for name, t in state.items()}


def _cuda_measured(
    model: nn.Module, shape: tuple[int, ...], device: str, precision: Precision, channels_last: bool
) -> dict[str, float]:
    """`max_memory_allocated` over the second step (the first creates AdamW's state)."""
    state = _real_state(model)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(shape, device=device).contiguous(memory_format=fmt)
    target = torch.zeros(shape[0], dtype=torch.long, device=device)
    optimizer = make_optimizer(_trainable(model, state))

    def forward(inp: torch.Tensor) -> torch.Tensor:
        return functional_call(model, state, (inp,))

    was_training = model.training
    model.train()
    try:
        train_step(forward, x, target, optimizer, precision)
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        train_step(forward, x, target, optimizer, precision)
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
    finally:
        model.train(was_training)
    params_bytes = sum(t.untyped_storage().nbytes() for t in state.values())
    optimizer_bytes = sum(t.untyped_storage().nbytes() for t in _optimizer_tensors(optimizer))
    input_bytes = x.nbytes + target.nbytes
    return {
        "params_mib": params_bytes / MIB,
        "optimizer_mib": optimizer_bytes / MIB,
        "input_mib": input_bytes / MIB,
        "activations_mib": (peak - base) / MIB,
        "peak_mib": (params_bytes + optimizer_bytes + input_bytes + peak - base) / MIB,
    }


def _check(batch: int, img_size: int) -> None:
    if batch < 1 or img_size < 1:
        raise ValueError(f"batch and img_size must be positive, got batch={batch}, {img_size=}")


def train_memory(
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
    """Peak memory of one training step: `peak_memory`'s keys plus "optimizer_mib".

    "predicted": the whole step on fake tensors (the model may live on "meta"); "measured": the
    tracker around a real step on copies of the weights (the model is not changed), and on the
    CPU the operating system's figure for one step in a fresh process ("rss_activations_mib",
    "rss_peak_mib", "rss_note"), unless `rss=False`; on CUDA `max_memory_allocated`.
    """
    return memory_of(_tracked_step, _cuda_measured, "predict_cuda_train_memory",
                     lambda: _real_state(model), model, img_size, batch, mode, device, precision,
                     channels_last, in_chans, rss, train=True)  # fmt: skip


def predict_train(
    model: nn.Module,
    img_size: int,
    batch: int = 1,
    device: str = "cpu",
    precision: Precision = "float32",
    channels_last: bool = False,
    in_chans: int = 3,
) -> dict[str, float]:
    """Forward + backward GMACs ("gmacs", whole batch) and the predicted `train_memory`, from one
    fake run of the step."""
    _check(batch, img_size)
    shape = (batch, in_chans, img_size, img_size)
    counter = FlopCounterMode(display=False, custom_mapping=EXTRA_FORMULAS)
    mem = predicted(_tracked_step, "predict_cuda_train_memory", model, shape, device, precision,
                    channels_last, counter)  # fmt: skip
    return {"gmacs": counter.get_total_flops() / FLOPS_PER_MAC / 1e9, **mem}
