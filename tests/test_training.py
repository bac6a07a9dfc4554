"""Training the Imagination model (CAAE) on real FER2013 faces, with tiny widths to stay fast."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from training_support import TINY  # noqa: E402

from clifer_edge.datasets import DatasetError, load_npz  # noqa: E402
from clifer_edge.labels import BASIC_EXPRESSIONS  # noqa: E402
from clifer_train import data as data_lib  # noqa: E402
from clifer_train.caae import CAAE  # noqa: E402
from clifer_train.config import TrainConfig  # noqa: E402
from clifer_train.models import build_all, freeze_expression_path  # noqa: E402
from clifer_train.train import _build_caae, expression_means, train  # noqa: E402


@pytest.fixture(scope="module")
def fer_small(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few hundred real FER2013 faces (Training + PublicTest) in the shared npz layout."""
    fer = load_npz(data_dir / "fer2013.npz")
    rng = np.random.default_rng(0)
    keep = np.concatenate(
        [
            rng.choice(np.flatnonzero(fer.splits == "Training"), 320, replace=False),
            rng.choice(np.flatnonzero(fer.splits == "PublicTest"), 64, replace=False),
        ]
    )
    path = tmp_path_factory.mktemp("fer") / "fer_small.npz"
    np.savez_compressed(
        path, images=fer.images[keep], labels=fer.labels[keep], splits=fer.splits[keep]
    )
    return path


@pytest.fixture(scope="module")
def two_epoch_run(fer_small: Path, tmp_path_factory: pytest.TempPathFactory):
    """An uninterrupted 2-epoch run: (run directory, history)."""
    out = tmp_path_factory.mktemp("runs") / "full"
    history = train(TrainConfig(**TINY), fer_small, out, progress=False)
    return out, history


# --- configuration -----------------------------------------------------------------------
def test_shipped_configs_load() -> None:
    default = TrainConfig.named("default")
    assert (default.image_size, default.channels, default.z_dim) == (48, 1, 64)
    assert default.z_expression_dim == 32 and default.pretrain_epochs > 0
    assert tuple(default.vocabulary) == BASIC_EXPRESSIONS
    paper = TrainConfig.named("paper")
    assert paper.image_size == 96
    assert paper.encoder_filters == [64, 128, 256, 512]
    assert paper.encoder_dense == 1024


def test_config_unknown_key() -> None:
    with pytest.raises(ValueError, match="z_dimm"):
        TrainConfig.from_dict({"z_dimm": 10})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("z_dim", "50"),
        ("encoder_filters", [32, "64"]),
        ("augment_flip", 1),
        ("learning_rate", "fast"),
        ("batch_size", 64.0),
        ("perceptual_model", 3),
    ],
)
def test_config_wrong_type(key: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"'{key}' should be"):
        TrainConfig.from_dict({key: value})


def test_config_bad_values() -> None:
    with pytest.raises(ValueError, match="not divisible"):
        TrainConfig(image_size=50)
    with pytest.raises(ValueError, match="mixed_precision"):
        TrainConfig(mixed_precision="yes")
    with pytest.raises(ValueError, match="perceptual_model"):
        TrainConfig(w_perceptual=1.0)
    with pytest.raises(ValueError, match="w_expression_offset > 0 needs a frozen stage-1"):
        TrainConfig(w_expression_offset=1.0, freeze_expression=False)


