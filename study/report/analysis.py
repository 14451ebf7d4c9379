"""Scaling exponents, crossovers, ratios to a baseline and Pareto fronts, from the tidy table."""

from collections.abc import Sequence

import numpy as np
import pandas as pd

from study.report.load import ATTENTION_FAMILIES, SSM_FAMILIES

# Costs: lower is better. Throughput enters as its inverse, ms per image.
COST_METRICS: dict[str, str] = {
    "infer_gmacs": "GMACs",
    "predicted_peak_mib": "peak MiB (predicted)",
    "measured_peak_mib": "peak MiB (measured)",
    "measured_activations_mib": "activations MiB (measured)",
    "ms_per_img": "ms per image",
}


# Known without running the model; a failed row may still hold them.
STATIC_COLUMNS: tuple[str, ...] = ("param_count", "infer_gmacs", "predicted_peak_mib")


def fit_exponent(sizes_px: Sequence[float], values: Sequence[float]) -> tuple[float, float]:
    """Exponent k of value ∝ pixels^k, pixels = size²: (k over the two largest sizes, k by
    least squares over all sizes). NaN where fewer than two sizes have a finite positive value."""
    size = np.asarray(sizes_px, dtype=float)
    value = np.asarray(values, dtype=float)
    keep = np.isfinite(size) & np.isfinite(value) & (size > 0) & (value > 0)
    size, value = size[keep], value[keep]
    order = np.argsort(size)
    log_px, log_v = 2.0 * np.log(size[order]), np.log(value[order])
    if len(np.unique(log_px)) < 2:
        return float("nan"), float("nan")
    k_top = (log_v[-1] - log_v[-2]) / (log_px[-1] - log_px[-2])
    k_all = np.polyfit(log_px, log_v, 1)[0]
    return float(k_top), float(k_all)


def exponent_table(section: pd.DataFrame) -> pd.DataFrame:
    """One line per variant: family, ok sizes, and k (top two, all) for every cost metric
    (a static metric also uses failed rows that hold its value)."""
    lines = []
    for (family, variant), part in section.groupby(["family", "variant"], sort=False):
        part = part.sort_values("infer_img_size")
        sizes = part.loc[part["status"] == "ok", "infer_img_size"].tolist()
        line = {"family": family, "variant": variant}
        line["sizes"] = f"{sizes[0]}–{sizes[-1]} ({len(sizes)})" if sizes else "none ok"
        for col, label in COST_METRICS.items():
            usable = part[(part["status"] == "ok") | (col in STATIC_COLUMNS)]
            k_top, k_all = fit_exponent(usable["infer_img_size"], usable[col])
            line[f"{label}: k top-2"] = k_top
            line[f"{label}: k all"] = k_all
        lines.append(line)
    return pd.DataFrame(lines)


def crossover_px(
    sizes_px: Sequence[float], cost_a: Sequence[float], cost_b: Sequence[float]
) -> float:
    """Smallest size at which cost_a ≤ cost_b, interpolating log(cost_a/cost_b) linearly in
    log(size) between measured sizes. Returns sizes_px[0] if a is already no dearer at the
    smallest size, NaN if it never is. A cost of +inf (out of memory) is dearer than any number."""
    size = np.asarray(sizes_px, dtype=float)
    a, b = np.asarray(cost_a, dtype=float), np.asarray(cost_b, dtype=float)
    order = np.argsort(size)
    size, a, b = size[order], a[order], b[order]
    with np.errstate(divide="ignore", invalid="ignore"):
        gap = np.log(a) - np.log(b)  # > 0: a dearer
    for i, g in enumerate(gap):
        if np.isnan(g):
            continue
        if g <= 0:
            if i == 0 or not np.isfinite(g) or not np.isfinite(gap[i - 1]):
                return float(size[i])
            g0 = gap[i - 1]
            t = g0 / (g0 - g)
            return float(np.exp(np.log(size[i - 1]) + t * (np.log(size[i]) - np.log(size[i - 1]))))
    return float("nan")


