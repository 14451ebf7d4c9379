"""The talk's claims, checked against our files: one line each with evidence, verdict and why.

Reads only what the report reads: the tidy table of rows, `results/erf/erf.csv`, and the data
files under `study/data/` (published accuracy and cost, `ablation_accuracy.csv`,
`claim_figures.csv`, `block_costs.csv`). Every number in the section comes from them; where the
data a claim needs is missing, its verdict is `not testable here` and the reason names the
missing data.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from study.report import analysis
from study.report.load import sections, slug
from study.report.markdown import fmt, md_table
from study.report.published import DATA_DIR, read_published, vim_figure1_ratios

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
        path = self.data_dir / name
        return (
            pd.read_csv(path, keep_default_na=False, na_values=[""])
            if path.exists()
            else (pd.DataFrame())
        )


# --- helpers -----------------------------------------------------------------------------------


def _k(value: float) -> str:
    return f"{value:.2f}" if np.isfinite(value) else "n/a"


def _kind(k: float) -> str:
    if not np.isfinite(k):
        return "n/a"
    if k <= LINEAR_MAX_K:
        return "linear"
    return "quadratic" if k >= QUADRATIC_MIN_K else "between"


def _options(frame: pd.DataFrame) -> pd.Series:
    col = frame["options"] if "options" in frame else pd.Series("", index=frame.index)
    return col.fillna("").astype(str)


def _is_ablation(frame: pd.DataFrame) -> pd.Series:
    tokens = _options(frame).str.split()
    return tokens.map(lambda t: any(a in t for a in ABLATIONS))


def default_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The models as designed: no ablation option, no materialising (naive) scan."""
    if frame.empty:
        return frame
    return frame[~_is_ablation(frame) & (frame["scan_backend"] != "naive")]


def _combine(results: list[tuple[Verdict, str]]) -> tuple[Verdict, str]:
    """The weakest testable verdict and its reason; `not testable here` only if nothing was."""
    testable = [r for r in results if r[0] != "not testable here"]
    if not testable:
        return results[0] if results else ("not testable here", "no data")
    order = {"holds": 0, "holds with a caveat": 1, "does not hold": 2}
    return max(testable, key=lambda r: order[r[0]])


def _plot(inputs: Inputs, title: str, key: str) -> str:
    return f"[{key}]({inputs.plot_prefix}/{slug(title)}_{key}.png)"


def _memory_k(line: pd.Series) -> tuple[float, str]:
    """Memory exponent: activations where measured (params do not grow), else peak."""
    for label in ("activations MiB (measured)", "peak MiB (measured)", "peak MiB (predicted)"):
        k = line[f"{label}: k top-2"]
        if np.isfinite(k):
            return float(k), label.split(" (")[0]
    return float("nan"), "memory"


