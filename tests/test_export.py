"""Export of a real (tiny) training run to TFLite, with parity checks against Keras."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clifer_edge.datasets import load_npz
from clifer_edge.fileio import sha256_file
from clifer_edge.labels import BASIC_EXPRESSIONS
from clifer_edge.models import (
    ModelFileError,
    ModelFiles,
    ModelMetadata,
    TFLiteModel,
    load_default_models,
)
from clifer_edge.preprocessing import preprocess_faces
from clifer_export import cli
from clifer_export.convert import (
    ExportError,
    describe_models,
    export_run,
    load_expression_model,
    load_run,
)
from clifer_export.parity import (
    gdm_f1,
    repeated_gdm_f1,
    runtime_check,
    tensor_parity,
)
from clifer_export.quality import measure, sample_grid
from clifer_train.config import TrainConfig
from clifer_train.expression_classifier import build_classifier, load_classifier, train_classifier
from clifer_train.models import build_encoder, build_generator
from clifer_train.train import train

TINY = {
    "encoder_filters": [8, 16, 16],
    "generator_filters": [16, 16, 8],
    "disc_filters": [8, 8, 8],
    "dz_units": [8],
    "classifier_units": [8],
    "z_dim": 12,
    "z_expression_dim": 6,
    "pretrain_epochs": 1,
    "batch_size": 32,
    "epochs": 1,
    "max_train_samples": 64,
    "max_val_samples": 32,
    "grid_faces": 2,
    "generator_reads_expression": True,  # as the default: every layer G can have
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path):
    """A clifer-train run of one epoch (two real training steps) on 64 FER2013 Training faces."""
    out = tmp_path_factory.mktemp("run")
    train(TrainConfig.from_dict(TINY), data_dir / "fer2013.npz", out, progress=False)
    return load_run(out)


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("models")
    export_run(
        tiny_run,
        out,
        ["int8", "float16", "float32"],
        data=data_dir / "fer2013.npz",
        n_calibration=64,
    )
    return out


@pytest.fixture(scope="module")
def test_faces(data_dir: Path) -> np.ndarray:
    fer = load_npz(data_dir / "fer2013.npz")
    test = fer.subset(np.flatnonzero(fer.splits == "PublicTest")[:96])
    return preprocess_faces(test.images)


def test_metadata_describes_every_file(tiny_run, exported: Path) -> None:
    meta = ModelMetadata.load(exported / "metadata.json")
    assert (meta.image_size, meta.channels, meta.z_dim) == (48, 1, TINY["z_dim"])
    assert meta.vocabulary == tuple(tiny_run.info["vocabulary"])
    assert sorted(meta.models) == sorted(
        f"{role}_{variant}.tflite"
        for role in ("encoder", "generator")
        for variant in ("int8", "float16", "float32")
    )
    for name, entry in meta.models.items():
        assert entry["sha256"] == sha256_file(exported / name)
        assert entry["bytes"] == (exported / name).stat().st_size
    int8_input = meta.models["encoder_int8.tflite"]["inputs"]["image"]
    assert int8_input["dtype"] == "int8" and int8_input["scale"] > 0
    assert meta.training["data_sha256"] == tiny_run.info["data_sha256"]
    assert meta.training["epochs_done"] == 1
    assert "non-commercial" in meta.training["terms"]  # the weights' terms, apart from the code
    assert meta.export["calibration"]["samples"] == 64
    sizes = {name: entry["bytes"] for name, entry in meta.models.items()}
    assert sizes["encoder_int8.tflite"] < sizes["encoder_float16.tflite"]
    assert sizes["encoder_float16.tflite"] < sizes["encoder_float32.tflite"]


def test_all_formats_match_keras(tiny_run, exported: Path, test_faces: np.ndarray) -> None:
    report = tensor_parity(tiny_run, exported, test_faces)
    assert set(report) == {"int8", "float16", "float32"}
    assert report["float32"]["latent"]["max_abs"] < 1e-4
    assert report["float32"]["image"]["max_abs"] < 1e-4
    assert report["float16"]["latent"]["max_abs"] < 2e-2
    assert report["float16"]["image"]["max_abs"] < 2e-2
    # int8: a few quantisation steps (1/128 for tanh outputs) on average, bounded at worst.
    assert report["int8"]["latent"]["mean_abs"] < 4 / 128
    assert report["int8"]["latent"]["max_abs"] < 0.25
    assert report["int8"]["image"]["mean_abs"] < 4 / 128
    assert report["int8"]["image_from_own_latent"]["mean_abs"] < 6 / 128


def test_int8_files_compute_in_integers_only(exported: Path) -> None:
    """No float tensor inside an int8 file: G's two first dense layers are exported folded into
    one (fold_expression_code), which the converter quantises (it keeps the unfolded one's
    expression-code layer in float32)."""
    from ai_edge_litert.interpreter import Interpreter

    for role in ("encoder", "generator"):
        tensors = Interpreter(str(exported / f"{role}_int8.tflite")).get_tensor_details()
        floats = [t["name"] for t in tensors if t["dtype"] not in (np.int8, np.int32)]
        assert floats == [], (role, floats)


def test_robot_loader_runs_every_format(exported: Path, test_faces: np.ndarray) -> None:
    latents = {}
    for variant in ("int8", "float16", "float32"):
        encoder, generator = load_default_models(variant, model_dir=exported)
        latents[variant] = encoder.encode(test_faces)
        images = generator.generate(latents[variant][:7], list(generator.vocabulary))
        assert images.shape == (7, 48, 48, 1)
    np.testing.assert_allclose(latents["float16"], latents["float32"], atol=2e-2)
    check = runtime_check(exported, ["int8", "float16", "float32"])
    assert check["ok"], check
    assert check["tensorflow_imported"] is False
    assert check["int8"]["runtime"] == "ai_edge_litert.interpreter"


def test_damaged_exports_fail_at_load(exported: Path, tmp_path: Path) -> None:
    content = (exported / "generator_float32.tflite").read_bytes()
    truncated = tmp_path / "generator_float32.tflite"
    truncated.write_bytes(content[: len(content) * 3 // 4])
    with pytest.raises(ModelFileError, match="cannot load"):
        TFLiteModel(truncated)
    foreign = tmp_path / "encoder_int8.tflite"
    foreign.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    with pytest.raises(ModelFileError, match="not a TFLite model"):
        TFLiteModel(foreign)


def test_cli_exports_and_merges_metadata(tiny_run, tmp_path: Path, data_dir: Path, capsys) -> None:
    run_dir = str(tiny_run.directory)
    data = str(data_dir / "fer2013.npz")
    args = ["--checkpoint", run_dir, "--out", str(tmp_path), "--data", data]
    assert cli.main([*args, "--format", "float32"]) == 0
    assert cli.main([*args, "--format", "int8", "--calibration-samples", "16"]) == 0
    meta = json.loads((tmp_path / "metadata.json").read_text())
    # The second export keeps the first one's entries: same run, files unchanged.
    assert sorted(meta["models"]) == [
        "encoder_float32.tflite",
        "encoder_int8.tflite",
        "generator_float32.tflite",
        "generator_int8.tflite",
    ]
    assert "int8" in capsys.readouterr().out
    assert cli.main(["--checkpoint", str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    assert "missing" in capsys.readouterr().err


def test_inconsistent_models_are_refused(tiny_run) -> None:
    other = TrainConfig.from_dict({**TINY, "z_dim": TINY["z_dim"] + 1})
    with pytest.raises(ExportError, match="z size"):
        describe_models(tiny_run.encoder, build_generator(other), {})
    with pytest.raises(ExportError, match="train_info z_dim"):
        describe_models(build_encoder(other), build_generator(other), tiny_run.info)


def test_quality_measures_on_exported_models(
    exported: Path, test_faces, data_dir, tmp_path
) -> None:
    encoder, generator = load_default_models("int8", model_dir=exported)
    fer = load_npz(data_dir / "fer2013.npz")
    labels = fer.labels[np.flatnonzero(fer.splits == "PublicTest")[:96]]
    report = measure(encoder, generator, build_classifier(), test_faces[:32], labels[:32])
    assert report["faces"] == 32
    assert set(report["expression_control_accuracy"]) == set(generator.vocabulary)
    assert all(0.0 <= v <= 1.0 for v in report["expression_control_accuracy"].values())
    for target, verdicts in report["judged_as_by_target"].items():
        assert sum(verdicts.values()) == pytest.approx(1.0)
        assert verdicts[target] == report["expression_control_accuracy"][target]
    assert all(-1.0 <= v <= 1.0 for v in report["expression_control_lift"].values())
    z = encoder.encode(test_faces[:32])
    expected = np.mean(np.abs(generator.generate(z, list(labels[:32])) - test_faces[:32]))
    assert report["reconstruction_l1"] == pytest.approx(float(expected), rel=1e-5)
    assert report["identity_latent_l1_mean"] > 0.0
    path = sample_grid(encoder, generator, test_faces[:3], tmp_path / "grid.png")
    assert path.stat().st_size > 1000


def test_expression_classifier_tool_trains_and_reports(data_dir: Path, tmp_path: Path) -> None:
    report = train_classifier(
        data_dir / "fer2013.npz", tmp_path / "judge.keras", epochs=1, batch_size=64, limit=192
    )
    assert report["train_faces"] == 192 and report["test_split"] == "PublicTest"
    assert 0.0 <= report["test_accuracy"] <= 1.0
    assert set(report["test_accuracy_per_class"]) == set(report["vocabulary"])
    judge = load_classifier(tmp_path / "judge.keras")
    assert judge.output_shape == (None, 7)
    assert json.loads((tmp_path / "judge.json").read_text())["epochs"] == 1
    assert (tmp_path / "judge.png").stat().st_size > 1000  # its accuracy curves


def test_interrupted_classifier_training_resumes(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each epoch is backed up; started again the same way, a run goes on from the next epoch."""
    from clifer_train import data as data_lib

    fetch = data_lib.FaceBatches.__getitem__

    def fail_in_second_epoch(self, index):
        if self.epoch == 1:
            raise RuntimeError("power cut")
        return fetch(self, index)

    out = tmp_path / "fallback.keras"
    arguments = dict(epochs=2, batch_size=64, limit=128, stages="judge", keep="last")
    with monkeypatch.context() as patch:
        patch.setattr(data_lib.FaceBatches, "__getitem__", fail_in_second_epoch)
        # (TensorFlow's input pipeline re-raises it as its own error type)
        with pytest.raises(Exception, match="power cut"):
            train_classifier(data_dir / "fer2013.npz", out, **arguments)
    backup = tmp_path / "fallback.keras.backup"
    assert backup.is_dir() and out.exists()  # epoch 1 saved and backed up
    report = train_classifier(data_dir / "fer2013.npz", out, **arguments)
    assert len(report["val_accuracy_per_epoch"]) == 1  # only the second epoch ran
    assert report["first_epoch"] == 2
    assert not backup.exists()  # a finished run leaves no backup behind
    with pytest.raises(ValueError, match="stages 'huge'"):
        train_classifier(data_dir / "fer2013.npz", out, epochs=1, limit=64, stages="huge")


