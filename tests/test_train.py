"""oneshot-train: the real command on a tiny real dataset, exact resume, checkpoints, and bad input.

One dataset per pytest run (reach, 32 px, 4 train + 2 val tasks, 2 demos + 2 videos each), made with the real
oneshot-collect under a file lock so pytest-xdist workers share it. The model is tiny and every pass sees every
4th frame (10 of 40), so a meta-step takes milliseconds.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import h5py
import numpy as np
import pytest
import torch
from torch.func import functional_call
from filelock import FileLock
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from demos.format import DatasetError, sha256_file
from demos.reader import PairDataset
from envs.task_spec import sample_task
from imitation import checkpoint
from imitation.checkpoint import average_checkpoints, load_checkpoint, read_checkpoint
from imitation.data import StepBatchSampler, StridedPairs, quiet_when_the_trainer_hangs_up
from imitation.maml import MetaLearner
from imitation.rollout import Rollout
from imitation.policy import GPU_POLICY, PolicyConfig
from imitation.train import NonFiniteTrainingError, TrainConfig, TrainingError, train
from imitation.tracking import frame_strip
from imitation.video_conditioned import VideoConditionedLearner
from launch.train import CONF_DIR, run_id

BIN = Path(sys.executable).parent
TINY = ("policy.image_size=[32,32]", "policy.conv_filters=[4,8]", "policy.conv_strides=[2,2]", "policy.conv_kernel=3",
        "policy.fc_sizes=[16,16]", "policy.bias_transform_dim=2", "adaptation_loss.channels=4",
        "adaptation_loss.kernel_size=3", "adaptation_loss.outputs=2", "loader.frame_stride=4", "meta_batch=2",
        "logger=none", "progress=false", "threads=1")
COLLECT = ("env=reach", "env.image_size=32", "base_seed=3", "demos_per_task=2", "videos_per_task=2", "progress=false",
           "workers=2")


def make_dataset(out: Path) -> Path:
    for split, tasks in (("train", 4), ("val", 2)):
        result = subprocess.run([str(BIN / "oneshot-collect"), *COLLECT, f"split={split}", f"num_tasks={tasks}", f"out={out}"],
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def train_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared tiny dataset (read only: copy it to damage it)."""
    base = tmp_path_factory.getbasetemp()
    run_dir = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # xdist workers share the parent
    out = run_dir / "train-reference" / "reach"
    with FileLock(str(run_dir / "train-reference.lock")):
        if not (out / "manifest.json").exists():
            make_dataset(out)
    return out


def config(data: Path, run_dir: Path, *overrides: str) -> TrainConfig:
    """The config `oneshot-train` would build from these overrides (the real conf/ tree), for an in-process run."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"data={data}", f"run_dir={run_dir}", "loader.workers=0", *TINY, *overrides])
    return OmegaConf.to_object(cfg)


def parameters(learner: MetaLearner) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in learner.state_dict().items()}


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ----- config ----------------------------------------------------------------------------------------------------

def test_config_groups() -> None:
    """Defaults are the CPU settings; policy=gpu is GPU_POLICY; every group option composes."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        default = OmegaConf.to_object(compose("train", overrides=["data=x", "run_dir=y"]))
        gpu = OmegaConf.to_object(compose("train", overrides=["data=x", "run_dir=y", "policy=gpu", "meta_batch=16",
                                                              "device=cuda", "bf16=true", "loader=gpu", "meta=learned_lr"]))
    assert default.meta_batch == 4 and default.device == "auto" and default.logger.kind == "wandb"
    assert PolicyConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in vars(default.policy).items()}) == PolicyConfig()
    assert PolicyConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in vars(gpu.policy).items()}) == GPU_POLICY
    assert gpu.meta.learn_inner_lr and gpu.loader.workers == 4 and gpu.meta_batch == 16


def test_run_ids_unique_within_a_second() -> None:
    assert len({run_id("") for _ in range(50)}) == 50
    assert run_id("exp1") == "exp1"


def test_frame_strip() -> None:
    video, demo = np.zeros((10, 4, 6, 3), np.uint8), np.ones((7, 4, 6, 3), np.uint8)
    strip = frame_strip(video, demo, 5)
    assert strip.shape == (8, 30, 3) and strip[:4].max() == 0 and strip[4:].min() == 1


# ----- the real command ----------------------------------------------------------------------------------------------

