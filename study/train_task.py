"""An offline task that needs a global view: are two distant marks the same colour?

Each image (img_size x img_size, RGB uint8) is Gaussian noise on a dark background with two marks:
one at a random position in the left third of the image, one in the right third. A mark is a 3x3
pattern of cells (each cell img_size // 16 px) drawn at random from N_GLYPHS patterns (a
distractor: the shape never decides the label), in one of the PALETTE colours. Label 1 when both
marks have the same colour, 0 otherwise (half the images each).

Neither mark alone says anything about the label (each colour is equally likely under both
labels), so a model must bring together pixels at least a third of the image apart. Nor can a
linear classifier on average-pooled local features do it: pooling sums what each mark contributes,
and "same colour" (R+R or G+G) is not linearly separable from "different" (R+G, their midpoint);
the marks must meet inside the feature map (an ERF spanning both), in attention, or in a nonlinear
head. Everything is drawn from numpy's PCG64 seeded with (seed, split, index): image `index` of a
split is the same on every machine, without downloads or files.

python -m study.train_task --out /tmp/samples.png  # a grid of samples with their labels
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

N_GLYPHS = 8
# The mark colours (0-255): red, green, blue, yellow.
PALETTE = np.array([[230, 0, 0], [0, 230, 0], [0, 0, 230], [230, 230, 0]], dtype=np.float64)
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


def sample(seed: int, split: str, index: int, img_size: int) -> tuple[np.ndarray, int]:
    """Image `index` of `split`: ((img_size, img_size, 3) uint8, label 0 or 1)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")
    if not isinstance(img_size, int) or img_size < 32:
        raise ValueError(f"img_size must be an integer >= 32, got {img_size!r}")
    rng = np.random.default_rng([seed, SPLITS[split], index])
    label = int(rng.integers(N_CLASSES))
    first = int(rng.integers(len(PALETTE)))
    second = first if label else int((first + rng.integers(1, len(PALETTE))) % len(PALETTE))
    image = rng.normal(40.0, 20.0, size=(img_size, img_size, 3))
    cell = img_size // 16
    side = 3 * cell
    third = img_size // 3
    for colour, x_lo in ((first, 0), (second, img_size - third)):
        glyph = int(rng.integers(N_GLYPHS))
        y = int(rng.integers(0, img_size - side + 1))
        x = int(rng.integers(x_lo, x_lo + third - side + 1))
        mask = np.kron(_GLYPHS[glyph], np.ones((cell, cell), dtype=bool))
        image[y : y + side, x : x + side][mask] = PALETTE[colour]
    return np.clip(image, 0, 255).astype(np.uint8), label


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
            ax.set_title("same" if label else "differ", fontsize=9)
    fig.suptitle(f"Are the two marks the same colour? ({img_size} px, seed {seed})")
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
