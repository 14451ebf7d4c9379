"""Memory a custom op allocates inside its implementation and frees before it returns.

A `TorchDispatchMode` sees an op's inputs and outputs, never what the implementation allocates
on the way (contiguous copies, transposed layouts, per-thread partial sums): those are invisible
both on fake tensors (the fake implementation runs below the mode) and on real ones (the
implementation runs with the mode popped). Each op of ours registers a formula here, beside its
fake implementation, computed from the same arguments the implementation sees, so that a memory
tracker can add it to the live memory at the moment of the call:

    peak during the call = live memory before + outputs + workspace_bytes(op, args, kwargs)
"""

from collections.abc import Callable

import torch

_FORMULAS: dict[object, Callable[..., int]] = {}


def register_workspace_formula(op) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Decorator: `formula(*args, **kwargs) -> bytes` for the OpOverloadPacket `op`."""

    def register(formula: Callable[..., int]) -> Callable[..., int]:
        _FORMULAS[op] = formula
        return formula

    return register


def workspace_bytes(func, args: tuple, kwargs: dict) -> int:
    """Bytes `func` (an OpOverload) allocates internally for these arguments; 0 if none known."""
    formula = _FORMULAS.get(getattr(func, "overloadpacket", func))
    return 0 if formula is None else int(formula(*args, **kwargs))


def nbytes(t: torch.Tensor | None, dtype: torch.dtype | None = None) -> int:
    """Bytes of a dense copy of `t` (in `dtype` if given); 0 for None."""
    if t is None:
        return 0
    return t.numel() * (dtype or t.dtype).itemsize


def copy_bytes(t: torch.Tensor | None, dtype: torch.dtype) -> int:
    """Bytes that `t.to(dtype).contiguous()` allocates: 0 when it returns `t` itself."""
    if t is None or (t.dtype == dtype and t.is_contiguous()):
        return 0
    return nbytes(t, dtype)
