"""The reference selective scan and cross ops against independent, scalar float64 computations."""

import math

import pytest
import torch

import kernels


def scalar_scan(u, delta, A, B, C, D, z, delta_bias, softplus, reverse):
    """The recurrence one scalar at a time, in Python floats (float64): an independent check."""
    batch, dim, length = u.shape
    n_state = A.shape[1]
    groups = 1 if B.dim() == 3 else B.shape[1]
    out = torch.zeros(batch, dim, length, dtype=torch.float64)
    last = torch.zeros(batch, dim, n_state, dtype=torch.float64)
    order = range(length - 1, -1, -1) if reverse else range(length)
    for b in range(batch):
        for d in range(dim):
            g = d // (dim // groups)
            h = [0.0] * n_state
            for t in order:
                dt = delta[b, d, t].item() + (delta_bias[d].item() if delta_bias is not None else 0)
                if softplus:
                    dt = math.log1p(math.exp(dt))
                y = 0.0
                for n in range(n_state):
                    bt = (B[b, n, t] if B.dim() == 3 else B[b, g, n, t]).item()
                    ct = (C[b, n, t] if C.dim() == 3 else C[b, g, n, t]).item()
                    h[n] = math.exp(dt * A[d, n].item()) * h[n] + dt * bt * u[b, d, t].item()
                    y += h[n] * ct
                if D is not None:
                    y += D[d].item() * u[b, d, t].item()
                if z is not None:
                    zt = z[b, d, t].item()
                    y *= zt / (1 + math.exp(-zt))
                out[b, d, t] = y
            last[b, d] = torch.tensor(h, dtype=torch.float64)
    return out, last


def make_inputs(batch=2, dim=4, n_state=3, length=7, groups=None, dtype=torch.float64):
    bc_shape = (batch, n_state, length) if groups is None else (batch, groups, n_state, length)
    return dict(
        u=torch.randn(batch, dim, length, dtype=dtype),
        delta=torch.randn(batch, dim, length, dtype=dtype) * 0.5,
        A=-torch.rand(dim, n_state, dtype=dtype) * 2,
        B=torch.randn(*bc_shape, dtype=dtype),
        C=torch.randn(*bc_shape, dtype=dtype),
        D=torch.randn(dim, dtype=dtype),
        z=torch.randn(batch, dim, length, dtype=dtype),
        delta_bias=torch.randn(dim, dtype=dtype) * 0.1,
    )


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("groups", [None, 1, 2, 4])
@pytest.mark.parametrize("with_extras", [False, True])
def test_reference_matches_scalar_loop(reverse, groups, with_extras):
    x = make_inputs(groups=groups)
    if not with_extras:
        x.update(D=None, z=None, delta_bias=None)
    softplus = with_extras
    y, last = kernels.selective_scan(
        **x, delta_softplus=softplus, reverse=reverse, return_last_state=True, backend="reference"
    )
    y_want, last_want = scalar_scan(**x, softplus=softplus, reverse=reverse)
    torch.testing.assert_close(y, y_want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(last, last_want, rtol=1e-10, atol=1e-10)


def test_b_and_c_may_be_grouped_differently():
    x = make_inputs(groups=2)
    x["C"] = torch.randn(2, 3, 7, dtype=torch.float64)
    y = kernels.selective_scan(**x, backend="reference")
    torch.testing.assert_close(y, scalar_scan(**x, softplus=False, reverse=False)[0])


def test_non_contiguous_inputs():
    x = make_inputs(groups=4)
    strided = {
        k: v.transpose(-1, -2).contiguous().transpose(-1, -2) for k, v in x.items() if v.dim() > 1
    }
    strided.update(D=x["D"], delta_bias=x["delta_bias"])
    assert not strided["u"].is_contiguous()
    torch.testing.assert_close(
        kernels.selective_scan(**strided, backend="reference"),
        kernels.selective_scan(**x, backend="reference"),
    )


def test_reverse_equals_flipped_forward():
    x = make_inputs(groups=2, length=9)
    flipped = {k: (v.flip(-1) if k in ("u", "delta", "B", "C", "z") else v) for k, v in x.items()}
    y_rev = kernels.selective_scan(**x, delta_softplus=True, reverse=True, backend="reference")
    y_flip = kernels.selective_scan(**flipped, delta_softplus=True, backend="reference")
    torch.testing.assert_close(y_rev, y_flip.flip(-1))


def test_float32_input_accumulates_in_float32_and_keeps_dtype():
    x = make_inputs(dtype=torch.float32, length=33)
    y = kernels.selective_scan(**x, delta_softplus=True, backend="reference")
    y64 = kernels.selective_scan(
        **{k: v.double() for k, v in x.items()}, delta_softplus=True, backend="reference"
    )
    assert y.dtype == torch.float32
    torch.testing.assert_close(y.double(), y64, rtol=1e-4, atol=1e-5)


def test_bfloat16_output_dtype():
    x = {k: v.to(torch.bfloat16) for k, v in make_inputs(length=5).items()}
    assert kernels.selective_scan(**x, backend="reference").dtype == torch.bfloat16


def test_empty_sequence():
    x = make_inputs(length=0)
    y, last = kernels.selective_scan(**x, return_last_state=True, backend="reference")
    assert y.shape == (2, 4, 0) and torch.equal(last, torch.zeros_like(last))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"u": torch.randn(2, 4)}, "u must be"),
        ({"delta": torch.randn(2, 4, 6)}, "delta must match"),
        ({"A": torch.randn(5, 3)}, "A must be"),
        ({"B": torch.randn(2, 3, 3, 7)}, "3 groups, which must divide D=4"),
        ({"C": torch.randn(2, 3, 8)}, "C must be"),
        ({"D": torch.randn(3)}, "D must be"),
        ({"z": torch.randn(2, 4, 6)}, "z must match"),
    ],
)
def test_bad_shapes_raise_one_clear_line(change, message):
    x = make_inputs(dtype=torch.float32)
    x.update(change)
    with pytest.raises(ValueError, match=message) as info:
        kernels.selective_scan(**x)
    assert "\n" not in str(info.value)


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown selective_scan backend 'cuda'; available: auto"):
        kernels.selective_scan(**make_inputs(), backend="cuda")
    with (
        pytest.raises(ValueError, match="unknown selective_scan backend"),
        kernels.use_backend("x"),
    ):
        pass


