"""Benchmark the selective-scan backends on the shapes the models use.

    python -m kernels.bench [--device cpu|cuda] [--img-sizes 224 512 1024 1248] [--batches 1 64]

Times every backend available on the device (reference, cpu or triton, and mamba_ssm's CUDA
`selective_scan_fn` where it imports), forward and forward+backward, on one scan layer of Vim-Ti,
Vim-S and each VMamba-T stage. Prints a table (median ms, speed-up over the reference, ratio to
the device's bound measured in the same run) and writes results/kernels_<device>.csv.

Bounds. GPU: the bytes that must move (each input read once, each output written once) over the
bandwidth of a measured device-to-device copy. CPU: one `torch.exp` pass over the batch·D·L·N
states (the scan needs one exp per state). `ms_over_bound` is median_ms / bound_ms.

Calls the models make. With --calls FILE (default results/scan_calls_<device>.json when it exists,
written by `python -m study.measure.scan_calls` from real forwards), every distinct call recorded
there is also timed as the model makes it (its strides, reverse flag, groups) and, interleaved,
with contiguous inputs in the forward direction: rows with layout "model" and "contiguous", and
`over_contiguous` (median over rounds of model / contiguous) on the "model" row.

Protocol. A backend's forward and forward+backward are timed interleaved, round by round, and
`over_fwd` (forward+backward rows) is the median over rounds of forward+backward / the forward
just before it. The upstream gradient is made once, outside the timing. On glibc the process
keeps freed memory for reuse (kernels/malloc.py's keep_freed, as the sweep times the models;
`--release-memory` turns that off), so that the timings are the kernels' and not the OS's page
faults.
"""

import argparse
import contextlib
import csv
import dataclasses
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

import kernels
from kernels.malloc import set_malloc
from kernels.record import ScanCall, contiguous_call, replay
from kernels.testing import make_scan_inputs


@dataclass(frozen=True)
class Layer:
    """One selective-scan call of a model at one input size."""

    name: str
    dim: int  # channels of the scan (VMamba: 4 directions x d_inner)
    d_state: int
    length: int
    groups: int | None  # B/C groups (VMamba: 4 directions)
    gated: bool  # SiLU(z) gate (Vim yes, VMamba-T no)