def test_config_yaml_errors_name_file_and_key(tmp_path: Path) -> None:
    bad_key = tmp_path / "bad_key.yaml"
    bad_key.write_text("epochs: 3\nbatchsize: 8\n")
    with pytest.raises(ValueError, match=r"bad_key\.yaml.*batchsize"):
        TrainConfig.named(str(bad_key))
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("epochs: [3\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        TrainConfig.from_yaml(bad_yaml)
    with pytest.raises(ValueError, match="neither"):
        TrainConfig.named("no-such-config")
    saved = tmp_path / "saved.yaml"
    TrainConfig(**TINY).to_yaml(saved)
    assert TrainConfig.from_yaml(saved) == TrainConfig(**TINY)


# --- data -----------------------------------------------------------------------------------
def test_missing_data_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not found"):
        train(TrainConfig(**TINY), tmp_path / "missing.npz", tmp_path / "run", progress=False)
    with pytest.raises(DatasetError, match="not found"):
        data_lib.read_faces(tmp_path / "missing.csv")


def test_corrupt_npz(tmp_path: Path, fer_small: Path) -> None:
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip archive" * 10)
    with pytest.raises(DatasetError, match="not a readable npz"):
        train(TrainConfig(**TINY), garbage, tmp_path / "run", progress=False)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(fer_small.read_bytes()[:5000])
    with pytest.raises(DatasetError, match="not a readable npz"):
        data_lib.read_faces(truncated)


def test_fer2013_csv_layout(tmp_path: Path, fer_small: Path) -> None:
    faces = load_npz(fer_small)
    codes = {name: i for i, name in enumerate(data_lib.FER2013_EMOTIONS)}
    lines = ["emotion,pixels,Usage"]
    for image, label, split in zip(
        faces.images[:20], faces.labels[:20], faces.splits[:20], strict=True
    ):
        lines.append(f"{codes[label]},{' '.join(map(str, image.ravel()))},{split}")
    path = tmp_path / "fer2013.csv"
    path.write_text("\n".join(lines) + "\n")
    read = data_lib.read_faces(path)
    np.testing.assert_array_equal(read.images, faces.images[:20])
    np.testing.assert_array_equal(read.labels, faces.labels[:20])
    np.testing.assert_array_equal(read.splits, faces.splits[:20])
    path.write_text("emotion,pixels,Usage\n3,1 2 3,Training\n")
    with pytest.raises(DatasetError, match="line 2"):
        data_lib.read_faces(path)


def test_class_folder_layout(tmp_path: Path, fer_small: Path) -> None:
    import cv2

    faces = load_npz(fer_small)
    root = tmp_path / "faces"
    for i, (image, label) in enumerate(zip(faces.images[:12], faces.labels[:12], strict=True)):
        folder = root / "Training" / ("happy" if label == "happiness" else label)
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{i:03d}.png"), image)
    read = data_lib.read_faces(root)
    assert len(read) == 12
    assert set(read.labels) == set(faces.labels[:12])  # "happy" mapped to the canonical name
    assert set(read.splits) == {"Training"}
    prepared = data_lib.prepare(read, TrainConfig(**TINY), "Training")
    assert prepared.images.shape == (12, 48, 48, 1)
    assert prepared.images.min() >= -1.0 and prepared.images.max() <= 1.0


def test_batches_are_deterministic_per_epoch(fer_small: Path) -> None:
    cfg = TrainConfig(**TINY)
    train_faces, _ = data_lib.load_splits(fer_small, cfg)
    from_start = data_lib.FaceBatches(train_faces, cfg, first_epoch=0)
    follow = data_lib.FollowEpochs(from_start)
    epoch0 = [from_start[i] for i in range(len(from_start))]
    from_start.on_epoch_end()  # Keras calls it more often than once per epoch: no effect
    assert from_start[0][0] == pytest.approx(epoch0[0][0])
    follow.on_epoch_begin(1)
    epoch1 = [from_start[i] for i in range(len(from_start))]
    resumed = data_lib.FaceBatches(train_faces, cfg, first_epoch=1)
    again = [resumed[i] for i in range(len(resumed))]
    for (x_a, y_a), (x_b, y_b) in zip(epoch1, again, strict=True):
        np.testing.assert_array_equal(x_a, x_b)
        np.testing.assert_array_equal(y_a, y_b)
    assert not np.array_equal(epoch0[0][0], epoch1[0][0])  # reshuffled/augmented per epoch
    assert epoch0[0][0].min() >= -1.0 and epoch0[0][0].max() <= 1.0
    assert epoch0[0][0].shape == (cfg.batch_size, 48, 48, 1)
    # Augmentation keeps faces recognisable: close to the source, not identical.
    order = from_start.order(0)[: cfg.batch_size]
    diff = np.abs(epoch0[0][0] - train_faces.images[order]).mean()
    assert 0.0 < diff < 0.5


def test_class_weights_balance_rare_classes(fer_small: Path) -> None:
    labels = np.array([0] * 90 + [1] * 10)
    none = data_lib.class_weights(labels, 2, "none")
    sqrt = data_lib.class_weights(labels, 2, "sqrt")
    inverse = data_lib.class_weights(labels, 2, "inverse")
    np.testing.assert_allclose(none, [1.0, 1.0])
    assert sqrt[1] / sqrt[0] == pytest.approx(3.0, rel=1e-5)
    assert inverse[1] / inverse[0] == pytest.approx(9.0, rel=1e-5)
    for weights in (sqrt, inverse):  # mean weight per face stays 1
        assert (weights[labels]).mean() == pytest.approx(1.0, rel=1e-5)
    weighted = data_lib.FaceBatches(
        data_lib.load_splits(fer_small, TrainConfig(**TINY))[0], TrainConfig(**TINY), weighted=True
    )
    assert len(weighted[0]) == 3


# --- models -----------------------------------------------------------------------------------
def test_build_and_one_step_on_real_faces(fer_small: Path) -> None:
    cfg = TrainConfig(**TINY)
    faces, _ = data_lib.load_splits(fer_small, cfg)
    images = faces.images[:32]
    one_hot = np.eye(cfg.n_classes, dtype=np.float32)[faces.labels[:32]]

    models = build_all(cfg)
    encoder, generator = models["encoder"], models["generator"]
    assert [t.name for t in encoder.inputs] == ["image"]
    assert sorted(t.name for t in generator.inputs) == ["expression", "z"]
    z = np.asarray(encoder(images))
    assert z.shape == (32, cfg.z_dim) and np.abs(z).max() <= 1.0
    fake = np.asarray(generator({"z": z, "expression": one_hot}))
    assert fake.shape == images.shape and np.abs(fake).max() <= 1.0
    # G reads the identity code only: the input face's expression code cannot steer it.
    other = z.copy()
    other[:, : cfg.z_expression_dim] = -other[:, : cfg.z_expression_dim]
    np.testing.assert_array_equal(fake, np.asarray(generator({"z": other, "expression": one_hot})))
    assert models["image_discriminator"]([images, one_hot]).shape == (32, 1)
    identity = z[:, cfg.z_expression_dim :]
    assert models["latent_discriminator"](identity).shape == (32, 1)
    assert models["classifier"](z[:, : cfg.z_expression_dim]).shape == (32, cfg.n_classes)

    caae = _build_caae(cfg, models, mixed=False, steps_per_epoch=10)
    assert isinstance(caae, CAAE)
    before = {name: [w.numpy() for w in m.trainable_weights] for name, m in models.items()}
    logs = caae.train_on_batch(images, one_hot, return_dict=True)
    for name, value in logs.items():
        assert np.isfinite(float(value)), name
    for name, weights in before.items():
        after = models[name].trainable_weights
        changed = any(not np.array_equal(b, a.numpy()) for b, a in zip(weights, after, strict=True))
        assert changed, f"{name} was not trained by train_step"


def test_stage_two_keeps_the_expression_path_fixed(fer_small: Path) -> None:
    cfg = TrainConfig(**TINY)
    faces, _ = data_lib.load_splits(fer_small, cfg)
    images = faces.images[:32]
    one_hot = np.eye(cfg.n_classes, dtype=np.float32)[faces.labels[:32]]
    models = build_all(cfg)
    freeze_expression_path(models["encoder"], models["classifier"])
    caae = _build_caae(cfg, models, mixed=False, steps_per_epoch=10)
    code_before = np.asarray(models["encoder"](images))[:, : cfg.z_expression_dim]
    fixed = [w.numpy() for w in models["classifier"].weights]
    caae.train_on_batch(images, one_hot)
    code_after = np.asarray(models["encoder"](images))
    np.testing.assert_array_equal(code_before, code_after[:, : cfg.z_expression_dim])
    for b, a in zip(fixed, models["classifier"].weights, strict=True):
        np.testing.assert_array_equal(b, a.numpy())
    trainable = {w.path.split("/")[0] for w in models["encoder"].trainable_weights}
    assert trainable and all(name.startswith("identity_") for name in trainable)


def test_expression_offset_targets_the_class_mean_offset(fer_small: Path) -> None:
    """A translation from class c to t should land at the person's code + mean(t) - mean(c)."""
    cfg = TrainConfig(**TINY, w_expression_offset=1.0)
    faces, _ = data_lib.load_splits(fer_small, cfg)
    models = build_all(cfg)
    caae = _build_caae(cfg, models, mixed=False, steps_per_epoch=10)
    means = expression_means(models["encoder"], faces, cfg)
    codes = np.asarray(models["encoder"](faces.images))[:, : cfg.z_expression_dim]
    for k in np.unique(faces.labels):
        np.testing.assert_allclose(means[k], codes[faces.labels == k].mean(0), atol=1e-5)
    caae.set_expression_means(means)

    z = np.asarray(models["encoder"](faces.images[:16]))
    labels, targets = faces.labels[:16], (faces.labels[:16] + 2) % cfg.n_classes
    landed = z.copy()
    landed[:, : cfg.z_expression_dim] += means[targets] - means[labels]
    assert float(caae._offset_error(z, landed, labels, targets)) == pytest.approx(0.0, abs=1e-6)
    off = landed.copy()
    off[:, : cfg.z_expression_dim] += 0.25
    assert float(caae._offset_error(z, off, labels, targets)) == pytest.approx(0.25, abs=1e-5)


def test_reencode_views_show_the_translation_otherwise(fer_small: Path) -> None:
    """C's view of a translation: mirrored or shifted, lighter or darker, still a face in
    [-1, 1]; with every range at zero it is the face itself."""
    cfg = TrainConfig(**TINY, reencode_views=True)
    faces, _ = data_lib.load_splits(fer_small, cfg)
    images = faces.images[:32]
    caae = _build_caae(cfg, build_all(cfg), mixed=False, steps_per_epoch=10)
    view = np.asarray(caae._random_view(images))
    assert view.shape == images.shape and view.min() >= -1.0 and view.max() <= 1.0
    assert np.abs(view - images).mean() > 0.02
    still = dict(augment_flip=False, augment_shift=0, augment_brightness=0.0, augment_contrast=0.0)
    cfg = TrainConfig(**TINY, reencode_views=True, **still)
    caae = _build_caae(cfg, build_all(cfg), mixed=False, steps_per_epoch=10)
    np.testing.assert_allclose(np.asarray(caae._random_view(images)), images, atol=1e-6)


# --- runs ---------------------------------------------------------------------------------------
def test_two_epochs_lower_reconstruction_and_write_run_dir(two_epoch_run) -> None:
    out, history = two_epoch_run
    assert [row["epoch"] for row in history] == [1, 2]
    assert history[1]["reconstruction"] < history[0]["reconstruction"]
    assert np.isfinite(history[1]["val_reconstruction"])
    for name in ("config.yaml", "encoder.keras", "generator.keras", "history.csv", "curves.png"):
        assert (out / name).is_file(), name
    for name in ("history.csv", "curves.png", "epoch_001.npz"):
        assert (out / "pretrain" / name).is_file(), name
    assert (out / "samples" / "epoch_002.png").is_file()
    assert any((out / "tensorboard").rglob("events.out.tfevents.*"))
    info = json.loads((out / "train_info.json").read_text())
    assert info["epochs_done"] == 2 and info["z_dim"] == 16 and info["z_expression_dim"] == 8
    assert info["backend"] == "tensorflow"
    assert info["vocabulary"] == list(BASIC_EXPRESSIONS)
    assert len(info["data_sha256"]) == 64

    encoder = keras.models.load_model(out / "encoder.keras")
    generator = keras.models.load_model(out / "generator.keras")
    assert encoder.inputs[0].name == "image"
    faces = np.zeros((2, 48, 48, 1), np.float32)
    z = encoder.predict(faces, verbose=0)
    image = generator.predict({"z": z, "expression": np.eye(7, dtype=np.float32)[:2]}, verbose=0)
    assert image.shape == (2, 48, 48, 1)


def test_resume_gives_the_same_next_loss(two_epoch_run, fer_small: Path, tmp_path: Path) -> None:
    _, full = two_epoch_run
    out = tmp_path / "interrupted"
    first = train(TrainConfig(**TINY), fer_small, out, stop_after=1, progress=False)
    assert [row["epoch"] for row in first] == [1]
    with pytest.raises(ValueError, match="resume"):
        train(TrainConfig(**TINY), fer_small, out, progress=False)
    resumed = train(TrainConfig(**TINY), fer_small, out, resume=True, progress=False)
    assert [row["epoch"] for row in resumed] == [1, 2]
    for key in ("reconstruction", "g_total", "d_image", "val_reconstruction"):
        assert resumed[1][key] == pytest.approx(full[1][key], rel=1e-5, abs=1e-6), key


def test_init_from_starts_a_generator_reading_the_expression_code_as_the_source(
    two_epoch_run, fer_small: Path, tmp_path: Path
) -> None:
    source, _ = two_epoch_run
    cfg = TrainConfig(**{**TINY, "epochs": 1, "generator_reads_expression": True})
    models = build_all(cfg)
    from clifer_train.train import warm_start

    assert warm_start(models, source) == ["generator/expression_code_dense"]
    # The new path starts at zero: G draws exactly what the source run's G draws.
    before = keras.models.load_model(source / "generator.keras")
    z = np.random.default_rng(0).uniform(-1, 1, (3, 16)).astype(np.float32)
    hot = np.eye(7, dtype=np.float32)[[0, 3, 6]]
    np.testing.assert_allclose(
        models["generator"].predict({"z": z, "expression": hot}, verbose=0),
        before.predict({"z": z, "expression": hot}, verbose=0),
        atol=1e-6,
    )
    # A training run from it skips stage 1 and learns the new path.
    out = tmp_path / "warm"
    history = train(cfg, fer_small, out, init_from=source, progress=False)
    assert [row["epoch"] for row in history] == [1] and not (out / "pretrain").exists()
    generator = keras.models.load_model(out / "generator.keras")
    assert np.abs(generator.get_layer("expression_code_dense").get_weights()[0]).max() > 0
    # Resumed, it continues from its own checkpoint (no stage 1, no --init-from needed).
    again = train(cfg, fer_small, out, epochs=2, resume=True, progress=False)
    assert [row["epoch"] for row in again] == [1, 2] and not (out / "pretrain").exists()
    with pytest.raises(ValueError, match="stage-2 checkpoint"):
        warm_start(build_all(cfg), tmp_path)


def test_mixed_precision_run_saves_float32_models(fer_small: Path, tmp_path: Path) -> None:
    """The GPU code path (loss-scaled float16), forced on the CPU for one short epoch."""
    cfg = TrainConfig(**{**TINY, "epochs": 1, "max_train_samples": 64, "mixed_precision": "on"})
    history = train(cfg, fer_small, tmp_path / "mixed", progress=False)
    assert np.isfinite(history[0]["g_total"])
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the run
    encoder = keras.models.load_model(tmp_path / "mixed" / "encoder.keras")
    assert {layer.dtype_policy.name for layer in encoder.layers} == {"float32"}


def test_packed_data_reads_back_identical_faces(fer_small: Path, tmp_path: Path) -> None:
    from clifer_train.pack import main as pack_main

    packed = tmp_path / "packed.npz"
    assert pack_main(["--data", str(fer_small), "--out", str(packed), "--val-faces", "16"]) == 0
    original, again = load_npz(fer_small), data_lib.read_faces(packed)
    training = original.splits == "Training"
    np.testing.assert_array_equal(again.images[: training.sum()], original.images[training])
    assert list(again.labels[: training.sum()]) == list(original.labels[training])
    assert (again.splits == "PublicTest").sum() == 16
    assert packed.stat().st_size < fer_small.stat().st_size
