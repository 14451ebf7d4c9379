"""VMamba's four scan orders over an image and their adjoint.

Order k of `cross_scan`: 0 row-major, 1 column-major, 2 row-major reversed, 3 column-major reversed.
`cross_merge` maps each sequence back to row-major positions and sums the four, so
<cross_scan(x), y> == <x, cross_merge(y)> for all x, y.
"""

import torch


def cross_scan_ref(x: torch.Tensor) -> torch.Tensor:
    """(batch, C, H, W) -> (batch, 4, C, H*W)."""
    rows = x.flatten(2)
    cols = x.transpose(2, 3).flatten(2)
    return torch.stack([rows, cols, rows.flip(-1), cols.flip(-1)], dim=1)


def cross_merge_ref(y: torch.Tensor) -> torch.Tensor:
    """(batch, 4, C, H, W) -> (batch, C, H*W).

    y[:, k] holds order k's sequence of H*W tokens, viewed as (H, W) whatever the order.
    """
    batch, _, channels, height, width = y.shape
    seq = y.flatten(3)  # (batch, 4, C, L) in each order's own token order
    rows = seq[:, 0] + seq[:, 2].flip(-1)
    cols = seq[:, 1] + seq[:, 3].flip(-1)
    cols = cols.view(batch, channels, width, height).transpose(2, 3).flatten(2)
    return rows + cols
