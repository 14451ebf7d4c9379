"""`python -m study.report [RESULTS_DIR] [--baseline LABEL] [--accuracy-size PX]`."""

import argparse
import sys
from pathlib import Path

from study.report.build import DEFAULT_BASELINE, build_report


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line and exit code 2, not argparse's usage block
        print(f"study.report: {message}", file=sys.stderr)
        sys.exit(2)


def _positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (pixels), got {text!r}")
    return int(text)


def main(argv: list[str] | None = None) -> None:
    parser = _Parser(prog="python -m study.report", description=__doc__)
    parser.add_argument("results_dir", nargs="?", default="results")
    parser.add_argument(
        "--baseline", default=DEFAULT_BASELINE, help=f"variant label (default {DEFAULT_BASELINE!r})"
    )
    parser.add_argument(
        "--accuracy-size",
        type=_positive_int,
        default=224,
        help="input size of the accuracy-vs-cost plot",
    )
    args = parser.parse_args(argv)
    if not Path(args.results_dir).is_dir():
        parser.error(
            f"no results folder {args.results_dir!r}; give the folder that holds rows/ "
            "(written by python -m study.sweep), e.g. results"
        )
    skipped: list[tuple[Path, str]] = []
    path = build_report(args.results_dir, args.baseline, args.accuracy_size, skipped)
    for file, why in skipped:
        print(f"study.report: skipped {file}: {why}", file=sys.stderr)
    print(f"wrote {path}, {path.parent / 'results.csv'} and {path.parent / 'plots'}/")


if __name__ == "__main__":
    main()
