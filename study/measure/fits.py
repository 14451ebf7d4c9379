"""The largest power-of-two batch whose predicted CUDA peak fits a GPU's memory.

    python -m study.measure.fits [--mode inference|train] [--out CSV] [--models ...]
                                 [--sizes ...] [--capacities-gib 24 40 80 141]
                                 [--precisions float32 bfloat16] [--verify MODEL ...]

--mode inference (default; results/fits_cuda_predicted.csv): one no-grad forward
(`cuda_memory.predict_cuda_memory`). --mode train (results/fits_cuda_predicted_train.csv): one
training step, AdamW's state included (`cuda_memory.predict_cuda_train_memory`); without a GPU
in float32 only (that function says why).

For each model, size and precision the CUDA peak (`peak_mib` of `cuda_memory.predict_cuda_memory`:
what `torch.cuda.max_memory_allocated()` would report, no GPU needed) is predicted at batch 16 and
32 (FIT_BATCHES). It is affine in the batch for these models from a few images on (weights once,
activations per image; the allocator's rounding aside), so the peak at batch b is extrapolated
along that line, and
the largest power of two under each capacity follows. Where the extrapolated peak at that batch,
or at the next power of two, lies within NEAR_PCT (5%) of the capacity, it is predicted there too
(fitted from batches 1 and 2 instead, the line was off by up to +21%: at batch 1 some models peak
at a different op, e.g. convnext_tiny holds 15.2 MiB of activations per image at batch 1 and
12.6 MiB from batch 2 on), and
the batch is halved or doubled until the prediction decides; for the models in `--verify` the
batch found is always predicted. The CSV gives the prediction at the batch found
(`verified_peak_gib`, NaN where the extrapolation was far enough from the edge) and the first
checked extrapolation's error (`linearity_error_pct`).

Capacities are the memory of 24, 40, 80 and 141 GiB GPUs (e.g. RTX 4090, A100-40GB, A100/H100-80GB,
H200), compared with the allocator's peak alone: the CUDA context (a few hundred MiB), cuBLAS/cuDNN
workspaces and the allocator's unused reserved blocks are not counted, so the real limit is a
little lower. Rows are labelled `predicted`.
"""

import argparse
import csv
import math
import sys
import time
from pathlib import Path

import torch

from study.measure.cuda_memory import predict_cuda_memory, predict_cuda_train_memory
from study.models import create, family_of

GIB_MIB = 1024.0
CAPACITIES_GIB = (24, 40, 80, 141)
PRECISIONS = ("float32", "bfloat16")
MODELS = (
    "resnet50",
    "convnext_tiny",
    "mambaout_tiny",
    "deit_tiny_patch16_224",
    "deit_small_patch16_224",
    "swin_tiny_patch4_window7_224",
    "vim_tiny",
    "vim_small",
    "vmamba_tiny",
)  # fmt: skip  (the default sweep's models, conf/sweep/default.yaml)
SIZES_PX = (224, 384, 512, 768, 1024, 1248)
MAX_BATCH = 2**20
FIT_BATCHES = (16, 32)  # the line's two predictions
NEAR_PCT = 5.0  # extrapolations within this of a capacity are checked by a prediction
MODES = ("inference", "train")
OUT = {"inference": Path("results/fits_cuda_predicted.csv"),
       "train": Path("results/fits_cuda_predicted_train.csv")}  # fmt: skip
COLUMNS = ("model", "family", "img_size", "mode", "precision", "capacity_gib", "batch",
           "peak_gib", "verified_peak_gib", "linearity_error_pct", "fit_batch1_mib",
           "per_image_mib", "device", "source")  # fmt: skip


def _peak_mib(
    model: torch.nn.Module, size: int, batch: int, precision: str, mode: str = "inference"
) -> float:
    predict = predict_cuda_train_memory if mode == "train" else predict_cuda_memory
    return predict(model, (batch, 3, size, size), precision)["peak_mib"]


def largest_pow2_batch(peak1_mib: float, per_image_mib: float, capacity_mib: float) -> int:
    """The largest power of two b <= MAX_BATCH with peak1 + (b - 1) * per_image <= capacity;
    0 when batch 1 does not fit."""
    if peak1_mib > capacity_mib:
        return 0
    if per_image_mib <= 0:
        return MAX_BATCH
    most = (capacity_mib - peak1_mib) / per_image_mib + 1
    batch = min(MAX_BATCH, 2 ** int(math.floor(math.log2(most))))
    while batch < MAX_BATCH and peak1_mib + (2 * batch - 1) * per_image_mib <= capacity_mib:
        batch *= 2  # log2's rounding at an exact power of two
    while batch > 1 and peak1_mib + (batch - 1) * per_image_mib > capacity_mib:
        batch //= 2
    return batch


