"""The benchmark harness itself: the paired estimator, and the scripts' argument handling (the GPU
script runs only on CUDA machines; here it is checked for its plan and its refusals)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_gpu  # noqa: E402
import bench_speed  # noqa: E402
from paired import paired_ratio, summarize  # noqa: E402


def test_paired_ratio_measures_a_known_ratio():
    r = paired_ratio(lambda: time.sleep(0.002), lambda: time.sleep(0.006), pairs=5, block=2)
    assert 2.0 < r["ratio"] < 4.5
    assert r["q1"] <= r["ratio"] <= r["q3"] and r["pairs"] == 5


def test_summarize_takes_the_median_of_paired_ratios():
    s = summarize([1.0, 2.0, 10.0], [1.1, 2.2, 5.0])  # a burst of load in one pair barely moves it
    assert s["ratio"] == pytest.approx(1.1)
    assert s["min"] == pytest.approx(0.5) and s["max"] == pytest.approx(1.1)


def test_paired_ratio_rejects_empty_designs():
    with pytest.raises(ValueError):
        paired_ratio(lambda: None, lambda: None, pairs=0)


def test_gpu_script_plan_without_a_gpu():
    out = subprocess.run(["bash", str(BENCH / "gpu.sh"), "--dry-run", "--families", "hourglass"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    plan = out.stdout.splitlines()
    assert "train hourglass bf16 x30 steps" in plan and "train hourglass fp16 x30 steps" in plan
    assert any(line.startswith("infer hourglass") for line in plan)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_benchmark_refuses_cleanly_without_cuda(capsys):
    assert bench_gpu.main(["--families", "hourglass"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--families", "nope"], ["--steps", "1"]])
def test_gpu_benchmark_argument_errors(argv):
    with pytest.raises(SystemExit) as e:
        bench_gpu.main(argv)
    assert e.value.code == 2


@pytest.mark.parametrize("argv", [["--families", "nope"], ["--skip", "training"]])
def test_speed_benchmark_argument_errors(argv):
    with pytest.raises(SystemExit) as e:
        bench_speed.main(argv)
    assert e.value.code == 2
