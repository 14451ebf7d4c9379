"""Throughput: timed inference (or training) steps, after a warm-up, between synchronisations.

timm's `benchmark.py` protocol (inference_mode, random input, warm-up, timed steps, synchronize),
with a time budget so that a 2-core CPU can afford big cells: timing stops after `max_steps` steps
or once `budget_s` seconds have been spent, whichever comes first, but never before `min_steps`.
"""

import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
import torch.nn as nn

from study.measure.memory import Precision, _autocast
from study.measure.train_step import make_optimizer, train_step


def synchronize(device: str) -> None:
    """Wait for queued device work, so a wall-clock step covers the step's compute."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _make_step(
    model: nn.Module, run: nn.Module, x: torch.Tensor, train: bool, precision: Precision
) -> Callable[[], None]:
    if not train:
        return lambda: run(x)
    target = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad])
    return lambda: train_step(run, x, target, optimizer, precision)


def throughput(
    model: nn.Module,
    img_size: int,
    batch: int,
    device: str = "cpu",
    precision: Precision = "float32",
    train: bool = False,
    channels_last: bool = False,
    compile: bool = False,
    warmup_steps: int = 2,
    min_steps: int = 3,
    max_steps: int = 40,
    budget_s: float = 10.0,
    in_chans: int = 3,
) -> dict[str, float | int]:
    """Time forward passes of a random batch (train=True: training steps, train_step.py: forward,
    cross-entropy, backward, AdamW step; the model's weights change, AdamW's state is made in
    the first warm-up step).

    `model` must already be on `device`. Returns {"img_per_s" (median step), "step_ms" (median),
    "step_ms_min", "steps" (timed), "threads" (torch.get_num_threads())}.
    """
    if batch < 1 or img_size < 1:
        raise ValueError(f"batch and img_size must be positive, got batch={batch}, {img_size=}")
    if not 1 <= min_steps <= max_steps:
        raise ValueError(f"need 1 <= min_steps <= max_steps, got {min_steps}, {max_steps}")
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        model = model.to(memory_format=fmt)
    model.train(train)
    run = torch.compile(model) if compile else model
    x = torch.randn(batch, in_chans, img_size, img_size, device=device).contiguous(
        memory_format=fmt
    )
    grad_mode = nullcontext() if train else torch.inference_mode()
    step = _make_step(model, run, x, train, precision)
    autocast = nullcontext() if train else _autocast(torch.device(device).type, precision)
    times_s: list[float] = []
    try:
        with grad_mode, autocast:  # a training step enters autocast for its forward only
            for _ in range(warmup_steps):
                step()
            synchronize(device)
            spent_s = 0.0
            while len(times_s) < max_steps and (len(times_s) < min_steps or spent_s < budget_s):
                start = time.perf_counter()
                step()
                synchronize(device)
                times_s.append(time.perf_counter() - start)
                spent_s += times_s[-1]
    finally:
        model.eval()
    median_s = statistics.median(times_s)
    return {
        "img_per_s": batch / median_s,
        "step_ms": 1e3 * median_s,
        "step_ms_min": 1e3 * min(times_s),
        "steps": len(times_s),
        "threads": torch.get_num_threads(),
    }
