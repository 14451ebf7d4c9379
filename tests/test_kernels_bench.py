"""The kernel benchmark's protocol and output, at toy sizes (its numbers are not checked here)."""

import csv
import json

import torch

from kernels import bench


def test_paired_times_interleave_the_calls():
    calls = []
    times = bench.paired_times_ms([lambda: calls.append("a"), lambda: calls.append("b")],
                                  torch.device("cpu"), repeats=3, warmup=1)  # fmt: skip
    assert calls == ["a", "b"] * 4  # one warm-up round, then three timed rounds
    assert [len(t) for t in times] == [3, 3]
    assert all(ms >= 0 for t in times for ms in t)


def test_fwd_bwd_call_makes_the_upstream_gradient_once(monkeypatch):
    made = []
    ones_like = torch.ones_like
    monkeypatch.setattr(torch, "ones_like", lambda t: made.append(t.shape) or ones_like(t))
    x = {"u": torch.randn(3, requires_grad=True)}
    run = bench.fwd_bwd_call(lambda: x["u"] * 2, x)
    for _ in range(3):
        (grad,) = run()
        assert torch.equal(grad, torch.full((3,), 2.0))
    assert made == [torch.Size([3])]


def test_main_writes_both_passes_for_every_backend(tmp_path):
    args = ["--img-sizes", "32", "--layers", "vim_tiny", "vmamba_tiny.s0", "--repeats", "2"]
    rows = bench.main([*args, "--out-dir", str(tmp_path), "--release-memory"])
    with (tmp_path / "kernels_cpu.csv").open() as f:
        written = list(csv.DictReader(f))
    assert len(written) == len(rows) == 2 * 2 * 2  # 2 layers x 2 backends x 2 passes
    for row in written:
        assert row["status"] == "ok" and float(row["median_ms"]) > 0
        assert float(row["ms_over_bound"]) > 0 and float(row["speedup_vs_reference"]) > 0
        assert (row["over_fwd"] != "") == (row["pass"] == "fwd+bwd")
    assert {(r["layer"], r["backend"], r["pass"]) for r in written} == {
        (layer, backend, kind)
        for layer in ("vim_tiny@32", "vmamba_tiny.s0@32")
        for backend in ("reference", "cpu")
        for kind in ("fwd", "fwd+bwd")
    }


def test_a_pass_out_of_memory_keeps_the_other(monkeypatch):
    """If the pair does not fit, each pass is timed alone: the forward's row survives."""
    alone = []

    def fake_times(fns, device, repeats, warmup):
        if len(fns) == 2:
            raise torch.OutOfMemoryError("pair")
        alone.append(fns[0])
        if len(alone) % 2 == 0:  # the second pass of each backend: forward+backward
            raise torch.OutOfMemoryError("fwd+bwd")
        return [[1.0] * repeats]

    monkeypatch.setattr(bench, "paired_times_ms", fake_times)
    layer = bench.Layer("toy", dim=4, d_state=2, length=5, groups=None, gated=True)
    rows = bench.bench_layer(layer, 1, torch.device("cpu"), 2, 10.0, {"name": "cpu"})
    status = {(r["backend"], r["pass"]): r["status"] for r in rows}
    assert status == {("reference", "fwd"): "ok", ("cpu", "fwd"): "ok",
                      ("reference", "fwd+bwd"): "out of memory",
                      ("cpu", "fwd+bwd"): "out of memory"}  # fmt: skip
    assert not any("over_fwd" in r for r in rows)


def test_recorded_model_calls_are_timed_beside_their_contiguous_call(tmp_path):
    """A call recorded from a real forward (study.measure.scan_calls) gets a "model" row with its
    strides and direction and a "contiguous" row of the same shape, forward, dense."""
    from study.measure.scan_calls import record_calls

    calls = record_calls("test_vim", 32)
    assert {c["reverse"] for c in calls} == {False, True}  # Vim scans both ways
    assert all(c["calls_per_forward"] == 2 for c in calls)  # test_vim: 2 blocks
    path = tmp_path / "calls.json"
    path.write_text(json.dumps(calls))
    args = ["--img-sizes", "32", "--layers", "none", "--repeats", "2", "--calls", str(path)]
    rows = bench.main([*args, "--out-dir", str(tmp_path), "--release-memory"])
    assert [r["layout"] for r in rows] == ["model", "contiguous"] * len(calls)
    for model_row, dense_row in zip(rows[::2], rows[1::2], strict=True):
        assert model_row["over_contiguous"] > 0 and dense_row["median_ms"] > 0
        assert model_row["layer"].startswith("test_vim@32: ")
    assert any("reverse" in r["layer"] for r in rows)
