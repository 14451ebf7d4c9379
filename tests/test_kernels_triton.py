"""Triton kernels under the interpreter (TRITON_INTERPRET=1, CPU tensors, small sizes).

The interpreter is chosen when Triton's language module is imported, and `import kernels` imports
it (through torch.utils.flop_counter). So the variable is set here, before that, when this module
is the first to import kernels; otherwise (another test module came first) these tests run in a
child pytest process that sets it (`test_interpreter_suite_in_a_child_process`).
On a machine with CUDA they are skipped; tests/test_kernels_gpu.py covers the compiled path.
"""

import os
import subprocess
import sys

import pytest
import torch

if not torch.cuda.is_available() and "triton.language" not in sys.modules:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

import kernels  # noqa: E402
from kernels.ops.cross_scan.reference import cross_merge_ref, cross_scan_ref  # noqa: E402
from kernels.ops.selective_scan import cpu  # noqa: E402
from kernels.ops.selective_scan.triton_fwd import _bc_base, _program_ids, _seq_base  # noqa: E402
from kernels.testing import (  # noqa: E402
    make_scan_inputs,
    reference_with_grads,
    rel_err,
    scan_with_grads,
)


def _interpreted() -> bool:
    if os.environ.get("TRITON_INTERPRET") != "1":
        return False
    import triton.language as tl

    from kernels.ops.selective_scan import triton_fwd

    kernel_ok = type(triton_fwd._selective_scan_fwd_kernel).__name__ == "InterpretedFunction"
    return kernel_ok and type(tl.zeros).__name__ != "JITFunction"


INTERPRETED = _interpreted()
needs_interpreter = pytest.mark.skipif(
    not INTERPRETED, reason="Triton was imported without the interpreter: see the child process"
)
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present: gpu tests")


@pytest.mark.skipif(INTERPRETED, reason="the interpreter is on in this process")
def test_interpreter_suite_in_a_child_process(request):
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    marks = request.config.getoption("markexpr") or "not gpu and not slow"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", __file__, "-q", "-m", marks, "-p", "no:cacheprovider"],
        env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout


def run_triton(x, delta_softplus=True, reverse=False):
    return scan_with_grads(x, "triton", delta_softplus, reverse)


def check_against_reference(x, reverse=False, softplus=True, y_tol=1e-5, grad_tol=1e-4):
    y, last, grads, grad_y = run_triton(x, softplus, reverse)
    y_ref, last_ref, grads_ref = reference_with_grads(x, grad_y, softplus, reverse)
    assert y.dtype == x["u"].dtype
    assert rel_err(y, y_ref) < y_tol
    assert rel_err(last, last_ref) < y_tol
    for name, g in grads.items():
        assert g.shape == x[name].shape
        assert rel_err(g, grads_ref[name]) < grad_tol, name


@needs_interpreter
@pytest.mark.parametrize("length", [1, 63, 130])
@pytest.mark.parametrize("reverse", [False, True])
def test_forward_and_every_gradient(length, reverse):
    check_against_reference(make_scan_inputs(2, 3, 2, length), reverse=reverse)


@needs_interpreter
@pytest.mark.parametrize("length", [257, 2049])
@pytest.mark.slow
def test_long_sequences(length):
    check_against_reference(make_scan_inputs(1, 2, 2, length, groups=2), reverse=True)


@needs_interpreter
def test_grouped_d_state_1_like_vmamba():
    x = make_scan_inputs(1, 8, 1, 70, groups=4)
    x.update(z=None)
    check_against_reference(x)


@needs_interpreter
def test_groups_straddling_blocks_and_padded_state():
    # 3 groups of 5 channels and N=3 (padded to 4): masks on both tile axes
    check_against_reference(make_scan_inputs(1, 15, 3, 20, groups=3), reverse=True)


@needs_interpreter
def test_without_optional_inputs_and_softplus():
    x = make_scan_inputs(2, 3, 2, 40, extras=False)
    x["delta"] = torch.nn.functional.softplus(x["delta"])
    check_against_reference(x, softplus=False)


@needs_interpreter
def test_non_contiguous_inputs():
    x = make_scan_inputs(1, 4, 2, 40, groups=2)
    strided = {k: (v.transpose(-1, -2).contiguous().transpose(-1, -2) if v.dim() > 1 else v)
               for k, v in x.items()}  # fmt: skip
    assert not strided["u"].is_contiguous()
    check_against_reference(strided)


@needs_interpreter
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs(dtype):
    check_against_reference(make_scan_inputs(1, 4, 4, 70, dtype=dtype), y_tol=1e-2, grad_tol=3e-2)


