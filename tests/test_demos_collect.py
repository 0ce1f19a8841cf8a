"""oneshot-collect through the real commands, on the tiny reference settings (demos.testing.TINY).

The reference dataset is made with 2 worker processes; resuming a killed run (1 worker) and the Hydra multirun
path (2 jobs) must reproduce its shards byte for byte (see `assert_same_shards`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from demos import DatasetMismatchError, FormatVersionError, ManifestError
from demos.collect import collect, make_env, record_demo
from demos.reader import PairDataset
from demos.config import CollectConfig, EnvConfig, plan_of
from demos.seeds import split_tasks
from demos.format import sha256_file
from demos.testing import TINY, reference, run_collect, run_data, scratch  # noqa: F401 (fixtures)
from imitation.adaptation_loss import AdaptationLossConfig
from imitation.checkpoint import CheckpointInfo, ModelSpec, build_learner, save_checkpoint
from imitation.policy import PolicyConfig
from imitation.rollout import video_driver
from launch.collect import CONF_DIR


def digests(root: Path) -> dict[str, str]:
    manifest = json.loads((root / "manifest.json").read_text())
    return {s["file"]: s["sha256"] for s in manifest["splits"]["train"]["shards"]}


def contents(root: Path) -> dict:
    """Every dataset of every shard; in the metadata, the code version that wrote it is left out (see below)."""
    out = {}
    for shard in sorted((root / "train").glob("*.h5")):
        with h5py.File(shard, "r") as f:
            f.visititems(lambda name, obj: out.__setitem__(f"{shard.name}/{name}", obj[()]) if isinstance(obj, h5py.Dataset) else None)
        meta = json.loads(out.pop(f"{shard.name}/meta"))
        out[f"{shard.name}/meta"], out[f"{shard.name}/code_version"] = meta, meta.pop("code_version")
    return out


def assert_same_shards(a: Path, b: Path) -> None:
    """Same arrays and metadata; and the same bytes, unless the code version changed in between.

    Shards record the code version (git revision and dirty flag) that wrote them, and colleagues commit to this
    checkout while the tests run, so two collections may legitimately differ in that field alone.
    """
    x, y = contents(a), contents(b)
    assert x.keys() == y.keys()
    for key in x:
        if not key.endswith("/code_version"):
            assert np.array_equal(x[key], y[key]) if isinstance(x[key], np.ndarray) else x[key] == y[key], key
    if all(x[k] == y[k] for k in x if k.endswith("/code_version")):
        assert digests(a) == digests(b)


def test_collect_writes_a_self_describing_dataset(reference: Path) -> None:
    manifest = json.loads((reference / "manifest.json").read_text())
    assert manifest["format_version"] == 2 and manifest["env"]["config"]["family"] == "reach"
    assert manifest["env"]["renderer"] == "tiny" and manifest["env"]["image_shape"] == [32, 32, 3]
    assert manifest["code_version"]["package"] and "seed_rule" in manifest
    train = manifest["splits"]["train"]
    assert train["counts"]["tasks"] == 2 and train["counts"]["demos"] == 4 and train["counts"]["videos"] == 2
    assert [t["spec"]["split"] for t in train["tasks"]] == ["train", "train"]
    seeds = [e["seed"] for t in train["tasks"] for e in t["demos"] + t["videos"]]
    assert len(set(seeds)) == len(seeds)
    assert sorted(p.name for p in (reference / "train").iterdir()) == ["plan.json", "shard-00000-of-00002.h5", "shard-00001-of-00002.h5"]


def test_resume_after_kill_gives_identical_bytes(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "reach"
    argv = [sys.executable, "-m", "launch.collect", *TINY, "workers=1", f"out={out}"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True, cwd=tmp_path)
    deadline = time.monotonic() + 300
    while not list(out.glob("train/*.h5")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(list(out.glob("train/*.h5"))) == 1 and not (out / "manifest.json").exists()
    stale = out / "train" / "shard-00001-of-00002.h5.tmp-999999"
    stale.write_bytes(b"half a shard")  # what a kill while writing leaves behind
    result = run_collect(out, "workers=1")
    assert "1 shards were already complete" in result.stdout
    assert not stale.exists()
    assert_same_shards(out, reference)


def test_multirun_shards_join_into_one_dataset(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "reach"
    run_collect(out, "-m", "shard=0,1", "num_shards=2", "workers=1")
    assert_same_shards(out, reference)
    assert len(list((out / "logs" / "train").glob("multirun-*/shard*/.hydra/config.yaml"))) == 2
    assert run_data("validate", out).returncode == 0


def test_rerun_of_a_complete_dataset_changes_nothing(scratch: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in scratch.glob("train/*.h5")}
    result = run_collect(scratch, "workers=1")
    assert "2 shards were already complete" in result.stdout
    assert {p: p.stat().st_mtime_ns for p in scratch.glob("train/*.h5")} == before


def tiny_config(out: Path, *overrides: str) -> CollectConfig:
    """The settings `oneshot-collect` would run with, composed by Hydra from conf/ (for in-process checks)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return OmegaConf.to_object(compose("collect", overrides=[*TINY, f"out={out}", *overrides]))


