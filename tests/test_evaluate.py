"""`oneshot-eval` on a tiny untrained checkpoint: results, table, plot and videos; same seeds, same table; the seed rule."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from demos.seeds import MAX_BASE_SEED, MAX_TASKS, stream_seed
from imitation.eval_report import wilson_interval
from imitation.tracking import LoggerConfig
from imitation.evaluate import EVAL_FLAG, METHODS, EvalConfig, Variant, check_config, eval_seed, run_evaluation, variants
from imitation import evaluate
from imitation.adaptation_loss import AdaptationLossConfig
from imitation.rollout import mean_actor
from test_rollout import TINY_ENV, TINY_SPEC, tiny_checkpoint, write_tiny_checkpoint  # noqa: F401 (a fixture)

BIN = Path(sys.executable).parent
SMALL = ("num_tasks=2", "trials=2", "logger=none", "progress=false")


def test_evaluation_seeds_never_meet_collection_seeds() -> None:
    highest_collection = stream_seed(MAX_BASE_SEED, "test_ood", MAX_TASKS - 1, "video", (1 << 20) - 1)
    assert highest_collection < 1 << 61 < EVAL_FLAG <= eval_seed(0, 0, "task", 0)
    keys = [(s, t, k, a) for s in (0, 1) for t in (0, 5) for k in ("task", "video", "demo", "trial") for a in (0, 1)]
    assert len({eval_seed(*key) for key in keys}) == len(keys)
    with pytest.raises(ValueError, match="evaluation seed must be in"):
        eval_seed(1 << 20, 0, "task", 0)


def test_wilson_interval() -> None:
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    assert wilson_interval(0, 4)[0] == 0.0 and wilson_interval(4, 4)[1] == 1.0 and wilson_interval(0, 0) == (0.0, 1.0)


def test_variants_cover_checkpoints_methods_and_test_time_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(evaluate, "is_video_encoder", lambda path: False)
    cfg = EvalConfig(checkpoints={"daml": "a.pt", "linear": "b.pt"}, inner_steps=[1, 5], out="x")
    assert cfg.named_checkpoints() == {"daml": "a.pt", "linear": "b.pt"}
    assert replace(cfg, checkpoint="c.pt").named_checkpoints() == {"model": "c.pt", "daml": "a.pt", "linear": "b.pt"}
    labels = [(v.checkpoint, v.label) for v in variants(cfg)]
    assert labels[:5] == [("daml", "daml@1"), ("daml", "daml@5"), ("daml", "none"), ("daml", "robot_demo@1"), ("daml", "robot_demo@5")]
    assert labels[5:10] == [("linear", v) for v in ("daml@1", "daml@5", "none", "robot_demo@1", "robot_demo@5")]
    assert labels[10:] == [("-", "random"), ("-", "expert")] and Variant("m", "none").label == "none"
    gains = [(v.checkpoint, v.label, v.action_gain) for v in variants(replace(cfg, inner_steps=[], action_gains=[1, 2.5]))]
    assert gains[:6] == [("daml", "daml-x1", 1.0), ("daml", "daml-x2.5", 2.5), ("daml", "none-x1", 1.0), ("daml", "none-x2.5", 2.5),
                         ("daml", "robot_demo-x1", 1.0), ("daml", "robot_demo-x2.5", 2.5)]
    assert gains[-2:] == [("-", "random", None), ("-", "expert", None)]
    with pytest.raises(ValueError, match="methods must be among"):
        check_config(replace(cfg, methods=["daml", "mil"]))
    with pytest.raises(ValueError, match="action gain must be a finite number > 0"):
        check_config(replace(cfg, action_gains=[1, 0]))
    with pytest.raises(ValueError, match="give checkpoint=<path> or checkpoints="):
        check_config(EvalConfig(out="x"))


def test_an_ensemble_acts_with_the_mean_of_its_members_actions(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """An ensemble is one `daml` row per ensemble (after the checkpoints' rows): each member adapts on the task's video
    and the action is the mean of theirs. Two members that are the same policy act as that policy alone."""
    cfg = EvalConfig(checkpoints={"a": str(tiny_checkpoint), "b": str(tiny_checkpoint)}, ensembles={"ab": ["a", "b"]},
                     methods=["daml", "random"], num_tasks=1, trials=2, workers=1, out=str(tmp_path / "run"), progress=False,
                     logger=LoggerConfig(kind="none"))
    assert [(v.checkpoint, v.label, v.members) for v in variants(cfg)] == [
        ("a", "daml", ()), ("b", "daml", ()), ("ab", "daml", ("a", "b")), ("-", "random", ())]
    assert [v.checkpoint for v in variants(replace(cfg, methods=["none"]))] == ["a", "b"]  # video adaptation only
    report = run_evaluation(cfg)
    rows = {c: [e for e in report.episodes if e["checkpoint"] == c] for c in ("a", "ab")}
    outcome = ("task_id", "seed", "success", "steps", "first_success_step", "chosen_object")
    assert [[e[k] for k in outcome] for e in rows["ab"]] == [[e[k] for k in outcome] for e in rows["a"]] and len(rows["ab"]) == 2
    assert all(e["members"] == ["a", "b"] and e["inner_steps"] == [1, 1] and e["action_gain"] == [1.0, 1.0] for e in rows["ab"])
    assert all(e["members"] is None and e["inner_steps"] == 1 for e in rows["a"])
    for bad in ({"c": ["a"]}, {"a": ["a", "b"]}, {"c": ["a", "z"]}, {"c": ["a", "a"]}):
        with pytest.raises(ValueError, match="give at least 2 distinct checkpoint names of this job"):
            check_config(replace(cfg, ensembles=bad))
    other_env = write_tiny_checkpoint(tmp_path / "stock.pt", env={**TINY_ENV, "robot_visuals": "stock"})
    with pytest.raises(ValueError, match="trained in different envs"):
        run_evaluation(replace(cfg, checkpoints={"a": str(tiny_checkpoint), "b": str(other_env)}, out=str(tmp_path / "mixed")))


def test_mean_actor_averages_the_actions() -> None:
    first, second = (lambda obs: np.array([1, -1, 0, 1], np.float32)), (lambda obs: np.array([0, 1, 0.5, -0.5], np.float32))
    np.testing.assert_array_equal(mean_actor([first, second])({}), np.array([0.5, 0, 0.25, 0.25], np.float32))
    assert mean_actor([first]) is first


def test_a_black_box_checkpoint_is_evaluated_through_its_encoder(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """Its video goes through the encoder ("encoder"); robot_demo and test-time steps apply to the DAML checkpoint only."""
    black_box = write_tiny_checkpoint(tmp_path / "bb.pt", replace(TINY_SPEC, adaptation_loss=AdaptationLossConfig(kind="encoder", channels=8, kernel_size=3)))
    cfg = EvalConfig(checkpoints={"daml": str(tiny_checkpoint), "bb": str(black_box)}, methods=["daml", "none", "robot_demo"],
                     inner_steps=[1, 2], num_tasks=1, trials=1, workers=1, out=str(tmp_path / "run"), progress=False, logger=LoggerConfig(kind="none"))
    assert [(v.checkpoint, v.label) for v in variants(cfg)][5:] == [("bb", "encoder"), ("bb", "none")]
    report = run_evaluation(cfg)
    rows = {(e["checkpoint"], e["method"]): e for e in report.episodes}
    assert set(rows) == {("daml", m) for m in ("daml@1", "daml@2", "none", "robot_demo@1", "robot_demo@2")} | {("bb", "encoder"), ("bb", "none")}
    assert all(isinstance(e["chosen_object"], int) and e["went_for_target"] == (e["chosen_object"] == e["task"]["target"]) for e in rows.values())
    assert "went for the target" in report.markdown


def test_evaluation_command_writes_results_and_the_same_seeds_give_the_same_table(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = subprocess.run([str(BIN / "oneshot-eval"), f"checkpoint={tiny_checkpoint}", "workers=2", f"out={out}", *SMALL],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    assert [(r["checkpoint"], r["method"], r["n"]) for r in doc["summary"]] == [
        ("model", "daml", 4), ("model", "none", 4), ("model", "robot_demo", 4), ("-", "random", 4), ("-", "expert", 4)]
    episodes = doc["episodes"]
    assert len(episodes) == 2 * 2 * len(METHODS) and not doc["skipped_tasks"]
    assert {e["task"]["split"] for e in episodes} == {"test"} and all(e["seed"] >= EVAL_FLAG for e in episodes)
    assert all(e["steps"] == 40 and isinstance(e["success"], bool) and e["video"]["source"] == "rendered" for e in episodes)
    assert {e["demo"]["source"] for e in episodes if e["method"] == "robot_demo"} == {"recorded"}
    assert [{e["inner_steps"] for e in episodes if e["method"] == m} for m in METHODS] == [{1}, {0}, {1}, {None}, {None}]
    # every method met the same tasks in the same arrangements
    assert len({tuple(sorted((e["task_id"], e["seed"]) for e in episodes if e["method"] == m)) for m in METHODS}) == 1
    assert next(r for r in doc["summary"] if r["method"] == "expert")["successes"] == 4
    table = (out / "summary.md").read_text()
    assert "| model | daml |" in table and "Wilson" in table and table in result.stdout
    assert cv2.imread(str(out / "success.png")) is not None and (out / "hydra" / "config.yaml").exists()
    videos = [e["rollout_video"] for e in episodes if e["rollout_video"]]
    assert len(videos) == len(METHODS) and all((out / v).stat().st_size > 0 for v in videos)
    # the same seeds in this process, with one worker and two of the methods: the same episodes and the same table rows
    # (each method's episodes depend on the seeds only, not on the other methods of the job)
    again = run_evaluation(EvalConfig(checkpoint=str(tiny_checkpoint), methods=["daml", "random"], num_tasks=2, trials=2, workers=1,
                                      out=str(tmp_path / "again"), progress=False, logger=LoggerConfig(kind="none")))
    assert again.episodes == [e for e in episodes if e["method"] in ("daml", "random")]
    assert [r for r in again.markdown.splitlines() if r.startswith("| ")] == [r for r in table.splitlines() if "| daml |" in r or "random" in r
                                                                             or r.startswith("| checkpoint")]
    assert {e["action_gain"] for e in episodes if e["base_method"] in ("daml", "none", "robot_demo")} == {1.0}
    assert {e["action_gain"] for e in episodes if e["base_method"] in ("random", "expert")} == {None}
    gained = run_evaluation(EvalConfig(checkpoint=str(tiny_checkpoint), methods=["daml"], action_gains=[1, 3], num_tasks=2, trials=2,
                                       workers=1, out=str(tmp_path / "gains"), progress=False, logger=LoggerConfig(kind="none")))
    by_gain = {g: [e for e in gained.episodes if e["action_gain"] == g] for g in (1.0, 3.0)}
    assert [e["method"] for e in by_gain[3.0]] == ["daml-x3"] * 4
    outcome = ("task_id", "seed", "success", "steps", "first_success_step", "chosen_object")  # x1 is the checkpoint's own gain
    assert [[e[k] for k in outcome] for e in by_gain[1.0]] == [[e[k] for k in outcome] for e in episodes if e["method"] == "daml"]
    with pytest.raises(FileExistsError, match="choose a new out folder"):
        run_evaluation(EvalConfig(checkpoint=str(tiny_checkpoint), out=str(out), logger=LoggerConfig(kind="none")))


def test_one_and_two_workers_give_the_same_results(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """In-process or in a pool, the same jobs (a task's demonstration, then one per task and method) and the same seeds."""
    def results(workers: int) -> dict:
        out = tmp_path / f"workers{workers}"
        run_evaluation(EvalConfig(checkpoint=str(tiny_checkpoint), num_tasks=1, trials=1, workers=workers, out=str(out), progress=False,
                                  logger=LoggerConfig(kind="none")))
        return json.loads((out / "results.json").read_text())

    one, two = results(1), results(2)
    assert len(one["episodes"]) == len(METHODS) and one["episodes"][0]["rollout_video"]
    assert [one[k] for k in ("episodes", "summary", "skipped_tasks")] == [two[k] for k in ("episodes", "summary", "skipped_tasks")]
