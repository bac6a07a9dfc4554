"""The conditional adversarial auto-encoder: losses and one training step.

:class:`CAAE` is a ``keras.Model`` that owns the five sub-models of :mod:`clifer_train.models`,
two optimisers (encoder/generator/classifier, and both discriminators) and a seeded random
generator (target expressions, prior samples). ``fit`` runs the loop; :meth:`CAAE.train_step` does
one step in commented phases.

One forward pass serves both players (a simultaneous update, as in many TF GAN codes): the
discriminators' gradients come from one tape, the encoder/generator's from another. On a 2-core CPU
this saves a full extra forward pass of E and G per step compared with alternating phases.

Losses of E and G (weights in :class:`clifer_train.config.TrainConfig`):

- L1 reconstruction ``|G(E(x), c) - x|`` and total variation of the generated faces;
- adversarial: D_img must take reconstructed and translated faces for real faces of their label,
  D_z must take z for a prior sample;
- classifier cross-entropy on real faces ``C(E(x)) = c`` and on generated faces
  ``C(E(G(z, t))) = t`` (expression control);
- cycle: translate to a random target t and back, ``|G(E(G(z, t)), c) - x|``, and the latent
  identity term ``|E(G(z, t)) - z|``: the translated face must keep the person's latent;
- generated faces are re-encoded by a *frozen* E (inference mode, gradients reach G only): if E
  itself were trained on the classifier loss of generated faces it would learn to read a hidden
  code that G writes into them, and the expression would never become visible;
- optional perceptual/identity loss: L1 between the features of a user-supplied Keras feature
  extractor (e.g. a converted VGG-Face) for ``x`` and its reconstruction. Without such a file the
  latent identity term above plays that role, with E itself as the identity feature extractor.
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

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
    "perceptual",
    "cls_accuracy",
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

    def __call__(self, real: tf.Tensor, fake: tf.Tensor) -> tf.Tensor:
        both = tf.concat([real, fake], axis=0)
        both = tf.image.resize(both, (self.height, self.width))
        if self.channels == 3 and both.shape[-1] == 1:
            both = tf.repeat(both, 3, axis=-1)
        features = tf.cast(self.model(both, training=False), tf.float32)
        real_f, fake_f = tf.split(features, 2, axis=0)
        return tf.reduce_mean(tf.abs(real_f - fake_f))


class CAAE(keras.Model):
    """Encoder, generator, two discriminators and a classifier trained together.

    Parameters
    ----------
    encoder, generator, image_discriminator, latent_discriminator, classifier : keras.Model
        Built by :func:`clifer_train.models.build_all` (or compatible).
    cfg : TrainConfig
        Loss weights and class count.
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
        self.perceptual = perceptual
        self.rng = tf.random.Generator.from_seed(seed)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in TRAIN_METRICS}
        # Distinct tracker names: fit() would otherwise report validation values as training ones.
        self.val_trackers = {
            name: keras.metrics.Mean(name=f"eval_{name}")
            for name in ("reconstruction", "latent_cycle", "cls_accuracy")
        }
        self._bce = keras.losses.BinaryCrossentropy(from_logits=True, reduction="none")

    def compile(
        self,
        g_optimizer: keras.optimizers.Optimizer,
        d_optimizer: keras.optimizers.Optimizer,
        **kwargs,
    ) -> None:
        """Store the optimisers of the two players (E+G+C, and D_img+D_z)."""
        super().compile(**kwargs)
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        # Listed here so that fit() resets them at each epoch.
        return [*self.trackers.values(), *self.val_trackers.values()]

    @property
    def generator_side(self) -> list[tf.Variable]:
        """Variables trained by ``g_optimizer``: encoder, generator, classifier."""
        return [
            *self.encoder.trainable_variables,
            *self.generator.trainable_variables,
            *self.classifier.trainable_variables,
        ]

    @property
    def discriminator_side(self) -> list[tf.Variable]:
        """Variables trained by ``d_optimizer``: both discriminators."""
        return [
            *self.image_discriminator.trainable_variables,
            *self.latent_discriminator.trainable_variables,
        ]

    def build_optimizers(self) -> None:
        """Create the optimisers' slots now, so a checkpoint can restore them before step one."""
        self.g_optimizer.build(self.generator_side)
        self.d_optimizer.build(self.discriminator_side)

    def call(self, inputs, training: bool = False):
        """Reconstruct faces: ``inputs`` = (images, one-hot expressions)."""
        images, expressions = inputs
        return self.generator([self.encoder(images, training=training), expressions], training)

    # ---------------------------------------------------------------------------------------
    def _judge_encode(self, images: tf.Tensor) -> tf.Tensor:
        """E in inference mode with its weights held fixed: gradients flow to the images only."""
        frozen = [tf.stop_gradient(v) for v in self.encoder.trainable_variables]
        z, _ = self.encoder.stateless_call(
            frozen, list(self.encoder.non_trainable_variables), images, training=False
        )
        return z

    def _adversarial(self, logits: tf.Tensor, real: bool) -> tf.Tensor:
        target = tf.ones_like(logits) if real else tf.zeros_like(logits)
        return tf.reduce_mean(self._bce(target, logits))

    def train_step(self, data):
        images, expressions = data
        batch = tf.shape(images)[0]
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        labels = tf.argmax(expressions, axis=-1, output_type=tf.int32)

        # 1. Random draws: a target expression per face, a wrong label for the conditional
        #    discriminator, and prior samples for the latent discriminator.
        targets = self.rng.uniform([batch], 0, self.n_classes, dtype=tf.int32)
        target_hot = tf.one_hot(targets, self.n_classes)
        shift = self.rng.uniform([batch], 1, self.n_classes, dtype=tf.int32)
        wrong_hot = tf.one_hot((labels + shift) % self.n_classes, self.n_classes)
        prior = self.rng.uniform([batch, self.cfg.z_dim], -1.0, 1.0)

        with tf.GradientTape(persistent=True) as g_tape, tf.GradientTape() as d_tape:
            # 2. Forward: encode, reconstruct, translate, re-encode, translate back.
            z = self.encoder(images, training=True)
            reconstructed = self.generator([z, expressions], training=True)
            translated = self.generator([z, target_hot], training=True)
            z_translated = self._judge_encode(translated)
            cycled = None
            if self.cfg.w_cycle > 0:
                cycled = self.generator([z_translated, expressions], training=True)

            # 3. Discriminators, one batch each: real | reconstructed | translated | mismatched.
            d_img = self.image_discriminator(
                [
                    tf.concat([images, reconstructed, translated, images], axis=0),
                    tf.concat([expressions, expressions, target_hot, wrong_hot], axis=0),
                ],
                training=True,
            )
            d_real, d_rec, d_trans, d_wrong = tf.split(d_img, 4, axis=0)
            d_z = self.latent_discriminator(tf.concat([prior, z], axis=0), training=True)
            d_prior, d_encoded = tf.split(d_z, 2, axis=0)
            d_image_loss = (
                self._adversarial(d_real, True)
                + (
                    self._adversarial(d_rec, False)
                    + self._adversarial(d_trans, False)
                    + self._adversarial(d_wrong, False)
                )
                / 3.0
            )
            d_latent_loss = self._adversarial(d_prior, True) + self._adversarial(d_encoded, False)
            d_loss = d_image_loss + d_latent_loss

            # 4. Encoder/generator/classifier losses.
            losses = {
                "reconstruction": tf.reduce_mean(tf.abs(reconstructed - images)),
                "tv": _total_variation(reconstructed) + _total_variation(translated),
                "adv_image": (self._adversarial(d_rec, True) + self._adversarial(d_trans, True))
                / 2.0,
                "adv_latent": self._adversarial(d_encoded, True),
                "cls_generated": tf.reduce_mean(
                    keras.losses.sparse_categorical_crossentropy(
                        targets, self.classifier(z_translated, training=True), from_logits=True
                    )
                ),
                "latent_cycle": tf.reduce_mean(tf.abs(z_translated - tf.stop_gradient(z))),
                "cycle": tf.reduce_mean(tf.abs(cycled - images)) if cycled is not None else 0.0,
                "perceptual": self.perceptual(images, reconstructed)
                if self.perceptual is not None and self.cfg.w_perceptual > 0
                else 0.0,
            }
            real_logits = self.classifier(z, training=True)
            losses["cls_real"] = tf.reduce_mean(
                keras.losses.sparse_categorical_crossentropy(labels, real_logits, from_logits=True)
            )
            losses = {name: tf.cast(value, tf.float32) for name, value in losses.items()}
            g_loss = (
                self.cfg.w_reconstruction * losses["reconstruction"]
                + self.cfg.w_tv * losses["tv"]
                + self.cfg.w_adv_image * losses["adv_image"]
                + self.cfg.w_adv_latent * losses["adv_latent"]
                + self.cfg.w_cls_generated * losses["cls_generated"]
                + self.cfg.w_cycle * losses["cycle"]
                + self.cfg.w_latent_cycle * losses["latent_cycle"]
                + self.cfg.w_perceptual * losses["perceptual"]
            )
            # Per-replica means (the optimisers sum gradients over replicas); scale_loss is the
            # identity unless the optimiser is a LossScaleOptimizer (mixed precision).
            c_scaled = self.cfg.w_cls_real * losses["cls_real"] / tf.cast(replicas, tf.float32)
            per_replica = g_loss / tf.cast(replicas, tf.float32)
            g_scaled = self.g_optimizer.scale_loss(per_replica + c_scaled)
            c_scaled = self.g_optimizer.scale_loss(c_scaled)
            d_scaled = self.d_optimizer.scale_loss(d_loss / tf.cast(replicas, tf.float32))

        # 5. Updates: the classifier learns from real faces only; E and G from everything.
        eg_vars = [*self.encoder.trainable_variables, *self.generator.trainable_variables]
        c_vars = self.classifier.trainable_variables
        eg_grads = g_tape.gradient(g_scaled, eg_vars)
        c_grads = g_tape.gradient(c_scaled, c_vars)
        del g_tape
        d_grads = d_tape.gradient(d_scaled, self.discriminator_side)
        self.g_optimizer.apply_gradients(
            zip([*eg_grads, *c_grads], [*eg_vars, *c_vars], strict=True)
        )
        self.d_optimizer.apply_gradients(zip(d_grads, self.discriminator_side, strict=True))

        # 6. Book-keeping.
        accuracy = tf.reduce_mean(
            tf.cast(tf.equal(tf.argmax(real_logits, -1, output_type=tf.int32), labels), tf.float32)
        )
        values = {
            **losses,
            "d_image": d_image_loss,
            "d_latent": d_latent_loss,
            "g_total": g_loss,
            "cls_accuracy": accuracy,
        }
        for name, tracker in self.trackers.items():
            tracker.update_state(values[name])
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def test_step(self, data):
        """Validation: reconstruction L1, latent identity after translation, classifier accuracy."""
        images, expressions = data
        labels = tf.argmax(expressions, axis=-1, output_type=tf.int32)
        z = self.encoder(images, training=False)
        reconstructed = self.generator([z, expressions], training=False)
        # Deterministic targets (next class) so validation numbers are comparable across epochs.
        target_hot = tf.one_hot((labels + 1) % self.n_classes, self.n_classes)
        z_translated = self.encoder(self.generator([z, target_hot], training=False), training=False)
        predicted = tf.argmax(self.classifier(z, training=False), -1, output_type=tf.int32)
        self.val_trackers["reconstruction"].update_state(
            tf.reduce_mean(tf.abs(reconstructed - images))
        )
        self.val_trackers["latent_cycle"].update_state(tf.reduce_mean(tf.abs(z_translated - z)))
        self.val_trackers["cls_accuracy"].update_state(
            tf.reduce_mean(tf.cast(tf.equal(predicted, labels), tf.float32))
        )
        return {name: tracker.result() for name, tracker in self.val_trackers.items()}


def _total_variation(images: tf.Tensor) -> tf.Tensor:
    """Mean absolute difference between neighbouring pixels (discourages speckle artefacts)."""
    images = tf.cast(images, tf.float32)
    dy = tf.reduce_mean(tf.abs(images[:, 1:, :, :] - images[:, :-1, :, :]))
    dx = tf.reduce_mean(tf.abs(images[:, :, 1:, :] - images[:, :, :-1, :]))
    return dx + dy
