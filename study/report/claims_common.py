"""What every claim check shares: verdicts, thresholds, the inputs, and small text helpers."""

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from study.report import analysis
from study.report.load import sections, slug
from study.report.markdown import fmt
from study.report.published import DATA_DIR

Verdict = Literal["holds", "holds with a caveat", "does not hold", "not testable here"]
VERDICTS: tuple[str, ...] = ("holds", "holds with a caveat", "does not hold", "not testable here")

# Exponent k of cost ∝ pixels^k between the two largest sizes. A cost linear in tokens gives 1,
# a pure L² term 2; a ViT's GMACs (24·D²·L + 4·D·L²) only near 2 once L ≫ 6·D, so 1.5 already
# means the quadratic term dominates.
LINEAR_MAX_K = 1.15
QUADRATIC_MIN_K = 1.5
# ERF extent: r50_frac = radius holding half of the contribution / image side. A random-init DeiT
# sits near 0.2, CNNs and SSMs at init below 0.05 (results/erf/erf.csv).
GLOBAL_MIN_R50 = 0.1
LOCAL_MAX_R50 = 0.05
CROSS_MIN_INDEX = 1.2  # cross_index: 1 for an isotropic map, 5 for a pure cross at stride 32
SMALL_ACCURACY_POINTS = 1.0  # "adds little accuracy": at most this many points
SIMILAR_SIZE_FACTOR = 1.5  # "similar size": parameter counts within this factor
NAIVE_SCAN_MIN_RATIO = 2.0  # materialised/fused scan memory at the largest size: a clear gap
ABLATIONS: tuple[str, ...] = ("unidirectional", "directions1", "directions2")
FUSED_SCANS_EXCLUDED: tuple[str, ...] = ("", "naive", "reference")
CAVEAT_SDPA = "fused attention (SDPA) keeps ViT memory linear in tokens"
CAVEAT_INIT = "an ERF at random init is not a trained ERF"

CLAIMS: dict[str, str] = {
    "1": "CNNs scale linearly with the number of pixels, in compute and memory.",
    "2": "ViTs scale quadratically with the number of tokens: compute and memory explode at "
    "high resolution (1248 px).",
    "3": "Vim and VMamba scale linearly while keeping a global receptive field.",
    "4": "At 1248 px Vim-Ti is 2.8× faster than DeiT-Ti and saves 86.8% of its GPU memory "
    "(Vim paper, Fig. 1; DeiT-Ti out of memory there).",
    "5": "CNNs have local effective receptive fields, ViTs global ones.",
    "6": "VMamba's ERF is local before training and global, cross-shaped, after training.",
    "7": "Vim's backward direction adds little accuracy; its cost is what we can measure. "
    "Likewise VMamba's four directions against one or two.",
    "8": "Vim's scan is hardware-aware: keeping the (batch, D, L, N) states out of main memory "
    "is what makes it memory-efficient.",
    "9": "VMamba's block has no MLP and no position embedding, which makes it shallower than a "
    "ViT block.",
    "10": "Published accuracy: VMamba ahead of Vim on ImageNet-1K, COCO and ADE20K at similar "
    "size.",
}
CLAIM_11 = "Constraining attention (Swin's windows) does not remove the quadratic scaling"
WINDOWS: tuple[str, ...] = ("fixed", "scaled")
ERF_COLUMNS: tuple[str, ...] = (
    "model",
    "family",
    "weights",
    "img_size",
    "r50_frac",
    "cross_index",
    "area_ratio_99",
)


@dataclass
class Claim:
    number: str
    claim: str
    evidence: str
    verdict: Verdict
    why: str


@dataclass
class Inputs:
    """Everything the claims read: the tidy rows, erf.csv, study/data files, where plots go."""

    frame: pd.DataFrame
    erf: pd.DataFrame
    data_dir: Path = DATA_DIR
    plot_prefix: str = "plots"

    def data(self, name: str) -> pd.DataFrame:
        return read_csv(self.data_dir / name)


# --- helpers -----------------------------------------------------------------------------------


def k_text(value: float) -> str:
    return f"{value:.2f}" if np.isfinite(value) else "n/a"


def kind_of(k: float) -> str:
    if not np.isfinite(k):
        return "n/a"
    if k <= LINEAR_MAX_K:
        return "linear"
    return "quadratic" if k >= QUADRATIC_MIN_K else "between"


def options_of(frame: pd.DataFrame) -> pd.Series:
    col = frame["options"] if "options" in frame else pd.Series("", index=frame.index)
    return col.fillna("").astype(str)


def is_ablation(frame: pd.DataFrame) -> pd.Series:
    tokens = options_of(frame).str.split()
    return tokens.map(lambda t: any(a in t for a in ABLATIONS))


