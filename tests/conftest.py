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
    """Give every test the global grad mode and mode stacks it found, whatever the test left.

    The sweep's time limit raises from a signal handler between any two bytecodes, and so can
    interrupt a context manager's __enter__ after it changed global state but before its __exit__
    was armed (torch.no_grad: grad mode left off; a TorchDispatchMode: left on the stack). A cell
    timed out at 1 ms (tests/test_sweep_reliability.py) once left grad mode off, and 13 later
    tests failed with "element 0 of tensors does not require grad". The sweep itself does not
    restore this yet (a later cell in the same process would see it); this keeps tests independent.
    """
    from torch.overrides import _get_current_function_mode_stack
    from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

    grad = torch.is_grad_enabled()
    dispatch_depth = len(_get_current_dispatch_mode_stack())
    function_depth = len(_get_current_function_mode_stack())
    yield
    torch.set_grad_enabled(grad)
    while len(_get_current_dispatch_mode_stack()) > dispatch_depth:
        torch._C._pop_torch_dispatch_stack()
    while len(_get_current_function_mode_stack()) > function_depth:
        torch._C._pop_torch_function_stack()
