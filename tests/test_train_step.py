"""A training step as a measurement (study/measure/train_step.py): forward, cross-entropy,
backward, AdamW step; predicted on fake tensors, tracked for real, seen by the OS; its sweep row."""

import math

import pytest
import torch
from hydra import compose, initialize_config_dir

import study.models as zoo
from study import sweep
from study.measure import count_flops, peak_memory, predict_train, throughput, train_memory
from study.measure.rss import unavailable_reason
from study.report.load import tidy


def _meta(name: str, size: int) -> torch.nn.Module:
    with torch.device("meta"):
        return zoo.create(name, size)


def test_adamw_state_is_counted_on_fake_tensors():
    """Parameters once, exp_avg and exp_avg_sq twice more (plus the step counters); the gradients
    and saved activations put the step's peak above the inference forward's."""
    model = _meta("test_resnet", 64)
    step = train_memory(model, 64, 2)
    params = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    buffers = sum(b.numel() * b.element_size() for b in model.buffers()) / 2**20
    assert step["params_mib"] == pytest.approx(params + buffers)
    counters = len(list(model.parameters())) * 4 / 2**20  # one float32 step per parameter
    assert step["optimizer_mib"] == pytest.approx(2 * params + counters)
    infer = peak_memory(model, 64, 2)
    assert step["activations_mib"] > infer["activations_mib"] + params  # gradients at least
    fixed = step["params_mib"] + step["optimizer_mib"] + step["input_mib"]
    assert step["peak_mib"] == pytest.approx(fixed + step["activations_mib"])


@pytest.mark.parametrize("name", ["test_resnet", "test_vit"])
def test_predicted_training_memory_matches_tracked(name):
    predicted = train_memory(_meta(name, 64), 64, 2)
    measured = train_memory(zoo.create(name, 64), 64, 2, "measured", rss=False)
    for key in ("params_mib", "optimizer_mib", "activations_mib", "peak_mib"):
        assert predicted[key] == pytest.approx(measured[key], rel=0.03), key


def test_measured_training_step_leaves_the_model_alone():
    model = zoo.create("test_vit", 64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_memory(model, 64, 1, "measured", rss=False)
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.skipif(bool(unavailable_reason()), reason=unavailable_reason() or "")
def test_os_sees_the_training_step_the_prediction_sees():
    """The resident-set growth of the second step in a fresh process against the prediction."""
    predicted = train_memory(_meta("test_resnet", 64), 64, 2)
    measured = train_memory(zoo.create("test_resnet", 64), 64, 2, "measured")
    assert measured["rss_note"] == ""
    assert measured["rss_activations_mib"] == pytest.approx(predicted["activations_mib"], rel=0.15)


def test_training_gmacs_are_forward_plus_backward():
    """Convolutions and linears: the backward is twice the forward (input and weight gradients;
    the first convolution needs no input gradient), so about 3x the inference count."""
    model = _meta("test_resnet", 64)
    forward = count_flops(model, 64, 2)
    step = predict_train(model, 64, 2)
    assert 2.5 * forward < step["gmacs"] < 3.05 * forward


def test_bfloat16_training_step_runs_and_is_timed():
    model = zoo.create("test_vit", 64)
    low = train_memory(_meta("test_vit", 64), 64, 2, precision="bfloat16")
    assert math.isfinite(low["activations_mib"]) and low["activations_mib"] > 0
    speed = throughput(model, 64, 2, train=True, precision="bfloat16", min_steps=1, max_steps=1)
    assert speed["steps"] == 1 and speed["img_per_s"] > 0


def test_sweep_train_cell_writes_a_train_row(tmp_path):
    with initialize_config_dir(str(sweep.CONF_DIR), version_base="1.3"):
        overrides = ["model=test_vit", "img_size=64", "measure.train=true", "measure.max_steps=1"]
        cfg = compose("sweep", overrides=[f"results_dir={tmp_path}", *overrides])
    row = sweep.run_cell(cfg)
    assert row["status"] == "ok", row["error"]
    assert row["mode"] == "train"
    predicted = predict_train(_meta("test_vit", 64), 64, 1)
    assert row["infer_gmacs"] == pytest.approx(predicted["gmacs"])
    assert row["predicted_peak_mib"] == pytest.approx(predicted["peak_mib"])
    assert row["measured_activations_mib"] == pytest.approx(predicted["activations_mib"], rel=0.03)
    assert row["train_step_time"] > 0 and row["infer_step_time"] is None
    if not unavailable_reason():
        assert row["measured_rss_activations_mib"] > 0
    # the report reads it as a training cell; a row written before `mode` existed: inference
    old = {k: v for k, v in row.items() if k != "mode"}
    old["config"] = {**row["config"], "measure": {**row["config"]["measure"], "train": False}}
    frame = tidy([row, {**old, "model": "test_resnet"}])
    assert dict(zip(frame["model"], frame["mode"], strict=True)) == {
        "test_vit": "train",
        "test_resnet": "inference",
    }


def _preset_cells(preset: str) -> list[dict]:
    with initialize_config_dir(str(sweep.CONF_DIR), version_base="1.3"):
        cfg = compose("sweep", overrides=[f"sweep={preset}"], return_hydra_config=True)
        jobs = sweep.expand_jobs(cfg.hydra.sweeper.params, [])
        cfgs = [compose("sweep", overrides=[f"sweep={preset}", *job]) for job in jobs]
    return [sweep.cell_of(c) for c in cfgs]


def test_train_preset_measures_small_cells_and_predicts_the_rest():
    cells = _preset_cells("train")
    assert len(cells) == 80 and all(c["measure"]["train"] for c in cells)
    measured = {(c["img_size"], c["batch"]) for c in cells if sweep.runs_for_real(c)}
    assert measured == {(224, 1), (384, 1), (512, 1), (224, 8)}
    assert sum(sweep.runs_for_real(c) for c in cells) == 32
    assert sweep.batch_pixels_at_most(640, 1, 640) and not sweep.batch_pixels_at_most(384, 8, 640)


def test_gpu_preset_has_training_cells_and_keeps_its_inference_cells():
    """Read from the sweeper's params (composing all 768 gpu cells takes minutes)."""
    with initialize_config_dir(str(sweep.CONF_DIR), version_base="1.3"):
        gpu = compose("sweep", overrides=["sweep=gpu"], return_hydra_config=True)
        check = compose("sweep", overrides=["sweep=gpu_check"], return_hydra_config=True)
    assert str(gpu.hydra.sweeper.params["measure.train"]) == "false,true"
    assert len(sweep.expand_jobs(gpu.hydra.sweeper.params, [])) == 768
    assert str(check.hydra.sweeper.params["measure.train"]) == "False"
