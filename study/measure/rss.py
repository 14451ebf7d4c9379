"""Peak memory of one CPU forward as the operating system sees it: resident-set growth.

The dispatcher tracker (`memory.StorageTracker`) sees the storages PyTorch ops return; it cannot
see what an op allocates inside (oneDNN reorders and scratchpads, a custom op's copies) nor the
allocator's overhead. The OS sees all of it. Procedure, in a fresh interpreter per measurement:

1. glibc is told to serve every block over 64 KiB with mmap and to give freed memory back at once
   (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_), so the resident set follows live memory
   instead of glibc's cache of freed blocks (without this, a second forward reuses the first one's
   freed pages and its growth reads a fraction of the truth);
2. the model (pickled by the caller) is loaded and one warm-up forward runs at the same shape
   (kernel selection, one-time buffers, the scan library);
3. freed heap is trimmed, the high-water mark is reset (`/proc/self/clear_refs`, Linux >= 4.0) and
   the resident set read; the input already exists, so it is not counted;
4. one forward; its output is still alive when VmHWM is read, as in the tracker.

`train=True` measures a training step instead (train_step.py: forward, cross-entropy, backward,
AdamW step): the warm-up step creates AdamW's state, so the resident set before the measured step
holds weights, optimizer state and input, and its growth is the step's activations, gradients and
temporaries (train_step's `activations_mib`).

`rss_activations_mib` = VmHWM - VmRSS before the forward; `rss_peak_mib` = VmHWM, the whole
process (interpreter, libraries, weights, input and activations): what `top` would show.
"""

import ctypes
import gc
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn as nn

MIB = 2**20
_GLIBC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "65536"}
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the folder that holds study/ and kernels/


def unavailable_reason() -> str:
    """Why this platform cannot give the OS figure, or "" when it can."""
    if not sys.platform.startswith("linux"):
        return f"resident-set peak needs Linux's /proc (this is {sys.platform})"
    if not os.access(_CLEAR_REFS, os.W_OK):
        return "/proc/self/clear_refs is not writable: the high-water mark cannot be reset"
    return ""


def os_peak_memory(
    model: nn.Module,
    img_size: int,
    batch: int = 1,
    precision: str = "float32",
    channels_last: bool = False,
    in_chans: int = 3,
    scan_backend: str = "auto",
    timeout_s: float | None = None,
    train: bool = False,
) -> dict[str, float | str]:
    """Resident-set growth of one forward (`train=True`: one training step) of `model` (on the
    CPU) in a fresh process.

    Returns {"rss_activations_mib", "rss_peak_mib", "rss_note"}; where the platform cannot give
    the figure, both numbers are NaN and the note says why.
    """
    reason = unavailable_reason()
    if reason:
        return {"rss_activations_mib": math.nan, "rss_peak_mib": math.nan, "rss_note": reason}
    with tempfile.TemporaryDirectory(prefix="rss-") as tmp:
        model_path = Path(tmp) / "model.pt"
        torch.save(model, model_path)
        spec = {
            "model_path": str(model_path),
            "shape": [batch, in_chans, img_size, img_size],
            "precision": precision,
            "channels_last": channels_last,
            "threads": torch.get_num_threads(),
            "scan_backend": scan_backend,
            "train": train,
        }
        path = os.pathsep.join(filter(None, [str(_PROJECT_ROOT), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, **_GLIBC_ENV, "PYTHONPATH": path}
        done = subprocess.run(
            [sys.executable, "-m", "study.measure.rss", json.dumps(spec)],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout_s,
        )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or ["no message"]
        raise RuntimeError(f"OS memory measurement failed: {lines[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _status_kib(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} missing from {_STATUS}")


def _measure(spec: dict) -> dict[str, float | str]:
    """The child's side: warm-up, trim, reset the high-water mark, one forward."""
    import kernels
    from study.measure.memory import _autocast

    torch.set_num_threads(spec["threads"])
    model = torch.load(spec["model_path"], weights_only=False).eval()
    fmt = torch.channels_last if spec["channels_last"] else torch.contiguous_format
    x = torch.randn(spec["shape"]).contiguous(memory_format=fmt)
    libc = ctypes.CDLL(None)
    if spec.get("train"):
        return _measure_train(model, x, spec, libc)
    with kernels.use_backend(spec["scan_backend"]), torch.no_grad():
        with _autocast("cpu", spec["precision"]):
            model(x)
        gc.collect()
        libc.malloc_trim(0)
        _CLEAR_REFS.write_text("5")  # VmHWM := VmRSS
        base_kib = _status_kib("VmRSS")
        with _autocast("cpu", spec["precision"]):  # a fresh region, as in the tracker
            out = model(x)
        peak_kib = _status_kib("VmHWM")
        del out
    return {
        "rss_activations_mib": (peak_kib - base_kib) / 1024,
        "rss_peak_mib": peak_kib / 1024,
        "rss_note": "",
    }


def _measure_train(model: nn.Module, x: torch.Tensor, spec: dict, libc) -> dict[str, float | str]:
    """The child's side for a training step: a warm-up step (AdamW's state appears), trim,
    reset the high-water mark, one step."""
    import kernels
    from study.measure.train_step import make_optimizer, train_step

    model.train()
    target = torch.zeros(x.shape[0], dtype=torch.long)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad])
    with kernels.use_backend(spec["scan_backend"]):
        train_step(model, x, target, optimizer, spec["precision"])
        gc.collect()
        libc.malloc_trim(0)
        _CLEAR_REFS.write_text("5")  # VmHWM := VmRSS
        base_kib = _status_kib("VmRSS")
        train_step(model, x, target, optimizer, spec["precision"])
        peak_kib = _status_kib("VmHWM")
    return {
        "rss_activations_mib": (peak_kib - base_kib) / 1024,
        "rss_peak_mib": peak_kib / 1024,
        "rss_note": "",
    }


if __name__ == "__main__":
    print(json.dumps(_measure(json.loads(sys.argv[1]))))
