"""GPU check: the compiled Triton kernels against the references, then the benchmark.

    python3 -m kernels.gpu_check [--skip-bench] [--allow-skips] [--img-sizes 224 512 1024 1248]

Needs a CUDA GPU with torch and triton; nothing else (no pytest, hydra or fvcore): each check is a
plain function that raises AssertionError on a wrong result, or `Skip` when it cannot run (a
missing package), run here one by one (tests/test_kernels_gpu.py runs the same functions under
pytest with the `gpu` marker, where `Skip` is a pytest skip). The interpreter must be off, so
TRITON_INTERPRET is removed from the environment before any kernel is imported. Prints one line
per check and one summary table at the end, writes results/gpu_check_<device>.txt and
results/kernels_<device>.csv (the benchmark), and exits non-zero if a check failed, or was
skipped unless --allow-skips: a check that did not run has not passed.

Sized for one H200 in under 8 minutes with the benchmark: the checks take well under a minute
of GPU time (the first call of each kernel autotunes it); `--img-sizes` trims the benchmark.
"""

import os

os.environ.pop("TRITON_INTERPRET", None)

import argparse  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

import kernels  # noqa: E402
from kernels.ops.cross_scan.reference import cross_merge_ref, cross_scan_ref  # noqa: E402
from kernels.testing import (  # noqa: E402
    make_scan_inputs,
    reference_with_grads,
    rel_err,
    scan_with_grads,
)

CUDA = torch.device("cuda")


class Skip(Exception):  # noqa: N818 (a check's outcome, not an error)
    """A check that could not run: reported as SKIP, and fails the run unless allowed."""


def _run(x: dict, backend: str, reverse: bool, grad_y: torch.Tensor | None = None):
    """(y, last, grads, grad_y) of the public function with `backend` on x's device."""
    return scan_with_grads(x, backend, True, reverse, grad_y)


def _to(x: dict, device: str | torch.device) -> dict:
    return {k: None if v is None else v.to(device) for k, v in x.items()}


def _compare(got, want, y_tol: float, grad_tol: float) -> str:
    y, last, grads = got
    y_want, last_want, grads_want = want
    errs = {"y": rel_err(y, y_want), "last": rel_err(last, last_want)}
    errs |= {f"d{k}": rel_err(g, grads_want[k]) for k, g in grads.items()}
    for name, err in errs.items():
        tol = y_tol if name in ("y", "last") else grad_tol
        assert err < tol, f"{name}: relative error {err:.2e} >= {tol:.0e}"
    return "max rel err " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items())


def check_vim_layer_at_224_against_float64_reference() -> str:
    """Vim-Ti layer, L=197, batch 2, both directions: forward and every gradient."""
    notes = []
    for reverse in (False, True):
        x = make_scan_inputs(2, 384, 16, 197, device=CUDA)
        y, last, grads, grad_y = _run(x, "triton", reverse)
        y_ref, last_ref, grads_ref = reference_with_grads(x, grad_y, reverse=reverse)
        notes.append(_compare((y, last, grads), (y_ref, last_ref, grads_ref), 1e-5, 1e-4))
    return notes[-1]


def check_vim_small_at_1248_against_cpu_backend() -> str:
    """Vim-S layer at 1248 (L=6085), reverse: Triton on GPU vs the CPU backend (float32)."""
    x = make_scan_inputs(1, 768, 16, 6085)
    want = _run(x, "cpu", True)
    got = _run(_to(x, CUDA), "triton", True, grad_y=want[3].to(CUDA))
    return _compare(got[:3], want[:3], 1e-4, 1e-3)


def check_vmamba_stage_grouped_d_state_1() -> str:
    """VMamba-T stage 1 at 224: 4 directions x 96 channels, grouped B/C, N=1, no gate."""
    x = make_scan_inputs(2, 4 * 96, 1, 56 * 56, groups=4)
    x["z"] = None
    want = _run(x, "cpu", False)
    got = _run(_to(x, CUDA), "triton", False, grad_y=want[3].to(CUDA))
    return _compare(got[:3], want[:3], 1e-4, 1e-3)


