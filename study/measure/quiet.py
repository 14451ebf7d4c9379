"""The quiet-machine check around a timing: is anything else using the cores, are the steps even?

A timing taken while another process keeps the cores busy, or whose median step is far slower
than its fastest, is not the model's speed. `quiet_throughput` records the 1-minute load average,
the cores other processes kept busy during the timed steps (from /proc/stat, on the cores this
process may use) and the step spread, retries a noisy timing and says why it stays noisy.
"""

import logging
import os
import time
from pathlib import Path

import torch

from study.measure.speed import throughput

log = logging.getLogger("study.measure.quiet")


def _cpu_seconds() -> tuple[float, float, float] | None:
    """(wall s, s the cores this process may run on spent busy since boot, s this process spent
    on a core), or None where /proc/stat is missing."""
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    busy_ticks = 0
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            name, *values = line.split()
            if not name.startswith("cpu") or name == "cpu":
                continue
            if cores is not None and int(name[3:]) not in cores:
                continue
            fields = [int(v) for v in values]
            busy_ticks += sum(fields[:8]) - sum(fields[3:5])  # less idle, iowait (guest is in user)
    except (OSError, ValueError):
        return None
    own = os.times()
    return time.monotonic(), busy_ticks / os.sysconf("SC_CLK_TCK"), own.user + own.system


def other_cpu_load(since: tuple[float, float, float] | None) -> float | None:
    """Cores that other processes kept busy since `since` (`_cpu_seconds()`), None if unknown."""
    now = _cpu_seconds()
    if since is None or now is None or now[0] <= since[0]:
        return None
    other_s = (now[1] - since[1]) - (now[2] - since[2])
    return max(0.0, other_s / (now[0] - since[0]))


def noise_of(
    timing: dict, device: str, max_other_cores: float, max_step_spread: float
) -> list[str]:
    """Why a timing is not to be trusted (empty when the machine was quiet)."""
    reasons = []
    other = timing["other_cpu_load"]
    if torch.device(device).type == "cpu" and other is not None and other > max_other_cores:
        reasons.append(f"other processes kept {other:.1f} cores busy (limit {max_other_cores:g})")
    if timing["step_spread"] > max_step_spread:
        reasons.append(
            f"median step {timing['step_spread']:.0%} slower than the fastest "
            f"(limit {max_step_spread:.0%})"
        )
    return reasons


def quiet_throughput(
    device: str,
    max_other_cores: float = 0.5,
    max_step_spread: float = 0.25,
    retries: int = 1,
    **kwargs,
) -> dict:
    """`throughput(device=device, **kwargs)` with the quiet-machine check: a noisy timing is taken
    again up to `retries` times; the fastest is kept, flagged in "timing_note" if still noisy.
    Adds "load_avg_1m", "other_cpu_load", "step_spread" and "timing_note" to the result."""
    best = None
    tries = 1 + int(retries)
    for attempt in range(tries):
        if attempt and not kwargs.get("compile"):  # a compiled step is compiled per call
            kwargs["warmup_steps"] = 0  # the model is warm
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        since = _cpu_seconds()
        timing = dict(throughput(device=device, **kwargs))
        timing.update(
            load_avg_1m=load,
            other_cpu_load=other_cpu_load(since),
            step_spread=timing["step_ms"] / timing["step_ms_min"] - 1,
        )
        timing["noise"] = noise_of(timing, device, max_other_cores, max_step_spread)
        if not timing["noise"]:
            best = timing
            break
        if best is None or timing["step_ms"] < best["step_ms"]:
            best = timing
        log.info(f"noisy timing ({'; '.join(timing['noise'])}), try {attempt + 1} of {tries}")
    noise = best.pop("noise")
    best["timing_note"] = f"noisy in {tries} tries: {'; '.join(noise)}" if noise else ""
    return best
