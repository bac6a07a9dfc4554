"""Writing a protocol run: ``results.json``, ``report.md`` and PNG plots."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clifer_edge.evaluation.protocol import (
    EXPERIMENTS,
    ProtocolResult,
    compare_orders,
    memories_of,
    step_means,
    summarise,
    unseen_step_means,
)
from clifer_edge.evaluation.stats import MIN_CI_VALUES, mean_ci95
from clifer_edge.fileio import atomic_write_text

#: Version of the ``results.json`` layout; bump on incompatible changes.
SCHEMA_VERSION = 1

#: Keys of every ``summary`` row (the documented, tested schema).
SUMMARY_KEYS = (
    "condition",
    "experiment",
    "memory",
    "f1_mean",
    "f1_ci95",
    "f1_steps_mean",
    "unseen_acc_steps_mean",
    "unseen_acc_fallback_steps_mean",
    "unseen_answered_steps_mean",
    "n_subjects",
)


def json_safe(value: Any) -> Any:
    """Nested value with NaN/inf as ``None`` and numpy scalars as Python ones (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def curves(result: ProtocolResult, order: str = "default") -> dict[str, Any]:
    """Across-subject mean F1 after each class: condition -> experiment -> memory -> list."""
    out: dict[str, Any] = {}
    for condition in result.conditions:
        runs = [r for r in result.runs if r["condition"] == condition and r["order"] == order]
        out[condition] = {
            str(e): {m: step_means(runs, e, m) for m in memories_of(condition)} for e in EXPERIMENTS
        }
    return out


def summarise_few_shot(entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean (95% CI) across subjects of new-class accuracy and of the F1s, per k."""
    groups: dict[tuple[str, str, int], list[dict[str, float]]] = {}
    for entry in entries:
        for shot in entry["shots"]:
            for memory, values in shot.get("memories", {}).items():
                groups.setdefault((entry["condition"], memory, shot["k"]), []).append(values)
    rows = []
    for (condition, memory, k), values in groups.items():
        row: dict[str, Any] = {"condition": condition, "memory": memory, "k": k}
        for key in ("new_class_accuracy", "old_f1_before", "old_f1_after", "all_f1_after"):
            mean, ci = mean_ci95([v[key] for v in values])
            row[f"{key}_mean"], row[f"{key}_ci95"] = mean, ci
        row["n_subjects"] = len(values)
        rows.append(row)
    return rows


def build_results(
    result: ProtocolResult,
    meta: dict[str, Any],
    few_shot: dict[str, Any] | None = None,
    static_baseline: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``results.json`` document (``meta``: data, models, split, settings, version...)."""
    document: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "summary": summarise(result),
        **meta,
        "conditions": result.conditions,
        "orders": result.orders,
        "subjects": result.subjects,
        "skipped_subjects": result.skipped,
        "curves": curves(result),
    }
    if len(result.orders) > 1:
        document["order_comparison"] = compare_orders(result)
    if few_shot is not None:
        document["few_shot"] = {**few_shot, "summary": summarise_few_shot(few_shot["results"])}
    if static_baseline is not None:
        document["static_baseline"] = static_baseline
    document["runs"] = result.runs
    return json_safe(document)


def write_json(document: dict[str, Any], path: Path) -> None:
    """Write strict JSON atomically (a half-written results file is worse than none)."""
    atomic_write_text(path, json.dumps(document, indent=1, allow_nan=False) + "\n")


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def mean_ci_text(mean: Any, ci: Any, digits: int = 3) -> str:
    """``mean ± CI``, or the mean alone where there is no interval (fewer than
    :data:`~clifer_edge.evaluation.stats.MIN_CI_VALUES` subjects)."""
    if _fmt(ci) == "–":
        return _fmt(mean, digits)
    return f"{_fmt(mean, digits)} ± {_fmt(ci, digits)}"


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def summary_table(summary: Sequence[dict[str, Any]]) -> list[str]:
    """Markdown table of the summary rows (also printed by the commands)."""
    return _md_table(
        [
            "condition",
            "experiment",
            "memory",
            f"final F1 (mean ± 95% CI, n ≥ {MIN_CI_VALUES})",
            "F1 over steps",
            "unseen acc. over steps (fallback)",
            "unseen answered by imagination",
            "n",
        ],
        [
            [
                r["condition"],
                r["experiment"],
                r["memory"],
                mean_ci_text(r["f1_mean"], r["f1_ci95"]),
                _fmt(r["f1_steps_mean"]),
                _unseen_cell(r),
                _fmt(r.get("unseen_answered_steps_mean")),
                r["n_subjects"],
            ]
            for r in summary
        ],
    )


def _unseen_cell(row: dict[str, Any]) -> str:
    """``memory (fallback)`` accuracy on not-yet-learned classes; ``–`` where not measured."""
    value = _fmt(row.get("unseen_acc_steps_mean"))
    fallback = row.get("unseen_acc_fallback_steps_mean")
    if value == "–" or _fmt(fallback) == "–":
        return value
    return f"{value} ({_fmt(fallback)})"


def _per_subject_table(document: dict[str, Any]) -> list[str]:
    """Final F1 (all classes seen) per subject, default order, with the static baseline."""
    runs = [r for r in document["runs"] if r["order"] == "default"]
    columns = [(c, m) for c in document["conditions"] for m in memories_of(c)]
    static = {
        c["name"]: c["per_subject"]
        for c in document.get("static_baseline", {}).get("classifiers", [])
    }
    header = ["subject", "classes", *(f"{c} {m}" for c, m in columns), *static]
    rows = []
    for subject in document["subjects"]:
        name = subject["subject"]
        finals = {
            (r["condition"], m): r["steps"][-1]["f1"]["2"][m]
            for r in runs
            if r["subject"] == name
            for m in memories_of(r["condition"])
        }
        row = [name, len(subject["classes"]), *(_fmt(finals.get(col), 2) for col in columns)]
        row += [_fmt(scores.get(name), 2) for scores in static.values()]
        rows.append(row)
    return ["## Per subject (final F1, all classes)", "", *_md_table(header, rows), ""]


def _unseen_by_step_table(document: dict[str, Any]) -> list[str]:
    """Imagination step by step (default order, episodic memory): how often imagined knowledge
    answers the faces of classes not learned yet, how often it is right then, and the chance of
    being right by naming one of those classes at random."""
    imagining = [
        r["condition"]
        for r in document["summary"]
        if r["experiment"] == 2 and r["memory"] == "episodic"
        if (r.get("unseen_answered_steps_mean") or 0) > 0
    ]
    if not imagining:
        return []
    n_classes = {s["subject"]: len(s["classes"]) for s in document["subjects"]}
    rows = []
    for condition in imagining:
        runs = [
            r for r in document["runs"] if r["condition"] == condition and r["order"] == "default"
        ]
        accuracy = unseen_step_means(runs, "episodic")
        answered = unseen_step_means(runs, "episodic", "unseen_answered")
        fallback = unseen_step_means(runs, None)
        for i, (acc, ans, fb) in enumerate(zip(accuracy, answered, fallback, strict=True)):
            # classes not learned yet, for each subject that has faces of them at this step
            left = [
                n_classes[r["subject"]] - (i + 1)
                for r in runs
                if len(r["steps"]) > i and r["steps"][i]["unseen_acc"]["episodic"] is not None
            ]
            if not left:
                continue
            rows.append(
                [
                    condition,
                    i + 1,
                    _fmt(float(np.mean(left)), 1),
                    _fmt(ans),
                    _fmt(acc / ans if ans > 0 else None),
                    _fmt(float(np.mean([1.0 / n for n in left]))),
                    _fmt(acc),
                    _fmt(fb),
                    len(left),
                ]
            )
    header = [
        "condition",
        "step",
        "classes not learned",
        "answered by imagination",
        "right where answered",
        "chance (1 / classes not learned)",
        "unseen acc.",
        "fallback",
        "n",
    ]
    return [
        "## Imagination by step (default order, episodic memory)",
        "",
        "On the held-out faces of the classes not learned yet: the share that an imagined node "
        "answers, the share of those it names rightly (ratio of the means), against the chance "
        "of naming one of the classes not learned at random, and the accuracy (answered x "
        "right); means over the subjects that have such faces at that step.",
        "",
        *_md_table(header, rows),
        "",
    ]


def plot_curves(document: dict[str, Any], path: Path, title: str) -> None:
    """F1 vs classes learned: rows = experiments, columns = episodic/semantic memory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True, sharey=True)
    for i, experiment in enumerate(EXPERIMENTS):
        for j, memory in enumerate(("episodic", "semantic")):
            ax = axes[i][j]
            for condition, by_exp in document["curves"].items():
                values = by_exp[str(experiment)].get(memory, by_exp[str(experiment)].get("mlp"))
                y = [np.nan if v is None else v for v in values]
                style = "--" if condition == "mlp" else "-"
                ax.plot(range(1, len(y) + 1), y, style, marker="o", label=condition)
            name = "remembering (seen classes)" if experiment == 1 else "generalising (all)"
            ax.set_title(f"Exp. {experiment}, {name}: {memory}", fontsize=10)
            ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
            if i == 1:
                ax.set_xlabel("classes learned")
            if j == 0:
                ax.set_ylabel("F1 (mean over subjects)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_orders(document: dict[str, Any], path: Path, title: str) -> None:
    """Final F1 per class order (the order comparison), one panel per experiment."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = document["order_comparison"]
    orders = list(document["orders"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, experiment in zip(axes, EXPERIMENTS, strict=True):
        series = [r for r in rows if r["experiment"] == experiment]
        width = 0.8 / max(len(series), 1)
        for k, row in enumerate(series):
            y = [row["f1_mean_by_order"].get(o) for o in orders]
            y = [np.nan if v is None else v for v in y]
            x = np.arange(len(orders)) + k * width
            ax.bar(x, y, width, label=f"{row['condition']}/{row['memory']}")
        ax.set_xticks(np.arange(len(orders)) + 0.4 - width / 2, orders, rotation=30, fontsize=8)
        ax.set_title(f"Experiment {experiment}: final F1 by first class", fontsize=10)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_ylabel("F1 (mean over subjects)")
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(document: dict[str, Any], out: Path) -> list[Path]:
    """Write ``report.md`` and the plots next to it; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    data = document.get("data", {})
    title = f"CLIFER protocol on {Path(data.get('path', '?')).name}"
    written = [out / "learning_curves.png"]
    plot_curves(document, written[0], title)
    lines = [f"# {title}", ""]
    lines += [
        f"- package version {document.get('package_version')}, created {document.get('created')}",
        f"- data: `{data.get('path')}` (sha256 `{str(data.get('sha256'))[:16]}…`), "
        f"{data.get('n_faces')} faces",
    ]
    if "face_detection" in document:
        fd = document["face_detection"]
        lines.append(
            f"- face detection ({fd['method']}, crop margin {fd.get('margin', 0.1):g}): one face "
            f"kept in {fd['found']}/{fd['total']} images; images without a face are left out"
        )
    features = document.get("features", {})
    lines.append(f"- features: {features.get('description', features.get('kind'))}")
    for name, model in document.get("models", {}).items():
        lines.append(f"- {name}: `{model['path']}` (sha256 `{model['sha256'][:16]}…`)")
    if document.get("imagination"):
        lines.append(f"- imagination: {document['imagination']}")
    lines += ["", "## Split rule", "", document["split_rule"], ""]
    split = document.get("split", {})
    lines.append("Settings: " + ", ".join(f"{k}={v}" for k, v in split.items()))
    if document.get("leaks_near_duplicates"):
        lines += [
            "",
            "**Warning:** some classes were recorded in a single sequence and were split inside it "
            "(frame split): near-duplicate frames sit on both sides, so F1 on those classes "
            "measures recall of almost identical faces, not generalisation.",
        ]
    lines += [
        "",
        f"Subjects evaluated: {len(document['subjects'])}; skipped: "
        f"{len(document['skipped_subjects'])}.",
    ]
    if document["skipped_subjects"]:
        reasons: dict[str, list[str]] = {}
        for subject, reason in document["skipped_subjects"].items():
            reasons.setdefault(reason, []).append(subject)
        for reason, subjects in sorted(reasons.items()):
            lines.append(f"- {reason}: {', '.join(subjects)}")
    lines += ["", "## Summary (default order)", ""]
    lines += [
        "Final F1 = after the subject's last class; F1 over steps = mean over class steps of the "
        "across-subject mean (in Experiment 2 this is where imagination of unseen classes shows). "
        "Unseen acc. over steps = accuracy on the held-out faces of the classes not learned yet "
        "from that subject, averaged the same way over the steps that have such faces; a memory "
        "without imagination scores 0 there by construction; in brackets the person-independent "
        "fallback's accuracy on the same faces.",
        "",
        *summary_table(document["summary"]),
        "",
        "![learning curves](learning_curves.png)",
        "",
    ]
    lines += _per_subject_table(document)
    lines += _unseen_by_step_table(document)
    if "static_baseline" in document:
        sb = document["static_baseline"]
        lines += ["## Static baselines (person-independent)", "", sb["description"] + ".", ""]
        lines += _md_table(
            ["classifier", f"F1 (mean ± 95% CI, n ≥ {MIN_CI_VALUES})", "n", "what"],
            [
                [
                    c["name"],
                    mean_ci_text(c["f1_mean"], c["f1_ci95"]),
                    c["n_subjects"],
                    c["description"],
                ]
                for c in sb["classifiers"]
            ],
        )
        lines.append("")
    if "few_shot" in document:
        fs = document["few_shot"]
        lines += ["## Few-shot new class", "", fs["description"], ""]
        lines += _md_table(
            [
                "condition",
                "memory",
                "k",
                "new-class acc.",
                "old F1 before",
                "old F1 after",
                "all F1 after",
                "n",
            ],
            [
                [
                    r["condition"],
                    r["memory"],
                    r["k"],
                    mean_ci_text(r["new_class_accuracy_mean"], r["new_class_accuracy_ci95"]),
                    _fmt(r["old_f1_before_mean"]),
                    _fmt(r["old_f1_after_mean"]),
                    _fmt(r["all_f1_after_mean"]),
                    r["n_subjects"],
                ]
                for r in fs["summary"]
            ],
        )
        lines.append("")
    if "order_comparison" in document:
        written.append(out / "orders.png")
        plot_orders(document, written[-1], title)
        orders = list(document["orders"])
        lines += ["## Class orders", "", "Orders (each restricted to a subject's classes):", ""]
        lines += [f"- {name}: {', '.join(order)}" for name, order in document["orders"].items()]
        lines += ["", "Final F1 by first class, Kruskal–Wallis across orders:", ""]
        lines += _md_table(
            ["condition", "exp.", "memory", *orders, "H", "p"],
            [
                [
                    r["condition"],
                    r["experiment"],
                    r["memory"],
                    *(_fmt(r["f1_mean_by_order"].get(o), 2) for o in orders),
                    _fmt((r["kruskal_wallis"] or {}).get("H"), 2),
                    _fmt((r["kruskal_wallis"] or {}).get("p"), 3),
                ]
                for r in document["order_comparison"]
            ],
        )
        lines += ["", "![orders](orders.png)", ""]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    written.insert(0, report)
    return written
