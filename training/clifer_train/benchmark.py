"""Cost of a configuration: FLOPs of one training step and of E/G per face, and a step's time.

Used to size the default configuration for a 2-core CPU (figures in ``docs/training.md``)::

    python -m clifer_train.benchmark --config default --threads 2 --steps 10
    python -m clifer_train.benchmark --config paper --steps 0      # FLOPs only

FLOPs are counted by TensorFlow's graph profiler on the traced step (multiply-adds count two).
Step times use random inputs of the right shape: the cost does not depend on pixel values.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def graph_flops(function, *specs) -> float:
    """Floating-point operations of one call of a ``tf.function`` for the given input specs."""
    from tensorflow.python.profiler import model_analyzer, option_builder

    graph = function.get_concrete_function(*specs).graph
    options = (
        option_builder.ProfileOptionBuilder(option_builder.ProfileOptionBuilder.float_operation())
        .with_empty_output()
        .build()
    )
    return float(model_analyzer.profile(graph, options=options).total_float_ops)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clifer_train.benchmark", description=__doc__)
    parser.add_argument("--config", default="default", help="default | paper | YAML path")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (0: FLOPs only)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for TensorFlow")
    args = parser.parse_args(argv)

    import tensorflow as tf

    from clifer_train.config import TrainConfig
    from clifer_train.models import build_all
    from clifer_train.train import _build_caae, limit_threads

    limit_threads(args.threads)
    cfg = TrainConfig.named(args.config)
    caae = _build_caae(cfg, build_all(cfg), mixed=False, steps_per_epoch=1000)
    shape = (cfg.batch_size, cfg.image_size, cfg.image_size, cfg.channels)
    image_spec = tf.TensorSpec(shape, tf.float32)
    label_spec = tf.TensorSpec((cfg.batch_size, cfg.n_classes), tf.float32)
    step = tf.function(caae.train_step)
    encode = tf.function(lambda x: caae.encoder(x, training=False))
    generate = tf.function(lambda z, c: caae.generator([z, c], training=False))

    step_flops = graph_flops(step, (image_spec, label_spec))
    enc_flops = graph_flops(encode, tf.TensorSpec((1, *shape[1:]), tf.float32))
    gen_flops = graph_flops(
        generate,
        tf.TensorSpec((1, cfg.z_dim), tf.float32),
        tf.TensorSpec((1, cfg.n_classes), tf.float32),
    )
    params = {name: getattr(caae, name).count_params() for name in ("encoder", "generator")}
    print(
        f"config {args.config}: {cfg.image_size}x{cfg.image_size}x{cfg.channels}, "
        f"batch {cfg.batch_size}"
    )
    print(f"parameters: encoder {params['encoder']:,}, generator {params['generator']:,}")
    print(f"FLOPs per face: encoder {enc_flops / 1e6:.1f} M, generator {gen_flops / 1e6:.1f} M")
    print(f"FLOPs per training step: {step_flops / 1e9:.2f} G")
    if args.steps > 0:
        rng = np.random.default_rng(0)
        images = tf.constant(rng.uniform(-1, 1, shape).astype(np.float32))
        labels = tf.one_hot(rng.integers(0, cfg.n_classes, cfg.batch_size), cfg.n_classes)
        float(step((images, labels))["g_total"])  # trace and warm up
        start = time.perf_counter()
        for _ in range(args.steps):
            logs = step((images, labels))
        float(logs["g_total"])
        seconds = (time.perf_counter() - start) / args.steps
        faces = 28709 // cfg.batch_size * cfg.batch_size
        print(
            f"step time: {seconds:.3f} s ({step_flops / seconds / 1e9:.1f} GFLOP/s); "
            f"FER2013 epoch ({faces} faces): {faces / cfg.batch_size * seconds / 60:.1f} min"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