def model_layers(img_size: int) -> list[Layer]:
    """Vim-Ti/S (d_inner 384/768, N=16, one direction) and VMamba-T stages (4·d, N=1)."""
    tokens = (img_size // 16) ** 2 + 1
    layers = [
        Layer(f"vim_tiny@{img_size}", 384, 16, tokens, None, True),
        Layer(f"vim_small@{img_size}", 768, 16, tokens, None, True),
    ]
    for stage, width in enumerate((96, 192, 384, 768)):
        side = img_size // 4 // 2**stage
        name = f"vmamba_tiny.s{stage}@{img_size}"
        layers.append(Layer(name, 4 * width, 1, side * side, 4, False))
    return layers


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def median_ms(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1
              ) -> float:  # fmt: skip
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def paired_times_ms(fns: list[Callable[[], object]], device: torch.device, repeats: int,
                    warmup: int = 1) -> list[list[float]]:  # fmt: skip
    """Times (ms) of each function over `repeats` rounds, calls interleaved (f0, f1, f0, f1, ...).

    A shared machine speeds up and slows down during a run; interleaving exposes every function to
    the same conditions, and a ratio taken within each round (forward+backward over the forward
    just before it) is steadier than a ratio of two medians.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    sync(device)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, spent in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            sync(device)
            spent.append((time.perf_counter() - start) * 1e3)
    return times


def copy_gbps(device: torch.device) -> float:
    """Device-to-device copy bandwidth in GB/s (read + write), from a 1 GiB copy."""
    src = torch.empty(2**28, device=device)
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), device, repeats=10, warmup=3)
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


def bytes_moved(layer: Layer, batch: int, esize: int, backward: bool) -> int:
    """Each input read once and each output written once (forward; plus backward's if asked)."""
    seq = batch * layer.dim * layer.length * esize
    bc = batch * (layer.groups or 1) * layer.d_state * layer.length * esize
    params = layer.dim * (layer.d_state + 2) * esize  # A, D, delta_bias
    n_seq = 3 if layer.gated else 2  # u, delta, z
    fwd = n_seq * seq + 2 * bc + params + seq  # inputs + y
    if not backward:
        return fwd
    # backward reads the inputs and dy, writes du, ddelta, dz, dB, dC and the parameter grads
    return fwd + (n_seq + 1) * seq + 2 * bc + params + n_seq * seq + 2 * bc + params


def scan_call(backend: str, x: dict) -> Callable[[], torch.Tensor]:
    if backend == "mamba_ssm":
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

        return lambda: selective_scan_fn(**x, delta_softplus=True)
    return lambda: kernels.selective_scan(**x, delta_softplus=True, backend=backend)


def fwd_bwd_call(call: Callable[[], torch.Tensor], x: dict) -> Callable[[], object]:
    """Forward, then the gradients of every input. The upstream gradient (ones) is made on the
    first call and reused: producing a loss's gradient is not the scan's work."""
    leaves = [t for t in x.values() if t is not None]
    grad: list[torch.Tensor] = []

    def run():
        y = call()
        if not grad:
            grad.append(torch.ones_like(y))
        return torch.autograd.grad(y, leaves, grad[0])

    return run


def backends_for(device: torch.device) -> list[str]:
    names = ["reference"]
    if device.type == "cpu":
        names.append("cpu")
    else:
        names.append("triton")
        try:
            import mamba_ssm.ops.selective_scan_interface  # noqa: F401

            names.append("mamba_ssm")
        except ImportError:
            pass
    return names


def estimate_reference_ms(layer: Layer, batch: int, device: torch.device, backward: bool) -> float:
    """Extrapolate the sequential reference's time from 64 steps.

    The forward is linear in L; the backward through autograd grows faster (its graph holds every
    step's state), so its estimate is scaled by 4, which matched 6085 steps on the 2-core machine.
    """
    steps = 64
    x = make_scan_inputs(batch, layer.dim, layer.d_state, steps, layer.groups, device=device)
    if not layer.gated:
        x["z"] = None
    call = scan_call("reference", x)
    if backward:
        for t in x.values():
            if t is not None:
                t.requires_grad_()
        call = fwd_bwd_call(call, x)
    per_step = median_ms(call, device, repeats=2) / steps
    return per_step * layer.length * (4 if backward else 1)


def bench_layer(layer: Layer, batch: int, device: torch.device, repeats: int,
                max_reference_s: float, bound: dict) -> list[dict]:  # fmt: skip
    """Rows for the forward, then the forward+backward, of every backend on one layer.

    A backend's forward and forward+backward are timed interleaved (`paired_times_ms`), the
    forward on inputs that need no gradient, the forward+backward on copies that do.
    """
    kinds = ("fwd", "fwd+bwd")
    x = make_scan_inputs(batch, layer.dim, layer.d_state, layer.length, layer.groups,
                         device=device)  # fmt: skip
    if not layer.gated:
        x["z"] = None
    xg = {k: None if t is None else t.detach().clone().requires_grad_() for k, t in x.items()}
    if device.type == "cpu":
        states = torch.empty(batch, layer.dim, layer.length, layer.d_state)
        out = torch.empty_like(states)
        exp_ms = median_ms(lambda s=states, o=out: torch.exp(s, out=o), device, repeats)
        del states, out
        bound_ms = dict.fromkeys(kinds, exp_ms)
    else:
        gbps = bound["gbps"] * 1e9
        bound_ms = {k: bytes_moved(layer, batch, 4, k != "fwd") / gbps * 1e3 for k in kinds}
    rows: dict[str, list[dict]] = {k: [] for k in kinds}
    times: dict[str, dict[str, float]] = {k: {} for k in kinds}
    for backend in backends_for(device):
        base = dict(device=device.type, device_name=bound["name"], layer=layer.name, batch=batch,
                    dim=layer.dim, d_state=layer.d_state, length=layer.length,
                    groups=layer.groups or 1, backend=backend)  # fmt: skip
        calls = {"fwd": scan_call(backend, x), "fwd+bwd": fwd_bwd_call(scan_call(backend, xg), xg)}
        if backend == "reference":  # seconds per call: skip what would take too long
            for kind in kinds:
                est = estimate_reference_ms(layer, batch, device, kind != "fwd")
                if est > max_reference_s * 1e3:
                    rows[kind].append({**base, "pass": kind, "bound_ms": round(bound_ms[kind], 4),
                                       "status": f"skipped (~{est / 1e3:.0f} s)"})  # fmt: skip
                    del calls[kind]
        # The reference takes seconds: one timed call. The others get three warm-up rounds: the
        # first rounds of a big layer grow the process heap (page faults) and run up to 3x slower.
        slow = backend == "reference"
        timing = dict(device=device, repeats=1 if slow else repeats, warmup=0 if slow else 3)
        try:
            times_ms = paired_times_ms(list(calls.values()), **timing)
            measured = dict(zip(calls, times_ms, strict=True))
        except torch.OutOfMemoryError:  # then each pass alone: the forward may still fit
            measured = {}
            for kind, call in calls.items():
                torch.cuda.empty_cache()
                with contextlib.suppress(torch.OutOfMemoryError):
                    measured[kind] = paired_times_ms([call], **timing)[0]
        for kind in calls:
            row = {**base, "pass": kind, "bound_ms": round(bound_ms[kind], 4)}
            if kind not in measured:
                rows[kind].append({**row, "status": "out of memory"})
                continue
            ms = statistics.median(measured[kind])
            times[kind][backend] = ms
            row.update(median_ms=round(ms, 4), ms_over_bound=round(ms / bound_ms[kind], 3))
            if kind == "fwd+bwd" and len(measured) == 2:  # per round: over the forward before it
                pairs = [b / f for f, b in zip(measured["fwd"], measured[kind], strict=True)]
                row["over_fwd"] = round(statistics.median(pairs), 3)
            rows[kind].append({**row, "status": "ok"})
    for kind in kinds:
        for row in rows[kind]:
            if "median_ms" in row and "reference" in times[kind]:
                row["speedup_vs_reference"] = round(times[kind]["reference"] / row["median_ms"], 2)
    del x, xg
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows["fwd"] + rows["fwd+bwd"]


def bench_recorded(recorded: list[dict], device: torch.device, repeats: int, bound: dict
                   ) -> list[dict]:  # fmt: skip
    """Forward rows for each recorded model call: as the model makes it, and made contiguous.

    The fast backend of the device runs both (the reference is timed on the hand-written layers
    above); the two calls are timed interleaved, and `over_contiguous` is per round.
    """
    backend = "cpu" if device.type == "cpu" else "triton"
    rows = []
    for entry in recorded:
        call = dataclasses.replace(ScanCall.from_dict(entry), backend=backend)
        layouts = {"model": call, "contiguous": contiguous_call(call)}
        fns = [replay(c, device) for c in layouts.values()]
        with torch.no_grad():
            times_ms = paired_times_ms(fns, device, repeats, warmup=2)
        ratio = statistics.median(m / c for m, c in zip(*times_ms, strict=True))
        for (layout, c), spent in zip(layouts.items(), times_ms, strict=True):
            row = dict(device=device.type, device_name=bound["name"],
                       layer=f"{entry['model']}@{entry['img_size']}: {call.describe()}",
                       batch=c.batch, dim=c.dim, d_state=c.d_state, length=c.length,
                       groups=c.groups or 1, backend=backend, pass_="fwd", layout=layout,
                       calls_per_forward=entry["calls_per_forward"],
                       median_ms=round(statistics.median(spent), 4), status="ok")  # fmt: skip
            row["pass"] = row.pop("pass_")
            if layout == "model":
                row["over_contiguous"] = round(ratio, 3)
            rows.append(row)
    return rows


COLUMNS = ["device", "device_name", "layer", "batch", "dim", "d_state", "length", "groups",
           "backend", "pass", "layout", "calls_per_forward", "median_ms", "speedup_vs_reference",
           "bound_ms", "ms_over_bound", "over_fwd", "over_contiguous", "status"]  # fmt: skip


def print_table(rows: list[dict]) -> None:
    head = ["layer", "batch", "backend", "pass", "layout", "median_ms", "speedup_vs_reference",
            "bound_ms", "ms_over_bound", "over_fwd", "over_contiguous", "status"]  # fmt: skip
    widths = [max(len(h), *(len(str(r.get(h, ""))) for r in rows)) for h in head]
    print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    for r in rows:
        print("  ".join(str(r.get(h, "")).ljust(w) for h, w in zip(head, widths, strict=True)))


def print_targets(rows: list[dict], device: torch.device) -> None:
    """The issue's targets, as measured ratios (not pass/fail: this is a benchmark)."""

    def find(layer, batch, backend, kind):
        for r in rows:
            hit = (r["layer"], r["batch"], r["backend"], r["pass"]) == (layer, batch, backend, kind)
            if hit and "median_ms" in r:
                return r
        return None

    if device.type == "cpu":
        fwd = find("vim_small@1248", 1, "cpu", "fwd")
        both = find("vim_small@1248", 1, "cpu", "fwd+bwd")
        if fwd and both:
            ratio = both["median_ms"] / fwd["median_ms"]
            print(f"target CPU vim_small@1248 b1: fwd / exp pass = {fwd['ms_over_bound']:.2f} "
                  f"(<= 2); fwd+bwd / fwd = {both['over_fwd']:.2f} per round, {ratio:.2f} "
                  "from the medians (<= 3)")  # fmt: skip
    else:
        fwd = find("vim_tiny@1248", 64, "triton", "fwd")
        if fwd:
            print(f"target GPU vim_tiny@1248 b64: fwd at {1 / fwd['ms_over_bound']:.0%} of the "
                  "copy-bandwidth bound (>= 70%)")  # fmt: skip


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--img-sizes", type=int, nargs="+", default=[224, 512, 1024, 1248])
    parser.add_argument("--batches", type=int, nargs="+", default=None,
                        help="default: 1 on CPU, 1 and 64 on GPU")  # fmt: skip
    parser.add_argument("--layers", nargs="+", default=None,
                        help="name prefixes to keep, e.g. vim_small vmamba_tiny.s0")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", default=None,
                        help="model calls recorded by study.measure.scan_calls (default: "
                        "results/scan_calls_<device>.json if it exists; 'none': skip)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--max-reference-s", type=float, default=10.0)
    parser.add_argument("--out-dir", default="results")
    parser.add_argument("--label", default=None, help="file label (default: the device type)")
    parser.add_argument("--release-memory", action="store_true",
                        help="CPU: let glibc return freed memory to the OS (fresh tensors then "
                        "cost page faults inside the timed calls)")  # fmt: skip
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu" and not args.release_memory:
        print(f"malloc: {set_malloc('keep_freed')} (--release-memory to time with page faults)")
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = args.batches or ([1] if device.type == "cpu" else [1, 64])
    bound = {"name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    if device.type == "cuda":
        bound["gbps"] = copy_gbps(device)
        print(f"device-to-device copy: {bound['gbps']:.0f} GB/s")
    else:
        print(f"cpu threads: {torch.get_num_threads()}")
    rows = []
    for img_size in args.img_sizes:
        for layer in model_layers(img_size):
            if args.layers and not any(layer.name.startswith(p) for p in args.layers):
                continue
            for batch in batches:
                rows += bench_layer(layer, batch, device, args.repeats, args.max_reference_s, bound)
    calls_path = Path(args.calls or Path(args.out_dir) / f"scan_calls_{device.type}.json")
    if args.calls != "none" and calls_path.exists():
        recorded = json.loads(calls_path.read_text())
        print(f"model calls from {calls_path}: {len(recorded)}")
        rows += bench_recorded(recorded, device, args.repeats, bound)
    elif args.calls not in (None, "none"):
        parser.error(f"--calls {args.calls}: no such file (python -m study.measure.scan_calls)")
    print_table(rows)
    print_targets(rows, device)
    out = Path(args.out_dir) / f"kernels_{args.label or device.type}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out}")
    return rows


if __name__ == "__main__":
    main()
