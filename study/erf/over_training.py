"""ERFs through training: `python -m study.erf run_dir=<a study.train run> out_dir=...`.

For every model folder of run_dir (run_dir/<model>/step_<s>.pth, written by `python -m study.train`)
and every saved step s: the ERF of the checkpoint on the task's held-out images (study.train_task,
split "val", the run's seed; cfg.n_images of them), drawn at the training size and resized
(bicubic) to cfg.run_img_size when given (null: the training size). At 64 px a stride-32 model's
feature map is 2x2, too coarse for the cross-shape index; at 256 px it is 8x8, and the models
(convolutions; position embeddings resampled by their checkpoint filters) run at any size, as the
committed ERFs run 224-px models at 1024 px. cfg.img_size, cfg.model and cfg.ckpt do not apply.
Writes into out_dir, beside what an earlier run left there:
- erf_<model>_step<s>.npy / .png: the map (float32 (H, W)) and its heatmap;
- erf_train_grid_log10.png, erf_train_grid_pow025.png: one row per model, one column per step;
- erf_train_metrics.png: area ratio (t=0.99), cross-shape index and r50 against training step;
- erf.csv: one row per map with the usual columns plus run (run_dir's name), step and val_acc
  (held-out accuracy at that step, from the checkpoint). Rows of earlier runs stay; rows of the
  same run are replaced. Rows of ordinary runs have run and step empty.
"""

import csv
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from study import train_task
from study.erf.core import erf_map
from study.erf.metrics import erf_numbers
from study.erf.plot import SCALES, save_grid, save_heatmap
from study.erf.weights import load_checkpoint
from study.models import create, family_of
from study.models.micro import MICRO_MODELS

log = logging.getLogger("study.erf")

RUN_COLUMNS: tuple[str, ...] = ("run", "step", "val_acc")
METRICS: dict[str, str] = {
    "area_ratio_99": "area ratio, t=0.99",
    "cross_index": "cross-shape index",
    "r50_frac": "r50 / image side",
}


def run_checkpoints(run_dir: Path) -> dict[str, list[tuple[int, Path]]]:
    """{model: [(step, checkpoint path), ...] ascending} for every model folder of a train run."""
    if not run_dir.is_dir():
        raise ValueError(f"run_dir={run_dir} is not a folder; give a `python -m study.train` run")
    found: dict[str, list[tuple[int, Path]]] = {}
    for folder in sorted(p for p in run_dir.iterdir() if p.is_dir()):
        ckpts = sorted(
            (int(p.stem.removeprefix("step_")), p)
            for p in folder.glob("step_*.pth")
            if p.stem.removeprefix("step_").isdigit()
        )
        if ckpts:
            family_of(folder.name)  # ValueError for a folder that is not a zoo model
            found[folder.name] = ckpts
    if not found:
        raise ValueError(f"run_dir={run_dir} holds no <model>/step_<s>.pth checkpoints")
    order = {name: i for i, name in enumerate(MICRO_MODELS)}
    return dict(sorted(found.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0])))


def _meta(path: Path) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    meta = state.get("meta") if isinstance(state, dict) else None
    if not isinstance(meta, dict) or "img_size" not in meta:
        raise ValueError(f"{path} has no training metadata (img_size, seed); not a study.train one")
    return meta


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def merge_rows(old: list[dict], new: list[dict], run: str) -> tuple[list[dict], list[str]]:
    """old rows without those of `run`, then `new`; columns: the union, old rows' order first."""
    kept = [row for row in old if row.get("run", "") != run]
    columns: list[str] = []
    for row in (*kept, *new):
        columns += [key for key in row if key not in columns]
    return [{key: row.get(key, "") for key in columns} for row in (*kept, *new)], columns


