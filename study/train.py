"""`python -m study.train`: train zoo models on the brighter-mark task (conf/train.yaml).

python -m study.train model=resnet_micro steps=20 save_steps=[0,10,20] run_dir=/tmp/run

Each model trains into run_dir/<model>/:
- step_<s>.pth at every step s of save_steps (0: the random init): {"model": state dict,
  "meta": plain values (model, family, step, img_size, num_classes, seed, task, val_acc)},
  loadable with torch.load(weights_only=True) and by `python -m study.erf ckpt=` / `run_dir=`;
- train.csv: one row per eval_every steps: train loss/accuracy (mean over those steps), held-out
  loss/accuracy, learning rate, seconds;
- resume.pth: model, optimizer, scheduler, step and torch's RNG state, written with each train.csv
  row. Running the same command again resumes each model from it: the result is the same weights as
  an uninterrupted run (the data of step s depends on s only; tests/test_train.py checks it). An
  interrupted run loses the steps after its last train.csv row.

Optimizer, scheduler and loss are timm's (create_optimizer_v2, create_scheduler_v2,
LabelSmoothingCrossEntropy). Everything is seeded; on CPU a run is deterministic.
"""

import csv
import logging
import re
import sys
import time
from pathlib import Path

import hydra
import torch
import torch.nn as nn
from omegaconf import DictConfig, ListConfig, OmegaConf
from timm.loss import LabelSmoothingCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from tqdm import tqdm

from study import train_task
from study.models import create, family_of

log = logging.getLogger("study.train")

# What a resumed run must share with the run it continues (checked against resume.pth).
SAME_ON_RESUME = ("img_size", "batch_size", "steps", "opt", "lr", "weight_decay", "sched",
                  "warmup_steps", "label_smoothing", "seed")  # fmt: skip
CSV_COLUMNS = ("step", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "elapsed_s")
TASK = "brighter_mark"


def checkpoint_path(model_dir: Path, step: int) -> Path:
    return model_dir / f"step_{step:06d}.pth"


def checkpoint_steps(model_dir: Path) -> list[int]:
    """The steps of the step_<s>.pth files in `model_dir`, ascending."""
    found = (re.fullmatch(r"step_(\d+)\.pth", p.name) for p in model_dir.glob("step_*.pth"))
    return sorted(int(m.group(1)) for m in found if m)


def _models(cfg: DictConfig) -> list[str]:
    value = cfg.model
    models = [str(m) for m in (value if isinstance(value, ListConfig | list) else [value])]
    if not models:
        raise ValueError("model= names no model; e.g. model=resnet_micro")
    for name in models:
        family_of(name)  # ValueError naming the unknown model
    return models


