"""Helpers shared by the runtime tests: real CK+ subjects and runtimes in temporary folders."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clifer_edge.datasets import load_npz
from clifer_edge.labels import BASIC_EXPRESSIONS
from clifer_edge.runtime import ExpressionRuntime, load_config


@dataclass
class CkSubject:
    """One CK+ subject: per basic class, the sequence's frames in order (the last held out)."""

    name: str
    classes: list[str]
    frames: dict[str, list[np.ndarray]]

    def train(self, label: str) -> list[np.ndarray]:
        return self.frames[label][:-1]

    def test(self, label: str) -> np.ndarray:
        return self.frames[label][-1]


def ck_subjects(data_dir: Path, min_classes: int = 4) -> list[CkSubject]:
    """CK+ subjects with at least ``min_classes`` basic expressions, sorted by name."""
    path = data_dir / "ckplus48.npz"
    data = load_npz(path)
    with np.load(path, allow_pickle=False) as archive:
        frame_numbers = archive["frames"]
    subjects = []
    for name in sorted(set(data.subjects.tolist())):
        rows = np.flatnonzero((data.subjects == name) & np.isin(data.labels, BASIC_EXPRESSIONS))
        classes = [c for c in BASIC_EXPRESSIONS if c in set(data.labels[rows].tolist())]
        if len(classes) < min_classes:
            continue
        frames = {}
        for label in classes:
            picked = rows[data.labels[rows] == label]
            picked = picked[np.lexsort((frame_numbers[picked], data.sequences[picked]))]
            frames[label] = [data.images[i] for i in picked]
        subjects.append(CkSubject(name, classes, frames))
    return subjects


@functools.cache
def default_models() -> tuple[Any, Any]:
    """The bundled default int8 encoder and generator (loaded once per test session)."""
    from clifer_edge.models import load_default_models

    return load_default_models(variant="int8", num_threads=1)


def make_runtime(
    directory: Path, models: tuple[Any, Any], **sections: dict[str, Any]
) -> ExpressionRuntime:
    """A runtime on the default models with its memories in ``directory``."""
    sections["memory"] = {**sections.get("memory", {}), "directory": str(directory)}
    config = load_config(None).replace(**sections)
    encoder, generator = models
    return ExpressionRuntime(config, encoder=encoder, generator=generator)


def learn_classes(rt: ExpressionRuntime, subject: CkSubject, classes: list[str]) -> None:
    """Teach the runtime the subject's training frames of the given classes, class by class."""
    for label in classes:
        for image in subject.train(label):
            rt.process_face(image, person_id=subject.name, label=label)
    rt.save()


def rewrite_record(path, edit_meta=None, edit_arrays=None) -> None:
    """Rewrite a person record with its meta and/or arrays changed (a valid npz file)."""
    with np.load(path, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = json.loads(str(arrays.pop("meta")))
    if edit_meta:
        edit_meta(meta)
    if edit_arrays:
        edit_arrays(arrays)
    with open(path, "wb") as stream:
        np.savez(stream, meta=np.array(json.dumps(meta)), **arrays)
