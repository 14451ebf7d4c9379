"""Where a forward's time goes: torch.profiler self time grouped by kind of op, and GMAC/s.

    python -m study.measure.breakdown [--models vim_tiny vmamba_tiny ...] [--img-sizes 224 1024]

For each model and size: one profiled forward (batch 1, after a warm-up), every op's self time
grouped into CATEGORIES, as shares of the forward (`time_share_<category>`); the forward's time
without the profiler (median of --repeats); GMACs (study.measure.count_flops) over that time; and
a dense float32 GEMM's rate measured in the same run, so that "slow by design" (few MACs per
second because the work is not GEMMs) and "slow by implementation" (copies, other) can be told
apart. Rows go to results/breakdown_<device>.csv (merged with rows already there, keyed by
device, model and size), which `study.report` reads.

Attribution: an op's self time counts for its own category, except inside a selective scan,
cross-scan, normalisation or attention op, whose whole time is theirs (RMSNorm runs as pow, mean
and rsqrt under `aten::rms_norm`; the scan's input preparation runs under its op).

The process runs with `--malloc keep_freed` (kernels/malloc.py) unless told otherwise, as the sweep
times the models; the setting is recorded in the rows' `malloc` column.
"""

import argparse
import statistics
import time
from pathlib import Path

import pandas as pd
import torch
from torch.profiler import ProfilerActivity, profile

from kernels.malloc import MALLOC_SETTINGS, set_malloc
from study.measure.device import device_name
from study.measure.flops import count_flops
from study.measure.speed import synchronize
from study.models import create, family_of

CATEGORIES = ("matmul", "convolution", "attention", "selective_scan", "cross_scan",
              "normalisation", "elementwise", "copies", "other")  # fmt: skip
COMPOSITE = ("selective_scan", "cross_scan", "normalisation", "attention")  # own their children
DEFAULT_MODELS = ["resnet50", "convnext_tiny", "deit_tiny_patch16_224", "deit_small_patch16_224",
                  "mambaout_tiny", "vim_tiny", "vim_small", "vmamba_tiny"]  # fmt: skip

_MATMUL = {"mm", "bmm", "addmm", "baddbmm", "matmul", "linear", "addmv", "mv", "dot", "einsum",
           "_addmm_activation", "_scaled_mm"}  # fmt: skip
_COPIES = {"copy_", "clone", "contiguous", "cat", "stack", "flip", "constant_pad_nd", "pad",
           "_to_copy", "index", "index_select", "roll", "repeat", "repeat_interleave",
           "narrow_copy", "_unsafe_index", "im2col", "col2im", "reflection_pad2d"}  # fmt: skip
_ELEMENTWISE = {"add", "add_", "mul", "mul_", "div", "div_", "sub", "sub_", "silu", "silu_",
                "gelu", "relu", "relu_", "sigmoid", "exp", "log", "softplus", "pow", "rsqrt",
                "sqrt", "mean", "sum", "neg", "tanh", "clamp", "clamp_", "where", "fill_",
                "zero_", "hardswish", "erf", "abs", "max", "amax", "addcmul", "lerp",
                "exp_", "expm1", "log1p", "square", "reciprocal"}  # fmt: skip


def category_of(op_name: str) -> str:
    """The category of one profiler op name, e.g. "aten::addmm" -> "matmul"."""
    if op_name.startswith("kernels::selective_scan"):
        return "selective_scan"
    if op_name.startswith(("kernels::cross_scan", "kernels::cross_merge")):
        return "cross_scan"
    namespace, _, op = op_name.partition("::")
    if namespace != "aten":
        return "other"
    if "attention" in op or op in ("softmax", "_softmax"):
        return "attention"
    if "conv" in op:
        return "convolution"
    if "norm" in op:
        return "normalisation"
    if op in _MATMUL:
        return "matmul"
    if op in _COPIES:
        return "copies"
    if op in _ELEMENTWISE:
        return "elementwise"
    return "other"


