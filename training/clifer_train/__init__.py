"""clifer_train: train CLIFER's Imagination model (a CAAE) on the workstation.

Data flow: faces (:mod:`clifer_train.data`) -> sub-models (:mod:`clifer_train.models`) -> the
adversarial auto-encoder and its losses (:mod:`clifer_train.caae`) -> the training run with
checkpoints, samples and curves (:mod:`clifer_train.train`) -> ``clifer-train``
(:mod:`clifer_train.cli`). Sizes and loss weights come from
:class:`clifer_train.config.TrainConfig`.
"""

from __future__ import annotations

__all__ = ["TrainConfig"]

from clifer_train.config import TrainConfig
