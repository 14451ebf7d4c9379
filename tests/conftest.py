import os

import pytest
import torch

# Without a GPU the Triton kernels run in Triton's interpreter on CPU tensors. It must be switched
# on before triton is first imported (kernels imports it through torch.utils.flop_counter).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _torch_global_state():
    """Give every test the global torch state it found (study.sweep.restored_torch_state: the
    sweep's time limit can interrupt a context manager's __enter__ and leave grad mode off)."""
    from study.sweep import restored_torch_state

    with restored_torch_state():
        yield
