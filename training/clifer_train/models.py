"""The CAAE's five sub-models (CLIFER's Imagination model, after ExprGAN).

- Encoder E: face -> latent ``z`` in [-1, 1], in two parts. A backbone of 3x3 convolution blocks
  feeds (a) the *expression code* ``z[:, :z_expression_dim]``, trained first as a plain expression
  encoder (stage 1, :mod:`clifer_train.pretrain`) and the part the robot's memories mostly tell
  expressions by, and (b) the *identity code* ``z[:, z_expression_dim:]``, tapped from an
  earlier block (``identity_block``; finer detail), trained in the CAAE (stage 2) so that the
  generator can redraw the face.
- Generator G: (``z``, expression one-hot) -> face in [-1, 1]. By default G reads only the
  identity code: the expression it draws must come from the asked label, never from the input
  face's expression code (otherwise G may learn to ignore the label).
  ``generator_reads_expression`` adds the expression code through its own layer, for losses
  that ask for a change relative to the source expression (``w_expression_offset``).
  Upsampling is a 2x2 stride-2 transposed convolution (no overlap, hence no checkerboard
  artefacts; a resize layer would not convert to int8 TFLite with a free batch size) + a 3x3
  convolution, or the original 5x5 strided ones.
- Image discriminator D_img: (face, expression) -> logit; the one-hot is tiled into label maps and
  concatenated to the feature maps after the first convolution, so D judges "a real face *showing
  this expression*".
- Latent discriminator D_z: identity code -> logit, against samples of the uniform prior on
  [-1, 1] (the expression code is shaped by C instead).
- Expression classifier C: expression code -> class logits; keeps the expression readable in z and
  judges G's faces after re-encoding.

E and G are the two models shipped to the robot; their input names (``image``; ``z`` and
``expression``) and E's single output ``z`` are the export contract. Final layers compute in
float32 so that mixed precision never reaches the outputs or the losses.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers

from clifer_train.config import TrainConfig

_LEAK = 0.2
#: Prefix of the encoder layers that only the identity code uses (trained in stage 2).
IDENTITY_PREFIX = "identity_"


def _conv_block(x, width: int, name: str):
    """Two 3x3 convolutions with batch norm and leaky ReLU; the second halves the side."""
    for j, stride in enumerate((1, 2)):
        x = layers.Conv2D(
            width, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv{j}"
        )(x)
        x = layers.BatchNormalization(name=f"{name}_bn{j}")(x)
        x = layers.LeakyReLU(_LEAK, name=f"{name}_lrelu{j}")(x)
    return x


def build_encoder(cfg: TrainConfig) -> keras.Model:
    """E: ``image`` [None, H, W, C] in [-1, 1] -> ``z`` [None, z_dim] in [-1, 1]."""
    image = keras.Input((cfg.image_size, cfg.image_size, cfg.channels), name="image")
    x = image
    taps = []
    for i, width in enumerate(cfg.encoder_filters):
        x = _conv_block(x, width, f"block{i}")
        taps.append(x)
    # (a) Expression code: everything the last block sees.
    e = layers.Flatten(name="flatten")(x)
    if cfg.encoder_dense:
        e = layers.Dense(cfg.encoder_dense, name="dense")(e)
        e = layers.LeakyReLU(_LEAK, name="lrelu_dense")(e)
    e = layers.Dropout(cfg.encoder_dropout, name="dropout")(e)
    e = layers.Dense(cfg.z_expression_dim, name="expression_linear")(e)
    e = layers.Activation("tanh", dtype="float32", name="z_expression")(e)
    # (b) Identity code: from an earlier block (finer detail), through its own convolution.
    tapped = cfg.identity_block % len(taps)
    i = taps[tapped]
    i = layers.Conv2D(
        cfg.encoder_filters[-1],
        3,
        strides=2 if tapped < len(taps) - 1 else 1,
        padding="same",
        name=f"{IDENTITY_PREFIX}conv",
    )(i)
    i = layers.LeakyReLU(_LEAK, name=f"{IDENTITY_PREFIX}lrelu")(i)
    i = layers.Flatten(name=f"{IDENTITY_PREFIX}flatten")(i)
    i = layers.Dense(cfg.z_dim - cfg.z_expression_dim, name=f"{IDENTITY_PREFIX}linear")(i)
    i = layers.Activation("tanh", dtype="float32", name=f"{IDENTITY_PREFIX}code")(i)
    z = layers.Concatenate(dtype="float32", name="z")([e, i])
    return keras.Model(image, z, name="encoder")


def expression_encoder(encoder: keras.Model) -> keras.Model:
    """E's path to the expression code alone (shares E's layers and weights): stage 1 trains it."""
    return keras.Model(encoder.input, encoder.get_layer("z_expression").output, name="expr_enc")


def freeze_expression_path(encoder: keras.Model, classifier: keras.Model) -> None:
    """Fix E's backbone, expression code and C (stage 2 then trains the identity code only)."""
    for layer in encoder.layers:
        layer.trainable = layer.name.startswith(IDENTITY_PREFIX)
    classifier.trainable = False


