"""The talk's claims, checked against our files: one line each with evidence, verdict and why.

Reads only what the report reads: the tidy table of rows, `results/erf/erf.csv`, and the data
files under `study/data/` (published accuracy and cost, `ablation_accuracy.csv`,
`claim_figures.csv`, `block_costs.csv`). Every number in the section comes from them; where the
data a claim needs is missing, its verdict is `not testable here` and the reason names the
missing data.
"""

from collections.abc import Callable
from pathlib import Path

import pandas as pd

from study.report.claims_common import (
    GLOBAL_MIN_R50,
    LINEAR_MAX_K,
    LOCAL_MAX_R50,
    QUADRATIC_MIN_K,
    SIMILAR_SIZE_FACTOR,
    VERDICTS,
    Claim,
    Inputs,
    Verdict,
    read_csv,
)
from study.report.claims_cost import (
    claim_cnn,
    claim_naive_scan,
    claim_ssm_linear,
    claim_vit,
    claim_windowed,
)
from study.report.claims_erf import claim_erf_cnn_vit, claim_erf_vmamba
from study.report.claims_papers import (
    claim_ablations,
    claim_accuracy,
    claim_block,
    claim_vim_figure1,
)
from study.report.markdown import md_table

__all__ = ["VERDICTS", "Claim", "Inputs", "Verdict", "check_claims", "claims_section"]

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


def read_erf(results_dir: str | Path) -> pd.DataFrame:
    """results_dir/erf/erf.csv (written by `python -m study.erf`), empty if absent."""
    return read_csv(Path(results_dir) / "erf" / "erf.csv")


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
        "memory k is activation memory where measured; time exponents are shown but decide no "
        "verdict (timings on a shared machine are noisy). An ERF is global when half its "
        f"contribution lies beyond {GLOBAL_MIN_R50} of the image side (r50_frac), local below "
        f'{LOCAL_MAX_R50}. "Similar size": parameters within {SIMILAR_SIZE_FACTOR}×.',
        "",
        md_table(table, index=False),
    ]
