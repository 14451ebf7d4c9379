"""The report: result rows (JSON files) -> results.csv, REPORT.md and PNG plots.

Reads files only; never imports the measuring code (study.measure, study.sweep, study.models,
kernels). Entry point: `python -m study.report [RESULTS_DIR]`.
"""

from study.report.analysis import crossover_px, fit_exponent, pareto_front
from study.report.build import DEFAULT_BASELINE, build_report
from study.report.load import load_table, tidy

__all__ = [
    "DEFAULT_BASELINE",
    "build_report",
    "crossover_px",
    "fit_exponent",
    "load_table",
    "pareto_front",
    "tidy",
]
