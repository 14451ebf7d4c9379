"""Numbers for one contribution map E (H, W), E >= 0 (the output of `erf_map`).

- Area ratio at t (RepLKNet): on the normalised map M = log10(E + 1) / max, the smallest square
  centred on pixel (H//2, W//2) (side 1, 3, 5, ..., clipped at the border) whose sum is at least a
  share t of M's total, as a fraction of the image area. Reported for t = 0.2, 0.3, 0.5, 0.99.
  Small: local; 1: the contribution fills the image. As in RepLKNet's `analyze_erf.py` it is taken
  on the log map, so it depends on the scale of E; ours starts at side 1 (theirs at 3) and uses >=.
- Centre cell: the square of side s = round(H / H') (one feature stride) that holds the most of E
  among those whose centre lies within one stride of the image centre (ties: the nearest to it).
  It locates the target feature in input pixels whatever the architecture's convention (a ViT
  patch spans [i·s, (i+1)·s), a padded stride-2 CNN is centred on i·s). Its centre is the centre
  of the two measures below, which use E itself (no log).
- Cross-shape index: the share of E inside the cross made by the centre cell's row band and
  column band, divided by the share the same cross holds of E's isotropic version (E averaged over
  each ring of equal distance, rounded to the pixel, from the centre). 1 for any isotropic map,
  large for a cross; for a uniform map the denominator is the cross's share of the image area.
  (Dividing by the area share alone, whatever the map, would also reward a map for being local:
  an isotropic Gaussian of sigma = H/4 with bands H/4 wide would score 1.5, a narrow one about
  H / (2.5 sigma).) A pure cross scores at most 1 / band_iso_share: 5.0 at 1024 px, stride 32.
- Half-contribution radius r50_px: the smallest distance r from the centre (Euclidean, in input
  pixels) such that pixels within r hold at least half of E's total.
"""

import numpy as np

THRESHOLDS: tuple[float, ...] = (0.2, 0.3, 0.5, 0.99)


def log10_normalise(erf: np.ndarray) -> np.ndarray:
    """RepLKNet's display and analysis scale: log10(E + 1) / max, in [0, 1] (zeros if E == 0)."""
    out = np.log10(np.asarray(erf, dtype=np.float64) + 1.0)
    peak = out.max()
    return out / peak if peak > 0 else out


def pow_normalise(erf: np.ndarray, power: float = 0.25) -> np.ndarray:
    """VMamba's display scale: E ** 0.25 / max, in [0, 1] (zeros if E == 0)."""
    out = np.asarray(erf, dtype=np.float64) ** power
    peak = out.max()
    return out / peak if peak > 0 else out


def area_ratio(values: np.ndarray, t: float) -> float:
    """Smallest square centred on (H//2, W//2) holding >= a share t of values' sum / image area.

    values: (H, W) non-negative; NaN if it sums to 0.
    """
    if not 0 < t <= 1:
        raise ValueError(f"t must be in (0, 1], got {t}")
    h, w = values.shape
    total = values.sum()
    if total <= 0:
        return float("nan")
    # Integral image: the sum over any rectangle in O(1).
    integral = np.zeros((h + 1, w + 1))
    integral[1:, 1:] = values.cumsum(0).cumsum(1)
    cy, cx = h // 2, w // 2
    for half in range(max(h, w)):
        r0, r1 = max(cy - half, 0), min(cy + half + 1, h)
        c0, c1 = max(cx - half, 0), min(cx + half + 1, w)
        inside = integral[r1, c1] - integral[r0, c1] - integral[r1, c0] + integral[r0, c0]
        if inside >= t * total * (1 - 1e-12):
            return (r1 - r0) * (c1 - c0) / (h * w)
    return 1.0


def replknet_area_ratios(erf: np.ndarray) -> dict[float, float]:
    """{t: area ratio on log10(E + 1) / max} for t in 0.2, 0.3, 0.5, 0.99."""
    normalised = log10_normalise(erf)
    return {t: area_ratio(normalised, t) for t in THRESHOLDS}


