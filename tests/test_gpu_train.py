"""launch/gpu_train.sh on the CPU: it collects, trains its four runs until the budget, goes on when run again, and
reports a failed run or bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

SCRIPT = Path(__file__).resolve().parents[1] / "launch" / "gpu_train.sh"
RUNS = ("push-gpu-daml", "push-gpu-linear", "push-gpu-bb", "push-gpu-tune")


def job_command(family: str, out: Path, seconds: int | str, extra: str,
                **env_vars: str) -> tuple[list[str], dict[str, str]]:
    """The script's command line (2 tasks, on the CPU, a checkpoint every step) and its environment."""
    env = os.environ | {"PYTHON": sys.executable, "DEVICE": "cpu", "CKPT_EVERY": "1", "EXTRA": extra} | env_vars
    return ["bash", str(SCRIPT), family, str(out), str(seconds), "2"], env


def gpu_train(family: str, out: Path, seconds: int | str, extra: str, **env_vars: str) -> subprocess.CompletedProcess:
    argv, env = job_command(family, out, seconds, extra, **env_vars)
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)


def last_step(run: Path) -> int:
    return max(int(p.stem.removeprefix("step-")) for p in (run / "checkpoints").glob("step-*.pt"))


@pytest.mark.slow
def test_runs_stopped_at_the_budget_keep_their_checkpoints_and_go_on_when_run_again(tmp_path: Path) -> None:
    job = tmp_path / "job"
    steps = {}
    for sitting in range(2):  # the second sitting keeps the data and resumes every run
        result = gpu_train("push", job, 120, "meta_batch=2 loader.workers=0")  # generous: 4 runs start on 2 cores
        assert result.returncode == 0, result.stderr
        assert (job / "data" / "manifest.json").exists()
        assert "the data (2 tasks) was ready after" in (job / "times.txt").read_text()
        for run in RUNS:
            log = (job / f"{run}.log").read_text()
            assert "interrupted" in log, log[-2000:]  # stopped by the budget, not finished: steps=1000000
            step = last_step(job / "runs" / run)
            assert step > steps.get(run, 0), log[-2000:]
            steps[run] = step
        config = (job / "runs" / "push-gpu-tune" / "config.yaml").read_text()
        assert "meta_lr: 0.0003" in config and "checkpoints/push-daml.pt" in config


@pytest.mark.slow
def test_ctrl_c_stops_every_run_with_its_checkpoint(tmp_path: Path) -> None:
    """A terminal's Ctrl-C reaches the script's process group; each run is in a group of its own (timeout's), so the
    script passes the signal on, waits for the runs, and says how to go on."""
    out = tmp_path / "job"
    argv, env = job_command("push", out, 900, "meta_batch=2 loader.workers=0")
    # SIGINT as a terminal leaves it, however pytest was started: a shell that starts with it ignored (a background
    # job of a script) cannot trap it (docs/train.md: stop such a job with SIGTERM)
    script = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 300
        while not all(list((out / "runs" / run / "checkpoints").glob("step-*.pt")) for run in RUNS):
            assert time.monotonic() < deadline and script.poll() is None, "the runs did not start"
            time.sleep(0.5)
        os.killpg(script.pid, signal.SIGINT)
        _, stderr = script.communicate(timeout=120)  # well before the 900 s budget
    finally:
        if script.poll() is None:
            os.killpg(script.pid, signal.SIGKILL)
    assert script.returncode == 130, stderr
    assert "interrupted: every run kept its last checkpoint" in stderr and "failed" not in stderr, stderr
    for run in RUNS:
        assert "interrupted" in (out / f"{run}.log").read_text()
        assert (out / "runs" / run / "checkpoints" / "last.pt").exists()


def test_from_must_hold_the_three_push_checkpoints(tmp_path: Path) -> None:
    (tmp_path / "from").mkdir()
    (tmp_path / "from" / "push-daml.pt").write_bytes(b"")
    result = gpu_train("push", tmp_path / "job", 120, "", FROM=str(tmp_path / "from"))
    assert result.returncode == 1
    assert "has no push-linear.pt" in result.stderr
    assert not (tmp_path / "job" / "data").exists()  # refused before collecting


def test_a_failed_run_fails_the_job_and_names_its_log(tmp_path: Path) -> None:
    """Every run refuses, the tune run from the shipped checkpoints/pick_place-daml.pt too: each is named, with its log."""
    result = gpu_train("pick_place", tmp_path / "job", 120, "")  # meta_batch=16 of 2 collected tasks: every run refuses
    assert result.returncode == 1
    for run in ("pick_place-gpu-daml", "pick_place-gpu-linear", "pick_place-gpu-bb", "pick_place-gpu-tune"):
        assert f"{run} failed" in result.stderr and f"{run}.log" in result.stderr
        assert "lower meta_batch" in (tmp_path / "job" / f"{run}.log").read_text()


def test_pick_place_runs_read_the_box_too(tmp_path: Path) -> None:
    """pick_place's runs all get the place query (the shipped model has one, so the tune must; the black box writes it
    from its place read). Every run reads a 32x32 map, as the shipped model."""
    job = tmp_path / "job"
    result = gpu_train("pick_place", job, 300, "meta_batch=2 loader.workers=0 steps=1")
    assert result.returncode == 0, result.stderr
    for run in ("daml", "linear", "bb", "tune"):
        config = OmegaConf.load(job / "runs" / f"pick_place-gpu-{run}" / "config.yaml")
        assert config.policy.place_query and config.adaptation_loss.place_match and config.bc.place_map_weight == 1, run
        assert config.policy.conv_strides == [2, 1, 1], run
        assert last_step(job / "runs" / f"pick_place-gpu-{run}") == 1


def test_an_unknown_family_or_a_bad_budget_is_refused_before_anything_runs(tmp_path: Path) -> None:
    result = gpu_train("pusj", tmp_path / "job", 120, "")
    assert result.returncode == 1
    assert "unknown task family 'pusj'; allowed: reach, push, pick_place" in result.stderr
    result = gpu_train("push", tmp_path / "job", "15m", "")
    assert result.returncode == 1 and "whole numbers, not '15m'" in result.stderr
    assert not (tmp_path / "job").exists()