def test_use_backend_sets_what_auto_means(monkeypatch):
    calls = []

    def spy(*args):
        calls.append(args)
        return kernels.ops.selective_scan.selective_scan_ref(*args)

    monkeypatch.setitem(kernels.ops.selective_scan.BACKENDS, "spy", spy)
    with kernels.use_backend("spy"):
        kernels.selective_scan(**make_inputs())
    kernels.selective_scan(**make_inputs())
    assert len(calls) == 1


@pytest.mark.parametrize(("height", "width"), [(3, 5), (4, 4), (1, 6)])
def test_cross_scan_orders(height, width):
    x = torch.arange(2 * height * width, dtype=torch.float64).view(1, 2, height, width)
    seq = kernels.cross_scan(x)
    assert seq.shape == (1, 4, 2, height * width)
    torch.testing.assert_close(seq[0, 0, 0], x[0, 0].reshape(-1))
    torch.testing.assert_close(seq[0, 1, 0], x[0, 0].t().reshape(-1))
    torch.testing.assert_close(seq[0, 2, 0], x[0, 0].reshape(-1).flip(0))
    torch.testing.assert_close(seq[0, 3, 0], x[0, 0].t().reshape(-1).flip(0))


@pytest.mark.parametrize(("height", "width"), [(3, 5), (6, 2), (7, 7)])
def test_cross_merge_is_the_adjoint_of_cross_scan(height, width):
    x = torch.randn(2, 3, height, width, dtype=torch.float64)
    y = torch.randn(2, 4, 3, height, width, dtype=torch.float64)
    lhs = (kernels.cross_scan(x) * y.flatten(3)).sum()
    rhs = (x.flatten(2) * kernels.cross_merge(y)).sum()
    torch.testing.assert_close(lhs, rhs)


def test_cross_merge_of_cross_scan_counts_each_pixel_four_times():
    x = torch.randn(1, 2, 4, 6)
    y = kernels.cross_scan(x).view(1, 4, 2, 4, 6)
    torch.testing.assert_close(kernels.cross_merge(y), 4 * x.flatten(2))


def test_cross_ops_bad_shapes():
    with pytest.raises(ValueError, match=r"cross_scan expects \(batch, C, H, W\)"):
        kernels.cross_scan(torch.randn(2, 3, 4))
    with pytest.raises(ValueError, match=r"cross_merge expects \(batch, 4, C, H, W\)"):
        kernels.cross_merge(torch.randn(2, 3, 3, 4, 4))
