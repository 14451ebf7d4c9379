"""An offline task that needs both of two distant marks: is the left mark brighter than the right?

Each image (img_size x img_size, RGB uint8) is Gaussian noise on a dark background, N(40, 20) per
channel, with two grey marks: one at a random position in the left third of the image, one in the
right third; the middle third holds only noise. A mark is a 3x3 pattern of cells (each cell
img_size // 16 px) drawn at random from N_GLYPHS patterns (a distractor: the shape never decides
the label), all of its pixels at one of the LEVELS brightnesses; the two marks get two different
levels, drawn uniformly. Label 1 when the left mark is the brighter one (half the images).

Why both marks: one mark alone tells the label only in part (a bright left mark is likely the
brighter one): the best accuracy from either mark alone is one_mark_accuracy() = 0.79; above that
a model compares pixels at least a third of the image apart, and knows which of them is on the
left. The first task here, "are the two marks the same colour?", needed both marks for any
accuracy at all, but it is XOR-like (neither mark shifts the label's odds, so at init no gradient
points toward it): vim_micro, vmamba_micro and mambaout_micro stayed at chance for 1200-3000 steps
where resnet_micro and deit_micro learned it (README, "Receptive fields through training").
Everything is drawn from numpy's PCG64 seeded with (seed, split, index): image `index` of a split is
the same on every machine, without downloads or files.

python -m study.train_task --out /tmp/samples.png  # a grid of samples with their labels
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

N_GLYPHS = 8
# Mark brightness as a fraction of 255: 8 levels, 0.3 (76, about 2 noise sigmas above the
# background) to 1.0 (255), 0.1 apart.
LEVELS = np.linspace(0.3, 1.0, 8)
N_CLASSES = 2
SPLITS = {"train": 0, "val": 1}
# ImageNet statistics, as the zoo's models expect (timm's IMAGENET_DEFAULT_MEAN / _STD).
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def glyph_patterns(n: int = N_GLYPHS) -> np.ndarray:
    """(n, 3, 3) bool: n distinct 3x3 patterns with 4 or 5 cells on, the same on every call."""
    rng = np.random.default_rng(12345)
    found: list[np.ndarray] = []
    while len(found) < n:
        pattern = rng.random((3, 3)) < 0.5
        if pattern.sum() in (4, 5) and not any((pattern == p).all() for p in found):
            found.append(pattern)
    return np.stack(found)


_GLYPHS = glyph_patterns()


def one_mark_accuracy(n_levels: int = len(LEVELS)) -> float:
    """The best accuracy from one mark alone: its level i (of n, uniform) makes the label 1 with
    probability i / (n - 1) for the left mark (the other level is uniform over the rest), so the
    best guess is right max(i, n - 1 - i) / (n - 1) of the time; the right mark is the mirror."""
    top = n_levels - 1
    return sum(max(i, top - i) for i in range(n_levels)) / (n_levels * top)


def scene(seed: int, split: str, index: int, img_size: int) -> dict:
    """What image `index` of `split` shows: the marks' levels (indices into LEVELS), glyphs and
    top-left corners (y, x), left mark first, and the label."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    if not isinstance(img_size, int) or img_size < 32:
        raise ValueError(f"img_size must be an integer >= 32, got {img_size!r}")
    rng = np.random.default_rng([seed, SPLITS[split], index])
    left, right = (int(i) for i in rng.choice(len(LEVELS), size=2, replace=False))
    side = 3 * (img_size // 16)
    third = img_size // 3
    corners = []
    for x_lo in (0, img_size - third):
        corners.append((int(rng.integers(0, img_size - side + 1)),
                        int(rng.integers(x_lo, x_lo + third - side + 1))))  # fmt: skip
    glyphs = [int(g) for g in rng.integers(N_GLYPHS, size=2)]
    noise_seed = int(rng.integers(2**63))
    return {"levels": (left, right), "glyphs": glyphs, "corners": corners,
            "label": int(left > right), "noise_seed": noise_seed}  # fmt: skip


def sample(seed: int, split: str, index: int, img_size: int) -> tuple[np.ndarray, int]:
    """Image `index` of `split`: ((img_size, img_size, 3) uint8, label 0 or 1)."""
    s = scene(seed, split, index, img_size)
    image = np.random.default_rng(s["noise_seed"]).normal(40.0, 20.0, size=(img_size, img_size, 3))
    cell = img_size // 16
    side = 3 * cell
    for level, glyph, (y, x) in zip(s["levels"], s["glyphs"], s["corners"], strict=True):
        mask = np.kron(_GLYPHS[glyph], np.ones((cell, cell), dtype=bool))
        image[y : y + side, x : x + side][mask] = np.round(255 * LEVELS[level])
    return np.clip(image, 0, 255).astype(np.uint8), s["label"]


def batch(
    seed: int, split: str, start: int, size: int, img_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images start .. start+size-1 of `split`, normalised: ((size, 3, H, W), (size,) labels)."""
    pairs = [sample(seed, split, start + i, img_size) for i in range(size)]
    images = np.stack([image for image, _ in pairs])
    return to_tensor(images), torch.tensor([label for _, label in pairs], dtype=torch.long)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float32 normalised with ImageNet's mean and std."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def save_samples(path: Path, seed: int = 0, img_size: int = 64, n: int = 16) -> None:
    """A grid of the first `n` validation images, titled with their labels, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(n, 8)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            image, label = sample(seed, "val", i, img_size)
            ax.imshow(image)
            ax.set_title("left" if label else "right", fontsize=9)
    fig.suptitle(f"Which mark is brighter, left or right? ({img_size} px, seed {seed})")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write sample images of the training task.")
    parser.add_argument("--out", type=Path, default=Path("results/train/samples.png"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--n", type=int, default=16)
    args = parser.parse_args(argv)
    if args.n < 1 or args.img_size < 32:
        print("study.train_task: error: --n must be >= 1 and --img-size >= 32", file=sys.stderr)
        sys.exit(2)
    save_samples(args.out, args.seed, args.img_size, args.n)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
