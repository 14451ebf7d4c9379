"""No backend changes the process's floating-point environment, and NaN/inf propagate as in the
reference. Each environment check runs in a fresh interpreter: in this one a backend is loaded
already by other tests."""

import json
import subprocess
import sys

import pytest
import torch

from kernels.fpenv import flush_to_zero, fp_control
from kernels.ops.selective_scan import cpu
from kernels.ops.selective_scan.reference import selective_scan_ref
from kernels.testing import make_scan_inputs

pytestmark = pytest.mark.skipif(fp_control() is None, reason="fegetenv not readable here")

# Prints, as JSON, the FP control state and subnormal products before and after loading every
# backend, and the output of a small CNN whose activations are subnormal.
_PROBE = """
import json, numpy as np, torch
from kernels.fpenv import fp_control

torch.set_num_threads(1)  # every op on this thread, whose FP state a loaded library would change

def subnormal_products():
    return [float(torch.tensor([1e-39]) * 1.0), float(np.float32(1e-39) * np.float32(1.0)),
            float(torch.tensor([1e-30]) * 1e-10)]

torch.manual_seed(0)
# No normalisation or bias, so that small inputs keep the activations subnormal: with
# flush-to-zero on, 4% of this output turns to 0 (measured with the old build of the scan).
model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, bias=False), torch.nn.ReLU(),
                            torch.nn.Conv2d(8, 4, 3, bias=False))
x = torch.randn(2, 3, 32, 32) * 1e-36
with torch.no_grad():
    before = {"fp": fp_control(), "products": subnormal_products(), "cnn": model(x).tolist()}
from kernels.ops.selective_scan import cpu
cpu.library()
import kernels.ops.selective_scan.triton_fwd, kernels.ops.selective_scan.triton_bwd  # noqa
import kernels.ops.cross_scan.triton_cross  # noqa
with torch.no_grad():
    after = {"fp": fp_control(), "products": subnormal_products(), "cnn": model(x).tolist()}
print(json.dumps({"before": before, "after": after}))
"""


@pytest.fixture(scope="module")
def probe() -> dict:
    if not cpu.available():
        pytest.skip("no C compiler: the CPU scan is not built")
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True,
                         check=True, timeout=300)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_loading_backends_leaves_fp_control_unchanged(probe):
    assert probe["before"]["fp"] == probe["after"]["fp"]
    assert not flush_to_zero(probe["after"]["fp"]["mxcsr"])


def test_subnormal_arithmetic_survives_loading(probe):
    assert probe["before"]["products"] == probe["after"]["products"]
    assert all(p != 0.0 for p in probe["after"]["products"])  # subnormals are not flushed


def test_cnn_forward_bit_identical_after_loading(probe):
    assert probe["before"]["cnn"] == probe["after"]["cnn"]


@pytest.mark.parametrize("reverse", [False, True])
def test_nan_and_inf_propagate_as_in_reference(reverse):
    if not cpu.available():
        pytest.skip("no C compiler: the CPU scan is not built")
    torch.manual_seed(0)
    inputs = make_scan_inputs(batch=2, dim=16, n_state=4, length=70)
    inputs["u"][0, 3, 10] = float("nan")
    inputs["u"][1, 5, 40] = float("inf")
    inputs["delta"][1, 7, 20] = float("-inf")
    ref = selective_scan_ref(**inputs, delta_softplus=True, reverse=reverse)
    ours = kernels_cpu_scan(inputs, reverse)
    assert torch.equal(torch.isnan(ours), torch.isnan(ref))
    assert torch.equal(torch.isinf(ours), torch.isinf(ref))
    finite = torch.isfinite(ref)
    torch.testing.assert_close(ours[finite], ref[finite], rtol=1e-4, atol=1e-5)


def kernels_cpu_scan(inputs: dict, reverse: bool) -> torch.Tensor:
    import kernels

    return kernels.selective_scan(**inputs, delta_softplus=True, reverse=reverse, backend="cpu")
