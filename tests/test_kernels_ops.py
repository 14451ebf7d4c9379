"""The custom ops: FLOP formula, fake implementations, autograd registration, torch.compile."""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

import kernels
from kernels.testing import make_scan_inputs


def expected_flops(batch, dim, length, n_state, has_d, has_z):
    """9·B·L·D·N + B·D·L (D skip) + B·D·L (z) multiply-adds (VMamba's flops_selective_scan_ref);
    two FLOPs each."""
    return 2 * (9 * batch * length * dim * n_state + batch * dim * length * (has_d + has_z))


@pytest.mark.parametrize("has_d", [False, True])
@pytest.mark.parametrize("has_z", [False, True])
@pytest.mark.parametrize("groups", [None, 4])
def test_flop_counter_counts_the_formula_on_meta(has_d, has_z, groups):
    batch, dim, n_state, length = 3, 8, 16, 6085
    x = make_scan_inputs(batch, dim, n_state, length, groups, device="meta")
    x.update(D=x["D"] if has_d else None, z=x["z"] if has_z else None)
    with FlopCounterMode(display=False) as counter:
        y = kernels.selective_scan(**x, delta_softplus=True)
    assert y.device.type == "meta" and y.shape == (batch, dim, length)
    assert counter.get_total_flops() == expected_flops(batch, dim, length, n_state, has_d, has_z)


@pytest.mark.parametrize("backend", ["reference", "cpu", "triton"])
def test_every_backend_is_the_same_op_under_fake_mode(backend):
    length = 20 if backend == "reference" else 1000  # the reference's backward loops over L
    with FakeTensorMode(), kernels.use_backend(backend), FlopCounterMode(display=False) as counter:
        x = make_scan_inputs(2, 6, 4, length, groups=2)
        leaves = [x["u"].requires_grad_(), x["delta"].requires_grad_(), x["B"].requires_grad_()]
        y, last = kernels.selective_scan(**x, delta_softplus=True, reverse=True,
                                         return_last_state=True)  # fmt: skip
        grads = torch.autograd.grad(y.sum(), leaves)
    assert y.shape == (2, 6, length) and last.shape == (2, 6, 4) and last.dtype == torch.float32
    assert [g.shape for g in grads] == [t.shape for t in leaves]
    forward_flops = counter.get_flop_counts()["Global"][torch.ops.kernels.selective_scan]
    assert forward_flops == expected_flops(2, 6, length, 4, True, True)


def test_cross_ops_count_zero_and_run_on_meta():
    x = torch.randn(2, 8, 5, 7, device="meta")
    with FlopCounterMode(display=False) as counter:
        seq = kernels.cross_scan(x)
        merged = kernels.cross_merge(seq.view(2, 4, 8, 5, 7))
    assert seq.shape == (2, 4, 8, 35) and merged.shape == (2, 8, 35)
    assert counter.get_total_flops() == 0


def test_opcheck_selective_scan():
    """torch.library.opcheck: schema, fake impl and autograd registration agree with the kernel."""
    x = make_scan_inputs(2, 5, 3, 9, groups=None, dtype=torch.float64)
    for t in (x["u"], x["delta"], x["B"], x["A"]):
        t.requires_grad_()
    op = torch.ops.kernels.selective_scan.default
    names = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
    args = (*(x[k] for k in names), True, False)
    for backend in ("reference", "cpu"):
        torch.library.opcheck(op, (*args, backend))


def test_opcheck_cross_ops():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 4, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.kernels.cross_scan.default, (x, "reference"))
    torch.library.opcheck(torch.ops.kernels.cross_merge.default, (y, "reference"))


def test_cross_ops_gradients_are_each_others_adjoint():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 4, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(kernels.cross_scan, (x,))
    assert torch.autograd.gradcheck(kernels.cross_merge, (y,))


@pytest.mark.slow
def test_torch_compile_fullgraph_through_the_ops():
    x = make_scan_inputs(2, 6, 4, 50, groups=2)

    def layer(u, delta, A, B, C, D, z, delta_bias):
        y = kernels.selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus=True)
        return kernels.cross_merge(kernels.cross_scan(y.view(2, 6, 5, 10)).view(2, 4, 6, 5, 10))

    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(**x), layer(**x))
