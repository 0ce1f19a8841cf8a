"""launch/gpu_push.sh on the CPU: it collects, trains its four runs until the budget, and reports a failed run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "launch" / "gpu_push.sh"
RUNS = ("push-gpu-tune", "push-gpu-daml", "push-gpu-linear", "push-gpu-bb")


def gpu_push(out: Path, seconds: int, extra: str) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHON": sys.executable, "DEVICE": "cpu", "CKPT_EVERY": "1", "EXTRA": extra}
    return subprocess.run(["bash", str(SCRIPT), str(out), str(seconds), "2"], env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_runs_stopped_at_the_budget_keep_their_checkpoints(tmp_path: Path) -> None:
    result = gpu_push(tmp_path / "job", 120, "meta_batch=2 loader.workers=0")  # generous: 4 runs start on 2 cores
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "job" / "data" / "manifest.json").exists()
    assert "collected 2 tasks" in (tmp_path / "job" / "times.txt").read_text()
    for run in RUNS:
        log = (tmp_path / "job" / f"{run}.log").read_text()
        assert "interrupted" in log, log[-2000:]  # stopped by the budget, not finished: steps=1000000
        assert sorted((tmp_path / "job" / "runs" / run / "checkpoints").glob("step-*.pt")), log[-2000:]


def test_a_failed_run_fails_the_job_and_names_its_log(tmp_path: Path) -> None:
    result = gpu_push(tmp_path / "job", 120, "")  # meta_batch=16 of 2 collected tasks: every run refuses
    assert result.returncode == 1
    for run in RUNS:
        assert f"{run} failed" in result.stderr and f"{run}.log" in result.stderr
        assert "lower meta_batch" in (tmp_path / "job" / f"{run}.log").read_text()
