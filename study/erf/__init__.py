"""Effective receptive fields (RepLKNet's method) of any model, and the numbers that describe them.

erf_map(model, images, feature_fn=None) -> ErfResult (mean contribution map (H, W), counts)
erf_numbers(erf, feature_hw) -> area ratios, cross-shape index, half-contribution radius
run(cfg) -> the `python -m study.erf` run: files in results/erf/
"""

from study.erf.core import ErfResult, contribution_map, erf_map
from study.erf.metrics import (
    THRESHOLDS,
    area_ratio,
    cross_index,
    cross_shares,
    erf_numbers,
    half_radius_px,
    log10_normalise,
    pow_normalise,
    replknet_area_ratios,
)

__all__ = [
    "THRESHOLDS",
    "ErfResult",
    "area_ratio",
    "contribution_map",
    "cross_index",
    "cross_shares",
    "erf_map",
    "erf_numbers",
    "half_radius_px",
    "log10_normalise",
    "pow_normalise",
    "replknet_area_ratios",
]