def test_command_trains_and_records(train_data: Path, tmp_path: Path) -> None:
    """oneshot-train meta-trains (the training loss drops), validates, and leaves a self-describing run folder."""
    result = subprocess.run(
        [str(BIN / "oneshot-train"), f"data={train_data}", f"out={tmp_path}", "run_name=r", *TINY, "steps=20",
         "log_every=5", "val_every=10", "ckpt_every=10", "meta.meta_lr=0.01", "loader.workers=1"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = tmp_path / "r"
    metrics = read_metrics(run_dir)
    losses = [m["train/outer_loss"] for m in metrics]
    assert len(losses) == 4 and losses[-1] < 0.6 * losses[0], losses
    val = [m for m in metrics if "val/outer_loss_post" in m]
    assert [m["step"] for m in val] == [10, 20] and all(np.isfinite(m["val/outer_loss_pre"]) for m in val)
    for m in val:  # the control: each task adapted on another task's video
        assert m["val/video_gain"] == pytest.approx(m["val/outer_loss_other_video"] - m["val/outer_loss_post"])
    assert all(m["train/meta_steps_per_s"] > 0 and m["train/tasks_per_s"] > 0 for m in metrics)
    assert OmegaConf.load(run_dir / "config.yaml").run_dir == str(run_dir)
    assert json.loads((run_dir / "run.json").read_text())["starts"][0]["code"]["git"]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["last.pt", "step-0000010.pt", "step-0000020.pt"]
    learner, info, _ = load_checkpoint(run_dir / "checkpoints")
    assert info.step == 20 and info.episode_length == 10
    assert info.env == {"family": "reach", "image_size": 32, "robot_visuals": "lowpoly", "renderer": "tiny"}
    assert info.dataset["manifest_sha256"] == sha256_file(train_data / "manifest.json")
    assert info.model.policy.fc_sizes == (16, 16)


def test_command_refuses_bad_input(train_data: Path, tmp_path: Path) -> None:
    result = subprocess.run([str(BIN / "oneshot-train"), f"data={train_data}", f"out={tmp_path}", "logger=none"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "32x32 images but policy.image_size=[64, 64]" in result.stderr and "policy.image_size=[32,32]" in result.stderr
    result = subprocess.run([str(BIN / "oneshot-train"), f"data={train_data}", f"out={tmp_path}", "lr_schedule=linear"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "lr_schedule must be one of ('constant', 'cosine'), got 'linear'" in result.stderr


# ----- frame stride ----------------------------------------------------------------------------------------------

def test_random_offsets_train_on_every_frame(train_data: Path) -> None:
    """loader.random_offsets: the meta-batches of a run keep every 4th frame from offsets 0-3 drawn with the batch, so
    every frame is trained on; without it every batch keeps frames 0, 4, 8, ... (as before the option existed)."""
    dataset = PairDataset(train_data, "train", image_size=32)
    strided = StridedPairs(dataset, 4)
    length = dataset.demo_length
    for random_offsets in (False, True):
        sampler = StepBatchSampler(dataset, 2, seed=0, start=0, stop=40, stride=4, random_offsets=random_offsets)
        offsets = {code % 4 for codes in sampler for code in codes}
        assert offsets == ({0, 1, 2, 3} if random_offsets else {0})
        assert list(sampler) == list(sampler)  # a pure function of (seed, step): resumable
    pair, shifted = dataset[5], strided[5 * 4 + 3]
    kept = [min(3 + 4 * i, length - 1) for i in range(-(-length // 4))]
    assert shifted.images.shape[0] == strided[5 * 4].images.shape[0] == len(kept)
    for name in StridedPairs.TIME_FIELDS:
        assert torch.equal(getattr(shifted, name), getattr(pair, name)[kept]), name
        assert torch.equal(getattr(strided[5 * 4], name), getattr(pair, name)[::4]), name


# ----- resume ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("offsets", [(), ("loader.random_offsets=true",)], ids=["offset-0", "random-offsets"])
def test_resume_is_exact(train_data: Path, tmp_path: Path, offsets: tuple[str, ...]) -> None:
    """2 steps + resume to 5 gives the same weights and optimizer state as 5 steps straight."""
    whole = train(config(train_data, tmp_path / "whole", "steps=5", "val_every=2", *offsets))
    train(config(train_data, tmp_path / "split", "steps=2", "val_every=2", *offsets))
    resumed = train(config(train_data, tmp_path / "split", "steps=5", "val_every=2", "resume=true", *offsets))
    assert resumed.step == 5
    a, _, pa = load_checkpoint(whole.checkpoint)
    b, _, pb = load_checkpoint(resumed.checkpoint)
    for key, value in parameters(a).items():
        assert torch.equal(value, parameters(b)[key]), key
    assert pa["optimizer"]["state"][0]["step"] == pb["optimizer"]["state"][0]["step"] == 5
    assert [m["step"] for m in read_metrics(tmp_path / "split")] == [2, 4, 5]
    assert len(json.loads((tmp_path / "split" / "run.json").read_text())["starts"]) == 2


def test_cosine_schedule_anneals_and_resumes_exactly(train_data: Path, tmp_path: Path) -> None:
    """lr_schedule=cosine takes the outer lr from meta.meta_lr to 0 over `steps`; a run resumed from its step-2
    checkpoint goes on with the same rates, to the same weights."""
    cosine = ("steps=6", "ckpt_every=2", "log_every=1", "val_every=0", "lr_schedule=cosine", "meta.meta_lr=0.01")
    whole = train(config(train_data, tmp_path / "whole", *cosine))
    expected = [0.01 * 0.5 * (1 + math.cos(math.pi * step / 6)) for step in range(6)]
    assert [m["train/meta_lr"] for m in read_metrics(tmp_path / "whole")] == pytest.approx(expected)
    stopped = tmp_path / "stopped" / "checkpoints"
    stopped.mkdir(parents=True)
    shutil.copy(tmp_path / "whole" / "checkpoints" / "step-0000002.pt", stopped / "last.pt")
    resumed = train(config(train_data, tmp_path / "stopped", *cosine, "resume=true"))
    assert [m["train/meta_lr"] for m in read_metrics(tmp_path / "stopped")] == pytest.approx(expected[2:])
    a, b = parameters(load_checkpoint(whole.checkpoint)[0]), parameters(load_checkpoint(resumed.checkpoint)[0])
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


PLACE = ("policy.target_query=true", "adaptation_loss.target_match=true", "policy.place_query=true",
         "adaptation_loss.place_match=true", "bc.place_map_weight=1", "meta.adapt_only=[bias_transform,target_query,place_query]")


@pytest.mark.parametrize("overrides, learner_type, adapted", [
    (("meta=anil",), MetaLearner, {"bias_transform", "fc", "head"}),
    (("adaptation_loss.kind=encoder",), VideoConditionedLearner, {"bias_transform"}),
    (("policy.target_query=true", "policy.target_position=true", "meta.adapt_only=[bias_transform,target_query]"),
     MetaLearner, {"bias_transform", "target_query"}),
    (("policy.target_query=true", "bc.query_map_weight=1", "meta.adapt_only=[bias_transform,target_query]"),
     MetaLearner, {"bias_transform", "target_query"}),
    (PLACE, MetaLearner, {"bias_transform", "target_query", "place_query"}),
])
def test_anil_and_black_box_train_and_reload(train_data: Path, tmp_path: Path, overrides: tuple[str, ...],
                                             learner_type: type, adapted: set[str]) -> None:
    """ANIL, the black-box baseline, the target-position head, the query-map label and the place query train through
    the same job and come back from their checkpoints."""
    result = train(config(train_data, tmp_path / "r", "steps=40", "log_every=10", "val_every=40", "meta.meta_lr=0.01", *overrides))
    losses = [m["train/outer_loss"] for m in read_metrics(tmp_path / "r")]
    assert losses[-1] < 0.6 * losses[0], losses
    learner, _, _ = load_checkpoint(result.checkpoint)
    assert type(learner) is learner_type and {name.split(".")[0] for name in learner.params()} == adapted


def test_resume_refusals(train_data: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingError, match="nothing to resume"):
        train(config(train_data, run_dir, "steps=1", "resume=true"))
    train(config(train_data, run_dir, "steps=1", "val_every=0"))
    with pytest.raises(TrainingError, match="already has checkpoints"):
        train(config(train_data, run_dir, "steps=2"))
    with pytest.raises(TrainingError, match=r"policy\.fc_sizes: checkpoint \[16, 16\], now \[16, 8\]"):
        train(config(train_data, run_dir, "steps=2", "resume=true", "policy.fc_sizes=[16,8]"))
    with pytest.raises(TrainingError, match="seed: checkpoint 0, now 1"):
        train(config(train_data, run_dir, "steps=2", "resume=true", "seed=1"))


def test_average_checkpoints(train_data: Path, tmp_path: Path) -> None:
    """oneshot-average writes the mean of a run's weights, loadable as any checkpoint, and refuses mixed runs."""
    run = tmp_path / "run"
    train(config(train_data, run, "steps=4", "ckpt_every=2", "val_every=0", "meta.meta_lr=0.01"))
    early, late = run / "checkpoints" / "step-0000002.pt", run / "checkpoints" / "step-0000004.pt"
    out = tmp_path / "mean.pt"
    result = subprocess.run([str(BIN / "oneshot-average"), str(early), str(late), "--out", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    mean, info, payload = load_checkpoint(out)
    a, b = parameters(load_checkpoint(early)[0]), parameters(load_checkpoint(late)[0])
    assert any(not torch.equal(a[k], b[k]) for k in a)  # two steps apart the weights differ
    for key, value in parameters(mean).items():
        torch.testing.assert_close(value, (a[key] + b[key]) / 2)
    assert info.step == 4 and [s["step"] for s in payload["averaged_from"]] == [2, 4]

    again = subprocess.run([str(BIN / "oneshot-average"), str(early), str(late), "--out", str(out)],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "exists" in again.stderr
    other = tmp_path / "other"
    train(config(train_data, other, "steps=2", "val_every=0", "policy.fc_sizes=[16,8]"))
    with pytest.raises(ValueError, match="another model"):
        average_checkpoints([early, other / "checkpoints" / "last.pt"], tmp_path / "mixed.pt")
    with pytest.raises(ValueError, match="at least 2"):
        average_checkpoints([early], tmp_path / "one.pt")
    assert not (tmp_path / "mixed.pt").exists() and not (tmp_path / "one.pt").exists()


# ----- bad input ---------------------------------------------------------------------------------------------------

def test_bad_inputs(train_data: Path, tmp_path: Path) -> None:
    def refused(*overrides: str, data: Path = train_data) -> str:
        with pytest.raises((TrainingError, DatasetError)) as e:
            train(config(data, tmp_path / "run", "steps=1", *overrides))
        return str(e.value)

    assert "policy.action_dim=4" in refused("policy.action_dim=3")
    assert "meta_batch=5" in refused("meta_batch=5")
    assert "no 'test' split" in refused("loader.val_split=test")
    assert "no split 'test'" in refused("loader.train_split=test", "val_every=0")
    assert "bf16=true is a GPU option" in refused("bf16=true", "device=cpu")
    empty = Path(shutil.copytree(train_data, tmp_path / "empty"))
    manifest = json.loads((empty / "manifest.json").read_text())
    manifest["splits"]["train"]["tasks"] = []
    (empty / "manifest.json").write_text(json.dumps(manifest))
    assert "split 'train' has no tasks" in refused(data=empty)
    old = Path(shutil.copytree(train_data, tmp_path / "format-1"))
    (old / "manifest.json").write_text(json.dumps({**json.loads((train_data / "manifest.json").read_text()), "format_version": 1}))
    assert "lacks: collect it again" in refused("policy.target_query=true", "policy.target_position=true", data=old)
    assert "lacks: collect it again" in refused("policy.target_query=true", "bc.query_map_weight=1", data=old)
    assert "bc.place_map_weight>0 needs" in refused(*PLACE, data=old)
    moved = Path(shutil.copytree(train_data, tmp_path / "moved-camera"))
    manifest = json.loads((train_data / "manifest.json").read_text())
    manifest["env"]["robot_camera"]["fov_deg"] += 5
    (moved / "manifest.json").write_text(json.dumps(manifest))
    assert "rendered by another" in refused("policy.target_query=true", "bc.query_map_weight=1", data=moved)


def test_init_from_starts_a_new_run_from_another_runs_weights(train_data: Path, tmp_path: Path) -> None:
    """Fine-tuning starts at step 0 from the weights (not the optimizer) of the given checkpoint, under another outer
    loss, and its resumes go on recording that origin; a checkpoint of another network, or none, is refused."""
    first = train(config(train_data, tmp_path / "first", "steps=3", "val_every=0"))
    tuned = train(config(train_data, tmp_path / "tuned", "steps=1", "val_every=0", "bc.goal_weight=1",
                         "meta.meta_lr=0", f"init_from={first.checkpoint}"))  # a step that leaves the weights
    assert tuned.step == 1
    a, _, _ = load_checkpoint(first.checkpoint)
    b, info, payload = load_checkpoint(tuned.checkpoint)
    for key, value in parameters(a).items():
        assert torch.equal(value, parameters(b)[key]), key
    assert info.model.bc.goal_weight == 1 and payload["optimizer"]["state"][0]["step"] == 1  # not 4
    resumed = train(config(train_data, tmp_path / "tuned", "steps=2", "val_every=0", "bc.goal_weight=1",
                           "meta.meta_lr=0", "resume=true"))  # without init_from: the run still started from first
    assert read_checkpoint(resumed.checkpoint)["train_config"]["init_from"] == str(first.checkpoint)
    assert f"init_from: {first.checkpoint}" in (tmp_path / "tuned" / "config.yaml").read_text()
    with pytest.raises(TrainingError, match="do not fit this model"):
        train(config(train_data, tmp_path / "wider", "steps=1", "val_every=0", "policy.fc_sizes=[16,8]",
                     f"init_from={first.checkpoint}"))
    with pytest.raises(TrainingError, match="no such checkpoint"):
        train(config(train_data, tmp_path / "none", "steps=1", "val_every=0", f"init_from={tmp_path / 'nothing.pt'}"))


def test_init_fresh_relearns_named_layers_and_frozen_tensors_stay_as_loaded_through_a_resume(train_data: Path,
                                                                                              tmp_path: Path) -> None:
    """init_fresh: the named tensors start as a fresh run's (seed 0) and the rest as init_from's; frozen: meta-training
    leaves the named tensors as they were, through a resume too, while the others learn. Typos and a frozen list
    changed on resume are refused by name."""
    first = train(config(train_data, tmp_path / "first", "steps=3", "val_every=0", "meta.meta_lr=0.01"))
    fresh = train(config(train_data, tmp_path / "fresh-only", "steps=1", "val_every=0", "meta.meta_lr=0",
                         f"init_from={first.checkpoint}", "init_fresh=[model.fc,model.head]"))
    scratch = train(config(train_data, tmp_path / "scratch", "steps=1", "val_every=0", "meta.meta_lr=0"))
    old, new, initial = (parameters(load_checkpoint(run.checkpoint)[0]) for run in (first, fresh, scratch))
    relearned = {name for name in new if name.startswith(("model.fc.", "model.head."))}
    assert relearned == {"model.fc.0.weight", "model.fc.0.bias", "model.fc.1.weight", "model.fc.1.bias",
                         "model.head.weight", "model.head.bias"}
    for name, value in new.items():
        assert torch.equal(value, (initial if name in relearned else old)[name]), name
    assert not torch.equal(old["model.fc.0.weight"], initial["model.fc.0.weight"])  # the two starts differ

    tuned = ("val_every=0", "meta.meta_lr=0.01", f"init_from={first.checkpoint}", "frozen=[model.trunk]")
    train(config(train_data, tmp_path / "tuned", "steps=2", *tuned))
    resumed = train(config(train_data, tmp_path / "tuned", "steps=4", "resume=true", *tuned))
    trained = parameters(load_checkpoint(resumed.checkpoint)[0])
    trunk = [name for name in trained if name.startswith("model.trunk.")]
    assert trunk and all(torch.equal(trained[name], old[name]) for name in trunk)
    assert not torch.equal(trained["model.fc.0.weight"], old["model.fc.0.weight"])
    with pytest.raises(TrainingError, match=r"frozen: checkpoint \['model.trunk'\], now \[\]"):
        train(config(train_data, tmp_path / "tuned", "steps=5", "resume=true", *tuned[:-1]))
    with pytest.raises(TrainingError, match="'model.trunks' names none of the learner's tensors.*model.trunk"):
        train(config(train_data, tmp_path / "typo", "steps=1", "val_every=0", "frozen=[model.trunks]"))
    with pytest.raises(ValueError, match="set init_from"):
        config(train_data, tmp_path / "no-origin", "init_fresh=[model.fc]")


def test_init_from_grows_a_model_into_one_with_a_place_query(train_data: Path, tmp_path: Path) -> None:
    """A run with a place query may start from one without: the grown model adapts to a video and acts as the model it
    grew from (the place point's new input columns start at zero), and only then training gives the point weight."""
    query = ("policy.target_query=true", "adaptation_loss.target_match=true", "meta.adapt_only=[bias_transform,target_query]")
    first = train(config(train_data, tmp_path / "first", "steps=2", "val_every=0", "meta.meta_lr=0.01", *query))
    grown = train(config(train_data, tmp_path / "grown", "steps=1", "val_every=0", "meta.meta_lr=0", *PLACE,
                         f"init_from={first.checkpoint}"))
    old, new = load_checkpoint(first.checkpoint)[0], load_checkpoint(grown.checkpoint)[0]
    pair = PairDataset(train_data, "train", image_size=32)[0]

    def adapted(learner: MetaLearner) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        params = learner.adapt(learner.model.video_inputs(pair.video))
        return functional_call(learner.model, params, (pair.images, pair.states)).actions, params

    (old_actions, _), (new_actions, new_params) = adapted(old), adapted(new)
    torch.testing.assert_close(new_actions, old_actions)
    assert new_params["place_query"].abs().sum() > 0  # the place match did aim the new query
    torch.testing.assert_close(new.inner_lrs[:-1], old.inner_lrs)  # the place query's inner lr is appended


def test_a_policy_reading_depth_trains_on_depth_and_deploys_in_an_env_that_measures_it(train_data: Path,
                                                                                    tmp_path: Path) -> None:
    """policy.query_depth: refused on a dataset without depth; trained on one with it, its checkpoint makes envs that
    observe depth, and its actor feeds the depth to the policy (the rollout's env is the one it was trained for)."""
    depth_data = tmp_path / "depth"
    result = subprocess.run([str(BIN / "oneshot-collect"), *COLLECT, "num_tasks=2", "env.depth=true",
                             f"out={depth_data}"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    reading = ("policy.target_query=true", "adaptation_loss.target_match=true", "policy.query_depth=true",
               "val_every=0")
    with pytest.raises(DatasetError, match="env.depth=true"):
        train(config(train_data, tmp_path / "refused", "steps=1", *reading))
    trained = train(config(depth_data, tmp_path / "run", "steps=2", "meta.meta_lr=0.01", *reading))
    rollout = Rollout.from_checkpoint(trained.checkpoint)
    assert rollout.info.env["depth"] is True
    env = rollout.make_env("val")
    params = rollout.adapt(PairDataset(depth_data, "train", image_size=32)[0].video.numpy())
    episode = rollout.deploy(params, env, sample_task(np.random.default_rng(0), "reach", "val"), seed=0)
    assert episode.frames.shape[-1] == 3 and np.abs(episode.actions).sum() > 0
    env.close()


def test_nan_loss_stops_and_keeps_last_checkpoint(train_data: Path, tmp_path: Path) -> None:
    """NaN actions in the data: the run stops with a clear message and the last good checkpoint is untouched."""
    data = Path(shutil.copytree(train_data, tmp_path / "data"))
    run_dir = tmp_path / "run"
    train(config(data, run_dir, "steps=2", "val_every=0"))
    before = (run_dir / "checkpoints" / "last.pt").read_bytes()
    for shard in sorted((data / "train").glob("*.h5")):
        with h5py.File(shard, "r+") as f:
            f.visit(lambda name: f[name].__setitem__(Ellipsis, np.nan) if name.endswith("actions") else None)
    with pytest.raises(NonFiniteTrainingError, match=r"(?s)stopped at step 3: outer loss .* not finite.*last good checkpoint"):
        train(config(data, run_dir, "steps=4", "val_every=0", "resume=true"))
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == before
    assert read_checkpoint(run_dir / "checkpoints")["step"] == 2


def test_ctrl_c_during_a_checkpoint_write_waits_for_the_write(train_data: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A SIGINT (Ctrl-C, or launch/gpu_train.sh's budget) inside torch.save is delivered once the checkpoint is whole."""
    write = checkpoint._write_atomically

    def interrupted_write(payload: dict, path: Path) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        write(payload, path)

    monkeypatch.setattr(checkpoint, "_write_atomically", interrupted_write)
    run_dir = tmp_path / "run"
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as oneshot-train sets it, however pytest began
    try:
        with pytest.raises(KeyboardInterrupt):
            train(config(train_data, run_dir, "steps=1", "val_every=0"))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert read_checkpoint(run_dir / "checkpoints")["step"] == 1  # written whole, and last.pt points at it
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))


@pytest.mark.parametrize("inherited", [signal.SIG_DFL, signal.SIG_IGN], ids=["from-a-terminal", "from-a-background-job"])
def test_ctrl_c_in_the_terminal_stops_training_not_its_loader_workers(train_data: Path, tmp_path: Path,
                                                                      inherited: signal.Handlers) -> None:
    """A terminal's Ctrl-C (and `timeout -s INT`) signals the whole process group, loader workers included: they ignore
    it, so the training process alone stops (keeping its checkpoint) and shuts them down, with no worker traceback.
    The same when the run inherits SIGINT ignored, as a background job of a non-interactive shell (`nohup cmd &`) does."""
    proc = subprocess.Popen([str(BIN / "oneshot-train"), f"data={train_data}", f"out={tmp_path}", "run_name=r", *TINY,
                             "steps=1000000", "val_every=0", "ckpt_every=1", "loader.workers=2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, inherited))
    checkpoints = tmp_path / "r" / "checkpoints"
    try:
        wait_for(lambda: (checkpoints / "last.pt").exists())
        wait_for(lambda: len(loader_workers(proc.pid)) == 2)
        for pid in loader_workers(proc.pid):
            os.kill(pid, signal.SIGINT)  # the workers alone: training goes on
        step = read_checkpoint(checkpoints)["step"]
        wait_for(lambda: read_checkpoint(checkpoints)["step"] > step + 2)
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr[-3000:]
    assert "interrupted; run the same command with resume=true" in stderr
    assert "Traceback" not in stderr, stderr[-3000:]


def test_a_worker_prints_other_errors_but_not_the_trainer_hanging_up(capsys: pytest.CaptureFixture) -> None:
    """The hook the loader workers get: silent for a connection reset inside multiprocessing's resource_sharer (the
    race that test_ctrl_c_in_the_terminal_... met in 1 run of 6), the usual traceback for anything else."""
    def caught(code: str, filename: str) -> tuple[type[BaseException], BaseException, TracebackType | None]:
        try:
            exec(compile(code, filename, "exec"))
        except Exception as e:
            return type(e), e, e.__traceback__
        raise AssertionError(f"{code} raised nothing")

    quiet_when_the_trainer_hangs_up(*caught("raise ConnectionResetError(104, 'Connection reset by peer')",
                                            "/usr/lib/python3/multiprocessing/resource_sharer.py"))
    assert capsys.readouterr().err == ""
    quiet_when_the_trainer_hangs_up(*caught("raise ConnectionResetError(104, 'reset')", "elsewhere.py"))
    quiet_when_the_trainer_hangs_up(*caught("raise ValueError('a real error')", "resource_sharer.py"))
    err = capsys.readouterr().err
    assert err.count("Traceback") == 2 and "ConnectionResetError" in err and "ValueError: a real error" in err


def loader_workers(pid: int) -> list[int]:
    """The children of `pid` that run its own command line (forked DataLoader workers; not, say, a `git` it runs)."""
    def cmdline(p: int | str) -> bytes:
        try:
            return Path(f"/proc/{p}/cmdline").read_bytes()
        except FileNotFoundError:  # ended meanwhile
            return b""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in children if cmdline(child) == cmdline(pid)]


def wait_for(condition: Callable[[], object], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_out_of_memory_names_the_settings(train_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def oom(*args: object, **kwargs: object) -> None:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(MetaLearner, "meta_step", oom)
    with pytest.raises(TrainingError, match="out of GPU memory at step 1 with 2 tasks per process") as e:
        train(config(train_data, tmp_path / "run", "steps=1"))
    assert all(s in str(e.value) for s in ("Lower meta_batch", "loader.frame_stride", "policy=cpu"))


def test_wandb_offline_in_run_folder(train_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The wandb logger writes an offline run (scalars and a frame strip) inside the run folder."""
    for var in ("WANDB_MODE", "WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, "unused")
    run_dir = tmp_path / "run"
    train(config(train_data, run_dir, "steps=2", "log_every=1", "val_every=2", "logger=wandb", "logger.strip_every=2"))
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    assert list(runs[0].rglob("media/images/train/video_and_demo_*.png"))
