"""One ERF run: models × {random init, trained} on one set of images -> files in out_dir.

Writes, per map, erf_<model>_<init|trained>.npy (float32 (H, W), the mean contribution E) and
.png (heatmap on both scales); for the run, erf_grid_log10.png and erf_grid_pow025.png (rows
"random init" and, when weights are given, "trained"; one column per model) and erf.csv (one row
per map; the columns are defined in `study.erf.metrics` and README.md), erf_config.yaml and
erf.log.

A run writes into a fresh run folder beside out_dir and renames it to out_dir only when every file
is written: an interrupted run leaves out_dir as it was, never a mix of two runs.
"""

import csv
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from study.erf.core import erf_map
from study.erf.images import find_images, load_images, shipped_photos, to_tensors
from study.erf.metrics import erf_numbers
from study.erf.over_training import run_checkpoints, run_over_training
from study.erf.plot import SCALES, save_grid, save_heatmap
from study.erf.weights import load_checkpoint, load_pretrained, match_state_dict, read_state_dict
from study.models import available, create, family_of

log = logging.getLogger("study.erf")

# families whose weights timm's hub publishes
TIMM_FAMILIES = ("cnn", "vit", "windowed_vit", "gated_cnn")
ROW_INIT, ROW_TRAINED = "random init", "trained"
_LIST_KEYS = ("model", "ckpt")
# What a run writes into out_dir; a folder holding anything else is not replaced.
OUTPUT_NAMES = re.compile(
    r"^(erf\.csv|erf(_train)?\.log|erf(_train)?_config\.yaml|erf_.+\.(npy|png))$"
)


def listify_argv(argv: Sequence[str]) -> list[str]:
    """`model=a,b` -> `model=[a,b]` (likewise ckpt=), so a comma list means one run over all models.

    Hydra reads an unbracketed comma list as a sweep, which it refuses without --multirun; under
    --multirun (-m) the arguments are left alone and each job gets one model.
    """
    if any(arg in ("-m", "--multirun") for arg in argv):
        return list(argv)
    pattern = re.compile(rf"^({'|'.join(_LIST_KEYS)})=([^\[\]{{}}'\"]*,[^\[\]{{}}'\"]*)$")
    return [pattern.sub(r"\1=[\2]", arg) for arg in argv]


def _as_list(value: object) -> list:
    if value is None:
        return []
    if isinstance(value, ListConfig | list | tuple):
        return list(value)
    return [value]


def _checkpoints(ckpt: object, models: list[str]) -> list[str | None]:
    paths = _as_list(ckpt)
    if not paths:
        return [None] * len(models)
    if len(paths) != len(models):
        raise ValueError(
            f"ckpt= needs one entry per model ({len(models)}: {', '.join(models)}), got "
            f"{len(paths)}; use null for a model without one, e.g. ckpt=[a.pth,null]"
        )
    return [str(p) if p not in (None, "", "null") else None for p in paths]


def _validate(cfg: DictConfig) -> tuple[list[str], list[str | None]]:
    models = [str(m) for m in _as_list(cfg.model)]
    if not models:
        raise ValueError(f"model= names no model; available: {', '.join(available())}")
    for name in models:
        family_of(name)  # ValueError naming the unknown model and the zoo
    if len(set(models)) != len(models):
        raise ValueError(f"model= lists a model twice: {', '.join(models)}")
    if not isinstance(cfg.img_size, int) or cfg.img_size < 32:
        raise ValueError(f"img_size must be an integer >= 32, got {cfg.img_size!r}")
    if not isinstance(cfg.n_images, int) or cfg.n_images < 1:
        raise ValueError(f"n_images must be an integer >= 1, got {cfg.n_images!r}")
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool):
        raise ValueError(f"seed must be an integer, got {cfg.seed!r}")
    if not isinstance(cfg.pretrained, bool):
        raise ValueError(f"pretrained must be true or false, got {cfg.pretrained!r}")
    device = str(cfg.device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device} but CUDA is not available here; allowed: cpu")
    if cfg.get("images") and not Path(str(cfg.images)).is_dir():
        raise ValueError(f"images={cfg.images} is not a folder; give a folder of JPEG/PNG images")
    ckpts = _checkpoints(cfg.get("ckpt"), models)
    for ckpt in ckpts:
        if ckpt is not None and not Path(ckpt).is_file():
            raise ValueError(f"ckpt={ckpt} is not a file")
    _check_out_dir(Path(str(cfg.out_dir)))
    return models, ckpts


