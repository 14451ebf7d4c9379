"""The fast CPU selective scan against the float64 sequential reference: forward and gradients."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
from kernels.ops.selective_scan import cpu
from kernels.testing import make_scan_inputs, reference_with_grads, rel_err, scan_with_grads

pytestmark = pytest.mark.skipif(not cpu.available(), reason="no C compiler for the CPU scan")


def run_cpu(x, delta_softplus=True, reverse=False):
    """y, last and gradients of <y, grad_y> through the public function, on the CPU backend."""
    return scan_with_grads(x, "cpu", delta_softplus, reverse)


@pytest.mark.parametrize("length", [1, 63, 257, pytest.param(2049, marks=pytest.mark.slow)])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("groups", [None, 2])
def test_forward_and_every_gradient_float64(length, reverse, groups):
    x = make_scan_inputs(batch=2, dim=20, n_state=3, length=length, groups=groups,
                         dtype=torch.float64)  # fmt: skip
    y, last, grads, grad_y = run_cpu(x, reverse=reverse)
    y_ref, last_ref, grads_ref = reference_with_grads(x, grad_y, reverse=reverse)
    assert rel_err(y, y_ref) < 1e-10
    assert rel_err(last, last_ref) < 1e-10
    assert set(grads) == {"u", "delta", "A", "B", "C", "D", "z", "delta_bias"}
    for name, g in grads.items():
        assert rel_err(g, grads_ref[name]) < 1e-9, name


@pytest.mark.parametrize("n_state", [1, 16])
def test_float32_matches_float64_reference(n_state):
    x = make_scan_inputs(batch=1, dim=37, n_state=n_state, length=300, groups=None)
    y, last, grads, grad_y = run_cpu(x, reverse=True)
    y_ref, last_ref, grads_ref = reference_with_grads(x, grad_y, reverse=True)
    assert y.dtype == torch.float32 and last.dtype == torch.float32
    assert rel_err(y, y_ref) < 1e-5
    for name, g in grads.items():
        assert rel_err(g, grads_ref[name]) < 1e-4, name


def test_without_optional_inputs_and_softplus():
    x = make_scan_inputs(batch=2, dim=5, n_state=4, length=70, extras=False, dtype=torch.float64)
    x["delta"] = x["delta"].abs()  # no softplus: keep the step positive
    y, _, grads, grad_y = run_cpu(x, delta_softplus=False)
    y_ref, _, grads_ref = reference_with_grads(x, grad_y, delta_softplus=False)
    assert rel_err(y, y_ref) < 1e-10
    assert set(grads) == {"u", "delta", "A", "B", "C"}
    for name, g in grads.items():
        assert rel_err(g, grads_ref[name]) < 1e-9, name


def test_grouped_like_vmamba_four_directions_d_state_1():
    x = make_scan_inputs(batch=2, dim=4 * 24, n_state=1, length=81, groups=4, dtype=torch.float64)
    x.update(z=None)
    y, _, grads, grad_y = run_cpu(x)
    y_ref, _, grads_ref = reference_with_grads(x, grad_y)
    assert rel_err(y, y_ref) < 1e-10
    for name, g in grads.items():
        assert rel_err(g, grads_ref[name]) < 1e-9, name


def test_b_and_c_grouped_differently():
    x = make_scan_inputs(batch=1, dim=6, n_state=2, length=33, groups=2, dtype=torch.float64)
    x["C"] = torch.randn(1, 3, 2, 33, dtype=torch.float64)
    y, _, grads, grad_y = run_cpu(x)
    y_ref, _, grads_ref = reference_with_grads(x, grad_y)
    assert rel_err(y, y_ref) < 1e-10
    assert grads["C"].shape == x["C"].shape and grads["B"].shape == x["B"].shape
    for name, g in grads.items():
        assert rel_err(g, grads_ref[name]) < 1e-9, name


def test_non_contiguous_inputs():
    x = make_scan_inputs(batch=2, dim=6, n_state=3, length=40, groups=2, dtype=torch.float64)
    strided = {k: (v.transpose(-1, -2).contiguous().transpose(-1, -2) if v.dim() > 1 else v)
               for k, v in x.items()}  # fmt: skip
    assert not strided["u"].is_contiguous() and not strided["B"].is_contiguous()
    y, _, grads, grad_y = run_cpu(strided)
    y_ref, _, grads_ref = reference_with_grads(x, grad_y)
    assert rel_err(y, y_ref) < 1e-10
    for name, g in grads.items():
        assert rel_err(g, grads_ref[name]) < 1e-9, name


def test_bfloat16_has_its_own_tolerance():
    x = make_scan_inputs(batch=1, dim=16, n_state=16, length=200, dtype=torch.bfloat16)
    y, _, grads, grad_y = run_cpu(x)
    assert y.dtype == torch.bfloat16 and grads["u"].dtype == torch.bfloat16
    y_ref, _, grads_ref = reference_with_grads(x, grad_y)  # same bf16 inputs, in float64
    assert rel_err(y, y_ref) < 1e-2  # bf16 output rounding: 2^-8
    for name, g in grads.items():
        assert rel_err(g, grads_ref[name]) < 2e-2, name


@pytest.mark.parametrize("step", [-100.0, -1e4])
def test_extreme_delta_stays_finite(step):
    """delta*A down to -100 per step (and far below) decays to zero: no inf, no NaN."""
    x = make_scan_inputs(batch=1, dim=8, n_state=4, length=130, dtype=torch.float32)
    x["A"] = torch.full_like(x["A"], -1.0)
    x.update(delta_bias=None)
    x["delta"] = torch.full_like(x["delta"], -step)  # softplus(100) = 100
    x["delta"][..., ::3] = -30.0  # and some near-zero steps between
    y, last, grads, grad_y = run_cpu(x)
    y_ref, _, grads_ref = reference_with_grads(x, grad_y)
    assert torch.isfinite(y).all() and torch.isfinite(last).all()
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert rel_err(y, y_ref) < 1e-4
    for name in ("u", "B", "C", "z"):
        assert rel_err(grads[name], grads_ref[name]) < 1e-4, name


def test_last_state_gradient():
    x = make_scan_inputs(batch=1, dim=5, n_state=3, length=70, dtype=torch.float64)
    u = x["u"].clone().requires_grad_()
    _, last = kernels.selective_scan(**{**x, "u": u}, delta_softplus=True, return_last_state=True,
                                     backend="cpu")  # fmt: skip
    (g,) = torch.autograd.grad(last.sum(), u)
    u_ref = x["u"].clone().requires_grad_()
    _, last_ref = kernels.selective_scan(**{**x, "u": u_ref}, delta_softplus=True,
                                         return_last_state=True, backend="reference")  # fmt: skip
    (g_ref,) = torch.autograd.grad(last_ref.sum(), u_ref)
    assert rel_err(g, g_ref) < 1e-10


def test_auto_means_cpu_on_cpu_and_use_backend_overrides():
    device = torch.device("cpu")
    resolve = kernels.ops.selective_scan.resolve_backend
    assert resolve("auto", device) == "cpu"
    with kernels.use_backend("reference"):
        assert resolve("auto", device) == "reference"
    assert resolve("auto", torch.device("cuda")) == "triton"


def test_use_backend_is_per_thread():
    """The override is a context variable: another thread still resolves "auto" by device."""
    import threading

    resolve = kernels.ops.selective_scan.resolve_backend
    seen = []
    with kernels.use_backend("reference"):
        thread = threading.Thread(target=lambda: seen.append(resolve("auto", torch.device("cpu"))))
        thread.start()
        thread.join()
        assert resolve("auto", torch.device("cpu")) == "reference"
    assert seen == ["cpu"]


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 2),
    groups=st.sampled_from([None, 1, 2]),
    dim_per_group=st.integers(1, 20),
    n_state=st.integers(1, 17),
    length=st.integers(1, 150),
    reverse=st.booleans(),
    softplus=st.booleans(),
    extras=st.booleans(),
)
def test_property_matches_reference(batch, groups, dim_per_group, n_state, length, reverse,
                                    softplus, extras):  # fmt: skip
    dim = dim_per_group * (groups or 1)
    x = make_scan_inputs(batch, dim, n_state, length, groups, torch.float64, extras=extras)
    if not softplus:  # keep delta + delta_bias > 0, or the scan grows past float64's range
        x["delta"] = torch.nn.functional.softplus(x["delta"])
        if x["delta_bias"] is not None:
            x["delta_bias"] = x["delta_bias"].abs()
    y, last, grads, grad_y = run_cpu(x, delta_softplus=softplus, reverse=reverse)
    y_ref, last_ref, grads_ref = reference_with_grads(x, grad_y, softplus, reverse)
    assert rel_err(y, y_ref) < 1e-10 and rel_err(last, last_ref) < 1e-10
    for name, g in grads.items():
        assert rel_err(g, grads_ref[name]) < 1e-8, name


@pytest.mark.parametrize("reverse", [False, True])
def test_several_spans_of_chunks(reverse):
    """Past SC * K = 512 steps a task moves its tiles span by span: three spans, the last partial,
    with a full 16-channel block and a partial one, and a partial block of states (5 = 4 + 1)."""
    x = make_scan_inputs(batch=1, dim=20, n_state=5, length=1100, groups=None, dtype=torch.float64)
    y, last, grads, grad_y = run_cpu(x, reverse=reverse)
    y_ref, last_ref, grads_ref = reference_with_grads(x, grad_y, reverse=reverse)
    assert rel_err(y, y_ref) < 1e-10 and rel_err(last, last_ref) < 1e-10
    for name, g in grads.items():
        assert rel_err(g, grads_ref[name]) < 1e-9, name


def model_layout(x: dict) -> dict:
    """u, delta, z as the models pass them: views with batch and channel strides of a larger
    buffer (a chunk of in_proj's (batch, 2D, L) output, every other channel), unit stride in L."""
    out = dict(x)
    for i, name in enumerate(("u", "delta", "z")):
        t = x[name]
        batch, dim, length = t.shape
        buffer = torch.randn(batch, 4 * dim, length + 3, dtype=t.dtype)
        view = buffer[:, i * dim : (i + 2) * dim : 2, 1 : length + 1]  # channel stride 2
        view.copy_(t)
        out[name] = view
    return out


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("length", [37, 600])
def test_strided_model_layouts_read_in_place(reverse, length):
    """Batch/channel-strided u, delta, z (16-channel blocks and a partial one, lengths that are no
    multiple of 16, several spans) match the float64 reference, forward and every gradient."""
    x = make_scan_inputs(batch=2, dim=20, n_state=4, length=length, dtype=torch.float64)
    strided = model_layout(x)
    for name in ("u", "delta", "z"):
        t = strided[name]
        assert not t.is_contiguous() and t.stride(-1) == 1
        assert cpu._rows(t, torch.float64).data_ptr() == t.data_ptr(), name  # no copy
    y, last, grads, grad_y = run_cpu(strided, reverse=reverse)
    y_ref, last_ref, grads_ref = reference_with_grads(x, grad_y, reverse=reverse)
    assert rel_err(y, y_ref) < 1e-10 and rel_err(last, last_ref) < 1e-10
    for name, g in grads.items():
        assert rel_err(g, grads_ref[name]) < 1e-9, name


@pytest.mark.parametrize("reverse", [False, True])
def test_channels_last_and_transposed_inputs_read_in_place(reverse):
    """u, delta, z with unit stride along the channels (a channels-last map flattened, a
    transposed projection) or no unit stride at all: read in place, same results."""
    x = make_scan_inputs(batch=2, dim=20, n_state=3, length=45, dtype=torch.float64)
    odd = dict(x)
    odd["u"] = x["u"].transpose(1, 2).contiguous().transpose(1, 2)  # channel stride 1
    odd["delta"] = x["delta"].transpose(1, 2).contiguous().transpose(1, 2)
    z = torch.zeros(2, 45, 3, 20, dtype=torch.float64)
    z[:, :, 1].copy_(x["z"].transpose(1, 2))
    odd["z"] = z[:, :, 1].transpose(1, 2)  # channel stride 1, step stride 60
    for name in ("u", "delta", "z"):
        assert odd[name].stride(1) == 1
        assert cpu._rows(odd[name], torch.float64).data_ptr() == odd[name].data_ptr(), name
    y, last, grads, grad_y = run_cpu(odd, reverse=reverse)
    y_ref, last_ref, grads_ref = reference_with_grads(x, grad_y, reverse=reverse)
    assert rel_err(y, y_ref) < 1e-10 and rel_err(last, last_ref) < 1e-10
    for name, g in grads.items():
        assert rel_err(g, grads_ref[name]) < 1e-9, name


@pytest.fixture
def other_lane_width(monkeypatch):
    """The library built with the lane width this machine does not pick (VB 8 <-> 16), so both
    vector paths (transposes, row sums) are checked on any machine; the usual one is restored."""
    width = 8 if cpu.lanes() == 16 else 16
    monkeypatch.setattr(cpu, "lanes", lambda: width)
    monkeypatch.setattr(cpu, "_lib", None)
    yield width
    monkeypatch.undo()
    cpu._lib = None


@pytest.mark.parametrize("reverse", [False, True])
def test_other_lane_width_matches_reference(other_lane_width, reverse):
    """Full and partial channel blocks (20 = 16 + 4 = 8 + 8 + 4), states in a full and a partial
    block (5 = 4 + 1), several spans, strided inputs: forward and every gradient."""
    x = make_scan_inputs(batch=2, dim=20, n_state=5, length=1100, dtype=torch.float64)
    y, last, grads, grad_y = run_cpu(model_layout(x), reverse=reverse)
    assert cpu._lib is not None and f"VB {other_lane_width}" in cpu._instantiate()
    y_ref, last_ref, grads_ref = reference_with_grads(x, grad_y, reverse=reverse)
    assert rel_err(y, y_ref) < 1e-10 and rel_err(last, last_ref) < 1e-10
    for name, g in grads.items():
        assert rel_err(g, grads_ref[name]) < 1e-9, name