def fits_rows(
    name: str,
    size: int,
    precision: str,
    capacities_gib: tuple[float, ...] = CAPACITIES_GIB,
    verify: bool = False,
    mode: str = "inference",
) -> list[dict]:
    """One row per capacity for (model, size, precision), from the line through FIT_BATCHES."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; allowed: {', '.join(MODES)}")
    with torch.device("meta"):  # no weights: the predictions need shapes only
        model = create(name, size)

    low, high = FIT_BATCHES
    p_low = _peak_mib(model, size, low, precision, mode)
    per_image = (_peak_mib(model, size, high, precision, mode) - p_low) / (high - low)
    p1 = p_low - (low - 1) * per_image  # the line at batch 1
    rows, near = [], NEAR_PCT / 100
    for cap in capacities_gib:
        cap_mib = cap * GIB_MIB
        batch = largest_pow2_batch(p1, per_image, cap_mib)
        peak = p1 + (batch - 1) * per_image if batch else math.nan
        verified = error = math.nan
        if batch and (verify or peak > cap_mib / (1 + near)):
            verified = _peak_mib(model, size, batch, precision, mode)  # near the edge: predict it
            error = 100 * (verified / peak - 1)
            while batch and verified > cap_mib:  # the extrapolation was a little short
                batch //= 2
                verified = _peak_mib(model, size, batch, precision, mode) if batch else math.nan
        up = 2 * batch if batch else 1
        while up <= MAX_BATCH and p1 + (up - 1) * per_image < cap_mib * (1 + near):
            above = _peak_mib(
                model, size, up, precision, mode
            )  # the next power of two, near the edge
            if math.isnan(error):
                error = 100 * (above / (p1 + (up - 1) * per_image) - 1)
            if above > cap_mib:
                break
            batch, verified, up = up, above, 2 * up  # the extrapolation was a little long
        peak = p1 + (batch - 1) * per_image if batch else math.nan
        rows.append({
            "model": name, "family": family_of(name), "img_size": size, "mode": mode,
            "precision": precision,
            "capacity_gib": cap, "batch": batch, "peak_gib": peak / GIB_MIB,
            "verified_peak_gib": verified / GIB_MIB, "linearity_error_pct": error,
            "fit_batch1_mib": p1, "per_image_mib": per_image,
            "device": "cuda", "source": "predicted",
        })  # fmt: skip
    return rows


def fits_table(
    models: tuple[str, ...] = MODELS,
    sizes: tuple[int, ...] = SIZES_PX,
    precisions: tuple[str, ...] = PRECISIONS,
    capacities_gib: tuple[float, ...] = CAPACITIES_GIB,
    verify: tuple[str, ...] = ("vim_tiny",),
    mode: str = "inference",
) -> list[dict]:
    """Every (model, size, precision, capacity) row; `verify`: models predicted at each batch."""
    return [
        row
        for name in models
        for size in sizes
        for precision in precisions
        for row in fits_rows(name, size, precision, capacities_gib, name in verify, mode)
    ]


def write_csv(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit code 2
        print(f"fits: {message}", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> int:
    from study.models import available

    parser = _Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", default="inference", choices=MODES)
    parser.add_argument("--out", type=Path, help="default: " + ", ".join(
        f"{path} (--mode {mode})" for mode, path in OUT.items()))  # fmt: skip
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=available())
    parser.add_argument("--sizes", nargs="+", type=int, default=list(SIZES_PX))
    parser.add_argument("--capacities-gib", nargs="+", type=float, default=list(CAPACITIES_GIB))
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=PRECISIONS,
        help="default: float32 bfloat16 (--mode train without a GPU: float32)",
    )
    verify_help = "models also predicted at every batch found (default vim_tiny)"
    parser.add_argument("--verify", nargs="*", default=["vim_tiny"], help=verify_help)
    args = parser.parse_args(argv)
    if any(s < 1 for s in args.sizes) or any(c <= 0 for c in args.capacities_gib):
        parser.error("sizes and capacities must be positive")
    gpu_less_train = args.mode == "train" and not torch.cuda.is_available()
    if args.precisions is None:
        args.precisions = ["float32"] if gpu_less_train else list(PRECISIONS)
    if gpu_less_train and "bfloat16" in args.precisions:
        parser.error("--mode train predicts bfloat16 on a machine with a GPU only; allowed here: "
                     "--precisions float32")  # fmt: skip
    out = args.out or OUT[args.mode]
    start = time.perf_counter()
    rows = fits_table(tuple(args.models), tuple(args.sizes), tuple(args.precisions),
                      tuple(args.capacities_gib), tuple(args.verify), args.mode)  # fmt: skip
    write_csv(rows, out)
    print(f"{len(rows)} rows written to {out} in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
