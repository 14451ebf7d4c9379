"""Fast CPU selective scan: a vectorised C loop (gcc + OpenMP + glibc libmvec), built on first use.

Why a compiled loop: the scan's cost is one exp per state element (batch*D*L*N); a loop that keeps
the state in registers does just that, while PyTorch-level chunked forms move the (batch, D, L, N)
tensors through memory several times. Measurements behind the choice: README.md.

The C source is `cpu_scan.c` beside this file (package data); the shared library is built from a
small wrapper that includes it twice (float, double) with the system C compiler (`$CC`, else `cc`)
into `$KERNELS_CACHE_DIR` (default ~/.cache/vision-scaling-kernels), keyed by source, flags and
CPU. Compiler messages name lines of `cpu_scan.c`.

Inputs u, delta and z are read in place whatever their strides (the chunked, transposed or
channels-last views the models pass); unit stride along L, or along the channels, is fast.
Without a compiler `available()` is False and `kernels.selective_scan(backend="auto")` falls back to
the reference with a warning.
"""

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from kernels.ops.selective_scan.ops import CHUNK  # steps between the states kept for the backward
from kernels.workspace import copy_bytes, nbytes

SOURCE_PATH = Path(__file__).with_name("cpu_scan.c")
# Compile with -ffast-math, link without it: gcc links crtfastmath.o into any object *linked* with
# -ffast-math, and its constructor turns on flush-to-zero and denormals-are-zero (MXCSR on x86,
# FPCR on Arm) for the whole process the moment the library is loaded. Compiled code keeps every
# fast-math optimisation; the process's floating-point environment stays as it was.
_FLAGS = ["-O3", "-march=native", "-ffast-math", "-fopenmp", "-fPIC", "-std=gnu11"]
_LINK = ["-shared", "-fopenmp"]
_LIBS = ["-lmvec", "-lm"]
_lib: ctypes.CDLL | None = None
_build_error: str | None = None


def lanes() -> int:
    """Channels per task (VB in the C code): one vector register of floats for the backward.

    The backward keeps a dozen VB-wide vectors live per step (adjoint states, dA and A of NB = 4
    states, partial sums). With AVX-512 (32 registers of 16 floats) VB = 16 fits; with AVX2 (16
    registers of 8 floats) each VB = 16 vector takes two registers and gcc spills to the stack:
    measured on a 2-core AMD EPYC (AVX2), Vim-S at 1248 px (D=768, N=16, L=6085, one call,
    forward+backward through autograd): 199 ms with VB = 16, 136 ms with VB = 8 (forward 36, 39 ms).
    """
    return 16 if "avx512f" in _cpu_id().split() else 8


def _instantiate() -> str:
    """The wrapper compiled: `cpu_scan.c` included once per element type."""
    include = f'#include "{SOURCE_PATH.resolve()}"\n'
    parts = [f"#define VB {lanes()}\n#define K {CHUNK}\n"]
    names = ("REAL", "IREAL", "EXP", "LOG1P")  # element, same-width int (shuffle masks), math
    for values, suffix in ((("float", "int32_t", "expf", "log1pf"), "f32"),
                           (("double", "int64_t", "exp", "log1p"), "f64")):  # fmt: skip
        parts += [f"#define {name} {value}\n" for name, value in zip(names, values, strict=True)]
        parts.append(
            "#define CAT_(a, b) a##_##b\n#define CAT(a, b) CAT_(a, b)\n"
            f"#define FN(x) CAT(x, {suffix})\n"
        )
        parts.append(include)
        parts += [f"#undef {name}\n" for name in (*names, "FN", "CAT", "CAT_")]
    return "".join(parts)


def _cpu_id() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
        flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
    except OSError:
        flags = ""
    return platform.machine() + platform.processor() + flags