def tau_px(embed_dim: int, patch_size: int) -> tuple[int, float]:
    """MambaOut's threshold: attention's L² term dominates a block when L > τ = 6·D tokens.
    Returns (τ, the input size whose patch grid has τ tokens)."""
    tau = 6 * embed_dim
    return tau, patch_size * float(np.sqrt(tau))


def _cost_curve(part: pd.DataFrame, col: str) -> pd.Series:
    """Cost by size for one variant: the value where ok (or, for a static column, wherever it was
    computed), +inf where the model ran out of memory or time and no value is known."""
    by_size = part.set_index("infer_img_size")
    usable = (by_size["status"] == "ok") | (col in STATIC_COLUMNS)
    curve = by_size[col].astype(float).where(usable)
    curve[curve.isna() & by_size["status"].isin(["oom", "timeout"])] = np.inf
    return curve


def crossover_table(section: pd.DataFrame, architecture: pd.DataFrame) -> pd.DataFrame:
    """For each (SSM variant, attention variant) pair and cost metric: the smallest size at which
    the SSM model is no dearer, or "none in range"; plus τ = 6·D for the attention model."""
    ssm = section[section["family"].isin(SSM_FAMILIES)]
    att = section[section["family"].isin(ATTENTION_FAMILIES)]
    arch = architecture.set_index("model") if not architecture.empty else architecture
    lines = []
    for att_variant, att_part in att.groupby("variant", sort=False):
        model = att_part["model"].iloc[0]
        tau_text = "n/a"
        if model in arch.index:
            tau, px = tau_px(int(arch.loc[model, "embed_dim"]), int(arch.loc[model, "patch_size"]))
            tau_text = f"{tau} tokens ≈ {px:.0f} px"
        for ssm_variant, ssm_part in ssm.groupby("variant", sort=False):
            line = {"SSM model": ssm_variant, "attention model": att_variant}
            for col, label in COST_METRICS.items():
                a, b = _cost_curve(ssm_part, col), _cost_curve(att_part, col)
                both = pd.concat([a.rename("a"), b.rename("b")], axis=1).dropna()
                both = both[~(np.isinf(both["a"]) & np.isinf(both["b"]))]
                line[label] = _crossover_text(both)
            line["τ = 6·D (MambaOut)"] = tau_text
            lines.append(line)
    return pd.DataFrame(lines)


def _crossover_text(both: pd.DataFrame) -> str:
    if len(both) == 0:
        return "no common size"
    sizes = both.index.to_numpy(dtype=float)
    px = crossover_px(sizes, both["a"], both["b"])
    if np.isnan(px):
        return "none in range"
    if px == sizes[0]:
        return f"≤ {px:.0f} (smallest size)"
    hit = both.loc[both.index >= px].iloc[0]
    if np.isinf(hit["b"]):
        before = sizes[sizes < px].max()
        return f"> {before:.0f}, ≤ {px:.0f} (attention failed at {px:.0f})"
    return f"{px:.0f}"


def ratio_table(section: pd.DataFrame, col: str, baseline: str) -> pd.DataFrame | None:
    """value / baseline's value at the same size, as a variant × size table of floats (NaN where
    either is missing or failed); None if the baseline variant is not in the section."""
    base = section[section["variant"] == baseline]
    if base.empty:
        return None
    base_value = base.set_index("infer_img_size")[col].where(
        base.set_index("infer_img_size")["status"] == "ok"
    )
    ok = section[section["status"] == "ok"]
    table = ok.pivot_table(index="variant", columns="infer_img_size", values=col, aggfunc="first")
    return table.div(base_value, axis=1)


def pareto_front(cost: Sequence[float], quality: Sequence[float]) -> np.ndarray:
    """Boolean mask of points no other point beats: none with cost ≤ and quality ≥, one strictly."""
    c, q = np.asarray(cost, dtype=float), np.asarray(quality, dtype=float)
    mask = np.zeros(len(c), dtype=bool)
    for i in range(len(c)):
        if not (np.isfinite(c[i]) and np.isfinite(q[i])):
            continue
        beaten = (c <= c[i]) & (q >= q[i]) & ((c < c[i]) | (q > q[i]))
        mask[i] = not beaten.any()
    return mask