def check_bfloat16_inputs() -> str:
    x = make_scan_inputs(2, 384, 16, 1025, dtype=torch.bfloat16, device=CUDA)
    y, last, grads, grad_y = _run(x, "triton", True)
    assert y.dtype == torch.bfloat16
    want = reference_with_grads(x, grad_y, reverse=True)
    return _compare((y, last, grads), want, 1e-2, 3e-2)


def check_backward_memory_is_linear_in_length() -> str:
    """Peak extra memory of forward+backward at batch 64: O(batch·D·L), not O(batch·D·L·N)."""
    x = make_scan_inputs(64, 384, 16, 1025, device=CUDA)
    leaves = [v.requires_grad_() for v in x.values() if v is not None]
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    y = kernels.selective_scan(**x, delta_softplus=True, backend="triton")
    torch.autograd.grad(y, leaves, torch.ones_like(y))
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    seq_bytes = 64 * 384 * 1025 * 4  # one (batch, D, L) float32 tensor
    # y, dy, du, ddelta, dz and the saved chunk states: under 10 sequence-sized tensors;
    # one (batch, D, L, N) tensor alone would be 16.
    assert extra < 10 * seq_bytes, f"peak extra {extra / seq_bytes:.1f} x (batch, D, L) tensors"
    return f"peak extra {extra / seq_bytes:.1f} x one (batch, D, L) float32 tensor"


def check_cross_scan_and_merge() -> str:
    for layout in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(2, 96, 56, 57, device=CUDA).to(memory_format=layout).requires_grad_()
        seq = kernels.cross_scan(x)
        torch.testing.assert_close(seq, cross_scan_ref(x), rtol=0, atol=0)
        g = torch.randn_like(seq)
        (gx,) = torch.autograd.grad(seq, x, g)
        torch.testing.assert_close(gx, cross_merge_ref(g.view(2, 4, 96, 56, 57)).view_as(x))
        y = torch.randn(2, 4, 96, 56, 57, device=CUDA)
        torch.testing.assert_close(kernels.cross_merge(y), cross_merge_ref(y))
    return "exact (scan), float32 sums (merge); contiguous and channels_last"


def check_against_mamba_ssm() -> str:
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError as err:
        raise Skip(f"mamba_ssm not importable ({err})") from err
    x = make_scan_inputs(2, 384, 16, 1025, device=CUDA)
    ours = kernels.selective_scan(**x, delta_softplus=True, backend="triton")
    theirs = selective_scan_fn(**x, delta_softplus=True)
    err = rel_err(ours, theirs)
    assert err < 1e-4, f"relative difference to mamba_ssm {err:.2e}"
    return f"relative difference to mamba_ssm {err:.1e}"


def check_vim_layout_strided_in_place() -> str:
    """Vim-S's real layout (delta, B, C transposed views of (batch, L, .)) against the CPU path."""
    x = make_scan_inputs(2, 768, 16, 197)
    x["delta"] = x["delta"].transpose(1, 2).contiguous().transpose(1, 2)
    x["B"] = x["B"].transpose(1, 2).contiguous().transpose(1, 2)
    x["C"] = x["C"].transpose(1, 2).contiguous().transpose(1, 2)
    want = _run(x, "cpu", False)
    got = _run(_to(x, CUDA), "triton", False, grad_y=want[3].to(CUDA))
    return _compare(got[:3], want[:3], 1e-4, 1e-3)


def check_small_batch_splits_the_sequence() -> str:
    """VMamba-T stage 0 at batch 1 (12 programs): the split path, chosen automatically."""
    from kernels.ops.selective_scan import triton_fwd

    seen = []
    real = triton_fwd.pass_states
    triton_fwd.pass_states = lambda *a: seen.append(a[1].shape[1]) or real(*a)
    try:
        x = make_scan_inputs(1, 4 * 96, 1, 56 * 56, groups=4)
        x["z"] = None
        want = _run(x, "cpu", False)
        got = _run(_to(x, CUDA), "triton", False, grad_y=want[3].to(CUDA))
    finally:
        triton_fwd.pass_states = real
    assert seen, "the split path was not taken at batch 1"
    return f"{seen[0]} segments; " + _compare(got[:3], want[:3], 1e-4, 1e-3)