def _build() -> ctypes.CDLL:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler found (set $CC)")
    source = _instantiate()
    text = source + SOURCE_PATH.read_text()
    flags = " ".join(_FLAGS + _LINK + _LIBS)
    key = hashlib.sha256((text + flags + cc + _cpu_id()).encode()).hexdigest()
    cache = Path(os.environ.get("KERNELS_CACHE_DIR", Path.home() / ".cache/vision-scaling-kernels"))
    cache.mkdir(parents=True, exist_ok=True)
    so = cache / f"selective_scan_{key[:16]}.so"
    if not so.exists():  # once per machine and source: say so, it takes about half a minute
        print(f"kernels: compiling the CPU selective scan into {so} (once, about 30 s)",
              file=sys.stderr, flush=True)  # fmt: skip
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            src, obj, out = (Path(tmp) / name for name in ("scan_wrapper.c", "scan.o", "scan.so"))
            src.write_text(source)
            for command in ([cc, *_FLAGS, "-c", str(src), "-o", str(obj)],
                            [cc, *_LINK, str(obj), "-o", str(out), *_LIBS]):  # fmt: skip
                subprocess.run(command, check=True, capture_output=True, text=True)
            os.replace(out, so)  # atomic: concurrent builders never load a half-written file
    lib = ctypes.CDLL(str(so))
    for suffix in ("f32", "f64"):
        getattr(lib, f"scan_fwd_{suffix}").restype = None
        getattr(lib, f"scan_bwd_{suffix}").restype = None
    return lib


def library() -> ctypes.CDLL:
    """The compiled scan library; RuntimeError (with the compiler's message) if it can't build."""
    global _lib, _build_error
    if _lib is None and _build_error is None:
        try:
            _lib = _build()
        except (RuntimeError, OSError, subprocess.CalledProcessError) as err:
            detail = getattr(err, "stderr", "") or str(err)
            _build_error = f"could not build the CPU selective scan: {detail.strip()[:2000]}"
    if _lib is None:
        raise RuntimeError(_build_error)
    return _lib


def available() -> bool:
    """True when the C scan builds and loads on this machine."""
    try:
        library()
    except RuntimeError as err:
        message = f"{err}; backend='cpu' unavailable, 'auto' uses the slow reference"
        warnings.warn(message, stacklevel=2)
        return False
    return True


_PAGE_2M = 2**21
_MADV_HUGEPAGE = 14  # Linux
_libc = ctypes.CDLL(None) if sys.platform.startswith("linux") else None


def _empty(*shape: int, dtype: torch.dtype) -> torch.Tensor:
    """torch.empty, with Linux asked for 2 MiB pages (madvise) when the tensor spans several.

    A fresh (batch, D, L) output is mapped on first touch; in 4 KiB pages that costs about as much
    as the scan itself at 1248 px (measured: 5.4 ms for 18.7 MB, 0.3 ms with 2 MiB pages).
    """
    t = torch.empty(*shape, dtype=dtype)
    nbytes = t.numel() * t.element_size()
    if _libc is not None and nbytes >= 4 * _PAGE_2M:
        start = -(-t.data_ptr() // _PAGE_2M) * _PAGE_2M
        end = (t.data_ptr() + nbytes) // _PAGE_2M * _PAGE_2M
        _libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_HUGEPAGE)
    return t  # madvise is advice: a kernel without transparent huge pages ignores it


def _ptr(t: torch.Tensor | None) -> ctypes.c_void_p:
    return ctypes.c_void_p(None if t is None else t.data_ptr())


def _suffix(acc: torch.dtype) -> str:
    return "f64" if acc == torch.float64 else "f32"


def _acc(u: torch.Tensor) -> torch.dtype:
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def _group_major(B: torch.Tensor, acc: torch.dtype, reverse: bool) -> torch.Tensor:
    """(batch, N, L) or (batch, G, N, L) -> contiguous (batch, G, L, N) for per-step loads, in scan
    order (flipped for a reverse scan: the C loop then reads both directions upwards)."""
    if B.dim() == 3:
        B = B.unsqueeze(1)
    B = B.to(acc).transpose(-1, -2).contiguous()
    return B.flip(-2) if reverse else B  # B is small: (batch, G, L, N) against (batch, D, L)


