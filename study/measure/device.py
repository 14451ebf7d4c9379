"""What a row needs to know about the machine: its name, a tag for the rows folder, its memory."""

import platform
import re
from functools import lru_cache
from pathlib import Path

import torch

MIB = 2**20


@lru_cache
def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


PREDICTED_CUDA = "cuda (predicted without a GPU: CUDA caching allocator model)"


def _cuda_predicted(device: str) -> bool:
    """A CUDA device asked for on a machine without one: its rows are predictions only."""
    return torch.device(device).type == "cuda" and not torch.cuda.is_available()


def device_name(device: str) -> str:
    """ "cpu (2 threads, AMD EPYC 7B13)" or the GPU's name, e.g. "NVIDIA H200"; without a GPU,
    `PREDICTED_CUDA` for "cuda" (predicted memory and GMACs only: study/measure/cuda_memory.py)."""
    if _cuda_predicted(device):
        return PREDICTED_CUDA
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({torch.get_num_threads()} threads, {_cpu_model()})"


def device_tag(device: str) -> str:
    """A folder name for this kind of device: "cpu-2t-amd-epyc-7b13", "cuda-nvidia-h200";
    "cuda-predicted" for CUDA predicted on a machine without a GPU."""
    if _cuda_predicted(device):
        return "cuda-predicted"
    if torch.device(device).type == "cuda":
        name = f"cuda-{torch.cuda.get_device_name(torch.device(device))}"
    else:
        name = f"cpu-{torch.get_num_threads()}t-{_cpu_model()}"
    name = re.sub(r"\(r\)|\(tm\)|cpu @.*|processor", "", name.lower())
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-")


def memory_mib(device: str) -> float:
    """Memory a cell may use: CPU MemAvailable now, or the GPU's total memory (unbounded for a
    CUDA device predicted without a GPU: nothing runs, set memory_limit_mib to bound it)."""
    if _cuda_predicted(device):
        return float("inf")
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_properties(torch.device(device)).total_memory / MIB
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("inf")
