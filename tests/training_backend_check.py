"""One CAAE training step and a checkpoint round trip under the Keras backend of this process.

Run by ``tests/test_training_backends.py`` in a subprocess per backend (``KERAS_BACKEND`` is fixed
when Keras is first imported): ``python tests/training_backend_check.py DATA.npz OUT_DIR``. Writes
``OUT_DIR/result.json`` (losses, whether every sub-model changed, whether the restored models equal
the saved ones), ``OUT_DIR/encoder.keras`` and ``OUT_DIR/latents.npz`` (faces and their latents),
so that the other backend can load the encoder and compare.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import keras
import numpy as np
import training_support  # tests/ is the script's own folder, hence on sys.path

from clifer_train import checkpoint
from clifer_train import data as data_lib
from clifer_train.config import TrainConfig
from clifer_train.models import build_all
from clifer_train.train import _build_caae, expression_means

#: The training tests' tiny widths, on 64 faces, with every loss term on.
TINY = {
    **training_support.TINY,
    "max_train_samples": 64,
    "max_val_samples": 32,
    "w_expression_offset": 0.5,
    "reencode_views": True,
}


def main(data: str, out_dir: str) -> None:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig(**TINY)
    faces, _ = data_lib.load_splits(data, cfg)
    images, one_hot = data_lib.FaceBatches(faces, cfg)[0]
    keras.utils.set_random_seed(0)
    models = build_all(cfg)
    caae = _build_caae(cfg, models, mixed=False, steps_per_epoch=2)
    means = expression_means(models["encoder"], faces, cfg)
    caae.set_expression_means(means)
    before = {name: [np.array(w) for w in m.trainable_weights] for name, m in models.items()}
    logs = caae.train_on_batch(images, one_hot, return_dict=True)
    changed = {
        name: any(
            not np.array_equal(b, np.asarray(a))
            for b, a in zip(before[name], models[name].trainable_weights, strict=True)
        )
        for name in models
    }
    saved = checkpoint.save(out / "checkpoints", 1, caae.checkpoint_holders())

    keras.utils.set_random_seed(1)  # different initial weights: the restore must overwrite them
    fresh = _build_caae(cfg, build_all(cfg), mixed=False, steps_per_epoch=2)
    fresh.set_expression_means(means)  # computed at each start, not checkpointed
    epochs = checkpoint.restore(saved, fresh.checkpoint_holders())
    restored_equal = all(
        np.array_equal(np.asarray(a), np.asarray(b))
        for name, holder in caae.checkpoint_holders().items()
        for a, b in zip(holder, fresh.checkpoint_holders()[name], strict=True)
    )
    # One more step from the restored state gives the same losses as from the original.
    next_original = caae.train_on_batch(images, one_hot, return_dict=True)
    next_restored = fresh.train_on_batch(images, one_hot, return_dict=True)
    models["encoder"].save(out / "encoder.keras")
    np.savez(out / "latents.npz", images=images, z=np.asarray(models["encoder"](images)))
    result = {
        "backend": keras.backend.backend(),
        "losses": {k: float(v) for k, v in logs.items()},
        "changed": changed,
        "epochs": epochs,
        "restored_equal": restored_equal,
        "next_step": {k: [float(next_original[k]), float(next_restored[k])] for k in logs},
    }
    (out / "result.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