@needs_interpreter
def test_extreme_delta_stays_finite():
    x = make_scan_inputs(1, 4, 2, 70, extras=False)
    x["A"] = torch.full_like(x["A"], -1.0)
    x["delta"] = torch.full_like(x["delta"], 100.0)  # delta*A = -100 per step
    x["delta"][..., ::3] = 1e-3
    y, last, grads, grad_y = run_triton(x, delta_softplus=False)
    y_ref, _, grads_ref = reference_with_grads(x, grad_y, delta_softplus=False)
    assert torch.isfinite(y).all() and all(torch.isfinite(g).all() for g in grads.values())
    assert rel_err(y, y_ref) < 1e-5
    for name in ("u", "B", "C"):
        assert rel_err(grads[name], grads_ref[name]) < 1e-4, name


@needs_interpreter
@pytest.mark.skipif(not cpu.available(), reason="no C compiler for the CPU scan")
def test_saved_chunk_states_match_the_cpu_backend():
    x = make_scan_inputs(1, 3, 2, 150, groups=None)
    args = [x[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    op = torch.ops.kernels.selective_scan
    _, _, states_triton = op(*args, True, True, "triton")
    _, _, states_cpu = op(*args, True, True, "cpu")
    assert states_triton.shape == states_cpu.shape == (1, 3, 4, 2)
    assert rel_err(states_triton, states_cpu) < 1e-5


@needs_interpreter
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize(("height", "width"), [(3, 5), (1, 7), (16, 17)])
def test_cross_scan_and_merge(layout, height, width):
    x = torch.randn(2, 5, height, width).to(memory_format=layout).requires_grad_()
    seq = kernels.cross_scan(x, backend="triton")
    torch.testing.assert_close(seq, cross_scan_ref(x), rtol=0, atol=0)
    g = torch.randn_like(seq)
    (gx,) = torch.autograd.grad(seq, x, g)
    torch.testing.assert_close(gx, cross_merge_ref(g.view(2, 4, 5, height, width)).view_as(x))

    y = torch.randn(2, 4, 5, height, width).to(torch.float64)
    y = y.transpose(3, 4).contiguous().transpose(3, 4).requires_grad_()  # strided (H, W)
    merged = kernels.cross_merge(y, backend="triton")
    torch.testing.assert_close(merged, cross_merge_ref(y))
    g = torch.randn_like(merged)
    (gy,) = torch.autograd.grad(merged, y, g)
    torch.testing.assert_close(gy, cross_scan_ref(g.view(2, 5, height, width)).view_as(y))


@needs_interpreter
def test_use_backend_triton_routes_cross_ops():
    x = torch.randn(1, 2, 3, 4)
    with kernels.use_backend("triton"):
        torch.testing.assert_close(kernels.cross_scan(x), cross_scan_ref(x))


# --- issue 13: strides, 64-bit offsets, split sequences, deterministic sums, smaller tiles ---


@needs_interpreter
def test_strided_views_are_read_in_place():
    # Vim's layout: delta and B/C transposed views of (batch, L, .), u a slice with L-stride 2
    x = make_scan_inputs(2, 6, 3, 45, extras=True)
    wide = torch.randn(2, 6, 90)
    x["u"] = wide[..., ::2]
    x["delta"] = x["delta"].transpose(1, 2).contiguous().transpose(1, 2)
    x["B"] = x["B"].transpose(1, 2).contiguous().transpose(1, 2)
    x["A"] = x["A"].t().contiguous().t()
    assert x["u"].stride() == (540, 90, 2) and x["delta"].stride()[2] == 6
    check_against_reference(x, reverse=True)


@triton.jit
def _offsets_kernel(out, sb, sd, sg, NSEG, BLOCK: tl.constexpr):
    """The kernels' base offsets for programs (0, 0, i_b), stored as int64."""
    i_d, i_g, i_b, i_s = _program_ids(NSEG)
    o = tl.arange(0, BLOCK)
    p = out + (tl.program_id(2) * 2 * BLOCK + o)
    tl.store(p, tl.reshape(_seq_base(i_b, sb, o, sd), (BLOCK,)))
    tl.store(p + BLOCK, tl.reshape(_bc_base(i_b, i_g + 3, sb, sg, o, sd), (BLOCK,)))


@needs_interpreter
def test_offsets_past_2_to_31_are_exact():
    # every big offset starts from _program_ids / _seq_base / _bc_base: with int32 arithmetic,
    # batch 2 x stride 2**31 - 1 (an int32 argument) or channel 3 x stride 2**30 would wrap
    big = 2**31 - 1
    out = torch.zeros(3 * 2 * 4, dtype=torch.int64)
    _offsets_kernel[(1, 1, 3)](out, big, 2**30, big, 1, 4)
    got = out.view(3, 2, 4).tolist()
    for b in range(3):
        assert got[b][0] == [b * big + o * 2**30 for o in range(4)]
        assert got[b][1] == [b * big + 3 * big + o * 2**30 for o in range(4)]


@needs_interpreter
@pytest.mark.parametrize("reverse", [False, True])
def test_split_sequence_is_chosen_for_few_programs_and_matches_float64(monkeypatch, reverse):
    from kernels.ops.selective_scan import triton_configs, triton_fwd

    calls = []
    real = triton_fwd.pass_states
    monkeypatch.setattr(triton_fwd, "pass_states", lambda *a: calls.append(a[1].shape) or real(*a))
    monkeypatch.setattr(triton_configs, "programs_to_fill", lambda device: 64)  # a "GPU" to fill
    check_against_reference(make_scan_inputs(1, 5, 3, 200, groups=None), reverse=reverse)
    assert calls and calls[0][1] == 4  # 200 steps: 4 chunks, one segment each


def test_segment_count_fills_the_gpu():
    from kernels.ops.selective_scan.triton_fwd import segment_count

    h200 = 2 * 132  # programs_to_fill on an H200
    # VMamba-T stage 0 at 224, batch 1: 96 channels x 4 directions in blocks of 32 -> 12 programs
    assert segment_count(12, 49, h200) == 22
    assert segment_count(12 * 64, 49, h200) == 1  # batch 64 fills it alone
    assert segment_count(12, 1, h200) == 1  # one chunk: nothing to split


@needs_interpreter
def test_split_sequence_with_a_last_state_gradient():
    from kernels.ops.selective_scan import triton_bwd, triton_fwd

    x = make_scan_inputs(1, 4, 2, 150, groups=None)
    args = [x[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    g_y, g_last = torch.randn(1, 4, 150), torch.randn(1, 4, 2)
    y1, last1, st1 = triton_fwd.fwd(*args, True, False, segments=1)
    y3, last3, st3 = triton_fwd.fwd(*args, True, False, segments=3)
    assert rel_err(y3, y1) < 1e-6 and rel_err(st3, st1) < 1e-6
    one = triton_bwd.bwd(g_y, g_last, st1, *args, True, False, segments=1)
    three = triton_bwd.bwd(g_y, g_last, st1, *args, True, False, segments=3)
    for a, b in zip(one, three, strict=True):
        assert rel_err(b, a) < 1e-5


@needs_interpreter
def test_split_deterministic_backward_with_the_256_element_tile():
    # BLOCK_L 16, BLOCK_D 1: the spill-free default of this launch in bfloat16 at d_state 16
    from kernels.ops.selective_scan import triton_bwd, triton_configs, triton_fwd

    x = make_scan_inputs(1, 4, 16, 150, groups=None)
    args = [x[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    g_y, g_last = torch.randn(1, 4, 150), torch.randn(1, 4, 16)
    _, _, states = triton_fwd.fwd(*args, True, False, segments=1)
    want = triton_bwd.bwd(g_y, g_last, states, *args, True, False, segments=1)
    cfg = triton.Config({"BLOCK_L": 16, "BLOCK_D": 1}, num_warps=4, num_stages=1)
    with triton_configs.forced_config(cfg):
        got = triton_bwd.bwd(g_y, g_last, states, *args, True, False, deterministic=True,
                             segments=3)  # fmt: skip
    for a, b in zip(want, got, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            assert rel_err(b, a) < 1e-5


@needs_interpreter
def test_deterministic_sums_match_and_repeat_bit_for_bit():
    x = make_scan_inputs(2, 12, 3, 70, groups=2)
    y, last, grads, grad_y = scan_with_grads(x, "triton", True, False)
    leaves = {k: v.detach().clone().requires_grad_() for k, v in x.items() if v is not None}
    runs = []
    for _ in range(2):
        out = kernels.selective_scan(**leaves, delta_softplus=True, backend="triton",
                                     deterministic=True)  # fmt: skip
        runs.append(torch.autograd.grad(out, list(leaves.values()), grad_y))
    _, _, grads_ref = reference_with_grads(x, grad_y)
    for name, g1, g2 in zip(leaves, *runs, strict=True):
        assert torch.equal(g1, g2), name
        assert rel_err(g1, grads_ref[name]) < 1e-4, name
        assert rel_err(g1, grads[name]) < 1e-5, name


@needs_interpreter
@pytest.mark.parametrize(("block_l", "block_d"), [(32, 2), (16, 1)])
def test_tiles_shorter_than_a_chunk(block_l, block_d):
    import triton

    from kernels.ops.selective_scan import triton_configs

    cfg = triton.Config({"BLOCK_L": block_l, "BLOCK_D": block_d}, num_warps=4, num_stages=1)
    with triton_configs.forced_config(cfg):
        check_against_reference(make_scan_inputs(1, 3, 3, 150), reverse=True)


@needs_interpreter
def test_backward_keeps_a_h_prev_where_x_dominates():
    # one step whose input x = dt u B is 1e8 times the state before it: h - x would lose a h_prev
    x = make_scan_inputs(1, 2, 2, 20, extras=False)
    x["delta"] = torch.full_like(x["delta"], 0.5)
    x["u"][..., -1] = 1e8
    y, last, grads, grad_y = run_triton(x, delta_softplus=False)
    _, _, grads_ref = reference_with_grads(x, grad_y, delta_softplus=False)
    assert rel_err(grads["A"], grads_ref["A"]) < 1e-4