def _attributed(event) -> str:
    """The category an event's self time counts for (see the module doc)."""
    own, chain, parent = category_of(event.name), [], event.cpu_parent
    while parent is not None:
        chain.append(category_of(parent.name))
        parent = parent.cpu_parent
    outer = [c for c in chain if c in COMPOSITE]
    return outer[-1] if outer else own


def time_shares(events) -> dict[str, float]:
    """{category: share of the total self time} over the profiler's function events."""
    spent = dict.fromkeys(CATEGORIES, 0.0)
    for event in events:
        spent[_attributed(event)] += event.self_cpu_time_total
    total = sum(spent.values()) or 1.0
    return {c: spent[c] / total for c in CATEGORIES}


def gemm_gmacs_per_s(device: str, size: int = 2048, repeats: int = 5) -> float:
    """The rate of a dense float32 (size x size) @ (size x size) GEMM on `device`, GMAC/s."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    ms = _median_ms(lambda: a @ b, device, repeats)
    return size**3 / (ms * 1e-3) / 1e9


def _median_ms(fn, device: str, repeats: int) -> float:
    fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def breakdown(name: str, img_size: int, device: str = "cpu", repeats: int = 3) -> dict:
    """One row: forward time, GMAC/s, the GEMM rate and the time shares of one model at one size."""
    torch.manual_seed(0)
    model = create(name, img_size=img_size).to(device)
    x = torch.randn(1, 3, img_size, img_size, device=device)
    gmacs = count_flops(model, img_size)
    with torch.no_grad():
        forward_ms = _median_ms(lambda: model(x), device, repeats)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(x)
            synchronize(device)
    gemm = gemm_gmacs_per_s(device)
    achieved = gmacs / (forward_ms * 1e-3)
    row = {"device": torch.device(device).type, "device_name": device_name(device),
           "model": name, "family": family_of(name), "img_size": img_size, "batch": 1,
           "forward_ms": round(forward_ms, 2), "gmacs": round(gmacs, 3),
           "achieved_gmacs_per_s": round(achieved, 2), "gemm_gmacs_per_s": round(gemm, 2),
           "achieved_over_gemm": round(achieved / gemm, 3)}  # fmt: skip
    shares = time_shares(prof.events())
    row.update({f"time_share_{c}": round(v, 4) for c, v in shares.items()})
    return row


def merge_rows(path: Path, rows: list[dict]) -> pd.DataFrame:
    """Rows already in `path` with these replaced (key: device, model, img_size)."""
    new = pd.DataFrame(rows)
    if path.exists():
        old = pd.read_csv(path)
        key = ["device", "model", "img_size"]
        kept = old.merge(new[key], on=key, how="left", indicator=True)["_merge"] == "left_only"
        new = pd.concat([old[kept.to_numpy()], new], ignore_index=True)
    return new.sort_values(["device", "img_size", "family", "model"])


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--img-sizes", type=int, nargs="+", default=[224, 1024])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out-dir", default="results")
    parser.add_argument("--malloc", choices=MALLOC_SETTINGS, default="keep_freed")
    args = parser.parse_args(argv)
    malloc = set_malloc(args.malloc)
    rows = []
    for img_size in args.img_sizes:
        for name in args.models:
            row = {**breakdown(name, img_size, args.device, args.repeats), "malloc": malloc}
            top = max(CATEGORIES, key=lambda c: row[f"time_share_{c}"])
            print(f"{name}@{img_size}: {row['forward_ms']} ms, {row['achieved_gmacs_per_s']} "
                  f"GMAC/s ({row['achieved_over_gemm']:.0%} of GEMM), most in {top} "
                  f"({row[f'time_share_{top}']:.0%})", flush=True)  # fmt: skip
            rows.append(row)
    out = Path(args.out_dir) / f"breakdown_{torch.device(args.device).type}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    merge_rows(out, rows).to_csv(out, index=False)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
