"""What a run shows people while and after it trains: a progress bar, history.csv, curve plots."""

from __future__ import annotations

import csv
from pathlib import Path

import keras
import matplotlib
import numpy as np
from tqdm import tqdm

from clifer_edge.fileio import atomic_path

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # (backend chosen first: no display on servers)


class ProgressBar(keras.callbacks.Callback):
    """A tqdm bar per epoch with a few running losses (sparse updates when logging to a file)."""

    def __init__(self, steps: int, keys: tuple[str, ...], label: str = "epoch") -> None:
        super().__init__()
        self.steps = steps
        self.keys = keys
        self.label = label
        self.bar: tqdm | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        total = self.params.get("epochs", epoch + 1)
        self.bar = tqdm(
            total=self.steps, desc=f"{self.label} {epoch + 1}/{total}", mininterval=20.0
        )

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        assert self.bar is not None
        self.bar.update(1)
        if logs and batch % 20 == 0:
            self.bar.set_postfix({k: f"{float(logs[k]):.3f}" for k in self.keys if k in logs})

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.bar is not None:
            self.bar.close()


def write_history(path: Path, rows: list[dict[str, float]]) -> None:
    """One CSV row per epoch (written atomically)."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


def read_history(path: Path, epochs_done: int) -> list[dict[str, float]]:
    """Rows of epochs already checkpointed (later rows belong to an interrupted epoch)."""
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        rows = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]
    for row in rows:
        row["epoch"] = int(row["epoch"])
    return [row for row in rows if row["epoch"] <= epochs_done]


def plot_history(history: list[dict[str, float]], path: Path, panels: dict[str, list[str]]) -> None:
    """One panel per entry of ``panels`` (title -> history keys), epochs on the x axis."""
    if not history:
        return
    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for ax, (title, keys) in zip(axes[0], panels.items(), strict=True):
        for key in keys:
            if any(key in row for row in history):
                ax.plot(epochs, [row.get(key, np.nan) for row in history], marker=".", label=key)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
