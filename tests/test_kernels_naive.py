"""The materialising ("naive") scan: the reference's results, and the peak it is meant to have."""

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode

import kernels
from kernels.ops.selective_scan import cpu
from kernels.testing import make_scan_inputs, reference_with_grads, rel_err, scan_with_grads
from study.measure import peak_memory
from study.models import create

TOL = 1e-5


@pytest.mark.parametrize("groups", [None, 4])
@pytest.mark.parametrize("reverse", [False, True])
def test_forward_and_every_gradient_match_the_reference(groups, reverse):
    x = make_scan_inputs(batch=2, dim=8, n_state=3, length=13, groups=groups)
    y, last, grads, grad_y = scan_with_grads(x, "naive", reverse=reverse)
    y_ref, last_ref, grads_ref = reference_with_grads(x, grad_y, reverse=reverse)
    assert rel_err(y, y_ref) < TOL and rel_err(last, last_ref) < TOL
    for name, g in grads.items():
        assert rel_err(g, grads_ref[name]) < TOL, name


def test_without_optional_inputs_and_with_the_last_state_gradient():
    x = make_scan_inputs(batch=1, dim=4, n_state=2, length=9, extras=False, dtype=torch.float64)
    leaves = {k: v.requires_grad_() for k, v in x.items() if v is not None}
    grad_last = torch.randn(1, 4, 2, dtype=torch.float64)
    want = {}
    for backend in ("reference", "naive"):
        y, last = kernels.selective_scan(**x, return_last_state=True, backend=backend)
        loss = y.square().sum() + (last * grad_last).sum()
        want[backend] = torch.autograd.grad(loss, list(leaves.values()))
    for got, ref in zip(want["naive"], want["reference"], strict=True):
        assert rel_err(got, ref) < 1e-10


def test_saved_is_the_two_materialised_tensors():
    """saved = [exp(delta A) | delta B u], (batch, D, 2L, N): what mamba_ssm's reference holds."""
    x = make_scan_inputs(batch=2, dim=4, n_state=3, length=5, extras=False)
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"], None, None, None, False, False)
    _, _, saved = torch.ops.kernels.selective_scan(*args, "naive")
    assert saved.shape == (2, 4, 10, 3) and saved.dtype == torch.float32
    delta, A, B, u = x["delta"], x["A"], x["B"], x["u"]
    torch.testing.assert_close(saved[:, :, :5], torch.exp(torch.einsum("bdl,dn->bdln", delta, A)))
    torch.testing.assert_close(saved[:, :, 5:], torch.einsum("bdl,bnl,bdl->bdln", delta, B, u))
    with FakeTensorMode() as mode:
        fake = [mode.from_tensor(t) if isinstance(t, torch.Tensor) else t for t in args]
        _, _, fake_saved = torch.ops.kernels.selective_scan(*fake, "naive")
    assert fake_saved.shape == saved.shape and fake_saved.dtype == saved.dtype


class ScanBuffers(TorchDispatchMode):
    """The bytes of every `saved` output of the scan op (the naive backend's buffer)."""

    def __init__(self) -> None:
        super().__init__()
        self.saved_bytes: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.kernels.selective_scan.default:
            self.saved_bytes.append(out[2].numel() * out[2].element_size())
        return out


@pytest.mark.parametrize("name", ["test_vim", "test_vmamba"])
def test_models_hold_the_buffer_and_the_prediction_sees_it(name):
    """Predicted = measured with the naive scan, and the peak holds its largest (b, D, 2L, N)."""
    if not cpu.available():
        pytest.skip("no C compiler: the fused CPU scan is not built")
    model = create(name, 64)
    got = {}
    # against the fused CPU scan: the reference's own temporaries count as its workspace
    for backend in ("cpu", "naive"):
        with kernels.use_backend(backend):
            got[backend] = {m: peak_memory(model, 64, 2, m, rss=False)  # the tracker, both ways
                            for m in ("predicted", "measured")}  # fmt: skip
    naive, ref = got["naive"], got["cpu"]
    assert naive["predicted"] == pytest.approx(naive["measured"], rel=1e-6)
    buffers = ScanBuffers()
    with kernels.use_backend("naive"), buffers, torch.no_grad():
        model(torch.randn(2, 3, 64, 64))
    largest_mib = max(buffers.saved_bytes) / 2**20
    assert largest_mib > 0
    assert naive["predicted"]["activations_mib"] >= largest_mib
    assert naive["predicted"]["peak_mib"] >= ref["predicted"]["peak_mib"] + 0.5 * largest_mib


@pytest.mark.parametrize("groups", [None, 2])
def test_opcheck_naive(groups):
    """Schema, fake implementation and autograd registration agree with the naive kernel."""
    x = make_scan_inputs(2, 4, 3, 7, groups=groups, dtype=torch.float64)
    for t in (x["u"], x["delta"], x["B"], x["C"], x["A"], x["D"], x["z"], x["delta_bias"]):
        t.requires_grad_()
    names = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")
    args = (*(x[k] for k in names), True, True, "naive")
    torch.library.opcheck(torch.ops.kernels.selective_scan.default, args)