def _check_out_dir(out_dir: Path) -> None:
    """out_dir is replaced as a whole: refuse one that holds anything but an earlier run's files."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"out_dir={out_dir} is a file, not a folder")
    if out_dir.is_dir():
        other = sorted(p.name for p in out_dir.iterdir() if not OUTPUT_NAMES.match(p.name))
        if other:
            shown = ", ".join(other[:3]) + (", ..." if len(other) > 3 else "")
            raise ValueError(
                f"out_dir={out_dir} holds files that are not ERF outputs ({shown}); "
                "give an empty folder or an earlier ERF run's"
            )


def _images(cfg: DictConfig) -> tuple[list[np.ndarray], str]:
    if cfg.get("images"):
        paths, source = find_images(cfg.images), str(cfg.images)
    else:
        paths, source = shipped_photos(), "photographs shipped by scikit-image and matplotlib"
        if not paths:
            raise ValueError("no photographs shipped with installed packages; give images=<folder>")
    arrays, used = load_images(paths, cfg.img_size, cfg.n_images)
    if len(arrays) < cfg.n_images:
        log.warning(
            "using %d of the %d images requested (%d found in %s)",
            len(arrays), cfg.n_images, len(paths), source,
        )  # fmt: skip
    log.info("images: %s", ", ".join(str(p) for p in used))
    return arrays, source


def _trained_source(name: str, ckpt: str | None, pretrained: bool) -> str | None:
    if ckpt is not None:
        return ckpt
    if pretrained and family_of(name) in TIMM_FAMILIES:
        return "timm hub"
    if pretrained:
        log.warning("pretrained=true applies to timm models only; %s gets no trained row", name)
    return None


def _check_weights(models: list[str], sources: list[str | None], img_size: int) -> None:
    """Fail before any long computation if a checkpoint does not fit or the hub is unreachable."""
    for name, source in zip(models, sources, strict=True):
        if source is None:
            continue
        if source == "timm hub":
            load_pretrained(create(name, img_size), name)
        else:
            with torch.device("meta"):  # shapes are all the check needs
                model = create(name, img_size)
            match_state_dict(model, read_state_dict(source), name, f"ckpt={source}")


def _write_csv(rows: list[dict], path: Path) -> None:
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def _publish(run_dir: Path, out_dir: Path) -> None:
    """Put the finished `run_dir` in the place of `out_dir`; the old folder goes only after."""
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        os.replace(out_dir, old / out_dir.name)
        os.replace(run_dir, out_dir)
        shutil.rmtree(old)
    else:
        os.replace(run_dir, out_dir)


class _RunFolder:
    """A fresh hidden folder beside out_dir, with `log_name` logging into it while the run lasts."""

    def __init__(self, out_dir: Path, log_name: str = "erf.log") -> None:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        self.path = out_dir.with_name(f".{out_dir.name}.run-{os.getpid()}-{time.time_ns()}")
        self.path.mkdir()
        self.handler = logging.FileHandler(self.path / log_name)
        self.handler.setFormatter(
            logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
        )
        log.addHandler(self.handler)
        self.level = log.level
        log.setLevel(min(logging.INFO, log.getEffectiveLevel()))  # erf.log gets the info lines

    def close(self, keep: bool) -> None:
        log.setLevel(self.level)
        log.removeHandler(self.handler)
        self.handler.close()
        if not keep:
            shutil.rmtree(self.path, ignore_errors=True)


def _counted(images: Iterable[torch.Tensor], bar: tqdm) -> Iterator[torch.Tensor]:
    for image in images:
        yield image
        bar.update()


def run(cfg: DictConfig) -> list[dict]:
    """Compute, save and plot the ERF of every model in cfg.model; returns the erf.csv rows.

    Every file goes to a run folder first, renamed to cfg.out_dir when all are written; an
    interrupted or failed run leaves cfg.out_dir untouched. With cfg.run_dir set: the ERFs of a
    `python -m study.train` run's checkpoints instead (`study.erf.over_training`).
    """
    if cfg.get("run_dir"):
        return _run_over_training(cfg)
    models, ckpts = _validate(cfg)
    sources = [
        _trained_source(n, c, bool(cfg.pretrained)) for n, c in zip(models, ckpts, strict=True)
    ]
    _check_weights(models, sources, cfg.img_size)
    out_dir = Path(str(cfg.out_dir))
    folder = _RunFolder(out_dir)
    done = False
    try:
        with logging_redirect_tqdm():
            rows = _run(cfg, models, sources, folder.path)
        log.info("wrote %d maps, the grids and erf.csv to %s", len(rows), out_dir)
        folder.close(keep=True)
        _publish(folder.path, out_dir)
        done = True
    finally:
        if not done:
            folder.close(keep=False)
    return rows


def _run_over_training(cfg: DictConfig) -> list[dict]:
    if not isinstance(cfg.n_images, int) or cfg.n_images < 1:
        raise ValueError(f"n_images must be an integer >= 1, got {cfg.n_images!r}")
    size = cfg.get("run_img_size")
    if size is not None and (not isinstance(size, int) or size < 32):
        raise ValueError(f"run_img_size must be an integer >= 32 or null, got {size!r}")
    out_dir = Path(str(cfg.out_dir))
    _check_out_dir(out_dir)
    run_checkpoints(Path(str(cfg.run_dir)))  # ValueError before any folder is made
    # Its own log and config, beside the random-init run's erf.log and erf_config.yaml.
    folder = _RunFolder(out_dir, log_name="erf_train.log")
    done = False
    try:
        with logging_redirect_tqdm():
            rows = run_over_training(cfg, folder.path, out_dir)
        log.info("wrote %d maps, the figures and erf.csv rows to %s", len(rows), out_dir)
        OmegaConf.save(cfg, folder.path / "erf_train_config.yaml", resolve=True)
        folder.close(keep=True)
        _publish(folder.path, out_dir)
        done = True
    finally:
        if not done:
            folder.close(keep=False)
    return rows


def _run(cfg: DictConfig, models: list[str], sources: list[str | None], out_dir: Path) -> list:
    """The run's work, every file written to `out_dir` (the run folder)."""
    arrays, image_source = _images(cfg)
    device = torch.device(str(cfg.device))
    n_maps = len(models) + sum(s is not None for s in sources)
    with tqdm(total=n_maps, desc="ERF maps", unit="map", dynamic_ncols=True) as maps_bar:
        rows, maps = _maps(cfg, models, sources, out_dir, arrays, image_source, device, maps_bar)
    _write_figures(cfg, models, sources, out_dir, rows, maps)
    return rows


