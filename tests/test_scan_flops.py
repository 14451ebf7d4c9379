"""FLOP formulas of every op of ours, backward ops included, so that training FLOPs are complete:
one Vim and one VMamba layer, forward and backward, counted against a count by hand."""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.func import functional_call
from torch.utils.flop_counter import FlopCounterMode, flop_registry

import kernels  # noqa: F401  (registers the ops)
import study.models as zoo
from study.measure.flops import EXTRA_FORMULAS, fake_state

OPS = torch.ops.kernels


def test_every_op_of_ours_has_a_flop_formula():
    ours = [getattr(OPS, name) for name in dir(OPS) if not name.startswith("_")]
    ours = [op for op in ours if isinstance(op, torch._ops.OpOverloadPacket)]
    names = {op._qualified_op_name for op in ours}
    assert {"kernels::selective_scan", "kernels::selective_scan_bwd"} <= names
    assert {"kernels::cross_scan", "kernels::cross_merge"} <= names
    assert all(op in flop_registry for op in ours)


def test_depthwise_conv_backward_counts_each_gradient_as_one_forward():
    """torch's own formula counts a depthwise conv's weight gradient as if ungrouped (C times
    too much); flops.EXTRA_FORMULAS replaces it: input and weight gradients, one forward each."""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1, groups=64, bias=True)
    x = torch.randn(2, 64, 16, 16, requires_grad=True)
    forward = 2 * 16 * 16 * 64 * 9  # batch x pixels x channels x taps
    for mapping, expected in (({}, None), (EXTRA_FORMULAS, 2 * forward)):
        counter = FlopCounterMode(display=False, custom_mapping=mapping)
        with counter:
            conv(x).sum().backward()
        counts = counter.get_flop_counts()["Global"]
        bwd = counts[torch.ops.aten.convolution_backward] // 2
        if expected is None:
            assert bwd > 10 * forward  # the bug the formula corrects
        else:
            assert bwd == expected
            assert counts[torch.ops.aten.convolution] // 2 == forward


def test_cross_ops_backward_is_data_movement_counted_as_zero():
    """cross_scan's backward is cross_merge and the other way round; both only move data, so
    a forward and backward through each counts exactly 0 MACs, and both ops are seen."""
    x = torch.randn(1, 8, 5, 6, requires_grad=True)
    counter = FlopCounterMode(display=False, custom_mapping=EXTRA_FORMULAS)
    with counter, kernels.use_backend("reference"):
        seqs = kernels.cross_scan(x)
        kernels.cross_merge(seqs.reshape(1, 4, 8, 5, 6)).sum().backward()
    counts = counter.get_flop_counts()["Global"]
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert counts[OPS.cross_scan] == counts[OPS.cross_merge] == 0
    assert counter.get_total_flops() == 0