def default_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The models as designed, at inference: no ablation option, no materialising (naive) scan,
    no training-step rows (the claims are about inference)."""
    if frame.empty:
        return frame
    inference = frame["mode"] != "train" if "mode" in frame else True
    return frame[~is_ablation(frame) & (frame["scan_backend"] != "naive") & inference]


def combine(results: list[tuple[Verdict, str]]) -> tuple[Verdict, str]:
    """The weakest testable verdict and its reason; `not testable here` only if nothing was."""
    testable = [r for r in results if r[0] != "not testable here"]
    if not testable:
        return results[0] if results else ("not testable here", "no data")
    order = {"holds": 0, "holds with a caveat": 1, "does not hold": 2}
    return max(testable, key=lambda r: order[r[0]])


def plot_link(inputs: Inputs, title: str, key: str) -> str:
    return f"[{key}]({inputs.plot_prefix}/{slug(title)}_{key}.png)"


def memory_k(line: pd.Series) -> tuple[float, str]:
    """Memory exponent: activations where measured (params do not grow), else peak."""
    for label in ("activations MiB (measured)", "peak MiB (measured)", "peak MiB (predicted)"):
        k = line[f"{label}: k top-2"]
        if np.isfinite(k):
            return float(k), label.split(" (")[0]
    return float("nan"), "memory"


def exponents_by_section(
    inputs: Inputs, families: tuple[str, ...]
) -> list[tuple[str, pd.DataFrame, pd.DataFrame]]:
    """(section title, the families' default rows, their exponent table) per section."""
    frame = default_rows(inputs.frame)
    out = []
    if frame.empty:
        return out
    for title, section in sections(frame):
        part = section[section["family"].isin(families)]
        if not part.empty:
            out.append((title, part, analysis.exponent_table(part)))
    return out


def exponent_text(table: pd.DataFrame) -> str:
    parts = []
    for _, line in table.iterrows():
        mem_k, mem = memory_k(line)
        parts.append(
            f"{line['variant']}: GMACs k {k_text(line['GMACs: k top-2'])}, "
            f"{mem} k {k_text(mem_k)}, time k {k_text(line['ms per image: k top-2'])}"
        )
    return "; ".join(parts)


def missing(number: str, text: str, what: str) -> Claim:
    return Claim(number, text, "—", "not testable here", f"Missing: {what}.")


def erf_rows(inputs: Inputs, families: tuple[str, ...], trained: bool) -> pd.DataFrame:
    erf = inputs.erf
    if erf.empty or not set(ERF_COLUMNS) <= set(erf.columns):
        return pd.DataFrame(columns=list(ERF_COLUMNS))
    if "run" in erf:  # rows of the training experiment (`make erf-train`) are read apart
        erf = erf[erf["run"].isna()]
    weights = erf["weights"].astype(str)
    keep = erf["family"].isin(families) & ((weights != "random init") == trained)
    rows = erf[keep].sort_values("img_size")
    return rows.drop_duplicates("model", keep="last")


def feature_cell(row: pd.Series) -> float:
    """One cell of the feature map an erf.csv row's ERF was drawn on, as a fraction of the image
    side (stride_px / img_size); 0 where the row does not say."""
    stride = row.get("stride_px", np.nan)
    return float(stride) / float(row["img_size"]) if pd.notna(stride) else 0.0


def extent(row: pd.Series) -> str:
    """An erf.csv row's ERF: "global" (r50 >= GLOBAL_MIN_R50 of the side), "local" (below
    LOCAL_MAX_R50), "intermediate", "n/a" (no r50), or "unresolved": on a map whose cell is larger
    than the local bound, an r50 below one cell (or below the global bound) cannot be told apart."""
    r50_frac, cell = float(row["r50_frac"]), feature_cell(row)
    if not np.isfinite(r50_frac):
        return "n/a"
    if cell > LOCAL_MAX_R50 and r50_frac < max(cell, GLOBAL_MIN_R50):
        return "unresolved"
    if r50_frac >= GLOBAL_MIN_R50:
        return "global"
    return "local" if r50_frac < LOCAL_MAX_R50 else "intermediate"


def erf_text(rows: pd.DataFrame, label: str) -> str:
    return "; ".join(
        f"{r['model']} ({label}, {int(r['img_size'])} px): r50 {r['r50_frac']:.3f} of the side, "
        f"area ratio at t=0.99 {fmt(r['area_ratio_99'])}, cross index {r['cross_index']:.2f}"
        for _, r in rows.iterrows()
    )


def read_csv(path: Path) -> pd.DataFrame:
    """A data file as a DataFrame (blank cells NaN), empty if the file does not exist."""
    if not path.exists():
        return pd.DataFrame()
    return pd.read_csv(path, keep_default_na=False, na_values=[""])
