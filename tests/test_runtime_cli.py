"""The runtime's command lines on real faces: `run` (images folder) and a small `demo`."""

from __future__ import annotations

import argparse
import json

import cv2
import numpy as np
import pytest

from clifer_edge.cli import demo as demo_app
from clifer_edge.cli import run as run_app
from clifer_edge.datasets import load_npz


def _args(module, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture
def frames_dir(tmp_path, data_dir):
    jaffe = load_npz(data_dir / "jaffe.npz")
    folder = tmp_path / "frames"
    folder.mkdir()
    rows = np.flatnonzero(jaffe.subjects == "KA")[:3]
    for i, row in enumerate(rows):
        cv2.imwrite(str(folder / f"{i:02d}.png"), jaffe.images[row])
    (folder / "03.png").write_bytes(b"not a png")  # unreadable: reported and skipped
    return folder


def test_run_learns_then_recognises_a_folder_of_frames(tmp_path, frames_dir, capsys):
    memory = str(tmp_path / "memories")
    common = ["--images", str(frames_dir), "--person", "KA", "--memory-dir", memory, "--json"]
    assert run_app.run(_args(run_app, [*common, "--label", "neutral"])) == 0
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 3
    assert all(line["learned"] and line["person_id"] == "KA" for line in lines)
    assert all(len(line["box"]) == 4 for line in lines)
    assert "unreadable" in err

    assert run_app.run(_args(run_app, common)) == 0
    out, _ = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["label"] for line in lines] == ["neutral"] * 3
    assert {line["memory"] for line in lines} == {"episodic"}
    assert abs(sum(lines[0]["scores"].values()) - 1.0) < 1e-3


def test_run_plain_text_lines(tmp_path, frames_dir, capsys):
    argv = ["--images", str(frames_dir), "--memory-dir", str(tmp_path / "m"), "--max-frames", "1"]
    assert run_app.run(_args(run_app, argv)) == 0
    out, _ = capsys.readouterr()
    (line,) = out.splitlines()
    assert line.startswith("frame=00.png person=user expression=")
    assert "memory=fallback" in line


def test_run_says_where_its_memories_are(tmp_path, frames_dir, capsys):
    memory = tmp_path / "m"
    argv = ["--images", str(frames_dir), "--memory-dir", str(memory), "--max-frames", "1"]
    assert run_app.run(_args(run_app, argv)) == 0
    first = capsys.readouterr().err.splitlines()[0]
    assert first == f"memories: {memory} (--memory-dir to change)"


def test_run_does_not_make_a_typo_a_new_class(tmp_path, frames_dir, capsys):
    memory = tmp_path / "memories"
    common = ["--images", str(frames_dir), "--person", "KA", "--memory-dir", str(memory)]
    assert run_app.run(_args(run_app, [*common, "--label", "hapiness"])) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "did you mean 'happiness'?" in line and "--new-label" in line
    assert not memory.exists()  # nothing learned, nothing written
    # synonyms are the known expressions; a new one needs the flag
    assert run_app.check_label("Happy", new_label=False) == "happiness"
    with pytest.raises(ValueError, match="not a known expression") as error:
        run_app.check_label("wink", new_label=False)
    assert "did you mean" not in str(error.value)
    assert run_app.run(_args(run_app, [*common, "--label", "wink", "--new-label", "--json"])) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 3 and all(line["learned"] for line in lines)
    assert run_app.run(_args(run_app, [*common, "--json"])) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {line["label"] for line in lines} == {"wink"}


def test_run_on_a_folder_without_images_is_an_error(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no image here")
    argv = ["--images", str(empty), "--memory-dir", str(tmp_path / "m")]
    assert run_app.run(_args(run_app, argv)) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: --images {empty}: no image files")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("where", ["option", "environment"])
def test_demo_without_the_shared_data_says_how_to_point_at_it(tmp_path, capsys, monkeypatch, where):
    nowhere = tmp_path / "no-data"
    out = tmp_path / "demo"
    argv = ["--out", str(out)]
    if where == "option":
        argv += ["--data-dir", str(nowhere)]
    else:
        monkeypatch.setenv("CLIFER_DATA_DIR", str(nowhere))
    assert demo_app.run(_args(demo_app, argv)) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.count(str(nowhere)) == 1
    assert "no such folder" in line and "--data-dir" in line and "CLIFER_DATA_DIR" in line
    assert not out.exists()
    nowhere.mkdir()  # a folder without the data files
    assert demo_app.run(_args(demo_app, argv)) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "no jaffe.npz or ckplus48.npz there" in line


def test_small_demo_writes_its_table_and_plots(tmp_path, capsys):
    out_dir = tmp_path / "demo"
    argv = ["--out", str(out_dir), "--jaffe-subjects", "1", "--ck-subjects", "1"]
    assert demo_app.run(_args(demo_app, [*argv, "--idle-budget", "1"])) == 0
    printed = capsys.readouterr().out
    print(printed)
    assert "jaffe-KA" in printed and "mean CK+" in printed
    results = json.loads((out_dir / "results.json").read_text())
    assert [row["person"] for row in results["subjects"]] == ["jaffe-KA", "ck-S011"]
    for row in results["subjects"]:
        assert len(row["curve_all"]) == row["classes"] == len(row["curve_all_imagination"])
        assert 0.0 <= row["f1_seen"] <= 1.0
    assert results["imagined_latents"] > 0
    for name in ("f1_curves.png", "imagined.png"):
        assert cv2.imread(str(out_dir / name)) is not None


def test_help_texts_carry_no_rst_markup(capsys):
    from clifer_edge.cli import COMMANDS, main, plain_text

    assert plain_text("see :func:`~clifer_edge.evaluation.split_subject` and ``--x``") == (
        "see split_subject and --x"
    )
    for argv in ([], *([name] for name in COMMANDS)):
        with pytest.raises(SystemExit):
            main([*argv, "--help"])
        shown = capsys.readouterr().out
        assert "``" not in shown and ":mod:" not in shown and ":func:" not in shown, argv