def _validate(cfg: DictConfig) -> list[str]:
    for key in ("img_size", "batch_size", "steps", "eval_every", "n_val"):
        value = cfg[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    if cfg.img_size < 32:
        raise ValueError(f"img_size must be >= 32, got {cfg.img_size}")
    steps = list(cfg.save_steps or [])
    if any(not isinstance(s, int) or s < 0 or s > cfg.steps for s in steps):
        raise ValueError(f"save_steps must be integers in 0..steps={cfg.steps}, got {steps}")
    if cfg.stop_after is not None and (not isinstance(cfg.stop_after, int) or cfg.stop_after < 1):
        raise ValueError(f"stop_after must be a positive integer or null, got {cfg.stop_after!r}")
    return _models(cfg)


def _save(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def _evaluate(model: nn.Module, val: tuple[torch.Tensor, torch.Tensor], batch_size: int) -> tuple:
    images, labels = val
    model.eval()
    loss, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(labels), batch_size):
            logits = model(images[start : start + batch_size])
            target = labels[start : start + batch_size]
            loss += nn.functional.cross_entropy(logits, target, reduction="sum").item()
            correct += (logits.argmax(1) == target).sum().item()
    model.train()
    return loss / len(labels), correct / len(labels)


def _read_log(path: Path, upto_step: int) -> list[dict]:
    """train.csv rows up to `upto_step` (rows after the resume point are dropped)."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [row for row in csv.DictReader(f) if int(row["step"]) <= upto_step]


def _write_log(rows: list[dict], path: Path) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def train_one(cfg: DictConfig, name: str, model_dir: Path) -> dict:
    """Train `name` into `model_dir` (resuming from its resume.pth); returns the last log row."""
    model_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = create(name, cfg.img_size, num_classes=train_task.N_CLASSES).train()
    optimizer = create_optimizer_v2(model, cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler, _ = create_scheduler_v2(
        optimizer, cfg.sched, num_epochs=cfg.steps, warmup_epochs=cfg.warmup_steps,
        step_on_epochs=False, updates_per_epoch=1,
    )  # fmt: skip
    loss_fn = LabelSmoothingCrossEntropy(cfg.label_smoothing)
    resume_path = model_dir / "resume.pth"
    start, elapsed = 0, 0.0
    if resume_path.is_file():
        state = torch.load(resume_path, map_location="cpu", weights_only=True)
        saved = state["meta"].get("config", {})
        changed = [k for k in SAME_ON_RESUME if saved.get(k) != cfg[k]]
        if state["meta"]["model"] != name or changed:
            shown = ", ".join(f"{k}={saved.get(k)!r} (now {cfg[k]!r})" for k in changed)
            raise ValueError(
                f"{resume_path} is a run of {state['meta']['model']} with {shown or 'the same'}"
                "; resume with the same settings or give a new run_dir"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        start, elapsed = int(state["meta"]["step"]), float(state["meta"]["elapsed_s"])
        log.info("%s: resuming at step %d from %s", name, start, resume_path)
    log_path = model_dir / "train.csv"
    rows = _read_log(log_path, start)
    OmegaConf.save(cfg, model_dir / "train_config.yaml", resolve=True)
    val = train_task.batch(cfg.seed, "val", 0, cfg.n_val, cfg.img_size)
    meta = {"model": name, "family": family_of(name), "img_size": cfg.img_size,
            "num_classes": train_task.N_CLASSES, "seed": cfg.seed, "task": TASK,
            "config": {k: cfg[k] for k in SAME_ON_RESUME}}  # fmt: skip
    if start == 0 and 0 in cfg.save_steps:
        init = {"model": model.state_dict(), "meta": {**meta, "step": 0}}
        _save(init, checkpoint_path(model_dir, 0))
    stop = min(cfg.steps, cfg.stop_after or cfg.steps)
    sums = {"loss": 0.0, "correct": 0, "seen": 0}
    bar = tqdm(total=cfg.steps, initial=start, desc=name, unit="step", dynamic_ncols=True)
    clock = time.perf_counter()
    for step in range(start, stop):
        images, labels = train_task.batch(
            cfg.seed, "train", step * cfg.batch_size, cfg.batch_size, cfg.img_size
        )
        scheduler.step_update(step)
        logits = model(images)
        loss = loss_fn(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sums["loss"] += loss.item() * len(labels)
        sums["correct"] += (logits.argmax(1) == labels).sum().item()
        sums["seen"] += len(labels)
        done = step + 1
        bar.update()
        if done % cfg.eval_every == 0 or done == cfg.steps:
            val_loss, val_acc = _evaluate(model, val, cfg.batch_size)
            now = time.perf_counter()
            elapsed, clock = elapsed + now - clock, now
            row = {
                "step": done,
                "train_loss": round(sums["loss"] / sums["seen"], 5),
                "train_acc": round(sums["correct"] / sums["seen"], 5),
                "val_loss": round(val_loss, 5),
                "val_acc": round(val_acc, 5),
                "lr": f"{optimizer.param_groups[0]['lr']:.3g}",
                "elapsed_s": round(elapsed, 1),
            }
            rows.append(row)
            sums = {"loss": 0.0, "correct": 0, "seen": 0}
            bar.set_postfix(loss=row["train_loss"], acc=row["train_acc"], val_acc=val_acc)
            _write_log(rows, log_path)
            _save(
                {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                 "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(),
                 "meta": {**meta, "step": done, "elapsed_s": elapsed}},
                resume_path,
            )  # fmt: skip
        if done in cfg.save_steps:
            last_acc = rows[-1]["val_acc"] if rows and rows[-1]["step"] == done else None
            _save(
                {"model": model.state_dict(), "meta": {**meta, "step": done, "val_acc": last_acc}},
                checkpoint_path(model_dir, done),
            )
    bar.close()
    return rows[-1] if rows else {}


def run(cfg: DictConfig) -> dict[str, dict]:
    """Train every model of cfg.model into cfg.run_dir/<model>; returns each one's last log row."""
    models = _validate(cfg)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    run_dir = Path(str(cfg.run_dir))
    results = {}
    try:
        for name in models:
            last = train_one(cfg, name, run_dir / name)
            log.info("%s: %s", name, ", ".join(f"{k} {v}" for k, v in last.items()))
            results[name] = last
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
    return results


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def app(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except (ValueError, OSError) as err:
        print(f"study.train: error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(
            f"study.train: interrupted; run the same command (run_dir={cfg.run_dir}) to resume "
            "from the last train.csv row",
            file=sys.stderr,
        )
        sys.exit(130)


def main() -> None:
    pattern = re.compile(r"^(model|save_steps)=([^\[\]]*,[^\[\]]*)$")
    if not any(arg in ("-m", "--multirun") for arg in sys.argv[1:]):
        sys.argv[1:] = [pattern.sub(r"\1=[\2]", arg) for arg in sys.argv[1:]]
    app()


if __name__ == "__main__":
    main()
