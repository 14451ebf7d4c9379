"""Record the selective-scan calls that real Vim/VMamba forwards make, for `make bench`.

    python -m study.measure.scan_calls [--models vim_tiny vmamba_tiny] [--img-sizes 224 1024]

Runs one forward (batch 1) of each model at each size under `kernels.record.ScanRecorder` and
writes results/scan_calls_<device>.json: one entry per distinct call (shapes, strides, options,
direction) with how often a forward makes it. `python -m kernels.bench --calls FILE` then times
each call as the model makes it beside the same call with contiguous inputs in the forward
direction (kernels import nothing from study: the file is the hand-over).
"""

import argparse
import json
from pathlib import Path

import torch

from kernels.record import ScanRecorder
from study.models import create

DEFAULT_MODELS = ["vim_tiny", "vim_small", "vmamba_tiny"]


def record_calls(model_name: str, img_size: int, device: str = "cpu") -> list[dict]:
    """Distinct scan calls of one forward, each with `calls_per_forward`, in order of first call."""
    torch.manual_seed(0)
    model = create(model_name, img_size=img_size).to(device)
    x = torch.randn(1, 3, img_size, img_size, device=device)
    with torch.no_grad(), ScanRecorder() as recorder:
        model(x)
    return [
        {"model": model_name, "img_size": img_size, "calls_per_forward": len(calls),
         **calls[0].to_dict()}
        for calls in recorder.grouped().values()
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    parser.add_argument("--img-sizes", type=int, nargs="+", default=[224, 1024])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out-dir", default="results")
    args = parser.parse_args(argv)
    calls = []
    for name in args.models:
        for img_size in args.img_sizes:
            found = record_calls(name, img_size, args.device)
            calls += found
            total = sum(c["calls_per_forward"] for c in found)
            print(f"{name}@{img_size}: {total} calls per forward, {len(found)} distinct")
    out = Path(args.out_dir) / f"scan_calls_{torch.device(args.device).type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(calls, indent=1) + "\n")
    print(f"wrote {out} ({len(calls)} distinct calls)")
    return out


if __name__ == "__main__":
    main()