def _rows(t: torch.Tensor | None, acc: torch.dtype) -> torch.Tensor | None:
    """(batch, D, L) as the C loop reads it: in `acc`, any strides (no copy when t is in acc)."""
    return None if t is None else t.detach().to(acc)


def _strides(*ts: torch.Tensor | None) -> ctypes.Array:
    """(batch, channel, step) strides in elements of each (batch, D, L) input; 0s if absent."""
    flat = [s for t in ts for s in ((0, 0, 0) if t is None else t.stride())]
    return (ctypes.c_int64 * len(flat))(*flat)


def fwd(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, reverse=False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward on CPU tensors; shapes as in `kernels.selective_scan`.

    Returns y (batch, D, L) in u's dtype, the last state (batch, D, N) and the chunk states
    (batch, D, ceil(L / CHUNK) + 1, N) that the backward starts from (both float32, or float64).
    """
    acc = _acc(u)
    batch, dim, length = u.shape

    def dense(t):
        return None if t is None else t.detach().to(acc).contiguous()

    A_, D_, bias_ = map(dense, (A, D, delta_bias))
    u_, delta_, z_ = (_rows(t, acc) for t in (u, delta, z))
    Bm, Cm = (_group_major(t.detach(), acc, reverse) for t in (B, C))
    y = _empty(batch, dim, length, dtype=acc)
    ckpt = _empty(batch, dim, -(-length // CHUNK) + 1, A.shape[1], dtype=acc)
    if not y.numel():  # L = 0: the final state is the zero initial one
        ckpt.zero_()
    else:  # writes every chunk state and the final one
        fn = getattr(library(), f"scan_fwd_{_suffix(acc)}")
        i64 = ctypes.c_int64
        fn(*map(_ptr, (u_, delta_, bias_, A_, Bm, Cm, D_, z_)), _strides(u_, delta_, z_),
           i64(batch), i64(dim), i64(length), i64(A.shape[1]), i64(Bm.shape[1]),
           ctypes.c_int(int(delta_softplus)), ctypes.c_int(int(reverse)),
           _ptr(y), _ptr(ckpt), ctypes.c_int(torch.get_num_threads()))  # fmt: skip
    return y.to(u.dtype), ckpt[:, :, -1].clone(), ckpt


def bwd(
    grad_y, grad_last, ckpt, u, delta, A, B, C, D=None, z=None, delta_bias=None,
    delta_softplus=False, reverse=False,
) -> tuple[torch.Tensor | None, ...]:  # fmt: skip
    """Gradients (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias) from the forward's chunk states."""
    acc = _acc(u)
    batch, dim, length = u.shape
    n, groups = A.shape[1], (1 if B.dim() == 3 else B.shape[1])
    threads = torch.get_num_threads()

    def dense(t):
        return None if t is None else t.detach().to(acc).contiguous()

    A_, D_, bias_, gy, gl, ckpt = map(dense, (A, D, delta_bias, grad_y, grad_last, ckpt))
    u_, delta_, z_ = (_rows(t, acc) for t in (u, delta, z))
    Bm, Cm = (_group_major(t.detach(), acc, reverse) for t in (B, C))
    du, ddelta = _empty(batch, dim, length, dtype=acc), _empty(batch, dim, length, dtype=acc)
    dz = _empty(batch, dim, length, dtype=acc) if z is not None else None
    dA = torch.zeros(batch, dim, n, dtype=acc)
    dD, dbias = torch.zeros(batch, dim, dtype=acc), torch.zeros(batch, dim, dtype=acc)
    dBm, dCm = (torch.zeros(threads, batch, groups, length, n, dtype=acc) for _ in range(2))
    if du.numel():
        fn = getattr(library(), f"scan_bwd_{_suffix(acc)}")
        i64 = ctypes.c_int64
        fn(*map(_ptr, (u_, delta_, bias_, A_, Bm, Cm, D_, z_)), _strides(u_, delta_, z_),
           *map(_ptr, (ckpt, gy, gl)),
           i64(batch), i64(dim), i64(length), i64(n), i64(groups),
           ctypes.c_int(int(delta_softplus)), ctypes.c_int(int(reverse)),
           *map(_ptr, (du, ddelta, dz, dA, dD, dbias, dBm, dCm)),
           ctypes.c_int(threads))  # fmt: skip
    dB, dC = (t.sum(0).transpose(-1, -2) for t in (dBm, dCm))  # (batch, G, N, L), scan order
    if reverse:
        dB, dC = dB.flip(-1), dC.flip(-1)
    if B.dim() == 3:
        dB, dC = dB.squeeze(1), dC.squeeze(1)
    return (
        du.to(u.dtype),
        ddelta.to(delta.dtype),
        dA.sum(0).to(A.dtype),
        dB.to(B.dtype),
        dC.to(C.dtype),
        None if D is None else dD.sum(0).to(D.dtype),
        None if z is None else dz.to(z.dtype),
        None if delta_bias is None else dbias.sum(0).to(delta_bias.dtype),
    )


# Workspace: what `fwd` and `bwd` allocate besides the op's outputs (kernels/workspace.py). Each
# term mirrors an allocation above; the C loop's own per-thread tiles (under 0.2 MiB a thread)
# are left out.


def _group_major_bytes(B: torch.Tensor, acc: torch.dtype, reverse: bool) -> int:
    """Bytes `_group_major(B, acc, reverse)` keeps: one copy unless B is already in that layout."""
    BT = (B.unsqueeze(1) if B.dim() == 3 else B).transpose(-1, -2)
    copied = B.dtype != acc or not BT.is_contiguous() or reverse
    return nbytes(B, acc) if copied else 0


def _rows_bytes(t: torch.Tensor | None, acc: torch.dtype) -> int:
    """Bytes `_rows(t, acc)` allocates: a copy only to change the dtype (strides are read as
    they are)."""
    return 0 if t is None or t.dtype == acc else nbytes(t, acc)


def fwd_workspace_bytes(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, reverse=False
) -> int:
    """Bytes `fwd` holds at its peak besides y, the last state and the chunk states."""
    acc = _acc(u)
    total = sum(copy_bytes(t, acc) for t in (A, D, delta_bias))
    total += sum(_rows_bytes(t, acc) for t in (u, delta, z))
    total += _group_major_bytes(B, acc, reverse) + _group_major_bytes(C, acc, reverse)
    return total + (0 if u.dtype == acc else nbytes(u, acc))  # y before its cast


def bwd_workspace_bytes(
    grad_y, grad_last, ckpt, u, delta, A, B, C, D=None, z=None, delta_bias=None,
    delta_softplus=False, reverse=False,
) -> int:  # fmt: skip
    """Bytes `bwd` holds at its peak besides the gradients it returns."""
    acc = _acc(u)
    batch, dim, length = u.shape
    n, groups = A.shape[1], (1 if B.dim() == 3 else B.shape[1])
    total = sum(copy_bytes(t, acc) for t in (A, D, delta_bias, grad_y, grad_last, ckpt))
    total += sum(_rows_bytes(t, acc) for t in (u, delta, z))
    total += _group_major_bytes(B, acc, reverse) + _group_major_bytes(C, acc, reverse)
    total += (batch * dim * n + 2 * batch * dim) * acc.itemsize  # dA, dD, dbias per batch
    partial = batch * groups * length * n * acc.itemsize  # one thread's dB (or dC)
    total += 2 * torch.get_num_threads() * partial  # per-thread dB and dC, summed at the end
    if u.dtype != acc:  # du, ddelta, dz before their cast
        total += (2 + (z is not None)) * nbytes(u, acc)
    return total