def run_over_training(cfg: DictConfig, folder: Path, out_dir: Path) -> list[dict]:
    """The ERF maps of every checkpoint of cfg.run_dir, written to `folder` (the run folder)."""
    run_dir = Path(str(cfg.run_dir))
    run = run_dir.resolve().name
    checkpoints = run_checkpoints(run_dir)
    if out_dir.is_dir():  # keep what earlier runs wrote there; this run adds to it
        for path in out_dir.iterdir():
            if path.is_file() and path.name != "erf_train.log":
                shutil.copy2(path, folder / path.name)
    device = torch.device(str(cfg.device))
    rows, maps = [], {}
    total = sum(len(c) for c in checkpoints.values())
    with tqdm(total=total, desc="ERF maps", unit="map", dynamic_ncols=True) as bar:
        for name, ckpts in checkpoints.items():
            meta = _meta(ckpts[0][1])
            train_px, seed = int(meta["img_size"]), int(meta.get("seed", 0))
            img_size = int(cfg.get("run_img_size") or train_px)
            images, _ = train_task.batch(seed, "val", 0, cfg.n_images, train_px)
            if img_size != train_px:
                images = torch.nn.functional.interpolate(
                    images, size=(img_size, img_size), mode="bicubic", align_corners=False
                )
            model = create(name, img_size, num_classes=train_task.N_CLASSES).to(device)
            for step, path in ckpts:
                load_checkpoint(model, path, name)
                model.to(device)
                start = time.perf_counter()
                result = erf_map(model, (x for x in images))
                fh, fw = result.feature_hw
                row = {
                    "model": name,
                    "family": family_of(name),
                    "weights": "random init" if step == 0 else "trained",
                    "ckpt": str(path),
                    "img_size": img_size,
                    "feature_h": fh,
                    "feature_w": fw,
                    "stride_px": img_size / fh,
                    "n_images": result.n_images,
                    "n_nan": result.n_nan,
                    "n_images_requested": cfg.n_images,
                    "images": f"study.train_task val split, seed {seed}, {train_px} px",
                    **{
                        k: round(v, 6)
                        for k, v in erf_numbers(result.contribution, (fh, fw)).items()
                    },
                    "erf_s": round(time.perf_counter() - start, 2),
                    "device": str(device),
                    "seed": seed,
                    "run": run,
                    "step": step,
                    "val_acc": _meta(path).get("val_acc", ""),
                }
                rows.append(row)
                maps[(f"step {step}", name)] = result.contribution
                stem = folder / f"erf_{name}_step{step}"
                np.save(stem.with_suffix(".npy"), result.contribution.astype(np.float32))
                save_heatmap(
                    result.contribution, f"{name}, step {step}, {img_size} px",
                    stem.with_suffix(".png"),
                )  # fmt: skip
                log.info(
                    "%s step %d: r50 %.3f of the side, cross index %.2f, area ratio t=0.99 %.4f",
                    name, step, row["r50_frac"], row["cross_index"], row["area_ratio_99"],
                )  # fmt: skip
                bar.update()
    _figures(rows, maps, list(checkpoints), folder, run)
    merged, columns = merge_rows(read_rows(folder / "erf.csv"), rows, run)
    tmp = folder / "erf.csv.tmp"
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(merged)
    tmp.replace(folder / "erf.csv")
    return rows


def _figures(rows: list[dict], maps: dict, models: list[str], folder: Path, run: str) -> None:
    steps = sorted({int(r["step"]) for r in rows})
    columns = [f"step {s}" for s in steps]
    subtitle = f"through training (run {run})"
    for scale in SCALES:
        save_grid(maps, columns, models, scale, folder / f"erf_train_grid_{scale}.png", subtitle)
    save_metric_plot(rows, models, folder / "erf_train_metrics.png", run)


def save_metric_plot(rows: list[dict], models: list[str], path: Path, run: str) -> None:
    """Each metric of METRICS against training step, one line per model."""
    import matplotlib.pyplot as plt  # study.erf.plot has chosen the headless backend

    width = 4.2 * len(METRICS)
    fig, axes = plt.subplots(1, len(METRICS), figsize=(width, 3.6), layout="constrained")
    for ax, (key, label) in zip(axes, METRICS.items(), strict=True):
        for name in models:
            mine = sorted((int(r["step"]), float(r[key])) for r in rows if r["model"] == name)
            ax.plot([s for s, _ in mine], [v for _, v in mine], marker="o", label=name)
        ax.set_xlabel("training step")
        ax.set_title(label, fontsize=10)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"ERF metrics through training (run {run})", fontsize=11)
    fig.savefig(path, dpi=110)
    plt.close(fig)