def centre_cell(erf: np.ndarray, feature_hw: tuple[int, int]) -> tuple[slice, slice]:
    """Rows and columns of the stride-sized square, near the image centre, holding the most of E."""
    (h, w), (fh, fw) = erf.shape, feature_hw
    sh, sw = max(1, round(h / fh)), max(1, round(w / fw))
    integral = np.zeros((h + 1, w + 1))
    share = np.asarray(erf, dtype=np.float64)
    share = share / share.sum() if share.sum() > 0 else share
    integral[1:, 1:] = share.cumsum(0).cumsum(1)
    best, best_key = (0, 0), None
    # Top-left corners whose square's centre is within one stride of the image centre.
    for r0 in range(max(0, (h - sh) // 2 - sh), min(h - sh, (h - sh) // 2 + sh) + 1):
        for c0 in range(max(0, (w - sw) // 2 - sw), min(w - sw, (w - sw) // 2 + sw) + 1):
            held = integral[r0 + sh, c0 + sw] - integral[r0, c0 + sw] - integral[r0 + sh, c0]
            held += integral[r0, c0]
            off_centre = abs(r0 + sh / 2 - h / 2) + abs(c0 + sw / 2 - w / 2)
            key = (round(held, 9), -off_centre)  # ties within 1e-9 of the total: nearest
            if best_key is None or key > best_key:
                best, best_key = (r0, c0), key
    return slice(best[0], best[0] + sh), slice(best[1], best[1] + sw)


def _centre_distance(erf: np.ndarray, feature_hw: tuple[int, int]) -> np.ndarray:
    rows, cols = centre_cell(erf, feature_hw)
    cy, cx = (rows.start + rows.stop - 1) / 2, (cols.start + cols.stop - 1) / 2
    yy, xx = np.indices(erf.shape)
    return np.hypot(yy - cy, xx - cx)


def isotropic(erf: np.ndarray, feature_hw: tuple[int, int]) -> np.ndarray:
    """E averaged over rings of equal (rounded) distance from the centre: same total, isotropic."""
    ring = np.rint(_centre_distance(erf, feature_hw)).astype(np.int64)
    sums = np.bincount(ring.ravel(), weights=erf.ravel())
    counts = np.bincount(ring.ravel())
    return (sums / np.maximum(counts, 1))[ring]


def cross_mask(erf: np.ndarray, feature_hw: tuple[int, int]) -> np.ndarray:
    """(H, W) bool: the centre cell's row band or column band."""
    rows, cols = centre_cell(erf, feature_hw)
    mask = np.zeros(erf.shape, dtype=bool)
    mask[rows, :] = True
    mask[:, cols] = True
    return mask


def cross_shares(erf: np.ndarray, feature_hw: tuple[int, int]) -> dict[str, float]:
    """band_share (of E in the cross), band_iso_share (of isotropic E), band_area_share (of area),
    cross_index = band_share / band_iso_share. NaN where E sums to 0."""
    erf = np.asarray(erf, dtype=np.float64)
    mask = cross_mask(erf, feature_hw)
    total = erf.sum()
    if total <= 0:
        nan = float("nan")
        return {
            "cross_index": nan,
            "band_share": nan,
            "band_iso_share": nan,
            "band_area_share": float(mask.mean()),
        }
    share = erf[mask].sum() / total
    iso_share = isotropic(erf, feature_hw)[mask].sum() / total
    return {
        "cross_index": float(share / iso_share),
        "band_share": float(share),
        "band_iso_share": float(iso_share),
        "band_area_share": float(mask.mean()),
    }


def cross_index(erf: np.ndarray, feature_hw: tuple[int, int]) -> float:
    """Share of E in the centre cross / the cross's share of E's isotropic version (see module)."""
    return cross_shares(erf, feature_hw)["cross_index"]


def half_radius_px(erf: np.ndarray, feature_hw: tuple[int, int]) -> float:
    """Smallest distance from the centre within which pixels hold half of E's total (pixels)."""
    erf = np.asarray(erf, dtype=np.float64)
    total = erf.sum()
    if total <= 0:
        return float("nan")
    distance = _centre_distance(erf, feature_hw).ravel()
    order = np.argsort(distance, kind="stable")
    held = np.cumsum(erf.ravel()[order])
    return float(distance[order][np.searchsorted(held, 0.5 * total * (1 - 1e-12))])


def erf_numbers(erf: np.ndarray, feature_hw: tuple[int, int]) -> dict[str, float]:
    """All numbers for one map, keyed as in erf.csv."""
    h, w = erf.shape
    row: dict[str, float] = {
        f"area_ratio_{round(t * 100)}": ratio for t, ratio in replknet_area_ratios(erf).items()
    }
    row.update(cross_shares(erf, feature_hw))
    r50 = half_radius_px(erf, feature_hw)
    row["r50_px"] = r50
    row["r50_frac"] = r50 / max(h, w)
    return row
