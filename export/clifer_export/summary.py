"""Markdown tables of the shipped model's figures, from the JSON the measurement tools wrote.

Run: ``python -m clifer_export.summary docs/export`` (reads ``parity.json``, ``quality.json`` and
``bench_models.json`` there, prints Markdown), so the README's numbers are copied, not retyped.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from clifer_export.parity import to_markdown


def quality_markdown(quality: dict[str, Any]) -> str:
    """Expression control and identity keeping, one row per target expression."""
    lines = [
        "| target expression c | G(E(x), c) judged as c | lift over other targets | "
        "real faces of class c judged as c | identity L1 of E(G(E(x), c)) vs E(x) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    lift = quality["expression_control_lift"]
    real = quality["judge_accuracy_on_real_faces_per_class"]
    for c, accuracy in quality["expression_control_accuracy"].items():
        lines.append(
            f"| {c} | {100 * accuracy:.1f}% | {100 * lift[c]:+.1f} | "
            f"{100 * real.get(c, float('nan')):.1f}% | "
            f"{quality['identity_latent_l1'][c]:.3f} |"
        )
    lines.append(
        f"| **mean** | **{100 * quality['expression_control_mean']:.1f}%** | "
        f"**{100 * quality['expression_control_lift_mean']:+.1f}** | "
        f"{100 * quality['judge_accuracy_on_real_faces']:.1f}% (all faces) | "
        f"**{quality['identity_latent_l1_mean']:.3f}** |"
    )
    lines += [
        "",
        f"On {quality['faces']} FER2013 PublicTest faces, {quality['variant']} TFLite models. "
        f"The judge ({quality.get('judge', 'an independent FER2013 CNN')}, shares no weights "
        "with E) recognises "
        f"{100 * quality['judge_accuracy_on_real_faces']:.1f}% of the real faces and "
        f"{100 * quality['judge_accuracy_on_reconstructions']:.1f}% of their reconstructions "
        "G(E(x), label). Identity L1 is the mean absolute latent difference (latents in [-1, 1]); "
        f"for scale, two different faces differ by "
        f"{quality['latent_l1_between_different_faces']:.3f}. Reconstruction L1: "
        f"{quality['reconstruction_l1']:.3f} ({quality['reconstruction_l1_grey_levels']:.1f} grey "
        "levels of 255).",
    ]
    if "identity_nearest_of_101_mean" in quality:
        code = quality.get("identity_code_nearest_of_101_mean")
        lines.append(
            f"Identity retrieval: E(G(E(x), c)) is nearest to E(x) among E(x) and 100 other faces "
            f"for {100 * quality['identity_nearest_of_101_mean']:.1f}% of the imagined faces in "
            "the whole latent"
            + (f", {100 * code:.1f}% in the identity code alone." if code is not None else ".")
        )
    return "\n".join(lines) + "\n"


def bench_markdown(bench: dict[str, Any]) -> str:
    """Latency per face, p50 (p99) in milliseconds, per variant and thread count."""
    parts = [
        "encoder_one_face",
        "encoder_batch64_per_face",
        "generator_one_face",
        "generator_batch64_per_face",
    ]
    header = (
        "| model | threads | encoder, 1 face | encoder, batch of 64 (per face) | "
        "generator, 1 face | generator, batch of 64 (per face) |"
    )
    if "expression_model_one_face" in bench.get("int8", {}).get("1_threads", {}):
        parts.append("expression_model_one_face")
        header += " expression model, 1 face |"
    lines = [header, "| --- | ---: |" + " ---: |" * len(parts)]
    for variant in ("int8", "float32"):
        for key, r in bench.get(variant, {}).items():
            cells = [
                f"{r[part]['p50_ms']:.3f} ({r[part]['p99_ms']:.3f})" if part in r else "-"
                for part in parts
            ]
            lines.append(f"| {variant} | {key.split('_')[0]} | {' | '.join(cells)} |")
    lines.append("")
    lines.append(
        f"Milliseconds, p50 (p99), {bench['repeats']} repeats, {r['runtime']} on "
        f"{bench['machine']}, Python {bench['python']}."
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    directory = Path(argv[0] if argv else "docs/export")
    parts = []
    for name, render in (
        ("quality.json", quality_markdown),
        ("parity.json", to_markdown),
        ("bench_models.json", bench_markdown),
    ):
        path = directory / name
        if path.exists():
            parts.append(render(json.loads(path.read_text(encoding="utf-8"))))
    print("\n".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
