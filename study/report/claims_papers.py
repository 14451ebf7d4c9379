"""Claims 4, 7, 9 and 10: our rows against the papers' figures and the data in study/data/."""

import numpy as np
import pandas as pd

from study.report import analysis
from study.report.claims_common import (
    ABLATIONS,
    CAVEAT_SDPA,
    CLAIMS,
    SIMILAR_SIZE_FACTOR,
    SMALL_ACCURACY_POINTS,
    Claim,
    Inputs,
    Verdict,
    combine,
    default_rows,
    missing,
    options_of,
)
from study.report.load import sections
from study.report.markdown import fmt
from study.report.published import read_published, vim_figure1_ratios

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
    evidence: list[str] = []
    results: dict[bool, list[tuple[Verdict, str]]] = {True: [], False: []}  # by on_gpu
    if frame.empty or published.empty:
        return missing("4", CLAIMS["4"], "result rows and published cost figures")
    for title, section in sections(frame):
        table = vim_figure1_ratios(section, published)
        if table.empty or 1248 not in set(table["size"]):
            continue
        # the claim is about GPUs: where a GPU section holds the grid, it decides the verdict
        bucket = results[bool((section["device"] == "cuda").all())]
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
            + _crossovers(section, inputs)
        )
        if deit["status"] == "oom":
            bucket.append(
                ("holds", f"DeiT-Ti runs out of memory at 1248 px on {title}, as in the paper.")
            )
            continue
        if not (isinstance(mem, float) and isinstance(speed, float)):
            bucket.append(("not testable here", f"Vim-Ti or DeiT-Ti failed at 1248 px in {title}."))
            continue
        saving = 100 * (1 - 1 / mem)
        if speed <= 1 or saving <= 0:
            bucket.append(
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
        bucket.append(
            (
                "holds with a caveat",
                f"Vim-Ti is {fmt(speed)}× faster (paper {fmt(speed_pub)}×) and saves {saving:.1f}% "
                f"memory (paper {fmt(saving_pub)}%) against DeiT-Ti with naive attention; but "
                + "; ".join(caveats)
                + ".",
            )
        )
    if not (results[True] or results[False]):
        return missing(
            "4",
            CLAIMS["4"],
            "a section with both vim_tiny and deit_tiny_patch16_224 (naive) at 1248 px",
        )
    verdict, why = combine(results[True] or results[False])
    return Claim("4", CLAIMS["4"], "<br>".join(evidence), verdict, why)


def _crossovers(section: pd.DataFrame, inputs: Inputs) -> str:
    """Where Vim-Ti becomes no dearer than DeiT-Ti (naive), from the report's crossover table."""
    table = analysis.crossover_table(section, read_published("architecture", inputs.data_dir))
    if table.empty:
        return ""
    pair = table[
        table["SSM model"].str.startswith("vim_tiny")
        & (table["attention model"] == "deit_tiny_patch16_224 (naive)")
    ]
    if pair.empty:
        return ""
    line = pair.iloc[0]
    return (
        f"; crossovers Vim-Ti against DeiT-Ti (naive): peak memory {line['peak MiB (measured)']}"
        f" px, time {line['ms per image']} px"
    )


# --- claim 7: ablations -------------------------------------------------------------------------


def _ablation_cost(frame: pd.DataFrame, option: str) -> list[str]:
    """Cost saved by `option` against the default variant, per model and section, at the largest
    size where both ran ok."""
    texts = []
    for title, section in sections(frame):
        chosen = options_of(section).str.split().map(lambda t: option in t)
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


# --- claim 9: block anatomy ---------------------------------------------------------------------


def claim_block(inputs: Inputs) -> Claim:
    blocks = inputs.data("block_costs.csv")
    if blocks.empty or not (blocks["family"] == "vmamba").any():
        return missing(
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
        return missing("10", CLAIMS["10"], "study/data/published_accuracy.csv")
    params = _param_counts(inputs)
    family = {
        m: ("vmamba" if m.startswith("vmamba") else "vim" if m.startswith("vim") else "")
        for m in accuracy["model"]
    }
    evidence, absent, behind = [], [], []
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
            absent.append(bench)
    if not evidence:
        return missing(
            "10",
            CLAIMS["10"],
            "a VMamba and a Vim figure at similar size and the same setting on any benchmark",
        )
    if absent:
        evidence.append(
            f"no comparable pair (parameters within {SIMILAR_SIZE_FACTOR}×, same "
            f"setting) on {', '.join(absent)}"
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
    if absent:
        return Claim(
            "10",
            CLAIMS["10"],
            text,
            "holds with a caveat",
            f"VMamba is ahead in every comparable pair, but {', '.join(absent)} has no "
            "Vim figure at similar size in the same setting.",
        )
    return Claim("10", CLAIMS["10"], text, "holds", "VMamba is ahead in every comparable pair.")
