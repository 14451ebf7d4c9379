"""The calling thread's floating-point control state, read through C's `fegetenv`.

Loading a shared library can change it for the whole process (gcc's crtfastmath.o turns on
flush-to-zero and denormals-are-zero); the tests check that no backend of ours does.
"""

import ctypes
import ctypes.util
import platform

_FENV_BYTES = 64  # larger than fenv_t on every glibc/musl/macOS target
_MXCSR_OFFSET = 28  # x86-64 glibc fenv_t: x87 state (28 bytes), then the SSE control register
_MXCSR_FLAGS = 0x3F  # sticky exception flags: set by arithmetic, not part of the mode


def _libm() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("m")
    return ctypes.CDLL(name) if name else None


def fp_control() -> dict[str, int] | None:
    """The rounding, flush-to-zero and exception-mask settings now in force, or None if unknown.

    On x86-64 Linux: {"mxcsr": ..., "x87_control": ...} with the sticky exception flags cleared, so
    two reads compare equal unless a mode changed (FTZ is bit 15 of MXCSR, DAZ bit 6).
    """
    libm = _libm()
    if libm is None or platform.machine() not in ("x86_64", "AMD64"):
        return None
    env = ctypes.create_string_buffer(_FENV_BYTES)
    if libm.fegetenv(env) != 0:
        return None
    raw = env.raw
    mxcsr = int.from_bytes(raw[_MXCSR_OFFSET : _MXCSR_OFFSET + 4], "little")
    return {"mxcsr": mxcsr & ~_MXCSR_FLAGS, "x87_control": int.from_bytes(raw[0:2], "little")}


def flush_to_zero(mxcsr: int) -> bool:
    """Whether MXCSR has flush-to-zero (bit 15) or denormals-are-zero (bit 6) on."""
    return bool(mxcsr & (1 << 15) or mxcsr & (1 << 6))
