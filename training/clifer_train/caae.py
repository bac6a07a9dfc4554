"""The conditional adversarial auto-encoder (stage 2): losses once, one gradient step per backend.

:class:`CAAE` is a ``keras.Model`` that owns the five sub-models of :mod:`clifer_train.models`,
one optimiser and a seeded random generator (target expressions, wrong labels, prior samples).
``fit`` runs the loop. :meth:`CAAE.compute_losses` is the forward pass and every loss, written
once with ``keras.ops``; :meth:`CAAE.train_step` differentiates it with a thin step per backend:
a ``GradientTape`` under TensorFlow (``tf.distribute`` included), ``jax.vjp`` over a stateless
forward under JAX.

Two players, one forward pass (a simultaneous update): E+G minimise ``g_loss``, C minimises
``cls_real`` (real faces only) and both discriminators minimise ``d_loss``; each group's
gradient comes from its own loss only. Both players use Adam with the same settings, so one Keras
optimiser applies all three gradient groups and the trainer owns its state under every backend.

Losses of E and G (weights in :class:`clifer_train.config.TrainConfig`):

- L1 reconstruction ``|G(E(x), c) - x|`` and total variation of the generated faces;
- adversarial: D_img must take reconstructed and translated faces for real faces of their label,
  D_z must take the identity code for a prior sample;
- expression control: a translated face ``G(E(x), t)``, re-encoded, must be classified as ``t``
  by C (``cls_generated``; with ``reencode_views`` C reads a random view of it: mirrored,
  shifted, brightness and contrast changed); with ``w_expression_offset`` its expression code
  must also land where the person's own code moved by the training set's class-mean offset
  ``mean(t) - mean(c)`` lands (``expression_offset``, L1): C alone is satisfied by an
  exaggerated face far from any real face of class ``t``, and the memories learn from where
  imagined faces land;
- cycle: translate to a random target t and back, ``|G(E(G(E(x), t)), c) - x|``, and the identity
  term ``|id(E(G(E(x), t))) - id(E(x))|``: the translated face must keep the person's identity code;
- generated faces are re-encoded by a *frozen* E (inference mode, gradients reach G only): if E
  itself were trained on the classifier loss of generated faces it would learn to read a hidden
  code that G writes into them, and the expression would never become visible;
- optional perceptual/identity loss: L1 between the features of a user-supplied Keras feature
  extractor (e.g. a converted VGG-Face) for ``x`` and its reconstruction.

With ``freeze_expression`` (after stage 1) E's backbone, expression code and C are fixed: only the
identity code, G and the discriminators learn here, and ``cls_generated`` is judged by the very
expression code the robot's memories read.
"""

from __future__ import annotations

from pathlib import Path

import keras
from keras import ops

from clifer_train.config import TrainConfig

#: Names of the per-step scalars, in the order they are logged.
TRAIN_METRICS: tuple[str, ...] = (
    "d_image",
    "d_latent",
    "g_total",
    "reconstruction",
    "tv",
    "adv_image",
    "adv_latent",
    "cls_real",
    "cls_generated",
    "cycle",
    "latent_cycle",
    "expression_offset",
    "perceptual",
    "cls_accuracy",
)
#: Validation scalars: reconstruction, identity kept after translation, C's accuracy on real
#: faces, and the share of translated faces that C reads as the asked expression.
VAL_METRICS: tuple[str, ...] = (
    "reconstruction",
    "latent_cycle",
    "expression_offset",
    "cls_accuracy",
    "translation_accuracy",
)


class PerceptualLoss:
    """L1 distance between deep features of two image batches, from a Keras feature extractor.

    The extractor (any ``.keras`` model mapping an image batch to features, e.g. VGG-Face's
    convolutional trunk) is frozen. Faces are resized to its input size and repeated to three
    channels when it expects colour; pixel values stay in [-1, 1], so the extractor must be saved
    with its own input scaling built in.
    """

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if not path.exists():
            raise ValueError(f"perceptual_model {str(path)!r} does not exist")
        try:
            self.model = keras.models.load_model(path, compile=False)
        except (ValueError, OSError) as error:
            raise ValueError(f"perceptual_model {path}: cannot load ({error})") from None
        self.model.trainable = False
        self.height, self.width, self.channels = self.model.input_shape[1:4]

    def __call__(self, real, fake):
        both = ops.concatenate([real, fake], axis=0)
        both = ops.image.resize(both, (self.height, self.width))
        if self.channels == 3 and both.shape[-1] == 1:
            both = ops.repeat(both, 3, axis=-1)
        features = ops.cast(self.model(both, training=False), "float32")
        real_f, fake_f = ops.split(features, 2, axis=0)
        return ops.mean(ops.abs(real_f - fake_f))