def _exponents(
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


def _exponent_text(table: pd.DataFrame) -> str:
    parts = []
    for _, line in table.iterrows():
        mem_k, mem = _memory_k(line)
        parts.append(
            f"{line['variant']}: GMACs k {_k(line['GMACs: k top-2'])}, {mem} k {_k(mem_k)}, "
            f"time k {_k(line['ms per image: k top-2'])}"
        )
    return "; ".join(parts)


def _missing(number: str, text: str, what: str) -> Claim:
    return Claim(number, text, "—", "not testable here", f"Missing: {what}.")


# --- claims 1-3, 11: scaling exponents ---------------------------------------------------------


def claim_cnn(inputs: Inputs) -> Claim:
    per_section = _exponents(inputs, ("cnn",))
    if not per_section:
        return _missing("1", CLAIMS["1"], "CNN rows")
    evidence, results = [], []
    for title, _part, table in per_section:
        evidence.append(
            f"Scaling exponents, {title}: {_exponent_text(table)} "
            f"({_plot(inputs, title, 'gmacs')}, {_plot(inputs, title, 'peak_memory')})"
        )
        kinds = [_kind(k) for k in table["GMACs: k top-2"]]
        kinds += [_kind(_memory_k(line)[0]) for _, line in table.iterrows()]
        worst = max(
            table["GMACs: k top-2"].max(), max(_memory_k(r)[0] for _, r in table.iterrows())
        )
        if all(k == "n/a" for k in kinds):
            results.append(("not testable here", f"fewer than two ok sizes in {title}."))
        elif "quadratic" in kinds:
            results.append(("does not hold", f"a CNN cost grows as pixels^{_k(worst)} in {title}."))
        elif "between" in kinds:
            results.append(
                (
                    "holds with a caveat",
                    f"CNN costs grow up to pixels^{_k(worst)} in {title}, "
                    f"above the linear bound {LINEAR_MAX_K}.",
                )
            )
        else:
            results.append(
                (
                    "holds",
                    f"GMACs and activation memory of every CNN grow as pixels^k with "
                    f"k ≤ {_k(worst)} between the two largest sizes.",
                )
            )
    verdict, why = _combine(results)
    return Claim("1", CLAIMS["1"], "<br>".join(evidence), verdict, why)


def claim_vit(inputs: Inputs) -> Claim:
    per_section = _exponents(inputs, ("vit",))
    if not per_section:
        return _missing("2", CLAIMS["2"], "ViT rows")
    evidence, results = [], []
    for title, part, table in per_section:
        gmacs_k = table["GMACs: k top-2"].max()
        mem = {
            attn: [
                _memory_k(line)[0] for _, line in table.iterrows() if f"({attn})" in line["variant"]
            ]
            for attn in ("naive", "fused")
        }
        naive_k = max(mem["naive"], default=float("nan"))
        fused_k = max(mem["fused"], default=float("nan"))
        evidence.append(
            f"Scaling exponents, {title}: {_exponent_text(table)}{_largest_vit(part)} "
            f"({_plot(inputs, title, 'gmacs')}, {_plot(inputs, title, 'peak_memory')})"
        )
        compute, naive, fused = _kind(gmacs_k), _kind(naive_k), _kind(fused_k)
        if compute == "n/a":
            results.append(("not testable here", f"fewer than two ok ViT sizes in {title}."))
        elif compute == "linear" and naive != "quadratic":
            results.append(
                (
                    "does not hold",
                    f"ViT GMACs grow as pixels^{_k(gmacs_k)} and memory as "
                    f"pixels^{_k(naive_k)} in {title}.",
                )
            )
        elif naive == "quadratic" and fused == "linear":
            results.append(
                (
                    "holds with a caveat",
                    f"with naive attention memory grows as "
                    f"pixels^{_k(naive_k)} and GMACs as pixels^{_k(gmacs_k)}, but {CAVEAT_SDPA} "
                    f"(k {_k(fused_k)}); only compute stays quadratic.",
                )
            )
        elif naive == "quadratic" and compute == "quadratic":
            results.append(
                (
                    "holds",
                    f"GMACs grow as pixels^{_k(gmacs_k)} and memory as "
                    f"pixels^{_k(naive_k)} between the two largest sizes.",
                )
            )
        else:
            results.append(
                (
                    "holds with a caveat",
                    f"GMACs grow as pixels^{_k(gmacs_k)} but memory only as "
                    f"pixels^{_k(max(naive_k, fused_k))} in {title}.",
                )
            )
    verdict, why = _combine(results)
    return Claim("2", CLAIMS["2"], "<br>".join(evidence), verdict, why)


def _largest_vit(section: pd.DataFrame) -> str:
    """Activation memory of each ViT variant at the largest ok size of the section."""
    ok = section[(section["status"] == "ok") & section["measured_activations_mib"].notna()]
    if ok.empty:
        return ""
    size = int(ok["infer_img_size"].max())
    at = ok[ok["infer_img_size"] == size].sort_values("variant")
    cells = ", ".join(
        f"{v} {fmt(m)} MiB"
        for v, m in zip(at["variant"], at["measured_activations_mib"], strict=True)
    )
    return f"; activations at {size} px: {cells}"


def _erf_rows(inputs: Inputs, families: tuple[str, ...], trained: bool) -> pd.DataFrame:
    erf = inputs.erf
    if erf.empty or not set(ERF_COLUMNS) <= set(erf.columns):
        return pd.DataFrame(columns=list(ERF_COLUMNS))
    weights = erf["weights"].astype(str)
    keep = erf["family"].isin(families) & ((weights != "random init") == trained)
    rows = erf[keep].sort_values("img_size")
    return rows.drop_duplicates("model", keep="last")


def _extent(r50_frac: float) -> str:
    if not np.isfinite(r50_frac):
        return "n/a"
    if r50_frac >= GLOBAL_MIN_R50:
        return "global"
    return "local" if r50_frac < LOCAL_MAX_R50 else "intermediate"


def _erf_text(rows: pd.DataFrame, label: str) -> str:
    return "; ".join(
        f"{r['model']} ({label}, {int(r['img_size'])} px): r50 {r['r50_frac']:.3f} of the side, "
        f"area ratio at t=0.99 {fmt(r['area_ratio_99'])}, cross index {r['cross_index']:.2f}"
        for _, r in rows.iterrows()
    )


def claim_ssm_linear(inputs: Inputs) -> Claim:
    per_section = _exponents(inputs, ("vim", "vmamba"))
    if not per_section:
        return _missing("3", CLAIMS["3"], "Vim or VMamba rows")
    evidence, results = [], []
    for title, _part, table in per_section:
        evidence.append(
            f"Scaling exponents, {title}: {_exponent_text(table)} "
            f"({_plot(inputs, title, 'gmacs')}, {_plot(inputs, title, 'peak_memory')})"
        )
        ks = list(table["GMACs: k top-2"]) + [_memory_k(line)[0] for _, line in table.iterrows()]
        kinds = {_kind(k) for k in ks} - {"n/a"}
        worst = max((k for k in ks if np.isfinite(k)), default=float("nan"))
        if not kinds:
            results.append(("not testable here", f"fewer than two ok sizes in {title}."))
        elif kinds == {"linear"}:
            results.append(("holds", f"GMACs and memory grow as pixels^k, k ≤ {_k(worst)}."))
        else:
            results.append(("does not hold", f"a cost grows as pixels^{_k(worst)} in {title}."))
    verdict, why = _combine(results)
    if verdict != "holds":
        return Claim("3", CLAIMS["3"], "<br>".join(evidence), verdict, why)

    trained = _erf_rows(inputs, ("vim", "vmamba"), trained=True)
    init = _erf_rows(inputs, ("vim", "vmamba"), trained=False)
    if not trained.empty:
        evidence.append(f"erf.csv: {_erf_text(trained, 'trained')}")
        extents = {
            m: _extent(f) for m, f in zip(trained["model"], trained["r50_frac"], strict=True)
        }
        if all(e == "global" for e in extents.values()):
            return Claim(
                "3",
                CLAIMS["3"],
                "<br>".join(evidence),
                "holds",
                why[:-1] + f"; trained ERFs global (r50 ≥ {GLOBAL_MIN_R50} of the side).",
            )
        local = ", ".join(m for m, e in extents.items() if e != "global")
        return Claim(
            "3",
            CLAIMS["3"],
            "<br>".join(evidence),
            "does not hold",
            f"costs scale linearly but the trained ERF of {local} is not global.",
        )
    if not init.empty:
        evidence.append(f"erf.csv: {_erf_text(init, 'random init')}")
    extents = ", ".join(
        f"{m} {_extent(f)}" for m, f in zip(init["model"], init["r50_frac"], strict=True)
    )
    return Claim(
        "3",
        CLAIMS["3"],
        "<br>".join(evidence),
        "holds with a caveat",
        f"Linear scaling is measured ({why[:-1]}), the global field is not: erf.csv has no trained "
        f"Vim/VMamba row{f' and at random init they are {extents}' if extents else ''}; "
        f"{CAVEAT_INIT}.",
    )


def _window_of(frame: pd.DataFrame) -> pd.Series:
    if "window" in frame:
        return frame["window"].fillna("").astype(str)
    text = frame["variant"].astype(str) + " " + _options(frame)
    return text.map(
        lambda t: next((w for w in WINDOWS if w in t.split() or f"window={w}" in t), "")
    )


def claim_windowed(inputs: Inputs) -> list[Claim]:
    frame = inputs.frame
    windowed = frame[frame["family"] == "windowed_vit"] if not frame.empty else frame
    out = []
    for window in WINDOWS:
        number, text = f"11 (window {window})", f"{CLAIM_11}, window {window}."
        rows = windowed[_window_of(windowed) == window] if not windowed.empty else windowed
        if rows.empty:
            out.append(
                _missing(
                    number, text, f"`windowed_vit` rows with window={window} (Swin-T, issue 17)"
                )
            )
            continue
        evidence, results = [], []
        for title, section in sections(rows):
            table = analysis.exponent_table(section)
            evidence.append(
                f"Scaling exponents, {title}: {_exponent_text(table)} "
                f"({_plot(inputs, title, 'gmacs')})"
            )
            gmacs_k = table["GMACs: k top-2"].max()
            mem_k = max(_memory_k(line)[0] for _, line in table.iterrows())
            worst = np.nanmax([gmacs_k, mem_k]) if np.isfinite([gmacs_k, mem_k]).any() else np.nan
            kind = _kind(worst)
            if kind == "n/a":
                results.append(("not testable here", f"fewer than two ok sizes in {title}."))
            elif kind == "quadratic":
                results.append(
                    ("holds", f"with the window {window} cost still grows as pixels^{_k(worst)}.")
                )
            elif kind == "linear":
                results.append(
                    (
                        "does not hold",
                        f"with the window {window} GMACs grow as "
                        f"pixels^{_k(gmacs_k)} and memory as pixels^{_k(mem_k)}: linear.",
                    )
                )
            else:
                results.append(
                    (
                        "holds with a caveat",
                        f"with the window {window} cost grows as "
                        f"pixels^{_k(worst)}: above linear, below the quadratic regime.",
                    )
                )
        verdict, why = _combine(results)
        out.append(Claim(number, text, "<br>".join(evidence), verdict, why))
    return out


# --- claim 4: Vim paper Figure 1 ----------------------------------------------------------------


def claim_vim_figure1(inputs: Inputs) -> Claim:
    figures = inputs.data("claim_figures.csv")
    paper = (
        dict(zip(figures["quantity"], figures["value"], strict=True)) if not figures.empty else {}
    )
    speed_pub = paper.get("vim_speedup_over_deit_1248", np.nan)
    saving_pub = paper.get("vim_memory_saving_1248", np.nan)
    frame = default_rows(inputs.frame)
    published = read_published("cost", inputs.data_dir)
    evidence, results = [], []
    if frame.empty or published.empty:
        return _missing("4", CLAIMS["4"], "result rows and published cost figures")
    for title, section in sections(frame):
        table = vim_figure1_ratios(section, published)
        if table.empty or 1248 not in set(table["size"]):
            continue
        line = table[table["size"] == 1248].iloc[0]
        mem, speed = line["memory, ours"], line["speed, ours"]
        deit = section[
            (section["model"] == "deit_tiny_patch16_224")
            & (section["attn"] == "naive")
            & (section["infer_img_size"] == 1248)
        ].iloc[0]
        batch = int(deit["infer_batch_size"]) if np.isfinite(deit["infer_batch_size"]) else 1
        evidence.append(
            f"Vim paper Figure 1 as ratios, {title}, 1248 px: speed Vim-Ti/DeiT-Ti (naive) "
            f"{fmt(speed)}, memory DeiT-Ti/Vim-Ti {fmt(mem)}"
            + (f" (saving {100 * (1 - 1 / mem):.1f}%)" if isinstance(mem, float) else "")
            + f"; DeiT-Ti status {deit['status']} at batch {batch}"
        )
        if deit["status"] == "oom":
            results.append(
                ("holds", f"DeiT-Ti runs out of memory at 1248 px on {title}, as in the paper.")
            )
            continue
        if not (isinstance(mem, float) and isinstance(speed, float)):
            results.append(
                ("not testable here", f"Vim-Ti or DeiT-Ti failed at 1248 px in {title}.")
            )
            continue
        saving = 100 * (1 - 1 / mem)
        if speed <= 1 or saving <= 0:
            results.append(
                (
                    "does not hold",
                    f"at 1248 px Vim-Ti is {fmt(speed)}× DeiT-Ti's speed "
                    f"and saves {saving:.1f}% memory in {title}.",
                )
            )
            continue
        device = deit["device_name"]
        caveats = [
            f"the paper's DeiT-Ti OOM does not reproduce on the measured device ({device}, "
            f"batch {batch}: {fmt(deit['measured_peak_mib'])} MiB)"
        ]
        if deit["device"] != "cuda":
            caveats.append("measured on a CPU, not a GPU")
        fused = section[
            (section["model"] == "deit_tiny_patch16_224")
            & (section["attn"] == "fused")
            & (section["infer_img_size"] == 1248)
            & (section["status"] == "ok")
        ]
        vim = section[
            (section["model"] == "vim_tiny")
            & (section["infer_img_size"] == 1248)
            & (section["status"] == "ok")
        ]
        if len(fused) and len(vim):
            fused_ratio = fused["measured_peak_mib"].iloc[0] / vim["measured_peak_mib"].iloc[0]
            evidence[-1] += f"; memory fused DeiT-Ti/Vim-Ti {fmt(fused_ratio)}"
            if fused_ratio < 1:
                caveats.append(
                    f"against DeiT-Ti with fused attention Vim-Ti saves no memory "
                    f"(DeiT-Ti/Vim-Ti {fmt(fused_ratio)}), since {CAVEAT_SDPA}"
                )
        results.append(
            (
                "holds with a caveat",
                f"Vim-Ti is {fmt(speed)}× faster (paper {fmt(speed_pub)}×) and saves {saving:.1f}% "
                f"memory (paper {fmt(saving_pub)}%) against DeiT-Ti with naive attention; but "
                + "; ".join(caveats)
                + ".",
            )
        )
    if not results:
        return _missing(
            "4",
            CLAIMS["4"],
            "a section with both vim_tiny and deit_tiny_patch16_224 (naive) at 1248 px",
        )
    verdict, why = _combine(results)
    return Claim("4", CLAIMS["4"], "<br>".join(evidence), verdict, why)


# --- claims 5, 6: effective receptive fields ----------------------------------------------------


def claim_erf_cnn_vit(inputs: Inputs) -> Claim:
    for trained in (True, False):
        cnn = _erf_rows(inputs, ("cnn",), trained)
        vit = _erf_rows(inputs, ("vit",), trained)
        if cnn.empty or vit.empty:
            continue
        label = "trained" if trained else "random init"
        evidence = f"erf.csv: {_erf_text(cnn, label)}; {_erf_text(vit, label)}"
        cnn_local = all(_extent(f) == "local" for f in cnn["r50_frac"])
        vit_global = all(_extent(f) == "global" for f in vit["r50_frac"])
        if trained:
            verdict: Verdict = "holds" if cnn_local and vit_global else "does not hold"
            why = (
                f"trained CNN ERFs are {'local' if cnn_local else 'not all local'} "
                f"(r50 < {LOCAL_MAX_R50} of the side) and ViT ERFs "
                f"{'global' if vit_global else 'not all global'} (r50 ≥ {GLOBAL_MIN_R50})."
            )
            return Claim("5", CLAIMS["5"], evidence, verdict, why)
        if cnn_local and vit_global:
            return Claim(
                "5",
                CLAIMS["5"],
                evidence,
                "holds with a caveat",
                f"At random init CNN ERFs are local and DeiT's global, but {CAVEAT_INIT} "
                "(timm's init switches CNN residual branches off).",
            )
        return Claim(
            "5",
            CLAIMS["5"],
            evidence,
            "not testable here",
            f"At random init the ERFs do not split this way and {CAVEAT_INIT}; "
            "missing: trained CNN and ViT rows in erf.csv.",
        )
    return _missing("5", CLAIMS["5"], "CNN and ViT rows in results/erf/erf.csv")


def claim_erf_vmamba(inputs: Inputs) -> Claim:
    init = _erf_rows(inputs, ("vmamba",), trained=False)
    trained = _erf_rows(inputs, ("vmamba",), trained=True)
    if init.empty and trained.empty:
        return _missing("6", CLAIMS["6"], "VMamba rows in results/erf/erf.csv")
    evidence = "erf.csv: " + "; ".join(
        t for t in (_erf_text(init, "random init"), _erf_text(trained, "trained")) if t
    )
    if trained.empty:
        extents = ", ".join(
            f"{m} {_extent(f)}" for m, f in zip(init["model"], init["r50_frac"], strict=True)
        )
        return Claim(
            "6",
            CLAIMS["6"],
            evidence,
            "not testable here",
            f"Missing: a trained VMamba row in erf.csv (no checkpoint given to "
            f"`python -m study.erf`); before training it is {extents}.",
        )
    results: list[tuple[Verdict, str]] = []
    for _, row in trained.iterrows():
        before = init[init["model"] == row["model"]]
        init_extent = _extent(before["r50_frac"].iloc[0]) if len(before) else "not measured"
        after, cross = _extent(row["r50_frac"]), row["cross_index"] >= CROSS_MIN_INDEX
        name = row["model"]
        if after != "global" or init_extent == "global":
            results.append(("does not hold", f"{name}: {init_extent} at init, {after} trained."))
        elif init_extent == "local" and cross:
            results.append(
                (
                    "holds",
                    f"{name}: local at init, global and cross-shaped trained "
                    f"(cross index {row['cross_index']:.2f}).",
                )
            )
        else:
            results.append(
                (
                    "holds with a caveat",
                    f"{name}: {init_extent} at init, global trained,"
                    f" cross index {row['cross_index']:.2f} (cross from "
                    f"{CROSS_MIN_INDEX}).",
                )
            )
    verdict, why = _combine(results)
    return Claim("6", CLAIMS["6"], evidence, verdict, why)


# --- claim 7: ablations -------------------------------------------------------------------------


def _ablation_cost(frame: pd.DataFrame, option: str) -> list[str]:
    """Cost saved by `option` against the default variant, per model and section, at the largest
    size where both ran ok."""
    texts = []
    for title, section in sections(frame):
        chosen = _options(section).str.split().map(lambda t: option in t)
        ablated = section[chosen & (section["status"] == "ok")]
        default = default_rows(section)
        default = default[default["status"] == "ok"]
        for model, part in ablated.groupby("model"):
            base = default[default["model"] == model].set_index("infer_img_size")
            part = part.set_index("infer_img_size")
            common = sorted(set(part.index) & set(base.index))
            if not common:
                continue
            size = common[-1]
            saved = []
            for col, label in (
                ("infer_gmacs", "GMACs"),
                ("measured_peak_mib", "peak memory"),
                ("ms_per_img", "time"),
            ):
                a, b = part.at[size, col], base.at[size, col]
                if np.isfinite(a) and np.isfinite(b) and b > 0:
                    saved.append(f"{label} −{100 * (1 - a / b):.0f}%")
            texts.append(
                f"{model} {option} against default, {title}, {size} px: " + ", ".join(saved)
            )
    return texts


def claim_ablations(inputs: Inputs) -> Claim:
    published = inputs.data("ablation_accuracy.csv")
    if published.empty:
        cols = ["model", "option", "benchmark", "value_default", "value_ablated", "source", "note"]
        published = pd.DataFrame(columns=cols)
    frame = inputs.frame
    evidence = []
    pub_text = []
    for _, p in published.iterrows():
        if np.isfinite(p["value_default"]) and np.isfinite(p["value_ablated"]):
            delta = p["value_default"] - p["value_ablated"]
            pub_text.append(
                f"{p['model']} {p['option']}: {p['benchmark']} {p['value_ablated']:.1f}"
                f" → {p['value_default']:.1f} with it ({delta:+.1f}; {p['source']})"
            )
        else:
            pub_text.append(f"{p['model']} {p['option']}: {p['note']} ({p['source']})")
    costs = {o: _ablation_cost(frame, o) for o in ABLATIONS} if not frame.empty else {}
    for option in ABLATIONS:
        evidence += costs.get(option, [])
    evidence += list(dict.fromkeys(pub_text))
    if not any(costs.values()):
        return Claim(
            "7",
            CLAIMS["7"],
            "<br>".join(evidence) or "—",
            "not testable here",
            "Missing: ablation rows (`options` = unidirectional, directions1, directions2) "
            "to set their cost beside the published accuracy change.",
        )
    vim_pub = published[published["option"] == "unidirectional"].dropna(
        subset=["value_default", "value_ablated"]
    )
    gains = vim_pub["value_default"] - vim_pub["value_ablated"]
    text = ", ".join(f"{b} {d:+.1f}" for b, d in zip(vim_pub["benchmark"], gains, strict=True))
    small = set(vim_pub.loc[gains <= SMALL_ACCURACY_POINTS, "benchmark"])
    large = set(vim_pub["benchmark"]) - small
    verdict: Verdict
    if not costs.get("unidirectional"):
        verdict, why = "not testable here", "Missing: Vim rows with options=unidirectional."
    elif vim_pub.empty:
        verdict, why = (
            "not testable here",
            ("Missing: a published accuracy change for Vim's backward direction."),
        )
    elif not large:
        verdict, why = "holds", f"The backward direction adds little ({text}) for its cost."
    elif small:
        verdict, why = (
            "holds with a caveat",
            (
                f"The backward direction adds little on {', '.join(sorted(small))} but more on "
                f"{', '.join(sorted(large))} ({text}), for its cost."
            ),
        )
    else:
        verdict, why = "does not hold", f"The backward direction adds {text}."
    vmamba_pub = published[published["option"].isin(["directions1", "directions2"])]
    if not (costs.get("directions1") or costs.get("directions2")):
        note = "VMamba's directions are not measured (no directions1/directions2 rows)."
    elif vmamba_pub["value_default"].notna().any():
        note = ""
    else:
        note = (
            "VMamba's directions are measured, but its paper gives no accuracy change at equal "
            "width."
        )
    if note and verdict == "holds":
        verdict = "holds with a caveat"
    return Claim("7", CLAIMS["7"], "<br>".join(evidence), verdict, f"{why} {note}".strip())


# --- claim 8: the materialising scan ------------------------------------------------------------


def claim_naive_scan(inputs: Inputs) -> Claim:
    frame = inputs.frame
    if frame.empty or not (frame["scan_backend"] == "naive").any():
        return _missing(
            "8",
            CLAIMS["8"],
            "rows with scan_backend=naive (a materialising scan) beside the fused one",
        )
    evidence, results = [], []
    base = frame[~_is_ablation(frame)]
    for title, section in sections(base):
        naive = section[section["scan_backend"] == "naive"]
        fused = section[~section["scan_backend"].isin(FUSED_SCANS_EXCLUDED)]
        for model, part in naive.groupby("model"):
            ref = fused[fused["model"] == model].drop_duplicates("infer_img_size", keep="last")
            both = pd.merge(
                part, ref, on="infer_img_size", how="inner", suffixes=("_naive", "_fused")
            ).set_index("infer_img_size")
            if both.empty:
                continue
            measured = (both["status_naive"] == "ok") & (both["status_fused"] == "ok")
            col = np.where(measured, "measured_activations_mib", "predicted_activations_mib")
            mem = pd.Series(
                [
                    both.at[s, f"{c}_naive"] / both.at[s, f"{c}_fused"]
                    for s, c in zip(both.index, col, strict=True)
                ],
                index=both.index,
            )
            time = (both["ms_per_img_naive"] / both["ms_per_img_fused"]).where(measured)
            cells = ", ".join(
                f"{s} px {fmt(mem[s])}× memory"
                + ("" if measured[s] else " (predicted)")
                + (f", {fmt(time[s])}× time" if np.isfinite(time[s]) else "")
                for s in both.index
            )
            evidence.append(f"{model} naive/fused scan, {title}: {cells}")
            largest = mem.dropna()
            if largest.empty:
                continue
            ratio = float(largest.iloc[-1])
            backend = ", ".join(sorted(set(ref["scan_backend"])))
            if ratio >= NAIVE_SCAN_MIN_RATIO:
                on_gpu = (part["device"] == "cuda").all()
                if on_gpu:
                    results.append(
                        (
                            "holds",
                            f"materialising the states costs {fmt(ratio)}× the "
                            f"fused scan's activation memory at {largest.index[-1]} px.",
                        )
                    )
                else:
                    results.append(
                        (
                            "holds with a caveat",
                            f"materialising the states costs "
                            f"{fmt(ratio)}× the memory of the fused scan ({backend}) at "
                            f"{largest.index[-1]} px, but on a CPU there is no SRAM/HBM "
                            "split: what is shown is the cost of materialising, not where "
                            "the fused kernel keeps its state.",
                        )
                    )
            elif ratio <= 1.2:
                results.append(
                    (
                        "does not hold",
                        f"the materialising scan costs only {fmt(ratio)}× "
                        f"the fused scan's memory at {largest.index[-1]} px.",
                    )
                )
            else:
                results.append(
                    (
                        "holds with a caveat",
                        f"the materialising scan costs "
                        f"{fmt(ratio)}× the fused scan's memory: a gap, a modest one.",
                    )
                )
    if not evidence:
        return _missing(
            "8", CLAIMS["8"], "a fused-scan row at the same size as each naive-scan row"
        )
    verdict, why = _combine(results or [("not testable here", "no usable memory ratio.")])
    return Claim("8", CLAIMS["8"], "<br>".join(evidence), verdict, why)


# --- claim 9: block anatomy ---------------------------------------------------------------------


def claim_block(inputs: Inputs) -> Claim:
    blocks = inputs.data("block_costs.csv")
    if blocks.empty or not (blocks["family"] == "vmamba").any():
        return _missing(
            "9",
            CLAIMS["9"],
            "VMamba lines in study/data/block_costs.csv (python -m study.data.block_costs)",
        )
    for col in ("mlp", "pos_embed"):
        blocks[col] = blocks[col].astype(str).str.lower() == "true"
    vit = blocks[blocks["family"] == "vit"]
    evidence, without_mlp, with_mlp, with_pos = [], [], [], []
    for model, part in blocks[blocks["family"] == "vmamba"].groupby("model", sort=False):
        mlp, pos = bool(part["mlp"].any()), bool(part["pos_embed"].any())
        text = f"{model}: MLP {'yes' if mlp else 'no'}, position embedding {'yes' if pos else 'no'}"
        same = vit.merge(part, on="width", suffixes=("_vit", ""))
        ratio = np.nan
        if len(same):
            r = same.iloc[-1]
            ratio = r["params_per_block_m"] / r["params_per_block_m_vit"]
            text += (
                f"; block at width {int(r['width'])}: {fmt(r['params_per_block_m'])} M params, "
                f"{fmt(r['gmacs_per_block'])} GMACs at 224 px, against {r['model_vit']}'s "
                f"{fmt(r['params_per_block_m_vit'])} M, {fmt(r['gmacs_per_block_vit'])} GMACs"
            )
        evidence.append(text)
        named = f"{model} ({fmt(ratio)}× a ViT block's parameters at equal width)"
        (with_mlp if mlp else without_mlp).append(named)
        if pos:
            with_pos.append(model)
    evidence.append("source: study/data/block_costs.csv")
    text = "<br>".join(evidence)
    if with_pos:
        return Claim(
            "9",
            CLAIMS["9"],
            text,
            "does not hold",
            f"{', '.join(with_pos)} adds a position embedding.",
        )
    if not with_mlp:
        return Claim(
            "9",
            CLAIMS["9"],
            text,
            "holds",
            f"No VMamba block has an MLP or a position embedding: {', '.join(without_mlp)}.",
        )
    if not without_mlp:
        return Claim(
            "9",
            CLAIMS["9"],
            text,
            "does not hold",
            f"No position embedding, but every VMamba block has an MLP: {', '.join(with_mlp)}.",
        )
    return Claim(
        "9",
        CLAIMS["9"],
        text,
        "holds with a caveat",
        f"No VMamba has a position embedding, but only {', '.join(without_mlp)} has no MLP; "
        f"{', '.join(with_mlp)} has one.",
    )


# --- claim 10: published accuracy ---------------------------------------------------------------


def _param_counts(inputs: Inputs) -> dict[str, float]:
    counts: dict[str, float] = {}
    cost = read_published("cost", inputs.data_dir)
    if not cost.empty:
        params = cost[cost["metric"] == "param_count"]
        counts.update(dict(zip(params["model"], params["value"], strict=True)))
    if not inputs.frame.empty:
        ours = inputs.frame.dropna(subset=["param_count"]).drop_duplicates("model")
        counts.update(dict(zip(ours["model"], ours["param_count"], strict=True)))
    return counts


def claim_accuracy(inputs: Inputs) -> Claim:
    accuracy = read_published("accuracy", inputs.data_dir)
    if accuracy.empty:
        return _missing("10", CLAIMS["10"], "study/data/published_accuracy.csv")
    params = _param_counts(inputs)
    family = {
        m: ("vmamba" if m.startswith("vmamba") else "vim" if m.startswith("vim") else "")
        for m in accuracy["model"]
    }
    evidence, missing, behind = [], [], []
    for bench in ("imagenet_top1", "coco_box_ap", "ade20k_miou"):
        rows = accuracy[accuracy["benchmark"] == bench]
        vm = rows[rows["model"].map(family) == "vmamba"]
        vi = rows[rows["model"].map(family) == "vim"]
        pairs = []
        for _, a in vm.iterrows():
            for _, b in vi.iterrows():
                pa, pb = params.get(a["model"], np.nan), params.get(b["model"], np.nan)
                similar = (
                    np.isfinite(pa)
                    and np.isfinite(pb)
                    and (max(pa, pb) / min(pa, pb) <= SIMILAR_SIZE_FACTOR)
                )
                if similar and a["setting"] == b["setting"]:
                    pairs.append(
                        f"{a['model']} ({pa:.0f} M) {a['value']:.1f} vs {b['model']} "
                        f"({pb:.0f} M) {b['value']:.1f}"
                    )
                    if a["value"] <= b["value"]:
                        behind.append(f"{a['model']} vs {b['model']} on {bench}")
        if pairs:
            evidence.append(f"published_accuracy.csv, {bench}: " + "; ".join(pairs))
        else:
            missing.append(bench)
    if not evidence:
        return _missing(
            "10",
            CLAIMS["10"],
            "a VMamba and a Vim figure at similar size and the same setting on any benchmark",
        )
    if missing:
        evidence.append(
            f"no comparable pair (parameters within {SIMILAR_SIZE_FACTOR}×, same "
            f"setting) on {', '.join(missing)}"
        )
    text = "<br>".join(evidence)
    if behind:
        return Claim(
            "10",
            CLAIMS["10"],
            text,
            "does not hold",
            f"VMamba is not ahead in {', '.join(behind)}.",
        )
    if missing:
        return Claim(
            "10",
            CLAIMS["10"],
            text,
            "holds with a caveat",
            f"VMamba is ahead in every comparable pair, but {', '.join(missing)} has no "
            "Vim figure at similar size in the same setting.",
        )
    return Claim("10", CLAIMS["10"], text, "holds", "VMamba is ahead in every comparable pair.")


# --- the section --------------------------------------------------------------------------------

CHECKS: tuple[Callable[[Inputs], Claim | list[Claim]], ...] = (
    claim_cnn,
    claim_vit,
    claim_ssm_linear,
    claim_vim_figure1,
    claim_erf_cnn_vit,
    claim_erf_vmamba,
    claim_ablations,
    claim_naive_scan,
    claim_block,
    claim_accuracy,
    claim_windowed,
)


def check_claims(inputs: Inputs) -> list[Claim]:
    """Every claim, in order, each with exactly one verdict from VERDICTS."""
    inputs = Inputs(
        inputs.frame.reset_index(drop=True), inputs.erf, inputs.data_dir, inputs.plot_prefix
    )
    out: list[Claim] = []
    for check in CHECKS:
        result = check(inputs)
        out += result if isinstance(result, list) else [result]
    return out


def read_erf(results_dir: Path) -> pd.DataFrame:
    path = Path(results_dir) / "erf" / "erf.csv"
    return (
        pd.read_csv(path, keep_default_na=False, na_values=[""])
        if path.exists()
        else (pd.DataFrame())
    )


def claims_section(frame: pd.DataFrame, results_dir: str | Path) -> list[str]:
    """REPORT.md lines of the Claims section, from the tidy rows and results_dir/erf/erf.csv."""
    claims = check_claims(Inputs(frame, read_erf(Path(results_dir))))
    table = pd.DataFrame(
        [
            {
                "#": c.number,
                "claim": c.claim,
                "our evidence": c.evidence,
                "verdict": f"**{c.verdict}**",
                "why": c.why[:1].upper() + c.why[1:],
            }
            for c in claims
        ]
    )
    return [
        "## Claims",
        "",
        "The talk's claims against our rows, `erf/erf.csv` and the published figures in "
        "`study/data/`. Exponents k (cost ∝ pixels^k) are the `top-2` ones of each section's "
        f"scaling table: linear for k ≤ {LINEAR_MAX_K}, quadratic for k ≥ {QUADRATIC_MIN_K}; "
        "memory k is activation memory where measured. An ERF is global when half its "
        f"contribution lies beyond {GLOBAL_MIN_R50} of the image side (r50_frac), local below "
        f'{LOCAL_MAX_R50}. "Similar size": parameters within {SIMILAR_SIZE_FACTOR}×.',
        "",
        md_table(table, index=False),
    ]
