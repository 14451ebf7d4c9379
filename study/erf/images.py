"""Input photographs for the ERF: a folder of JPEG/PNG files, or photographs that packages ship.

Each image is converted to RGB, resized to img_size × img_size with bicubic interpolation (as
RepLKNet does: no crop, the aspect ratio is not kept) and normalised with the ImageNet mean and std.
"""

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SUFFIXES = (".jpg", ".jpeg", ".png")
# Real photographs (not drawings, logos or synthetic test patterns) that installed packages ship:
# scikit-image's sample data and matplotlib's portrait. Grey ones are converted to RGB.
SHIPPED_PHOTOS: dict[str, tuple[str, ...]] = {
    "skimage": (
        "astronaut.png", "camera.png", "chelsea.png", "coffee.png", "coins.png",
        "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png",
        "motorcycle_right.png", "retina.jpg", "rocket.jpg",
    ),
    "matplotlib": ("grace_hopper.jpg",),
}  # fmt: skip


def shipped_photos() -> list[Path]:
    """The photographs installed packages ship (no network): scikit-image's and matplotlib's."""
    import matplotlib
    import skimage

    folders = {
        "skimage": Path(skimage.__file__).parent / "data",
        "matplotlib": Path(matplotlib.get_data_path()) / "sample_data",
    }
    return [
        folders[package] / name
        for package, names in SHIPPED_PHOTOS.items()
        for name in names
        if (folders[package] / name).is_file()
    ]


def find_images(folder: str | Path) -> list[Path]:
    """Every JPEG/PNG file under `folder` (recursive, case-insensitive suffix), sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"images={folder} is not a folder; give a folder of JPEG/PNG images")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
    if not paths:
        raise ValueError(f"no JPEG/PNG images under {folder} (searched recursively)")
    return paths


def read_image(path: Path, img_size: int) -> np.ndarray | None:
    """(img_size, img_size, 3) uint8, or None (with a warning) if the file cannot be read."""
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB").resize((img_size, img_size), Image.Resampling.BICUBIC)
            return np.asarray(rgb, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as err:
        log.warning("skipping unreadable image %s (%s)", path, err)
        return None


def load_images(
    paths: list[Path], img_size: int, n_images: int
) -> tuple[list[np.ndarray], list[Path]]:
    """The first `n_images` readable files of `paths`, resized: (uint8 arrays, their paths)."""
    if n_images < 1:
        raise ValueError(f"n_images must be >= 1, got {n_images}")
    arrays, used = [], []
    for path in paths:
        array = read_image(path, img_size)
        if array is not None:
            arrays.append(array)
            used.append(path)
        if len(arrays) == n_images:
            break
    if not arrays:
        raise ValueError(
            f"none of the {len(paths)} JPEG/PNG files could be read: {paths[0].parent}"
        )
    return arrays, used


def to_tensors(arrays: list[np.ndarray]) -> Iterator[torch.Tensor]:
    """uint8 (H, W, 3) arrays -> normalised float (3, H, W) tensors, one at a time (low memory)."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    for array in arrays:
        yield (torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0 - mean) / std
