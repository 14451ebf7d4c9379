"""The operating system's view of memory, and the kernel workspaces the prediction adds."""

import math

import pytest
import torch

import study.models as zoo
from kernels.ops.selective_scan import cpu
from kernels.testing import ScanCall
from study.measure import peak_memory
from study.measure import rss as rss_module
from study.measure.rss import os_peak_memory, unavailable_reason

needs_os = pytest.mark.skipif(bool(unavailable_reason()), reason=unavailable_reason() or "ok")


@needs_os
def test_scan_call_prediction_matches_os():
    """A Vim-S-sized scan call with strided delta and z: the fake-tensor prediction, which adds
    the CPU backend's registered workspace (contiguous copies, group-major B and C), is within 5%
    of the resident-set growth the OS sees (measured: 51.7 against 51.7 MiB; 27.1 MiB, 48% short,
    without the workspace)."""
    if not cpu.available():
        pytest.skip("no C compiler: the CPU scan is not built")
    torch.manual_seed(0)
    call = ScanCall(batch=1, dim=768, n_state=16, length=4097)
    pred = peak_memory(call, 8, mode="predicted")
    os_mib = os_peak_memory(call, 8)["rss_activations_mib"]
    # u's contiguous copy is made inside forward, before the op: both count it.
    assert pred["activations_mib"] == pytest.approx(os_mib, rel=0.05)


@needs_os
def test_measured_cpu_memory_reports_the_os_view():
    model = zoo.create("test_vit", 64)
    mem = peak_memory(model, 64, 2, mode="measured")
    assert mem["rss_note"] == ""
    assert mem["rss_activations_mib"] > 0
    assert mem["rss_peak_mib"] > mem["rss_activations_mib"]
    # a sanity bound, not a tolerance: the OS can see more than the tracker, never 10x less
    assert mem["rss_activations_mib"] > 0.1 * mem["activations_mib"]
    assert "rss_activations_mib" not in peak_memory(model, 64, 2, mode="measured", rss=False)


def test_os_memory_says_why_when_the_platform_cannot(monkeypatch):
    monkeypatch.setattr(rss_module, "unavailable_reason", lambda: "no /proc here")
    got = os_peak_memory(zoo.create("test_vit", 64), 64)
    assert math.isnan(got["rss_activations_mib"]) and math.isnan(got["rss_peak_mib"])
    assert got["rss_note"] == "no /proc here"
