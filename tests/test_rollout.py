"""Test-time adaptation from a video (array, dataset entry or file) and closed-loop deployment, on a tiny untrained checkpoint."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import imageio.v3 as iio
import numpy as np
import pytest
import torch

import envs
from demos.shards import resample_indices
from demos.testing import reference  # noqa: F401 (a fixture)
from imitation.adaptation_loss import AdaptationLossConfig
from imitation.checkpoint import CheckpointInfo, ModelSpec, build_learner, read_checkpoint, save_checkpoint, set_action_gain
from imitation.policy import PolicyConfig
from imitation.rollout import Rollout, expert_actor, load_dataset_task, run_episode, side_by_side
from imitation.video import VideoError, read_video
from launch.rollout import RolloutConfig, rollout

TINY_SPEC = ModelSpec(
    policy=PolicyConfig(image_size=(32, 32), conv_filters=(8, 8), conv_strides=(2, 2), fc_sizes=(32, 32), bias_transform_dim=4),
    adaptation_loss=AdaptationLossConfig(channels=8, kernel_size=3),
)
TINY_ENV = {"family": "reach", "image_size": 32, "robot_visuals": "lowpoly", "renderer": "tiny"}
EPISODE_LENGTH = 40  # reach
BIN = Path(sys.executable).parent


def write_tiny_checkpoint(path: Path, spec: ModelSpec = TINY_SPEC, env: dict = TINY_ENV) -> Path:
    """An untrained reach checkpoint at 32 px: what a training run would save, without the training."""
    info = CheckpointInfo(step=0, model=spec, env=env, episode_length=EPISODE_LENGTH, dataset={}, train_config={})
    return save_checkpoint(path, build_learner(spec, seed=0), info)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("checkpoint") / "tiny.pt")


@pytest.fixture(scope="module")
def model(tiny_checkpoint: Path) -> Rollout:
    return Rollout.from_checkpoint(tiny_checkpoint)


@pytest.fixture(scope="module")
def scene(model: Rollout):
    """A test-split task, a human video of it, and the env (closed at the end)."""
    env = model.make_env("test")
    task = envs.sample_task(np.random.default_rng(0), "reach", "test")
    env.reset(seed=1, options={"task": task})
    frames, info = env.unwrapped.render_human_video(seed=2)
    assert info["task_achieved"]
    yield task, frames, env
    env.close()


def max_change(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_adapting_uses_only_the_frames_and_changes_the_parameters(model: Rollout, scene) -> None:
    _, frames, _ = scene
    params = model.adapt(frames)
    initial = model.initial_params()
    assert params.keys() == initial.keys() and max_change(params, initial) > 0
    # the same as the learner's own test-time step on (frames, all-zero state): nothing else reaches the inner loss
    prepared = torch.from_numpy(model.prepare(frames))
    assert prepared.shape == (EPISODE_LENGTH, 32, 32, 3)
    direct = model.learner.adapt((prepared, torch.zeros(EPISODE_LENGTH, 11)))
    assert max_change(params, direct) == 0.0
    assert max_change(model.adapt(frames, inner_steps=0), initial) == 0.0
    assert max_change(model.adapt(frames, inner_steps=2), params) > 0
    # the MIL reference adapts on a robot demo with actions instead: another update
    demo = model.adapt_on_demo(prepared.numpy(), np.zeros((EPISODE_LENGTH, 11), np.float32), np.ones((EPISODE_LENGTH, 4), np.float32))
    assert max_change(demo, initial) > 0 and max_change(demo, params) > 0


def test_videos_are_resampled_and_strided_as_in_training(scene, tmp_path: Path) -> None:
    """A model trained with loader.frame_stride=4 saw every 4th frame of the video resampled to the 40-frame demo."""
    _, frames, _ = scene
    info = CheckpointInfo(step=0, model=TINY_SPEC, env=TINY_ENV, episode_length=10, dataset={}, train_config={"loader": {"frame_stride": 4}})
    strided = Rollout(build_learner(TINY_SPEC), info)
    assert np.array_equal(strided.prepare(frames), frames[resample_indices(len(frames), 40)[::4]])
    with pytest.raises(ValueError, match="episode_length 12 is not the reach demo length 40 with frame stride 4"):
        Rollout(build_learner(TINY_SPEC), replace(info, episode_length=12))


def test_a_dataset_entry_adapts_like_its_frames(model: Rollout, reference: Path) -> None:
    task = load_dataset_task(reference, "0", "train")
    assert task.source["task_id"] == task.id and task.video.ndim == 4 and task.demo[2].shape == (EPISODE_LENGTH, 4)
    assert max_change(model.adapt(task.video), model.adapt(task.video.copy())) == 0.0


@pytest.mark.parametrize("suffix,fourcc", [(".mp4", "mp4v"), (".avi", "MJPG"), (".gif", None)])
def test_a_video_file_round_trip_adapts(model: Rollout, scene, tmp_path: Path, suffix: str, fourcc: str | None) -> None:
    """Written larger and not square (48 x 64): read back, cropped to the centre square, resized to 32 px, resampled to 40 frames."""
    _, frames, _ = scene
    big = np.stack([cv2.resize(f, (64, 64), interpolation=cv2.INTER_NEAREST) for f in frames])
    wide = np.concatenate([np.zeros((len(big), 48, 8, 3), np.uint8), big[:, 8:56], np.zeros((len(big), 48, 8, 3), np.uint8)], axis=2)
    wide[:, :4, :4] = (np.arange(len(wide)) * 8)[:, None, None, None]  # no two frames alike: gif writers merge repeats
    path = tmp_path / f"video{suffix}"
    if fourcc:
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, (80, 48))
        for f in wide:
            writer.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        writer.release()
    else:
        iio.imwrite(path, wide, duration=100, loop=0)
    read = read_video(path)
    assert read.shape == (len(frames), 48, 80, 3) and read.dtype == np.uint8
    prepared = model.prepare(path)
    assert prepared.shape == (EPISODE_LENGTH, 32, 32, 3)
    reference_frames = model.prepare(wide)
    assert np.abs(prepared.astype(int) - reference_frames).mean() < 12  # lossy codecs: close, not equal
    params = model.adapt(path)
    assert all(torch.isfinite(p).all() for p in params.values()) and max_change(params, model.initial_params()) > 0


def test_bad_videos_give_clear_errors(model: Rollout, scene, tmp_path: Path) -> None:
    _, frames, _ = scene
    with pytest.raises(VideoError, match="no such video file"):
        model.adapt(tmp_path / "missing.mp4")
    (tmp_path / "notes.mp4").write_text("not a video")
    with pytest.raises(VideoError, match="cannot open this file as a video|has no frames"):
        model.adapt(tmp_path / "notes.mp4")
    (tmp_path / "notes.gif").write_text("not a gif")
    with pytest.raises(VideoError, match="cannot read this file as a gif"):
        model.adapt(tmp_path / "notes.gif")
    empty = tmp_path / "empty.avi"
    cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 32)).release()
    with pytest.raises(VideoError, match="cannot open this file as a video|has no frames"):
        model.adapt(empty)
    with pytest.raises(VideoError, match="has no frames"):
        model.adapt(frames[:0])
    with pytest.raises(VideoError, match="has 3 frames, far too short: the model was trained on 40-frame videos and needs at least 10"):
        model.adapt(frames[:3])
    with pytest.raises(VideoError, match="expected uint8"):
        model.adapt(frames.astype(np.float32))
    with pytest.raises(VideoError, match=r"expected RGB frames \(T, H, W, 3\)"):
        model.adapt(frames[..., 0])


def test_deploy_is_closed_loop_and_replays_exactly(model: Rollout, scene) -> None:
    task, frames, env = scene
    params = model.adapt(frames)
    a, b = model.deploy(params, env, task, seed=7), model.deploy(params, env, task, seed=7)
    assert a.steps == env.unwrapped.max_episode_steps == EPISODE_LENGTH and a.actions.shape == (40, 4)
    assert a.frames.shape == (41, 32, 32, 3) and a.states.shape == (41, 11) and isinstance(a.success, bool)
    assert np.array_equal(a.actions, b.actions) and np.array_equal(a.frames, b.frames)
    assert a.task == task.to_dict()
    other = model.deploy(params, env, task, seed=8, keep_frames=False)
    assert other.frames is None and not np.array_equal(other.states[0], a.states[0])  # a new arrangement
    expert = run_episode(env, expert_actor(env), task, seed=7, keep_frames=False)
    assert expert.success and expert.first_success_step is not None
    sheet = side_by_side(frames, a.frames, a.success, height=64)
    assert sheet.shape == (41, 64, 2 * 64 + 4, 3)


def test_an_anchored_actor_keeps_the_episode_first_observation(scene, tmp_path: Path) -> None:
    """policy.query_anchor: each step's action is the policy's on (first observation, this one), as in training, and
    a new actor (a new episode) starts from its own first observation."""
    anchored = replace(TINY_SPEC, policy=replace(TINY_SPEC.policy, target_query=True, query_anchor=True))
    model = Rollout.from_checkpoint(write_tiny_checkpoint(tmp_path / "anchored.pt", anchored))
    task, frames, env = scene
    params = dict(model.adapt(frames))
    params["target_query"] = 5 * torch.randn(8, generator=torch.Generator().manual_seed(0))  # untrained: zero, no point
    episode = model.deploy(params, env, task, seed=7)
    images, states = torch.from_numpy(episode.frames[:-1]), torch.from_numpy(episode.states[:-1])
    with torch.no_grad():
        whole = torch.func.functional_call(model.model, params, (images, states)).actions.numpy()
    np.testing.assert_allclose(np.clip(whole, -1, 1), episode.actions, atol=1e-5)
    elsewhere = model.deploy(params, env, task, seed=8)  # another arrangement
    act = model.actor(params)
    act({"image": elsewhere.frames[0], "state": elsewhere.states[0]})  # this actor's episode began there
    assert not np.allclose(act({"image": episode.frames[9], "state": episode.states[9]}), episode.actions[9])


def test_an_action_gain_multiplies_the_deployed_action_and_travels_with_the_checkpoint(
        tiny_checkpoint: Path, model: Rollout, scene, tmp_path: Path) -> None:
    """oneshot-set-gain writes a copy whose deployment multiplies the policy's action (before the clip); the weights
    and the adaptation are unchanged, and bad gains or an existing output are refused."""
    task, frames, env = scene
    params = model.adapt(frames)
    obs, _ = env.reset(seed=7, options={"task": task})
    assert model.action_gain == 1.0
    np.testing.assert_allclose(model.actor(params, 2.0)(obs), 2 * model.actor(params)(obs), rtol=1e-6)
    out = tmp_path / "gain2.pt"
    result = subprocess.run([str(BIN / "oneshot-set-gain"), str(tiny_checkpoint), "--gain", "2", "--out", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "action gain 2 (was 1)" in result.stdout, result.stderr
    gained = Rollout.from_checkpoint(out)
    assert gained.action_gain == 2.0
    assert all(torch.equal(a, b) for a, b in zip(read_checkpoint(out)["learner"].values(), read_checkpoint(tiny_checkpoint)["learner"].values()))
    episode = gained.deploy(gained.adapt(frames), env, task, seed=7, keep_frames=False)
    same = run_episode(env, model.actor(params, 2.0), task, seed=7, keep_frames=False)
    as_trained = model.deploy(params, env, task, seed=7, keep_frames=False)
    assert np.array_equal(episode.actions, same.actions) and not np.array_equal(episode.actions, as_trained.actions)
    assert Rollout.from_checkpoint(out, action_gain=1.0).action_gain == 1.0  # an explicit gain wins over the file's
    again = subprocess.run([str(BIN / "oneshot-set-gain"), str(tiny_checkpoint), "--gain", "2", "--out", str(out)],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "exists" in again.stderr
    for bad in ("0", "nan", "-1"):
        refused = subprocess.run([str(BIN / "oneshot-set-gain"), str(tiny_checkpoint), "--gain", bad, "--out", str(tmp_path / "bad.pt")],
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2 and "finite number > 0" in refused.stderr and not (tmp_path / "bad.pt").exists()
    with pytest.raises(ValueError, match="finite number > 0"):
        Rollout.from_checkpoint(tiny_checkpoint, action_gain=float("inf"))


def test_rollout_command_writes_the_side_by_side_video(tiny_checkpoint: Path, reference: Path, tmp_path: Path) -> None:
    record = rollout(RolloutConfig(checkpoint=str(tiny_checkpoint), dataset=str(reference), task="1", split="train", out=str(tmp_path)))
    assert isinstance(record["success"], bool) and record["steps"] == EPISODE_LENGTH and record["seed"] >= 1 << 62
    assert record["action_gain"] == 1.0
    # an ensemble of the policy with itself acts as the policy alone; one from another env is refused
    pair = rollout(RolloutConfig(checkpoint=str(tiny_checkpoint), ensemble_with=[str(tiny_checkpoint)], dataset=str(reference),
                                 task="1", split="train", out=str(tmp_path / "pair")))
    assert [pair[k] for k in ("success", "steps", "first_success_step", "seed")] == [record[k] for k in ("success", "steps", "first_success_step", "seed")]
    assert set_action_gain(tiny_checkpoint, 2.0, tmp_path / "gained.pt") == 1.0  # each member's own gain is recorded
    mixed_gains = rollout(RolloutConfig(checkpoint=str(tiny_checkpoint), ensemble_with=[str(tmp_path / "gained.pt")],
                                        dataset=str(reference), task="1", split="train", out=str(tmp_path / "gains")))
    assert mixed_gains["action_gain"] == [1.0, 2.0] and mixed_gains["inner_steps"] == [record["inner_steps"]] * 2
    assert np.array_equal(read_video(tmp_path / "pair" / "rollout.mp4"), read_video(tmp_path / "rollout.mp4"))  # the same motion
    stock = write_tiny_checkpoint(tmp_path / "stock.pt", env={**TINY_ENV, "robot_visuals": "stock"})
    with pytest.raises(ValueError, match="ensemble_with: every checkpoint must be trained in the env"):
        rollout(RolloutConfig(checkpoint=str(tiny_checkpoint), ensemble_with=[str(stock)], dataset=str(reference), task="1",
                              split="train", out=str(tmp_path / "mixed")))
    assert read_video(tmp_path / "rollout.mp4").shape[0] == EPISODE_LENGTH + 1
    with pytest.raises(ValueError, match="the robot's scene needs a task"):
        rollout(RolloutConfig(checkpoint=str(tiny_checkpoint), video=str(tmp_path / "rollout.mp4"), out=str(tmp_path)))
