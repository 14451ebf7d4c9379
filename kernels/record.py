"""Record the selective-scan calls a forward makes, and replay them.

`ScanRecorder` is a TorchDispatchMode: inside it, every `torch.ops.kernels.selective_scan` call is
noted as a `ScanCall` (shapes, strides, dtype, options, backend; and its time when asked) and then
run. `replay` makes fresh inputs with exactly the recorded shapes and strides and returns a call
of `kernels.selective_scan` on them; `contiguous_call` is the same call with dense inputs in the
forward direction, the layout `make bench` always timed. A gap between the two is the cost of
the layout the model passes.
"""

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from kernels.testing import make_scan_inputs

SEQUENCES = ("u", "delta", "z")  # (batch, D, L) inputs, whose layout the models choose


@dataclass(frozen=True)
class ScanCall:
    """One `kernels::selective_scan` call: what the kernel saw, not the values."""

    batch: int
    dim: int
    d_state: int
    length: int
    groups: int | None  # B/C groups; None for (batch, N, L)
    dtype: str
    gated: bool  # z given
    has_d: bool
    has_bias: bool
    delta_softplus: bool
    reverse: bool
    backend: str
    strides: dict[str, tuple[int, ...]]  # u, delta, (z): strides in elements
    ms: float | None = None  # time of the call, when recorded with time_calls=True

    def key(self) -> tuple:
        """Everything but the time: calls with equal keys are the same call."""
        fields = (getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "ms")
        return tuple(tuple(sorted(v.items())) if isinstance(v, dict) else v for v in fields)

    def describe(self) -> str:
        """e.g. `1x384x4097 N=16 gated reverse strided(z)`."""
        shape = (self.batch, self.dim, self.length)
        dense = torch.empty(shape).stride()

        def strided(stride: tuple[int, ...]) -> bool:  # a size-1 dimension's stride is moot
            return any(s != d for s, d, n in zip(stride, dense, shape, strict=True) if n > 1)

        odd = [k for k, s in self.strides.items() if strided(s)]
        parts = [f"{self.batch}x{self.dim}x{self.length}", f"N={self.d_state}"]
        parts += [f"G={self.groups}"] if self.groups else []
        parts += ["gated"] if self.gated else []
        parts += ["reverse"] if self.reverse else []
        parts += [f"strided({','.join(odd)})"] if odd else []
        return " ".join(parts)

    def to_dict(self) -> dict:
        strides = {k: list(v) for k, v in self.strides.items()}
        return {**dataclasses.asdict(self), "strides": strides}

    @classmethod
    def from_dict(cls, d: dict) -> "ScanCall":
        fields = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in fields}
        return cls(**{**d, "strides": {k: tuple(v) for k, v in d["strides"].items()}})


def _describe_args(func, args: tuple, kwargs: dict) -> ScanCall:
    names = [a.name for a in func._schema.arguments]
    a = {**dict(zip(names, args, strict=False)), **kwargs}
    u, B = a["u"], a["B"]
    return ScanCall(
        batch=u.shape[0], dim=u.shape[1], d_state=a["A"].shape[1], length=u.shape[2],
        groups=B.shape[1] if B.dim() == 4 else None, dtype=str(u.dtype).removeprefix("torch."),
        gated=a["z"] is not None, has_d=a["D"] is not None, has_bias=a["delta_bias"] is not None,
        delta_softplus=bool(a["delta_softplus"]), reverse=bool(a["reverse"]),
        backend=a["backend"],
        strides={k: tuple(a[k].stride()) for k in SEQUENCES if a[k] is not None},
    )  # fmt: skip


class ScanRecorder(TorchDispatchMode):
    """`with ScanRecorder() as rec: model(x)`, then `rec.calls` (in call order)."""

    def __init__(self, time_calls: bool = False) -> None:
        super().__init__()
        self.time_calls = time_calls
        self.calls: list[ScanCall] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not torch.ops.kernels.selective_scan.default:
            return func(*args, **kwargs)
        call = _describe_args(func, args, kwargs)
        start = time.perf_counter()
        out = func(*args, **kwargs)
        if self.time_calls:
            if call.strides and args[0].device.type == "cuda":
                torch.cuda.synchronize()
            call = dataclasses.replace(call, ms=(time.perf_counter() - start) * 1e3)
        self.calls.append(call)
        return out

    def grouped(self) -> dict[tuple, list[ScanCall]]:
        """Calls by `ScanCall.key()`, in order of first appearance."""
        groups: dict[tuple, list[ScanCall]] = {}
        for call in self.calls:
            groups.setdefault(call.key(), []).append(call)
        return groups


def contiguous_call(call: ScanCall) -> ScanCall:
    """The same call with dense inputs, scanning forwards."""
    dense = torch.empty(call.batch, call.dim, call.length).stride()
    strides = dict.fromkeys(call.strides, dense)
    return dataclasses.replace(call, reverse=False, strides=strides, ms=None)


def _strided_like(t: torch.Tensor, stride: tuple[int, ...]) -> torch.Tensor:
    """t's values in a tensor of the same shape with `stride` (storage as large as it needs)."""
    out = torch.empty_strided(t.shape, stride, dtype=t.dtype, device=t.device)
    return out.copy_(t)


def replay(call: ScanCall, device: str | torch.device = "cpu") -> Callable[[], torch.Tensor]:
    """A call of `kernels.selective_scan` on fresh inputs with the recorded shapes and strides."""
    x = make_scan_inputs(call.batch, call.dim, call.d_state, call.length, call.groups,
                         dtype=getattr(torch, call.dtype), device=device)  # fmt: skip
    for name in SEQUENCES:
        x[name] = _strided_like(x[name], call.strides[name]) if name in call.strides else None
    x["D"] = x["D"] if call.has_d else None
    x["delta_bias"] = x["delta_bias"] if call.has_bias else None
    import kernels

    def run() -> torch.Tensor:
        return kernels.selective_scan(**x, delta_softplus=call.delta_softplus,
                                      reverse=call.reverse, backend=call.backend)  # fmt: skip

    return run
