"""Claims 5 and 6: effective receptive fields, from results/erf/erf.csv."""

from study.report.claims_common import (
    CAVEAT_INIT,
    CLAIMS,
    CROSS_MIN_INDEX,
    GLOBAL_MIN_R50,
    LOCAL_MAX_R50,
    Claim,
    Inputs,
    Verdict,
    combine,
    erf_rows,
    erf_text,
    extent,
    missing,
)

# --- claims 5, 6: effective receptive fields ----------------------------------------------------


def claim_erf_cnn_vit(inputs: Inputs) -> Claim:
    for trained in (True, False):
        cnn = erf_rows(inputs, ("cnn",), trained)
        vit = erf_rows(inputs, ("vit",), trained)
        if cnn.empty or vit.empty:
            continue
        label = "trained" if trained else "random init"
        evidence = f"erf.csv: {erf_text(cnn, label)}; {erf_text(vit, label)}"
        cnn_local = all(extent(f) == "local" for f in cnn["r50_frac"])
        vit_global = all(extent(f) == "global" for f in vit["r50_frac"])
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
    return missing("5", CLAIMS["5"], "CNN and ViT rows in results/erf/erf.csv")


def claim_erf_vmamba(inputs: Inputs) -> Claim:
    init = erf_rows(inputs, ("vmamba",), trained=False)
    trained = erf_rows(inputs, ("vmamba",), trained=True)
    if init.empty and trained.empty:
        return missing("6", CLAIMS["6"], "VMamba rows in results/erf/erf.csv")
    evidence = "erf.csv: " + "; ".join(
        t for t in (erf_text(init, "random init"), erf_text(trained, "trained")) if t
    )
    if trained.empty:
        extents = ", ".join(
            f"{m} {extent(f)}" for m, f in zip(init["model"], init["r50_frac"], strict=True)
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
        init_extent = extent(before["r50_frac"].iloc[0]) if len(before) else "not measured"
        after, cross = extent(row["r50_frac"]), row["cross_index"] >= CROSS_MIN_INDEX
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
    verdict, why = combine(results)
    return Claim("6", CLAIMS["6"], evidence, verdict, why)