@pytest.mark.parametrize("overrides, error, message", [
    (["env=push"], DatasetMismatchError, "another environment.*family: 'reach' there, 'push' asked"),
    (["env.image_size=64"], DatasetMismatchError, "another environment.*image_size: 32 there, 64 asked"),
    (["num_tasks=3"], DatasetMismatchError, "collected with other settings .num_tasks: 2 there, 3 asked"),
    (["shard=2", "num_shards=2"], ValueError, r"shard must be in \[0, num_shards=2\)"),
    (["split=nope"], ValueError, "split must be one of"),
    (["demo_noise=1.5"], ValueError, r"demo_noise .* must be in \[0, 1\], got 1.5"),
    (["demo_noise=0.2"], DatasetMismatchError, "collected with other settings .*demo_noise"),
])
def test_out_holding_another_dataset_or_bad_settings_are_refused(scratch: Path, overrides: list[str], error: type, message: str) -> None:
    before = digests(scratch)
    with pytest.raises(error, match=message):
        collect(tiny_config(scratch, *overrides))
    assert digests(scratch) == before and len(list(scratch.glob("train/*.h5"))) == 2


def test_corrupt_or_newer_manifest_in_out_is_refused(scratch: Path) -> None:
    manifest = json.loads((scratch / "manifest.json").read_text())
    (scratch / "manifest.json").write_text(json.dumps({**manifest, "format_version": 3}))
    with pytest.raises(FormatVersionError, match="format version 3 is newer"):
        collect(tiny_config(scratch))
    (scratch / "manifest.json").write_text(json.dumps({**manifest, "format_version": 1}))
    with pytest.raises(DatasetMismatchError, match="written in dataset format 1, this code writes format 2"):
        collect(tiny_config(scratch))  # an older dataset is read, never extended
    (scratch / "manifest.json").write_text("{")
    with pytest.raises(ManifestError, match="corrupt manifest"):
        collect(tiny_config(scratch))


def test_out_with_foreign_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(DatasetMismatchError, match="not part of a dataset"):
        collect(tiny_config(tmp_path))
    assert (tmp_path / "thesis.tex").read_text() == "precious"


def test_the_command_reports_a_refusal_as_one_line_and_exit_status_2(scratch: Path) -> None:
    result = run_collect(scratch, "env=push", check=False)
    assert result.returncode == 2
    assert "oneshot-collect: error: out holds a dataset of another environment" in result.stderr and "Traceback" not in result.stderr


