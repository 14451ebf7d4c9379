"""Time model forwards of this tree against another commit, side by side in one process.

    python tools/compare_commit.py --commit 4df4341 --models vim_tiny vmamba_tiny --img-size 1024

The other commit's `kernels` and `study` packages are extracted with `git archive` into a
temporary folder and imported under other names (`old_kernels`, `old_study`; its custom ops
register as `old_kernels::...`), so both versions run in this process on the same weights and
input. Rounds alternate old and new forwards (a shared machine's load then hits both alike); the
speed-up is the median over rounds of old / new, for wall time and for the process's CPU time
(steadier when other jobs share the cores).

With --scan-calls it also records every `kernels::selective_scan` call of the new forward
(`kernels.record.ScanRecorder`) and times each recorded call again with contiguous inputs in
the forward direction: the issue's "time per call inside the model against a contiguous
forward-direction call of the same shape and options".

Both versions run under one malloc setting (kernels/malloc.py), `--malloc keep_freed` by default
as in the sweep; `--malloc system` times them with glibc's defaults (page faults included).
"""

import argparse
import importlib
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kernels.malloc import MALLOC_SETTINGS, set_malloc  # noqa: E402
from kernels.record import ScanRecorder, contiguous_call, replay  # noqa: E402


def import_commit(commit: str, dest: Path) -> tuple[object, object]:
    """`kernels` and `study` of `commit`, imported as `old_kernels` and `old_study`."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "kernels", "study"],
                             check=True, capture_output=True).stdout  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    for path in dest.rglob("*.py"):
        text = re.sub(r"\bkernels\b", "old_kernels", path.read_text())
        path.write_text(re.sub(r"\bstudy\b", "old_study", text))
    (dest / "kernels").rename(dest / "old_kernels")
    (dest / "study").rename(dest / "old_study")
    sys.path.insert(0, str(dest))
    return importlib.import_module("old_kernels"), importlib.import_module("old_study.models")


def build(models_pkg: object, name: str, img_size: int) -> torch.nn.Module:
    """The variant function of the family module itself (timm's registry holds only one)."""
    for family in ("vim", "vmamba"):
        module = importlib.import_module(f"{models_pkg.__name__}.{family}")
        if hasattr(module, name):
            return getattr(module, name)(img_size=img_size).eval()
    raise ValueError(f"unknown model {name!r}: only Vim and VMamba variants are compared")


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall ms, process CPU ms) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return (time.perf_counter() - wall) * 1e3, (time.process_time() - cpu) * 1e3


def compare_model(old_models: object, name: str, img_size: int, rounds: int) -> dict:
    torch.manual_seed(0)
    new = build(importlib.import_module("study.models"), name, img_size)
    old = build(old_models, name, img_size)
    old.load_state_dict(new.state_dict())
    x = torch.randn(1, 3, img_size, img_size)
    with torch.no_grad():
        y_new, y_old = new(x), old(x)
        err = ((y_new - y_old).abs().max() / y_old.abs().max()).item()
        times: dict[str, list[tuple[float, float]]] = {"old": [], "new": []}
        for _ in range(rounds):
            times["old"].append(timed(lambda: old(x)))
            times["new"].append(timed(lambda: new(x)))
    row = {"model": name, "img_size": img_size, "rel_err_vs_old": f"{err:.1e}"}
    for i, kind in enumerate(("wall", "cpu")):
        old_ms = [t[i] for t in times["old"]]
        new_ms = [t[i] for t in times["new"]]
        row[f"old_{kind}_ms"] = round(statistics.median(old_ms), 1)
        row[f"new_{kind}_ms"] = round(statistics.median(new_ms), 1)
        ratios = [o / n for o, n in zip(old_ms, new_ms, strict=True)]
        row[f"speedup_{kind}"] = round(statistics.median(ratios), 2)
    return row


def compare_scan_calls(name: str, img_size: int, rounds: int) -> list[dict]:
    """Per recorded call shape: ms inside the model against the same call made contiguous."""
    torch.manual_seed(0)
    model = build(importlib.import_module("study.models"), name, img_size)
    x = torch.randn(1, 3, img_size, img_size)
    with torch.no_grad():
        model(x)
        recorders = []
        for _ in range(rounds):
            with ScanRecorder(time_calls=True) as rec:
                model(x)
            recorders.append(rec)
    rows = []
    for key, calls in recorders[0].grouped().items():
        inside = [c.ms for rec in recorders for c in rec.grouped()[key]]
        spec = calls[0]
        as_called, contiguous = replay(spec), replay(contiguous_call(spec))
        pairs = []
        with torch.no_grad():
            for _ in range(3 * rounds):
                pairs.append((timed(as_called)[0], timed(contiguous)[0]))
        rows.append({
            "model": name, "call": spec.describe(), "calls_per_forward": len(calls),
            "inside_model_ms": round(statistics.median(inside), 2),
            "replayed_ms": round(statistics.median(p[0] for p in pairs), 2),
            "contiguous_fwd_ms": round(statistics.median(p[1] for p in pairs), 2),
            "inside_over_contiguous": round(
                statistics.median(inside) / statistics.median(p[1] for p in pairs), 2),
        })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commit", default="4df4341")
    parser.add_argument("--models", nargs="+", default=["vim_tiny", "vmamba_tiny"])
    parser.add_argument("--img-size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--scan-calls", action="store_true")
    parser.add_argument("--skip-old", action="store_true", help="only the scan-call comparison")
    parser.add_argument("--malloc", choices=MALLOC_SETTINGS, default="keep_freed")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"threads: {torch.get_num_threads()}, malloc: {set_malloc(args.malloc)}")
    if not args.skip_old:
        with tempfile.TemporaryDirectory() as tmp:
            _, old_models = import_commit(args.commit, Path(tmp))
            for name in args.models:
                print(compare_model(old_models, name, args.img_size, args.rounds), flush=True)
    if args.scan_calls:
        for name in args.models:
            for row in compare_scan_calls(name, args.img_size, args.rounds):
                print(row, flush=True)


if __name__ == "__main__":
    main()