def check_deterministic_repeats_bit_for_bit() -> str:
    """deterministic=True: two backward passes give identical gradients (and match atomics)."""
    x = make_scan_inputs(4, 384, 16, 1025, groups=2, device=CUDA)
    leaves = {k: v.requires_grad_() for k, v in x.items() if v is not None}
    grad_y = torch.randn(4, 384, 1025, device=CUDA)
    runs = []
    for det in (True, True, False):
        y = kernels.selective_scan(**x, delta_softplus=True, backend="triton", deterministic=det)
        runs.append(torch.autograd.grad(y, list(leaves.values()), grad_y))
    for name, a, b, c in zip(leaves, *runs, strict=True):
        assert torch.equal(a, b), f"d{name} differs between two deterministic runs"
        assert rel_err(a, c) < 1e-5, f"d{name}: deterministic vs atomic {rel_err(a, c):.1e}"
    return "bitwise equal over two runs; matches the atomic sums"


CHECKS = [
    check_vim_layer_at_224_against_float64_reference,
    check_vim_layout_strided_in_place,
    check_small_batch_splits_the_sequence,
    check_deterministic_repeats_bit_for_bit,
    check_vim_small_at_1248_against_cpu_backend,
    check_vmamba_stage_grouped_d_state_1,
    check_bfloat16_inputs,
    check_backward_memory_is_linear_in_length,
    check_cross_scan_and_merge,
    check_against_mamba_ssm,
]


def device_label() -> str:
    name = torch.cuda.get_device_name(CUDA)
    return "cuda_" + re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-bench", action="store_true")
    parser.add_argument("--allow-skips", action="store_true",
                        help="exit 0 even if a check was skipped (still reported)")  # fmt: skip
    parser.add_argument("--img-sizes", type=int, nargs="+", default=[224, 512, 1024, 1248])
    parser.add_argument("--out-dir", default="results")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 1
    label = device_label()
    rows = run_checks(CHECKS)
    lines = [f"device: {torch.cuda.get_device_name(CUDA)}"]
    lines += [f"{status} {name} ({sec:.1f} s): {note}" for name, status, sec, note in rows]
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"gpu_check_{label}.txt").write_text("\n".join(lines + summary(rows)) + "\n")
    if not args.skip_bench:
        from kernels import bench

        bench.main(["--device", "cuda", "--label", label, "--out-dir", str(out),
                    "--img-sizes", *map(str, args.img_sizes)])  # fmt: skip
    print("\n".join(summary(rows)))
    return exit_code(rows, args.allow_skips)


def run_checks(checks) -> list[tuple[str, str, float, str]]:
    """(name, PASS / FAIL / SKIP, seconds, note) per check; every check runs whatever fails."""
    rows = []
    for check in checks:
        start = time.perf_counter()
        try:
            note, status = check(), "PASS"
        except Skip as err:
            note, status = str(err), "SKIP"
        except Exception as err:  # report every check, then fail at the end
            note, status = f"{type(err).__name__}: {err}", "FAIL"
            traceback.print_exc()
        rows.append((check.__name__, status, time.perf_counter() - start, note))
        print(f"{status} {check.__name__} ({rows[-1][2]:.1f} s): {note}", flush=True)
    return rows


def exit_code(rows: list[tuple[str, str, float, str]], allow_skips: bool) -> int:
    """1 if a check failed, or was skipped and skips are not allowed; else 0."""
    statuses = [status for _, status, _, _ in rows]
    if "SKIP" in statuses and not allow_skips:
        print(f"{statuses.count('SKIP')} check(s) skipped: exit 1 (--allow-skips accepts them)")
    return 1 if "FAIL" in statuses or ("SKIP" in statuses and not allow_skips) else 0


def summary(rows: list[tuple[str, str, float, str]]) -> list[str]:
    """One table: check, status, seconds, then the totals."""
    width = max(len(name) for name, *_ in rows)
    out = ["", f"{'check':<{width}}  status  seconds"]
    out += [f"{name:<{width}}  {status:<6}  {sec:7.1f}" for name, status, sec, _ in rows]
    counts = {s: sum(r[1] == s for r in rows) for s in ("PASS", "FAIL", "SKIP")}
    out.append(", ".join(f"{n} {s.lower()}" for s, n in counts.items()) +
               f"; {sum(r[2] for r in rows):.0f} s")  # fmt: skip
    return out


if __name__ == "__main__":
    sys.exit(main())