def build_generator(cfg: TrainConfig) -> keras.Model:
    """G: ``z`` [None, z_dim] and ``expression`` [None, n_classes] one-hot -> image [None,H,W,C]."""
    z = keras.Input((cfg.z_dim,), name="z")
    expression = keras.Input((cfg.n_classes,), name="expression")
    start = cfg.image_size // 2 ** len(cfg.generator_filters)
    units = start * start * cfg.generator_filters[0]
    identity = z[:, cfg.z_expression_dim :]
    x = layers.Concatenate(name="identity_and_expression")([identity, expression])
    x = layers.Dense(units, name="dense")(x)
    if cfg.generator_reads_expression:
        # The source's expression code too (by default G never sees it): its own layer, zero at
        # first, so that G starts as one trained without it (``clifer-train --init-from``).
        code = layers.Dense(
            units, use_bias=False, kernel_initializer="zeros", name="expression_code_dense"
        )(z[:, : cfg.z_expression_dim])
        x = layers.Add(name="with_expression_code")([x, code])
    x = layers.Reshape((start, start, cfg.generator_filters[0]), name="reshape")(x)
    x = layers.BatchNormalization(name="bn_dense")(x)
    x = layers.ReLU(name="relu_dense")(x)
    for i, width in enumerate([*cfg.generator_filters[1:], cfg.channels]):
        if cfg.generator_upsampling == "nonoverlapping":
            # Each output pixel comes from exactly one input pixel (kernel = stride), so no
            # uneven overlap and no checkerboard; the 3x3 convolution then smooths across.
            x = layers.Conv2DTranspose(width, 2, strides=2, name=f"up{i}")(x)
            x = layers.Conv2D(width, 3, padding="same", name=f"conv{i}")(x)
        else:
            x = layers.Conv2DTranspose(
                width, cfg.kernel_size, strides=2, padding="same", name=f"deconv{i}"
            )(x)
        if i < len(cfg.generator_filters) - 1:
            x = layers.BatchNormalization(name=f"bn{i}")(x)
            x = layers.ReLU(name=f"relu{i}")(x)
    image = layers.Activation("tanh", dtype="float32", name="face")(x)
    return keras.Model([z, expression], image, name="generator")


def fold_expression_code(generator: keras.Model) -> keras.Model:
    """G with ``dense`` and ``expression_code_dense`` folded into one dense layer over
    [``z``, ``expression``]: the same function, for export.

    Training keeps them apart (the zero-initialised one lets ``--init-from`` start at a G
    without it), but TFLite's int8 converter leaves a dense layer fed by a slice of ``z`` in
    float32. ``dense`` reads [identity code, one-hot] and ``expression_code_dense`` the
    expression code, which come first in ``z``: stacking their kernels row-wise gives the one
    kernel over [expression code, identity code, one-hot]. The layers after their sum form a
    chain and are reused (shared weights). A generator without the second layer is returned as
    it is.
    """
    names = [layer.name for layer in generator.layers]
    if "expression_code_dense" not in names:
        return generator
    dense = generator.get_layer("dense")
    code = generator.get_layer("expression_code_dense")
    kernel, bias = dense.get_weights()
    (code_kernel,) = code.get_weights()
    z_dim = generator.get_layer("z").output.shape[-1]
    n_classes = generator.get_layer("expression").output.shape[-1]
    z = keras.Input((z_dim,), name="z")
    expression = keras.Input((n_classes,), name="expression")
    x = layers.Concatenate(name="code_and_expression")([z, expression])
    folded = layers.Dense(dense.units, name="dense")
    x = folded(x)
    folded.set_weights([np.concatenate([code_kernel, kernel]), bias])
    for layer in generator.layers[names.index("with_expression_code") + 1 :]:
        x = layer(x)
    return keras.Model([z, expression], x, name="generator")


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
    """D_z: identity code -> logit of "drawn from the uniform prior" (fills [-1, 1])."""
    code = keras.Input((cfg.z_dim - cfg.z_expression_dim,), name="identity_code")
    x = code
    for i, units in enumerate(cfg.dz_units):
        x = layers.Dense(units, name=f"dense{i}")(x)
        x = layers.LeakyReLU(_LEAK, name=f"lrelu{i}")(x)
    logit = layers.Dense(1, dtype="float32", name="logit")(x)
    return keras.Model(code, logit, name="latent_discriminator")


def build_classifier(cfg: TrainConfig) -> keras.Model:
    """C: expression code -> expression logits (linear unless ``classifier_units`` is set)."""
    code = keras.Input((cfg.z_expression_dim,), name="expression_code")
    x = code
    for i, units in enumerate(cfg.classifier_units):
        x = layers.Dense(units, name=f"dense{i}")(x)
        x = layers.LeakyReLU(_LEAK, name=f"lrelu{i}")(x)
    logits = layers.Dense(cfg.n_classes, dtype="float32", name="logits")(x)
    return keras.Model(code, logits, name="expression_classifier")


def build_all(cfg: TrainConfig) -> dict[str, keras.Model]:
    """All five sub-models, keyed by the names the CAAE and the checkpoints use."""
    return {
        "encoder": build_encoder(cfg),
        "generator": build_generator(cfg),
        "image_discriminator": build_image_discriminator(cfg),
        "latent_discriminator": build_latent_discriminator(cfg),
        "classifier": build_classifier(cfg),
    }