def _maps(
    cfg: DictConfig,
    models: list[str],
    sources: list[str | None],
    out_dir: Path,
    arrays: list[np.ndarray],
    image_source: str,
    device: torch.device,
    maps_bar: tqdm,
) -> tuple[list[dict], dict]:
    """Every map of the run: one erf.csv row each, its .npy and heatmap written to out_dir."""
    rows, maps = [], {}
    for name, source in zip(models, sources, strict=True):
        torch.manual_seed(cfg.seed)
        model = create(name, cfg.img_size).to(device)
        for row_name, tag in ((ROW_INIT, "init"), (ROW_TRAINED, "trained")):
            if row_name == ROW_TRAINED:
                if source is None:
                    continue
                if source == "timm hub":
                    load_pretrained(model, name)
                else:
                    load_checkpoint(model, source, name)
                model.to(device)
            start = time.perf_counter()
            with tqdm(total=len(arrays), desc=f"{name} {row_name}", unit="img", leave=False,
                      dynamic_ncols=True) as bar:  # fmt: skip
                result = erf_map(model, _counted(to_tensors(arrays), bar))
            seconds = time.perf_counter() - start
            fh, fw = result.feature_hw
            row = {
                "model": name,
                "family": family_of(name),
                "weights": row_name,
                "ckpt": source if row_name == ROW_TRAINED else "",
                "img_size": cfg.img_size,
                "feature_h": fh,
                "feature_w": fw,
                "stride_px": cfg.img_size / fh,
                "n_images": result.n_images,
                "n_nan": result.n_nan,
                "n_images_requested": cfg.n_images,
                "images": image_source,
                **{k: round(v, 6) for k, v in erf_numbers(result.contribution, (fh, fw)).items()},
                "erf_s": round(seconds, 2),
                "device": str(device),
                "seed": cfg.seed,
            }
            rows.append(row)
            maps[(name, row_name)] = result.contribution
            stem = out_dir / f"erf_{name}_{tag}"
            np.save(stem.with_suffix(".npy"), result.contribution.astype(np.float32))
            save_heatmap(
                result.contribution,
                f"{name}, {row_name}, {cfg.img_size} px",
                stem.with_suffix(".png"),
            )
            log.info(
                "%s %s: %d images (%d NaN) in %.1f s; area ratio t=0.99 %.4f, cross index %.2f, "
                "r50 %.1f px",
                name, row_name, result.n_images, result.n_nan, seconds, row["area_ratio_99"],
                row["cross_index"], row["r50_px"],
            )  # fmt: skip
            maps_bar.update()
        del model
    return rows, maps


def _write_figures(
    cfg: DictConfig,
    models: list[str],
    sources: list[str | None],
    out_dir: Path,
    rows: list[dict],
    maps: dict,
) -> None:
    grid_rows = [ROW_INIT] + ([ROW_TRAINED] if any(s is not None for s in sources) else [])
    n_used = rows[0]["n_images"]
    subtitle = f"({cfg.img_size} px, {n_used} image{'s' if n_used != 1 else ''})"
    for scale in SCALES:
        save_grid(maps, models, grid_rows, scale, out_dir / f"erf_grid_{scale}.png", subtitle)
    _write_csv(rows, out_dir / "erf.csv")
    OmegaConf.save(cfg, out_dir / "erf_config.yaml", resolve=True)
