"""Time VMamba-T's 1x1 projections as oneDNN convolutions (NCHW and channels-last) and as GEMMs.

    python tools/linear2d_bench.py [--img-size 1024] [--rounds 7] [--threads N]

Every (in, out, side) of VMamba-T's Linear2d layers (SS2D in/out_proj, MLP fc1/fc2) at one input
size, batch 1: conv2d on an NCHW map, conv2d on a channels-last map, and addmm(bias, W, x) over
(C, H*W) (what `Linear2d` runs). Rounds interleave the variants; prints the median wall and
process-CPU ms of each and the conv / addmm ratios.
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F


def shapes(img_size: int) -> list[tuple[int, int, int]]:
    out = []
    for stage, dim in enumerate((96, 192, 384, 768)):
        side = img_size // 4 // 2**stage
        out += [(dim, dim, side), (dim, 4 * dim, side), (4 * dim, dim, side)]  # SS2D, fc1, fc2
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--img-size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"threads {torch.get_num_threads()}; ms: wall / cpu (median over rounds)")
    with torch.no_grad():
        for cin, cout, side in shapes(args.img_size):
            x = torch.randn(1, cin, side, side)
            xl = x.contiguous(memory_format=torch.channels_last)
            w, b = torch.randn(cout, cin), torch.randn(cout)
            fns = {
                "conv_nchw": lambda x=x, w=w, b=b: F.conv2d(x, w[:, :, None, None], b),
                "conv_cl": lambda xl=xl, w=w, b=b: F.conv2d(xl, w[:, :, None, None], b),
                "addmm": lambda x=x, w=w, b=b, c=cin: torch.addmm(b[:, None], w, x.view(c, -1)),
            }
            for fn in fns.values():
                fn()
            spent = {k: ([], []) for k in fns}
            for _ in range(args.rounds):
                for k, fn in fns.items():
                    wall, cpu = time.perf_counter(), time.process_time()
                    fn()
                    spent[k][0].append((time.perf_counter() - wall) * 1e3)
                    spent[k][1].append((time.process_time() - cpu) * 1e3)
            med = {k: [statistics.median(v) for v in pair] for k, pair in spent.items()}
            cells = "  ".join(f"{k} {m[0]:7.1f} / {m[1]:7.1f}" for k, m in med.items())
            ratio = med["conv_nchw"][1] / med["addmm"][1]
            ratio_cl = med["conv_cl"][1] / med["addmm"][1]
            print(f"{cin:4d}->{cout:4d} @{side:3d}^2  {cells}  conv/addmm {ratio:.2f} "
                  f"conv_cl/addmm {ratio_cl:.2f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
