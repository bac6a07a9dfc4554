"""The CLIFER per-subject, class-incremental evaluation protocol (Churamani & Gunes 2020).

The one experiment harness: ``clifer-edge eval``, ``gdm-demo``, ``demo`` and the export's parity
check all use its split rule, class order, F1 and face preparation; its ``clifer`` condition
imagines with the robot's own scheduler.

Data flow: data set -> :mod:`~clifer_edge.evaluation.features` (faces, fixed features) ->
:mod:`~clifer_edge.evaluation.split` (held-out faces per subject, sequence-disjoint) ->
:mod:`~clifer_edge.evaluation.protocol` (classes one at a time, conditions, F1 per step) ->
:mod:`~clifer_edge.evaluation.report` (``results.json``, ``report.md``, plots).
"""

from __future__ import annotations

from clifer_edge.evaluation.features import prepare_faces
from clifer_edge.evaluation.protocol import (
    CONDITIONS,
    DIAGNOSTIC_CONDITIONS,
    ImaginationModel,
    ProtocolConfig,
    ProtocolResult,
    class_order,
    macro_f1,
    prepare_subjects,
    run_protocol,
    summarise,
)
from clifer_edge.evaluation.split import SPLIT_RULE, SubjectSplit, split_subject
from clifer_edge.evaluation.stats import kruskal_wallis, mean_ci95

__all__ = [
    "CONDITIONS",
    "DIAGNOSTIC_CONDITIONS",
    "SPLIT_RULE",
    "ImaginationModel",
    "ProtocolConfig",
    "ProtocolResult",
    "SubjectSplit",
    "class_order",
    "kruskal_wallis",
    "macro_f1",
    "mean_ci95",
    "prepare_faces",
    "prepare_subjects",
    "run_protocol",
    "split_subject",
    "summarise",
]
