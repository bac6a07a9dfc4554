"""Export of a real (tiny) training run to TFLite, with parity checks against Keras."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clifer_edge.datasets import load_npz
from clifer_edge.fileio import sha256_file
from clifer_edge.models import ModelFileError, ModelMetadata, TFLiteModel, load_default_models
from clifer_edge.preprocessing import preprocess_faces
from clifer_export import cli
from clifer_export.convert import ExportError, describe_models, export_run, load_run
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
