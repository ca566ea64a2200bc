"""``diffpool-viz RUN_DIR``: draw what the pooling of a trained run learned for one graph."""

from __future__ import annotations

import argparse
import sys

from diffpool.cli import extras_present


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    if not extras_present("diffpool-viz", "viz", "train"):  # train: a run's module and data
        return 2
    from diffpool.training.predict import load_run
    from diffpool.viz import draw_pooling

    parser = argparse.ArgumentParser(
        prog="diffpool-viz",
        description="Draw one graph coloured by its first-level clusters, and the coarsened "
        "graph with edge widths from A' = S^T A S, from a diffpool-train run directory.",
    )
    parser.add_argument("run_dir", help="a finished diffpool-train job directory")
    parser.add_argument("--graph", type=int, default=0, help="dataset index of the graph")
    parser.add_argument("--checkpoint", default="best", help="best, last, or a .ckpt path")
    parser.add_argument("--data-root", help="override the run's data.root")
    parser.add_argument("--out", help="PNG path (default: RUN_DIR/pooling-GRAPH.png)")
    parser.add_argument("--trust", action="append", default=[], metavar="NAME",
                        help="a _target_ the run's files may build besides the package's "
                        "(repeatable)")  # fmt: skip
    args = parser.parse_args(argv)
    data = None if args.data_root is None else {"root": args.data_root}
    try:
        module, datamodule = load_run(args.run_dir, args.checkpoint, data=data, trust=args.trust)
        if not 0 <= args.graph < len(datamodule.dataset):
            raise ValueError(f"--graph must be in [0, {len(datamodule.dataset)})")
        graph = datamodule.dataset[args.graph]
        picture = draw_pooling(
            module, graph, args.out or f"{args.run_dir}/pooling-{args.graph}.png",
            title=f"{datamodule.name} graph {args.graph} (class {int(graph.y)})",
        )  # fmt: skip
    except (FileNotFoundError, ValueError) as err:
        print(f"diffpool-viz: {err}", file=sys.stderr)
        return 2
    print(f"wrote {picture.path}: {len(picture.used)} clusters used")
    return 0


if __name__ == "__main__":
    sys.exit(main())
