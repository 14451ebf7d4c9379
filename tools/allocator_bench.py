"""Time CPU forwards under glibc's default malloc settings and under ones that keep freed memory.

    python tools/allocator_bench.py [--img-size 1024] [--rounds 3] [--models resnet50 vmamba_tiny]

With the defaults, glibc returns every freed block above 32 MiB (mmap) and trims the heap top, so a
model's large activations land on fresh pages at every forward: the kernel zeroes them on first
touch (minor page faults). `retain` sets GLIBC_TUNABLES so freed memory stays in the process
(mmap_threshold at its 32 MiB maximum, trim_threshold 4 GiB, top_pad 256 MiB). Each (model,
setting) runs in a fresh interpreter (the tunables are read at start-up), batch 1, float32, one
warm-up forward, then `rounds` timed ones; prints the median wall ms, minor page faults per
forward (getrusage) and the default / retain ratio. `mallopt` is what the sweep, `make bench` and
the breakdown do: kernels/malloc.py's keep_freed set at run time (no mapping per block at all).
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

RETAIN = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967296:" \
    "glibc.malloc.top_pad=268435456"  # fmt: skip
SETTINGS = {"default": None, "retain": RETAIN, "mallopt": None}  # mallopt: kernels/malloc.py
MODELS = ("resnet50", "convnext_tiny", "deit_small_patch16_224", "swin_tiny_patch4_window7_224",
          "vim_tiny", "vmamba_tiny", "mambaout_tiny")  # fmt: skip
ROOT = Path(__file__).resolve().parents[1]


def child(name: str, img_size: int, rounds: int, keep_freed: bool) -> dict:
    import torch

    sys.path.insert(0, str(ROOT))
    from kernels.malloc import set_malloc
    from study.models import create

    if keep_freed:  # what the sweep does: mallopt at run time, no environment variable
        set_malloc("keep_freed")
    torch.manual_seed(0)
    model = create(name, img_size).eval()
    x = torch.randn(1, 3, img_size, img_size)
    times, faults = [], []
    with torch.no_grad():
        model(x)
        for _ in range(rounds):
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - start) * 1e3)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    return {"ms": statistics.median(times), "faults": statistics.median(faults)}


def run_child(name: str, img_size: int, rounds: int, setting: str) -> dict:
    tunables = SETTINGS[setting]
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    if tunables:
        env["GLIBC_TUNABLES"] = tunables
    args = [sys.executable, __file__, "--child", name, "--img-size", str(img_size),
            "--rounds", str(rounds)]  # fmt: skip
    if setting == "mallopt":
        args.append("--keep-freed")
    out = subprocess.run(args, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--img-size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--keep-freed", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.img_size < 32 or args.rounds < 1:
        parser.error("--img-size must be >= 32 and --rounds >= 1")
    if args.child:
        print(json.dumps(child(args.child, args.img_size, args.rounds, args.keep_freed)))
        return
    print(f"{args.img_size} px, batch 1, {args.rounds} timed forwards per run; retain: {RETAIN}")
    print("mallopt: kernels.malloc.set_malloc('keep_freed') at run time (what the sweep does)")
    print("model | default ms | retain ms | mallopt ms | default/retain | default/mallopt | "
          "faults per forward default / retain / mallopt")  # fmt: skip
    for name in args.models:
        got = {s: run_child(name, args.img_size, args.rounds, s) for s in SETTINGS}
        d, r, m = got["default"], got["retain"], got["mallopt"]
        print(f"{name} | {d['ms']:.1f} | {r['ms']:.1f} | {m['ms']:.1f} | {d['ms'] / r['ms']:.2f} | "
              f"{d['ms'] / m['ms']:.2f} | {d['faults']:.0f} / {r['faults']:.0f} / "
              f"{m['faults']:.0f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
