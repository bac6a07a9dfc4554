"""``clifer-train``: train the Imagination model (CAAE) and write a run directory.

Example::

    clifer-train --config default --data ../shared/data/fer2013.npz --out runs/default
    clifer-train --config default --data ../shared/data/fer2013.npz --out runs/default --resume
"""

from __future__ import annotations

import argparse
import logging
import sys

from clifer_edge.datasets import DatasetError
from clifer_edge.extras import needs_extra


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clifer-train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="default", help="default | paper | path to a YAML file")
    parser.add_argument("--data", required=True, help="npz file, FER2013 CSV or class folders")
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--epochs", type=int, help="total epochs (overrides the config)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue from the last checkpoint (with the run's own config.yaml)",
    )
    parser.add_argument(
        "--stop-after", type=int, help="stop after this many epochs (continue with --resume)"
    )
    parser.add_argument(
        "--init-from",
        metavar="RUN",
        help="start stage 2 from another run's latest checkpoint: layers with the same name and "
        "shapes take its weights (stage 1 is skipped), new layers keep their initialisation",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads for TensorFlow (default: all)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # TensorFlow is imported only now, so that --help and argument errors are instant.
    with needs_extra("clifer-train"):
        from clifer_train.config import TrainConfig
        from clifer_train.train import limit_threads, train

    limit_threads(args.threads)
    try:
        cfg = TrainConfig.named(args.config)
        history = train(
            cfg,
            args.data,
            args.out,
            epochs=args.epochs,
            resume=args.resume,
            stop_after=args.stop_after,
            init_from=args.init_from,
            progress=not args.no_progress,
        )
    except (ValueError, DatasetError) as error:
        print(f"clifer-train: error: {error}", file=sys.stderr)
        return 2
    if history:
        last = history[-1]
        val = last.get("val_reconstruction")
        print(
            f"done: {int(last['epoch'])} epochs, reconstruction L1 {last['reconstruction']:.4f}"
            + (f", validation {val:.4f}" if val is not None else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
