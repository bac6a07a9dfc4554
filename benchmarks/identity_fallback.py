"""How well the built-in identity fallback (``persons.mode: identity``) tells people apart.

All 213 JAFFE photos (10 persons) go through the runtime in a random order without person ids;
for each threshold it prints how many person ids were created and their purity (the share of
faces whose id's majority person is theirs). Ten ids with purity 1.0 would be perfect.

Run: ``python benchmarks/identity_fallback.py [--thresholds 0.1 0.2 0.25 0.35]``.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from pathlib import Path

import numpy as np

from clifer_edge.datasets import default_data_dir, load_npz
from clifer_edge.runtime import ExpressionRuntime, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.1, 0.2, 0.25, 0.35])
    parser.add_argument("--data-dir", help="shared data folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data_dir = Path(args.data_dir) if args.data_dir else default_data_dir()
    jaffe = load_npz(data_dir / "jaffe.npz")
    order = np.random.default_rng(args.seed).permutation(len(jaffe))
    for threshold in args.thresholds:
        with tempfile.TemporaryDirectory() as directory:
            config = load_config(None).replace(
                memory={"directory": directory},
                persons={"mode": "identity", "identity_threshold": threshold},
                imagination={"enabled": False},
            )
            rt = ExpressionRuntime(config)
            found: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
            missed = 0
            for row in order:
                results = rt.process_frame(jaffe.images[row])
                if not results:
                    missed += 1
                    continue
                found[results[0].person_id][str(jaffe.subjects[row])] += 1
            rt.close()
        total = sum(sum(c.values()) for c in found.values())
        purity = sum(c.most_common(1)[0][1] for c in found.values()) / max(total, 1)
        print(
            f"threshold {threshold:g}: {len(found)} ids for {len(set(jaffe.subjects))} persons, "
            f"purity {purity:.3f} ({total} faces, {missed} without a detected face)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