def train_macs(layer: torch.nn.Module, x_shape: tuple[int, ...]) -> dict[str, int]:
    """{op name: multiply-adds} of one forward and one backward (gradients of the input and every
    parameter) of `layer`, on fake tensors with the CPU scan: nothing is computed, and the count
    is the same whether or not this machine can build the CPU kernel."""
    with FakeTensorMode(allow_non_fake_inputs=True) as mode, kernels.use_backend("cpu"):
        state = {k: v.requires_grad_(v.is_floating_point()) for k, v in
                 fake_state(layer, mode, torch.device("cpu")).items()}  # fmt: skip
        x = torch.randn(x_shape, requires_grad=True)
        counter = FlopCounterMode(display=False, custom_mapping=EXTRA_FORMULAS)
        with counter:  # .backward(): FlopCounterMode's module hooks reject autograd.grad
            functional_call(layer, state, (x,)).float().sum().backward()
    return {str(op): n // 2 for op, n in counter.get_flop_counts()["Global"].items()}


def scan_fwd_macs(dim: int, length: int, state: int, has_z: bool) -> int:
    """The forward formula (mamba_ssm / VMamba's convention): 9 per state, the D skip, the gate."""
    return dim * length * (9 * state + 1 + has_z)


def scan_bwd_macs(dim: int, length: int, state: int, has_z: bool) -> int:
    """The backward, by hand, for a scan with a D skip and softplus(delta + bias), batch 1.

    With a_t = exp(dt_t A) and x_t = dt_t u_t B_t the forward is h_t = a_t h_{t-1} + x_t,
    y_t = (sum_n C_t h_t + D u_t) * SiLU(z_t). The backward first redoes the forward states of a
    chunk from the state saved at its start: dt A, a h + x: 3 per state. Then the adjoint
    g_t = dLoss/dh_t = gy_t C_t + a_{t+1} g_{t+1} (2 per state), and from it, per state:
    dC_t += gy_t h_t, dB_t += g_t (dt_t u_t), s_t = sum_n g_t B_t, q_t = g_t a_t h_{t-1} (2),
    ddelta_t += A q_t, dA += dt_t q_t: 7. A gate needs y_t again: sum_n h_t C_t, 1 per state.
    Per channel and step: dt u; du = dt s + D gy; ddelta = (u s + sum_n A q) softplus'(.);
    dD += gy u: 6; the gate: gy = g z sigmoid(z) (2), dz = g (y + D u) SiLU'(z) (5): 7.
    """
    per_state = 3 + 2 + 7 + has_z
    per_channel = 6 + 7 * has_z
    return dim * length * (state * per_state + per_channel)


def test_vim_layer_training_macs_by_hand():
    """One Vim-Ti layer at 224 px: 196 patches + the class token, d = 192, Di = 384, N = 16,
    dt rank 12, two scans (one per direction), each gated by z."""
    with torch.device("meta"):
        layer = zoo.create("vim_tiny", 224).layers[0]
    length, d, di, n, rank = 197, 192, 384, 16, 12
    macs = train_macs(layer, (1, length, d))

    scans_bwd = 2 * scan_bwd_macs(di, length, n, has_z=True)
    assert macs["kernels.selective_scan_bwd"] == pytest.approx(scans_bwd, rel=0.02)
    assert macs["kernels.selective_scan"] == 2 * scan_fwd_macs(di, length, n, True)

    # Everything else is a matmul or a convolution: forward once, backward twice (input and
    # weight gradients). in_proj d -> 2 Di; per direction a depthwise conv of width 4, x_proj
    # Di -> rank + 2N and dt_proj rank -> Di; out_proj Di -> d.
    dense = length * (d * 2 * di + 2 * (di * 4 + di * (rank + 2 * n) + rank * di) + di * d)
    total = 3 * dense + 2 * scan_fwd_macs(di, length, n, True) + scans_bwd
    assert sum(macs.values()) == pytest.approx(total, rel=0.02)


def test_vmamba_layer_training_macs_by_hand():
    """One VMamba-T layer of stage 1 at 224 px: 56 x 56 tokens, d = Di = 96, N = 1, dt rank 6,
    four directions scanned as one scan of 4 Di channels, no gate; an MLP of ratio 4."""
    with torch.device("meta"):
        layer = zoo.create("vmamba_tiny", 224).layers[0].blocks[0]
    side, d, n, rank, k = 56, 96, 1, 6, 4
    length = side * side
    macs = train_macs(layer, (1, d, side, side))

    scan_bwd = scan_bwd_macs(k * d, length, n, has_z=False)
    assert macs["kernels.selective_scan_bwd"] == pytest.approx(scan_bwd, rel=0.02)
    # the model no longer calls the cross ops (it scans the token orders in place); where they
    # run, cross_scan's backward is cross_merge and the other way round: 0 MACs both ways
    assert macs.get("kernels.cross_scan", 0) == macs.get("kernels.cross_merge", 0) == 0

    # in_proj 1x1, depthwise 3x3, per direction x_proj Di -> rank + 2N and dt_proj rank -> Di,
    # out_proj 1x1, MLP d -> 4d -> d: forward once, backward twice.
    dense = length * (d * d + d * 9 + k * (d * (rank + 2 * n) + rank * d) + d * d + 8 * d * d)
    total = 3 * dense + scan_fwd_macs(k * d, length, n, False) + scan_bwd
    assert sum(macs.values()) == pytest.approx(total, rel=0.02)
