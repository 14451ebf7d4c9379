"""The committed results come from the committed code (issue 16).

Every row under results/rows/ must carry `code_hash()` of the code in this checkout: a change to
the measuring code (study/, kernels/; see study/rows.py) makes the committed rows stale, and this
test fails until `make sweep` has been run again and its rows committed.
"""

from pathlib import Path

from study.rows import code_hash, read_rows

RESULTS = Path(__file__).resolve().parents[1] / "results"


def test_committed_rows_carry_the_current_code_hash():
    skipped: list = []
    rows = read_rows(RESULTS, skipped)
    assert rows and not skipped, skipped
    stale = sorted({str(r.get("code_hash")) for r in rows if r.get("code_hash") != code_hash()})
    assert not stale, (
        f"{sum(r.get('code_hash') != code_hash() for r in rows)} of {len(rows)} committed rows "
        f"were measured by other code (code_hash {', '.join(stale)}; now {code_hash()}): "
        "run `make sweep` and commit results/"
    )