class CAAE(keras.Model):
    """Encoder, generator, two discriminators and a classifier trained together.

    Parameters
    ----------
    encoder, generator, image_discriminator, latent_discriminator, classifier : keras.Model
        Built by :func:`clifer_train.models.build_all` (or compatible).
    cfg : TrainConfig
        Loss weights, class count and the split of z into expression and identity codes.
    perceptual : PerceptualLoss, optional
        Used when ``cfg.w_perceptual > 0``.
    seed : int
        Seed of the model's random generator (targets, prior samples); its state is checkpointed.
    """

    def __init__(
        self,
        encoder: keras.Model,
        generator: keras.Model,
        image_discriminator: keras.Model,
        latent_discriminator: keras.Model,
        classifier: keras.Model,
        cfg: TrainConfig,
        perceptual: PerceptualLoss | None = None,
        seed: int = 0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.encoder = encoder
        self.generator = generator
        self.image_discriminator = image_discriminator
        self.latent_discriminator = latent_discriminator
        self.classifier = classifier
        self.cfg = cfg
        self.n_classes = cfg.n_classes
        self.split = cfg.z_expression_dim
        self.perceptual = perceptual
        self.seed_generator = keras.random.SeedGenerator(seed)
        # Per-class means of the expression code on the training faces (set_expression_means).
        self.expression_means = self.add_weight(
            shape=(self.n_classes, self.split),
            initializer="zeros",
            trainable=False,
            name="expression_means",
        )
        self.trackers = {name: keras.metrics.Mean(name=name) for name in TRAIN_METRICS}
        # Distinct tracker names: fit() would otherwise report validation values as training ones.
        self.val_trackers = {name: keras.metrics.Mean(name=f"eval_{name}") for name in VAL_METRICS}

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        # Listed here so that fit() resets them at each epoch.
        return [*self.trackers.values(), *self.val_trackers.values()]

    def build_optimizers(self) -> None:
        """Create the optimiser's slots now, so a checkpoint can restore them before step one."""
        self.optimizer.build(self.trainable_variables)

    def checkpoint_holders(self) -> dict[str, list]:
        """Everything a checkpoint must hold for an exact resume (see :mod:`checkpoint`)."""
        return {
            "encoder": self.encoder.variables,
            "generator": self.generator.variables,
            "image_discriminator": self.image_discriminator.variables,
            "latent_discriminator": self.latent_discriminator.variables,
            "classifier": self.classifier.variables,
            "optimizer": self.optimizer.variables,
            "seed_generator": [self.seed_generator.state],
        }

    def set_expression_means(self, means) -> None:
        """Class means of the (frozen) expression code, rows in vocabulary order: the targets of
        the ``expression_offset`` loss."""
        self.expression_means.assign(ops.convert_to_tensor(means, dtype="float32"))

    def call(self, images, training: bool = False):
        """Encode faces (what ``fit`` calls to build the model; the sub-models do the work)."""
        return self.encoder(images, training=training)

    # ---------------------------------------------------------------------------------------
    def _judge_encode(self, images):
        """E in inference mode with its weights held fixed: gradients flow to the images only."""
        frozen = [ops.stop_gradient(v.value) for v in self.encoder.trainable_variables]
        z, _ = self.encoder.stateless_call(
            frozen, [v.value for v in self.encoder.non_trainable_variables], images, training=False
        )
        return z

    def _random_view(self, images):
        """Each face mirrored or not, shifted, brightness and contrast changed (the data
        augmentation's ranges, without its rotation and zoom), differentiably."""
        cfg = self.cfg
        batch = ops.shape(images)[0]

        def draw(low: float, high: float):
            return keras.random.uniform((batch, 1, 1, 1), low, high, seed=self.seed_generator)

        if cfg.augment_flip:
            images = ops.where(draw(0.0, 1.0) < 0.5, ops.flip(images, axis=2), images)
        shift = round(cfg.shift_pixels)
        if shift:
            # One shift per batch (a dynamic slice of the reflect-padded faces).
            padded = ops.pad(images, [[0, 0], [shift, shift], [shift, shift], [0, 0]], "reflect")
            dy, dx = ops.unstack(
                keras.random.randint((2,), 0, 2 * shift + 1, seed=self.seed_generator)
            )
            images = ops.slice(padded, [0, dy, dx, 0], ops.shape(images))
        mean = ops.mean(images, axis=(1, 2, 3), keepdims=True)
        contrast = draw(1 - cfg.augment_contrast, 1 + cfg.augment_contrast)
        brightness = draw(-cfg.augment_brightness, cfg.augment_brightness)
        return ops.clip((images - mean) * contrast + mean + brightness, -1.0, 1.0)

    def _identity(self, z):
        return z[:, self.split :]

    def _expression_logits(self, z, training: bool):
        return self.classifier(z[:, : self.split], training=training)

    def _offset_error(self, z, z_translated, labels, targets):
        """L1 between a translation's expression code and the person's own code moved by the
        class-mean offset from their expression to the asked one."""
        means = ops.stop_gradient(self.expression_means.value)
        wanted = ops.stop_gradient(z[:, : self.split]) + ops.take(means, targets, axis=0)
        wanted = wanted - ops.take(means, labels, axis=0)
        return ops.mean(ops.abs(z_translated[:, : self.split] - wanted))

    def compute_losses(self, images, expressions):
        """One forward pass and every loss: ``(g_loss, cls_real, d_loss, scalars)``.

        Written once for all backends; the gradient steps below only differentiate it.
        """
        batch = ops.shape(images)[0]
        labels = ops.argmax(expressions, axis=-1)

        # 1. Random draws: a target expression per face, a wrong label for the conditional
        #    discriminator, and prior samples for the latent discriminator.
        targets = keras.random.randint((batch,), 0, self.n_classes, seed=self.seed_generator)
        target_hot = ops.one_hot(targets, self.n_classes)
        shift = keras.random.randint((batch,), 1, self.n_classes, seed=self.seed_generator)
        wrong_hot = ops.one_hot((labels + shift) % self.n_classes, self.n_classes)
        prior = keras.random.uniform(
            (batch, self.cfg.z_dim - self.split), -1.0, 1.0, seed=self.seed_generator
        )

        # 2. Forward: encode, reconstruct, translate, re-encode, translate back.
        z = self.encoder(images, training=True)
        reconstructed = self.generator([z, expressions], training=True)
        translated = self.generator([z, target_hot], training=True)
        z_translated = self._judge_encode(translated)
        z_viewed = (
            self._judge_encode(self._random_view(translated))
            if self.cfg.reencode_views
            else z_translated
        )
        cycled = None
        if self.cfg.w_cycle > 0:
            cycled = self.generator([z_translated, expressions], training=True)

        # 3. Discriminators, one batch each: real | reconstructed | translated | mismatched.
        d_img = self.image_discriminator(
            [
                ops.concatenate([images, reconstructed, translated, images], axis=0),
                ops.concatenate([expressions, expressions, target_hot, wrong_hot], axis=0),
            ],
            training=True,
        )
        d_real, d_rec, d_trans, d_wrong = ops.split(d_img, 4, axis=0)
        identity = self._identity(z)
        d_z = self.latent_discriminator(ops.concatenate([prior, identity], axis=0), training=True)
        d_prior, d_encoded = ops.split(d_z, 2, axis=0)
        # Each player's gradient comes from its own loss only (see train_step), so the fakes
        # need no detaching: d_loss moves the discriminators, never E or G.
        d_image_loss = (
            _adversarial(d_real, True)
            + (
                _adversarial(d_rec, False)
                + _adversarial(d_trans, False)
                + _adversarial(d_wrong, False)
            )
            / 3.0
        )
        d_latent_loss = _adversarial(d_prior, True) + _adversarial(d_encoded, False)

        # 4. Encoder/generator losses, and the classifier's own loss on real faces.
        real_logits = self._expression_logits(z, training=True)
        zero = ops.zeros(())
        losses = {
            "reconstruction": ops.mean(ops.abs(reconstructed - images)),
            "tv": _total_variation(reconstructed) + _total_variation(translated),
            "adv_image": (_adversarial(d_rec, True) + _adversarial(d_trans, True)) / 2.0,
            "adv_latent": _adversarial(d_encoded, True),
            "cls_generated": ops.mean(
                keras.losses.sparse_categorical_crossentropy(
                    targets, self._expression_logits(z_viewed, training=False), from_logits=True
                )
            ),
            "latent_cycle": ops.mean(
                ops.abs(self._identity(z_translated) - ops.stop_gradient(identity))
            ),
            "expression_offset": self._offset_error(z, z_translated, labels, targets),
            "cycle": ops.mean(ops.abs(cycled - images)) if cycled is not None else zero,
            "perceptual": self.perceptual(images, reconstructed)
            if self.perceptual is not None and self.cfg.w_perceptual > 0
            else zero,
            "cls_real": ops.mean(
                keras.losses.sparse_categorical_crossentropy(labels, real_logits, from_logits=True)
            ),
        }
        losses = {name: ops.cast(value, "float32") for name, value in losses.items()}
        cfg = self.cfg
        g_loss = (
            cfg.w_reconstruction * losses["reconstruction"]
            + cfg.w_tv * losses["tv"]
            + cfg.w_adv_image * losses["adv_image"]
            + cfg.w_adv_latent * losses["adv_latent"]
            + cfg.w_cls_generated * losses["cls_generated"]
            + cfg.w_cycle * losses["cycle"]
            + cfg.w_latent_cycle * losses["latent_cycle"]
            + cfg.w_expression_offset * losses["expression_offset"]
            + cfg.w_perceptual * losses["perceptual"]
            + cfg.w_cls_real * losses["cls_real"]  # keeps the expression code readable in E
        )
        accuracy = ops.mean(ops.cast(ops.argmax(real_logits, axis=-1) == labels, "float32"))
        scalars = {
            **losses,
            "d_image": d_image_loss,
            "d_latent": d_latent_loss,
            "g_total": g_loss,
            "cls_accuracy": accuracy,
        }
        return g_loss, losses["cls_real"], d_image_loss + d_latent_loss, scalars

    def _groups(self) -> list[int]:
        """For each trainable variable: 0 = E/G (g_loss), 1 = C (cls_real), 2 = D (d_loss)."""
        classifier = {id(v) for v in self.classifier.trainable_variables}
        discriminators = {
            id(v)
            for model in (self.image_discriminator, self.latent_discriminator)
            for v in model.trainable_variables
        }
        return [
            1 if id(v) in classifier else 2 if id(v) in discriminators else 0
            for v in self.trainable_variables
        ]

    # ---------------------------------------------------------------------------------------
    def train_step(self, *args):
        if keras.backend.backend() == "jax":
            return self._jax_train_step(*args)
        if keras.backend.backend() == "tensorflow":
            return self._tf_train_step(*args)
        raise NotImplementedError(
            f"CAAE trains under tensorflow or jax, not {keras.backend.backend()}"
        )

    def _tf_train_step(self, data):
        import tensorflow as tf

        images, expressions, _ = keras.utils.unpack_x_y_sample_weight(data)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape(persistent=True) as tape:
            *players, scalars = self.compute_losses(images, expressions)
            # Per-replica means (the optimiser sums gradients over replicas); scale_loss is the
            # identity unless the optimiser is a LossScaleOptimizer (mixed precision).
            players = [self.optimizer.scale_loss(loss / replicas) for loss in players]
        variables = self.trainable_variables
        grads_by_player = [tape.gradient(loss, variables) for loss in players]
        del tape
        grads = [
            grads_by_player[group][i]
            if grads_by_player[group][i] is not None
            else ops.zeros_like(v)
            for i, (v, group) in enumerate(zip(variables, self._groups(), strict=True))
        ]
        self.optimizer.apply(grads, variables)
        for name, tracker in self.trackers.items():
            tracker.update_state(scalars[name])
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def _jax_train_step(self, state, data):
        import jax

        trainable, non_trainable, optimizer_variables, metrics_variables = state
        images, expressions, _ = keras.utils.unpack_x_y_sample_weight(data)

        def forward(trainable_values):
            mapping = [
                *zip(self.trainable_variables, trainable_values, strict=True),
                *zip(self.non_trainable_variables, non_trainable, strict=True),
            ]
            with keras.StatelessScope(state_mapping=mapping) as scope:
                g_loss, c_loss, d_loss, scalars = self.compute_losses(images, expressions)
                players = tuple(
                    self.optimizer.scale_loss(loss) for loss in (g_loss, c_loss, d_loss)
                )
            updated = [
                scope.get_current_value(v) if scope.get_current_value(v) is not None else value
                for v, value in zip(self.non_trainable_variables, non_trainable, strict=True)
            ]
            return players, (scalars, updated)

        _, pullback, (scalars, non_trainable) = jax.vjp(forward, trainable, has_aux=True)
        one, zero = jax.numpy.ones(()), jax.numpy.zeros(())
        by_player = [
            pullback(tuple(one if k == player else zero for k in range(3)))[0]
            for player in range(3)
        ]
        grads = [by_player[group][i] for i, group in enumerate(self._groups())]
        trainable, optimizer_variables = self.optimizer.stateless_apply(
            optimizer_variables, grads, trainable
        )
        logs, metrics_variables = self._stateless_track(metrics_variables, self.trackers, scalars)
        return logs, (trainable, non_trainable, optimizer_variables, metrics_variables)

    def _stateless_track(self, metrics_variables, trackers, scalars):
        """Update ``trackers`` from ``scalars`` inside a stateless scope (JAX)."""
        mapping = list(zip(self.metrics_variables, metrics_variables, strict=True))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            for name, tracker in trackers.items():
                tracker.update_state(scalars[name])
            logs = {name: tracker.result() for name, tracker in trackers.items()}
        updated = [
            scope.get_current_value(v) if scope.get_current_value(v) is not None else value
            for v, value in mapping
        ]
        return logs, updated

    # ---------------------------------------------------------------------------------------
    def validation_scalars(self, images, expressions) -> dict:
        """Reconstruction L1, identity change after translation, C's accuracy on real faces and
        the share of translated faces read as the asked expression (deterministic targets)."""
        labels = ops.argmax(expressions, axis=-1)
        z = self.encoder(images, training=False)
        reconstructed = self.generator([z, expressions], training=False)
        targets = (labels + 1) % self.n_classes  # the next class: comparable across epochs
        z_translated = self.encoder(
            self.generator([z, ops.one_hot(targets, self.n_classes)], training=False),
            training=False,
        )
        predicted = ops.argmax(self._expression_logits(z, training=False), axis=-1)
        read_as = ops.argmax(self._expression_logits(z_translated, training=False), axis=-1)
        return {
            "reconstruction": ops.mean(ops.abs(reconstructed - images)),
            "latent_cycle": ops.mean(ops.abs(self._identity(z_translated) - self._identity(z))),
            "expression_offset": self._offset_error(z, z_translated, labels, targets),
            "cls_accuracy": ops.mean(ops.cast(predicted == labels, "float32")),
            "translation_accuracy": ops.mean(ops.cast(read_as == targets, "float32")),
        }

    def test_step(self, *args):
        if keras.backend.backend() == "jax":
            trainable, non_trainable, metrics_variables = args[0]
            images, expressions, _ = keras.utils.unpack_x_y_sample_weight(args[1])
            mapping = [
                *zip(self.trainable_variables, trainable, strict=True),
                *zip(self.non_trainable_variables, non_trainable, strict=True),
            ]
            with keras.StatelessScope(state_mapping=mapping):
                scalars = self.validation_scalars(images, expressions)
            logs, metrics_variables = self._stateless_track(
                metrics_variables, self.val_trackers, scalars
            )
            return logs, (trainable, non_trainable, metrics_variables)
        images, expressions, _ = keras.utils.unpack_x_y_sample_weight(args[0])
        scalars = self.validation_scalars(images, expressions)
        for name, tracker in self.val_trackers.items():
            tracker.update_state(scalars[name])
        return {name: tracker.result() for name, tracker in self.val_trackers.items()}


def _adversarial(logits, real: bool):
    """Non-saturating GAN loss: binary cross-entropy of the logits against 1 (real) or 0."""
    target = ops.ones_like(logits) if real else ops.zeros_like(logits)
    return ops.mean(keras.losses.binary_crossentropy(target, logits, from_logits=True))


def _total_variation(images):
    """Mean absolute difference between neighbouring pixels (discourages speckle artefacts)."""
    images = ops.cast(images, "float32")
    dy = ops.mean(ops.abs(images[:, 1:, :, :] - images[:, :-1, :, :]))
    dx = ops.mean(ops.abs(images[:, :, 1:, :] - images[:, :, :-1, :]))
    return dx + dy
