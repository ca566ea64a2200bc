"""``diffpool-report DIR``: mean ± std over folds of every configuration of a sweep."""

from __future__ import annotations

import argparse
import sys

from diffpool.cli import extras_present
from diffpool.utils.extras import install_command


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    if not extras_present("diffpool-report", "train"):
        return 2
    from diffpool.training.report import write_report

    parser = argparse.ArgumentParser(
        prog="diffpool-report",
        description="Aggregate the results.json files of a diffpool-train sweep into "
        "report.md, report.csv and report.png (fair and paper protocols), and the "
        "learning curves of every configuration into curves.png.",
    )
    parser.add_argument("sweep_dir", help="a multirun directory (searched recursively)")
    parser.add_argument("--out", help="where to write (default: SWEEP_DIR)")
    args = parser.parse_args(argv)
    try:
        paths = write_report(args.sweep_dir, args.out)
    except (FileNotFoundError, ValueError) as err:  # no runs, a malformed file, a link
        print(f"diffpool-report: {err}", file=sys.stderr)
        return 2
    print(paths["md"].read_text())
    print("\n".join(f"wrote {kind}: {path}" for kind, path in paths.items()))
    if "png" not in paths:
        print(f"no plots: they need the viz extra ({install_command('viz')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