@pytest.fixture(scope="module")
def classifier_file(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A fallback-shaped expression classifier trained one epoch on 128 FER2013 faces."""
    out = tmp_path_factory.mktemp("classifier") / "fallback.keras"
    train_classifier(data_dir / "fer2013.npz", out, epochs=1, batch_size=64, limit=128, keep="last")
    return out


@pytest.fixture(scope="module")
def with_expression(
    tiny_run, classifier_file: Path, tmp_path_factory: pytest.TempPathFactory, data_dir: Path
) -> Path:
    """An int8 export of the tiny run with the expression model beside E and G."""
    out = tmp_path_factory.mktemp("with_expression")
    export_run(
        tiny_run,
        out,
        ["int8"],
        data=data_dir / "fer2013.npz",
        n_calibration=64,
        expression_model=load_expression_model(classifier_file, tiny_run),
    )
    return out


def test_expression_model_exports_and_matches_keras(
    tiny_run, classifier_file: Path, with_expression: Path, test_faces: np.ndarray
) -> None:
    meta = ModelMetadata.load(with_expression / "metadata.json")
    entry = meta.models["expression_int8.tflite"]
    report = json.loads(classifier_file.with_suffix(".json").read_text())
    assert entry["role"] == "expression" and entry["variant"] == "int8"
    assert entry["training"]["test_accuracy"] == report["test_accuracy"]
    assert entry["training"]["kept_epoch"] == "last"
    assert "non-commercial" in entry["training"]["terms"]
    files = ModelFiles.locate(with_expression, "int8")
    model = files.load_expression()
    assert model is not None and model.vocabulary == tuple(tiny_run.vocabulary)
    assert "expression" in files.provenance()
    probabilities = model.predict_proba(test_faces, mirror=False)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    keras_probabilities = load_classifier(classifier_file).predict(test_faces, verbose=0)
    # int8 softmax: steps of 1/256, a few of them at worst
    assert np.mean(np.abs(probabilities - keras_probabilities)) < 4 / 256
    # by default each face is averaged with its mirror image
    assert model.mirror
    mirrored = model.predict_proba(test_faces[:, :, ::-1], mirror=False)
    np.testing.assert_allclose(
        model.predict_proba(test_faces), (probabilities + mirrored) / 2.0, atol=1e-4
    )
    assert model.predict_proba(test_faces[:0]).shape == (0, 7)
    with pytest.raises(ValueError, match="outside"):
        model.predict_proba(test_faces[:2] * 3.0)
    # An export without one: the fallback is the latent calibration's.
    assert ModelFiles.locate(tiny_run.directory, "int8").load_expression() is None


def test_expression_model_of_other_faces_or_classes_is_refused(
    tiny_run, classifier_file: Path, tmp_path: Path
) -> None:
    report = json.loads(classifier_file.with_suffix(".json").read_text())
    shuffled = tmp_path / "shuffled.keras"
    shuffled.write_bytes(classifier_file.read_bytes())
    order = report["vocabulary"]
    shuffled.with_suffix(".json").write_text(
        json.dumps({**report, "vocabulary": order[1:] + order[:1]})
    )
    with pytest.raises(ExportError, match="must agree, in order"):
        load_expression_model(shuffled, tiny_run)
    with pytest.raises(ExportError, match="expression_classifier --stages fallback"):
        load_expression_model(tmp_path / "missing.keras", tiny_run)


def test_fallback_answers_from_the_expression_model(
    tiny_run, with_expression: Path, test_faces: np.ndarray, tmp_path: Path
) -> None:
    """The runtime's answer for a person not learned yet (and an anonymous one) is the expression
    model's; without one, the calibration's classifier on the latent."""
    from clifer_edge.models import Fallback, LatentCalibration
    from clifer_edge.runtime import ExpressionRuntime, load_config

    files = ModelFiles.locate(with_expression, "int8")
    encoder, _ = files.load()
    model = files.load_expression()
    latents = encoder.encode(test_faces)
    labels = np.asarray(BASIC_EXPRESSIONS)[np.arange(len(latents)) % 7]
    calibration = LatentCalibration.fit(latents, labels)
    config = load_config(None).replace(
        models={"directory": str(with_expression)}, memory={"directory": str(tmp_path / "mem")}
    )
    with ExpressionRuntime(config, calibration=calibration) as runtime:
        assert runtime.fallback.describe() == "expression model"
        faces = np.round((test_faces[:4, :, :, 0] + 1.0) * 127.5).astype(np.uint8)
        expected = model.predict_proba(preprocess_faces(faces))
        for face, scores in zip(faces, expected, strict=True):
            for anonymous in (False, True):
                result = runtime.process_face(face, person_id="new", anonymous=anonymous)
                assert result.memory == "fallback"
                assert result.label == BASIC_EXPRESSIONS[int(np.argmax(scores))]
                named = dict(zip(BASIC_EXPRESSIONS, scores, strict=True))
                assert result.scores == pytest.approx(named)
        assert runtime.stats()["fallback"] == "expression model"
    latent_only = Fallback(calibration)
    points = calibration.to_memory(latents)
    assert latent_only.predict(None, points) == calibration.predict(points)
    assert latent_only.describe() == "class means" and not latent_only.reads_faces
    with pytest.raises(ValueError, match="pass faces"):
        Fallback(calibration, model).predict(None, points)
    with pytest.raises(ValueError, match="pass points"):
        latent_only.predict(test_faces, None)
    with pytest.raises(ValueError, match="needs an expression model"):
        Fallback()


def test_gdm_f1_on_bundled_encoder_latents(data_dir: Path) -> None:
    ck = load_npz(data_dir / "ckplus48.npz")
    keep = np.isin(ck.subjects, sorted(set(ck.subjects.tolist()))[:12])
    ck = ck.subset(keep)
    encoder, _ = load_default_models("int8")
    latents = encoder.encode(preprocess_faces(ck.images))
    first = gdm_f1(latents, ck, seed=0)
    assert gdm_f1(latents, ck, seed=0) == first  # same latents and seed: same memories
    assert first["subjects"] > 3 and first["frame_splits"] > 0  # CK+: one sequence per class
    scores = [v for s in first["per_subject"].values() for v in s.values()]
    assert all(0.0 <= v <= 100.0 for v in scores)
    # Well above chance: CK+ frames of one sequence are near-duplicates (a frame split).
    assert first["mean_f1"]["episodic"] > 60.0
    repeated = repeated_gdm_f1(latents, ck, seeds=[0, 1])
    assert repeated["seeds"] == [0, 1] and set(repeated["per_subject"]) == set(first["per_subject"])
