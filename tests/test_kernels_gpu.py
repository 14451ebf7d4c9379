"""Full-size checks of the compiled Triton kernels on a CUDA GPU (`make gpu-check`).

The checks live in kernels/gpu_check.py so that they also run without pytest; here each is one
test. They need the interpreter off: run this file in its own process (gpu_check does).
"""

import os

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="interpreter is on"),
]


def _checks():
    if not torch.cuda.is_available():
        return []
    from kernels import gpu_check

    return gpu_check.CHECKS


@pytest.mark.parametrize("check", _checks(), ids=lambda f: f.__name__)
def test_gpu_check(check):
    from kernels.gpu_check import Skip

    try:
        print(check())
    except Skip as err:  # reported as skipped, never as passed
        pytest.skip(str(err))
