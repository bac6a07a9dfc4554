"""The CAAE's five sub-models (CLIFER's Imagination model, after ExprGAN).

- Encoder E: face -> latent z in [-1, 1] (strided 5x5 convolutions, dense, tanh).
- Generator G: (z, expression one-hot) -> face in [-1, 1] (the label is concatenated to z, then
  dense -> reshape -> strided transposed convolutions, tanh).
- Image discriminator D_img: (face, expression) -> logit; the one-hot is tiled into label maps and
  concatenated to the feature maps after the first convolution, so D judges "a real face *showing
  this expression*".
- Latent discriminator D_z: z -> logit, z against samples of the uniform prior on [-1, 1].
- Expression classifier C: z -> class logits.

E and G are the two models shipped to the robot; their input names (``image``; ``z`` and
``expression``) are part of the export contract. Final layers compute in float32 so that mixed
precision never reaches the outputs or the losses.
"""

from __future__ import annotations

import keras
from keras import layers

from clifer_train.config import TrainConfig

_LEAK = 0.2


def build_encoder(cfg: TrainConfig) -> keras.Model:
    """E: ``image`` [None, H, W, C] in [-1, 1] -> z [None, z_dim] in [-1, 1]."""
    image = keras.Input((cfg.image_size, cfg.image_size, cfg.channels), name="image")
    x = image
    for i, width in enumerate(cfg.encoder_filters):
        x = layers.Conv2D(width, cfg.kernel_size, strides=2, padding="same", name=f"conv{i}")(x)
        if i > 0:
            x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.LeakyReLU(_LEAK, name=f"lrelu{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    if cfg.encoder_dense:
        x = layers.Dense(cfg.encoder_dense, name="dense")(x)
        x = layers.LeakyReLU(_LEAK, name="lrelu_dense")(x)
    z = layers.Dense(cfg.z_dim, name="z_linear")(x)
    z = layers.Activation("tanh", dtype="float32", name="z")(z)
    return keras.Model(image, z, name="encoder")


def build_generator(cfg: TrainConfig) -> keras.Model:
    """G: ``z`` [None, z_dim] and ``expression`` [None, n_classes] one-hot -> image [None,H,W,C]."""
    z = keras.Input((cfg.z_dim,), name="z")
    expression = keras.Input((cfg.n_classes,), name="expression")
    start = cfg.image_size // 2 ** len(cfg.generator_filters)
    x = layers.Concatenate(name="z_and_expression")([z, expression])
    x = layers.Dense(start * start * cfg.generator_filters[0], name="dense")(x)
    x = layers.Reshape((start, start, cfg.generator_filters[0]), name="reshape")(x)
    x = layers.BatchNormalization(name="bn_dense")(x)
    x = layers.ReLU(name="relu_dense")(x)
    for i, width in enumerate(cfg.generator_filters[1:]):
        x = layers.Conv2DTranspose(
            width, cfg.kernel_size, strides=2, padding="same", name=f"deconv{i}"
        )(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
    x = layers.Conv2DTranspose(
        cfg.channels, cfg.kernel_size, strides=2, padding="same", name="deconv_out"
    )(x)
    image = layers.Activation("tanh", dtype="float32", name="face")(x)
    return keras.Model([z, expression], image, name="generator")


def build_image_discriminator(cfg: TrainConfig) -> keras.Model:
    """D_img: (``image``, ``expression``) -> real/fake logit, conditioned through label maps.

    No batch normalisation: the CAAE scores real, reconstructed, translated and mismatched faces
    in one concatenated batch, and batch statistics would leak between them.
    """
    image = keras.Input((cfg.image_size, cfg.image_size, cfg.channels), name="image")
    expression = keras.Input((cfg.n_classes,), name="expression")
    first = layers.Conv2D(
        cfg.disc_filters[0], cfg.kernel_size, strides=2, padding="same", name="conv0"
    )
    x = first(image)
    x = layers.LeakyReLU(_LEAK, name="lrelu0")(x)
    side = cfg.image_size // 2
    maps = layers.Reshape((1, 1, cfg.n_classes), name="label_1x1")(expression)
    maps = layers.UpSampling2D(side, name="label_maps")(maps)
    x = layers.Concatenate(name="features_and_labels")([x, maps])
    for i, width in enumerate(cfg.disc_filters[1:], start=1):
        x = layers.Conv2D(width, cfg.kernel_size, strides=2, padding="same", name=f"conv{i}")(x)
        x = layers.LeakyReLU(_LEAK, name=f"lrelu{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    logit = layers.Dense(1, dtype="float32", name="logit")(x)
    return keras.Model([image, expression], logit, name="image_discriminator")


def build_latent_discriminator(cfg: TrainConfig) -> keras.Model:
    """D_z: z -> logit of "drawn from the uniform prior" (pushes E's latents to fill [-1, 1])."""
    z = keras.Input((cfg.z_dim,), name="z")
    x = z
    for i, units in enumerate(cfg.dz_units):
        x = layers.Dense(units, name=f"dense{i}")(x)
        x = layers.LeakyReLU(_LEAK, name=f"lrelu{i}")(x)
    logit = layers.Dense(1, dtype="float32", name="logit")(x)
    return keras.Model(z, logit, name="latent_discriminator")


def build_classifier(cfg: TrainConfig) -> keras.Model:
    """C: z -> expression logits; keeps the expression readable from z and judges G's faces."""
    z = keras.Input((cfg.z_dim,), name="z")
    x = z
    for i, units in enumerate(cfg.classifier_units):
        x = layers.Dense(units, name=f"dense{i}")(x)
        x = layers.LeakyReLU(_LEAK, name=f"lrelu{i}")(x)
    logits = layers.Dense(cfg.n_classes, dtype="float32", name="logits")(x)
    return keras.Model(z, logits, name="expression_classifier")


def build_all(cfg: TrainConfig) -> dict[str, keras.Model]:
    """All five sub-models, keyed by the names the CAAE and the checkpoints use."""
    return {
        "encoder": build_encoder(cfg),
        "generator": build_generator(cfg),
        "image_discriminator": build_image_discriminator(cfg),
        "latent_discriminator": build_latent_discriminator(cfg),
        "classifier": build_classifier(cfg),
    }