def test_slurm_launcher_config_composes() -> None:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("collect", overrides=["hydra/launcher=collect_slurm", "env=pick_place", "out=x"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("SlurmLauncher") and cfg.hydra.launcher.cpus_per_task == 8
    assert cfg.env.family == "pick_place" and cfg.env.image_size == 64


@pytest.mark.parametrize("family, per_set", [("reach", 3), ("push", 2), ("pick_place", 4)])
def test_all_targets_gives_every_object_set_each_target(family: str, per_set: int) -> None:
    """all_targets=true: a scene never tells the target, because its objects come back once per target choice."""
    tasks = split_tasks(0, family, "train", 2 * per_set + 1, all_targets=True)
    assert len({t.task_id() for t in tasks}) == len(tasks)
    for first in (0, per_set):
        group = tasks[first:first + per_set]
        assert len({t.objects + t.containers for t in group}) == 1
        assert {(t.target, t.target_container) for t in group} == {(t.target, t.target_container) for t in group[:per_set]}
        assert len({(t.target, t.target_container) for t in group}) == per_set
    assert tasks[0].objects != tasks[per_set].objects
    assert split_tasks(0, family, "train", per_set, all_targets=True) == tasks[:per_set]  # a prefix, as without it
    assert split_tasks(0, family, "train", 3) != tasks[:3]  # off (the default): the earlier stream, unchanged


def test_same_scenes_shows_one_robot_scene_with_every_target(tmp_path: Path) -> None:
    """same_scenes=true: the tasks of an object set share their demos' scenes, so the first frame cannot tell the target."""
    collect(tiny_config(tmp_path, "num_tasks=3", "demos_per_task=1", "videos_per_task=1", "all_targets=true", "same_scenes=true"))
    data = PairDataset(tmp_path, "train", image_size=32)
    pairs = [data.pair(task, 0, 0) for task in range(3)]
    assert len({data.tasks[k].spec["target"] for k in range(3)}) == 3
    for p in pairs[1:]:
        assert torch.equal(p.images[0], pairs[0].images[0]) and torch.equal(p.states[0], pairs[0].states[0])
        assert (p.states[-1, :2] - pairs[0].states[-1, :2]).norm() > 0.1  # each demo ends at its own target
        assert not torch.equal(p.video, pairs[0].video)
    with pytest.raises(ValueError, match="needs all_targets"):
        collect(tiny_config(tmp_path / "b", "same_scenes=true"))


@pytest.mark.parametrize("noise", [0.0, 0.2])
def test_demo_noise_perturbs_what_is_executed_and_records_the_clean_action(monkeypatch: pytest.MonkeyPatch, noise: float) -> None:
    """DART: the arm executes the expert's action plus noise on x, y, z; the demo keeps the expert's own action."""
    env = make_env(CollectConfig(out="x", env=EnvConfig(family="reach", image_size=32)))
    expert, executed = [], []
    expert_action, step = env.unwrapped.expert_action, env.step
    monkeypatch.setattr(env.unwrapped, "expert_action", lambda: expert.append(expert_action()) or expert[-1])
    monkeypatch.setattr(env, "step", lambda action: executed.append(np.copy(action)) or step(action))
    demo = record_demo(env, split_tasks(0, "reach", "train", 1)[0], seed=3, attempt=0, noise=noise)
    assert demo is not None, "the expert should still succeed under this noise"
    np.testing.assert_array_equal(demo.actions, np.stack(expert))
    difference = np.stack(executed) - np.stack(expert)
    assert np.all(difference[:, 3] == 0)  # the gripper command is never perturbed
    assert np.std(difference[:, :3]) == pytest.approx(noise, abs=0.06)  # (less clipping at |action| = 1)


def test_all_targets_is_part_of_the_plan_only_when_on() -> None:
    assert "all_targets" not in plan_of(CollectConfig(out="x"))
    assert plan_of(CollectConfig(out="x", all_targets=True))["all_targets"] is True
    assert "same_scenes" not in plan_of(CollectConfig(out="x", all_targets=True))
    assert plan_of(CollectConfig(out="x", all_targets=True, same_scenes=True))["same_scenes"] is True
    assert "demo_noise" not in plan_of(CollectConfig(out="x"))  # the plans of earlier datasets still match
    assert plan_of(CollectConfig(out="x", demo_noise=0.2))["demo_noise"] == 0.2
    assert "driven_demos_per_task" not in plan_of(CollectConfig(out="x"))


def test_a_driven_demo_executes_the_driver_then_the_expert_and_records_the_expert(monkeypatch: pytest.MonkeyPatch) -> None:
    """Driven demos (DAgger-like): the driver's actions are executed for the first `handover` steps, the expert's
    after; the demo records the expert's action at every step, also where the driver acted."""
    env = make_env(CollectConfig(out="x", env=EnvConfig(family="reach", image_size=32)))
    expert, executed = [], []
    expert_action, step = env.unwrapped.expert_action, env.step
    monkeypatch.setattr(env.unwrapped, "expert_action", lambda: expert.append(expert_action()) or expert[-1])
    monkeypatch.setattr(env, "step", lambda action: executed.append(np.copy(action)) or step(action))
    sideways = np.array([0.0, 1.0, 0.5, 1.0], dtype=np.float32)  # away from the expert's path
    demo = record_demo(env, split_tasks(0, "reach", "train", 1)[0], seed=3, attempt=0, driver=lambda obs: sideways, handover=6)
    assert demo is not None and demo.driven_steps == 6 and demo.record()["driven_steps"] == 6
    np.testing.assert_array_equal(demo.actions, np.stack(expert))
    np.testing.assert_array_equal(np.stack(executed[:6]), np.tile(sideways, (6, 1)))
    np.testing.assert_array_equal(np.stack(executed[6:]), np.stack(expert[6:]))  # no noise asked: the expert as it is
    assert np.abs(np.stack(expert[:6]) - sideways).max() > 0.5  # the labels are not the driver's actions
    assert "driven_steps" not in record_demo(env, split_tasks(0, "reach", "train", 1)[0], seed=3, attempt=0).record()


def untrained_reach_checkpoint(path: Path) -> Path:
    """A reach policy at 32 px as a training run would save it, untrained: enough to drive demos."""
    spec = ModelSpec(policy=PolicyConfig(image_size=(32, 32), conv_filters=(8, 8), conv_strides=(2, 2), fc_sizes=(32, 32)),
                     adaptation_loss=AdaptationLossConfig(channels=8, kernel_size=3))
    env = {"family": "reach", "image_size": 32, "robot_visuals": "lowpoly", "renderer": "tiny"}
    info = CheckpointInfo(step=0, model=spec, env=env, episode_length=40, dataset={}, train_config={})
    return save_checkpoint(path, build_learner(spec, seed=0), info)


def test_driven_demos_through_the_command_follow_the_expert_demos_and_name_their_driver(tmp_path: Path) -> None:
    checkpoint = untrained_reach_checkpoint(tmp_path / "driver.pt")
    out = tmp_path / "driven"
    run_collect(out, "workers=1", "driven_demos_per_task=2", f"driver={checkpoint}")
    split = json.loads((out / "manifest.json").read_text())["splits"]["train"]
    assert split["plan"]["driver_sha256"] == sha256_file(checkpoint) and split["plan"]["driven_demos_per_task"] == 2
    for task in split["tasks"]:
        assert ["driven_steps" in d for d in task["demos"]] == [False, False, True, True]
        assert all(0 <= d["driven_steps"] <= 20 for d in task["demos"][2:])  # at most half of reach's 40 steps
    driven_steps = [d["driven_steps"] for t in split["tasks"] for d in t["demos"][2:]]
    assert len(set(driven_steps)) > 1  # drawn per demo
    assert run_data("validate", out).returncode == 0
    assert PairDataset(out, "train", image_size=32).num_demos == 4
    with pytest.raises(ValueError, match="needs driver="):
        collect(tiny_config(tmp_path / "a", "driven_demos_per_task=1"), video_driver)
    with pytest.raises(ValueError, match="was trained in the env"):
        collect(tiny_config(tmp_path / "b", "driven_demos_per_task=1", f"driver={checkpoint}", "env.image_size=48"), video_driver)
