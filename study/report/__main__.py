"""`python -m study.report [RESULTS_DIR] [--baseline LABEL] [--accuracy-size PX]`."""

import argparse

from study.report.build import DEFAULT_BASELINE, build_report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m study.report", description=__doc__)
    parser.add_argument("results_dir", nargs="?", default="results")
    parser.add_argument(
        "--baseline", default=DEFAULT_BASELINE, help=f"variant label (default {DEFAULT_BASELINE!r})"
    )
    parser.add_argument(
        "--accuracy-size", type=int, default=224, help="input size of the accuracy-vs-cost plot"
    )
    args = parser.parse_args(argv)
    path = build_report(args.results_dir, args.baseline, args.accuracy_size)
    print(f"wrote {path}, {path.parent / 'results.csv'} and {path.parent / 'plots'}/")


if __name__ == "__main__":
    main()
