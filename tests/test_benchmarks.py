"""Short real-data runs of the benchmarks (x86_64 only: the aarch64 platform check runs the
robot-side test modules under emulation, where a benchmark's timings mean nothing)."""

from __future__ import annotations

import json

from benchmark_support import run_benchmark, run_benchmark_json


def test_runtime_benchmark_short_run(tmp_path, data_dir):
    """A short run of ``benchmarks/bench_runtime.py`` (the full one: 600 faces, 30 trials)."""
    result = run_benchmark_json(
        "bench_runtime.py",
        *("--faces", "20", "--frames", "4", "--trials", "2", "--data-dir", str(data_dir)),
        out=tmp_path / "bench.json",
        timeout=300,
    )
    assert result["runtime_5_persons"]["faces_per_s"] > 0
    assert result["full_frames_with_detection"]["faces_found"] == 4
    assert result["imagination_200x6"]["imagined_latents"] == 1200
    learning = result["learning"]
    assert learning["with_replay"]["episodes"] == learning["without_replay"]["episodes"] > 0
    assert learning["ratio_with_to_without"] > 0
    assert 0 < result["peak_rss_mb_one_runtime"] <= result["peak_rss_mb"]
    remeasure = result["remeasure"]
    assert 0 < remeasure["again_new_faces_chunks"] < remeasure["again_all_faces_chunks"]


def test_gdm_benchmark_quick_run(data_dir, monkeypatch):
    """``benchmarks/bench_gdm.py --quick``: every figure of its tables comes out (real CK+)."""
    monkeypatch.setenv("CLIFER_DATA_DIR", str(data_dir))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    result = json.loads(run_benchmark("bench_gdm.py", "--quick", timeout=300).stdout)
    for row in result["predict"].values():
        assert row["cython_us_per_query"] > 0 and row["cython_api_single_query_us"] > 0
    stream = result["training"]["stream_cython_50d"]
    assert stream["sample_updates"] > 0 and stream["episodic_nodes"] > stream["semantic_nodes"] > 0
    assert result["memory"]["network_4000x100"]["capacity"] == 4096
