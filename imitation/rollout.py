"""Test time: adapt a meta-learned policy from one video, then let it act closed-loop in the simulator.

    rollout = Rollout.from_checkpoint("runs/reach/last.pt")    # the checkpoint alone rebuilds policy and env
    params = rollout.adapt("person.mp4")                       # or frames (T, H, W, 3) uint8: video only
    env = rollout.make_env(split="test")
    episode = rollout.deploy(params, env, task, seed=123)      # same task, a new arrangement
    episode.success, episode.frames                            # (T+1, H, W, 3): the robot camera

Adaptation sees frames only: the video pass gets a zeroed robot state and no targets (`Policy.video_inputs`),
exactly as in meta-training. `adapt_on_demo` is the MIL reference instead: the same inner update (learning
rates, steps, clip) with the behaviour-cloning loss on one robot demo *with* actions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import gymnasium as gym
import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

import envs
from demos.collect import Actor, Driver
from demos.export import enlarge, find_task
from demos.format import read_manifest
from demos.shards import open_shard, read_episode, resample_indices, with_depth_channel
from envs.tasks import FAMILY_CLASSES
from imitation.bc import EFFECTOR_POSITION, BehaviourCloningLoss
from imitation.checkpoint import CheckpointInfo, check_action_gain, load_checkpoint
from imitation.maml import MetaLearner, Params
from imitation.video import MIN_LENGTH_FRACTION, fit_frames, prepare_video, read_video
from imitation.video_conditioned import VideoConditionedLearner



@dataclass
class Episode:
    """One closed-loop episode: what the robot saw and did, and whether it succeeded (the env's own rule)."""

    task: dict  # TaskSpec.to_dict()
    seed: int  # the reset seed: it fixes the arrangement
    success: bool  # info["is_success"] after the last step, as for the collected demos
    steps: int
    first_success_step: int | None  # 1-based step at which is_success first held, None if never
    chosen_object: int  # the candidate object it went for, at the end (info["chosen_object"]; target or distractor)
    states: np.ndarray  # float32 (steps + 1, 11)
    actions: np.ndarray  # float32 (steps, 4)
    frames: np.ndarray | None  # uint8 (steps + 1, H, W, 3), None when not kept


def run_episode(env: gym.Env, act: Actor, task: envs.TaskSpec | dict, seed: int, keep_frames: bool = True) -> Episode:
    """Reset `env` to `task` with `seed` and step `act` until the time limit."""
    obs, info = env.reset(seed=seed, options={"task": task})
    frames, states, actions = [obs["image"]], [obs["state"]], []
    first_success, done = None, False
    while not done:
        action = np.clip(np.asarray(act(obs), dtype=np.float32), -1.0, 1.0)
        obs, _, terminated, truncated, info = env.step(action)
        done = terminated or truncated
        actions.append(action)
        states.append(obs["state"])
        if keep_frames:
            frames.append(obs["image"])
        if first_success is None and info["is_success"]:
            first_success = len(actions)
    return Episode(task=env.unwrapped.task.to_dict(), seed=seed, success=bool(info["is_success"]), steps=len(actions),
                   first_success_step=first_success, chosen_object=int(info["chosen_object"]),
                   states=np.stack(states).astype(np.float32), actions=np.stack(actions),
                   frames=np.stack(frames) if keep_frames else None)


def policy_image(obs: dict[str, np.ndarray], depth: bool) -> np.ndarray:
    """The image a policy reads from one observation: the camera's RGB, and with `depth` (PolicyConfig.query_depth)
    its depth levels as a fourth channel (an env made with depth=true: Rollout.make_env does for such a model)."""
    if not depth:
        return np.ascontiguousarray(obs["image"])
    if "depth" not in obs:
        raise ValueError("this policy reads the camera's depth, and the observation has none: make the env with "
                         "depth=true (Rollout.make_env does)")
    return with_depth_channel(obs["image"], obs["depth"])


def expert_actor(env: gym.Env) -> Actor:
    """The scripted expert (privileged: it knows the target); an upper reference for the environment itself."""
    return lambda obs: env.unwrapped.expert_action()


def require_one_env(rollouts: list["Rollout"], name: str) -> None:
    """An ensemble's policies act on one observation: refuse checkpoints trained in different envs."""
    if any(r.info.env != rollouts[0].info.env for r in rollouts):
        raise ValueError(f"{name}: every checkpoint must be trained in the env of the first; these were trained in "
                         "different envs (image size, visuals), so they cannot act on the same observation")


def mean_actor(actors: list[Actor]) -> Actor:
    """The mean of several policies' actions on each observation (an ensemble); one actor is returned as it is."""
    if len(actors) == 1:
        return actors[0]
    return lambda obs: np.mean([np.asarray(act(obs), dtype=np.float32) for act in actors], axis=0, dtype=np.float32)


def random_actor(rng: np.random.Generator) -> Actor:
    return lambda obs: rng.uniform(-1.0, 1.0, size=envs.ACTION_DIM).astype(np.float32)


class Rollout:
    """A checkpoint's policy at test time: adaptation from a video (or a robot demo) and closed-loop deployment."""

    def __init__(self, learner: MetaLearner, info: CheckpointInfo, inner_steps: int | None = None,
                 min_video_fraction: float = MIN_LENGTH_FRACTION, action_gain: float | None = None) -> None:
        self.learner = learner.eval()
        self.info = info
        self.inner_steps = learner.cfg.inner_steps if inner_steps is None else inner_steps
        self.action_gain = info.action_gain if action_gain is None else action_gain  # the checkpoint's own by default
        check_action_gain(self.action_gain)
        self.min_video_fraction = min_video_fraction
        # Training resampled each video to the demo length (the family's episode length) and then kept every
        # frame_stride-th frame of video and demo; adaptation does the same.
        self.demo_length = FAMILY_CLASSES[info.env["family"]].max_steps
        self.frame_stride = int(info.train_config.get("loader", {}).get("frame_stride", 1))
        if -(-self.demo_length // self.frame_stride) != info.episode_length:
            raise ValueError(f"checkpoint: episode_length {info.episode_length} is not the {info.env['family']} demo length "
                             f"{self.demo_length} with frame stride {self.frame_stride}")

    @classmethod
    def from_checkpoint(cls, path: str | Path, inner_steps: int | None = None, action_gain: float | None = None) -> "Rollout":
        learner, info, _ = load_checkpoint(path, optimizer=False)
        return cls(learner, info, inner_steps, action_gain=action_gain)

    @property
    def model(self) -> nn.Module:
        return self.learner.model

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.info.model.policy.image_size)

    @property
    def episode_length(self) -> int:
        """Frames per video in meta-training: every adaptation video is brought to it."""
        return self.info.episode_length

    # ----- adaptation -----------------------------------------------------------------------------------
    def prepare(self, video: np.ndarray | str | Path) -> np.ndarray:
        """A video file or uint8 frames (T, H, W, 3) -> (episode_length, *image_size, 3), as trained (VideoError)."""
        name = str(video) if isinstance(video, (str, Path)) else "video"
        frames = read_video(video) if isinstance(video, (str, Path)) else video
        return prepare_video(frames, self.image_size, self.demo_length, self.frame_stride, self.min_video_fraction, name)

    def adapt(self, video: np.ndarray | str | Path, inner_steps: int | None = None) -> Params:
        """Parameters adapted by the learned loss on the video alone (no actions, no robot state)."""
        frames = torch.from_numpy(self.prepare(video))
        return self._adapter(self.learner.inner_loss, inner_steps).adapt(self.model.video_inputs(frames))

    def adapt_on_demo(self, images: np.ndarray, states: np.ndarray, actions: np.ndarray, inner_steps: int | None = None) -> Params:
        """The MIL setting: the same inner update, on the behaviour-cloning loss of one robot demo with actions.
        `images` (T, H, W, 3), or 4 with the depth levels (`Demo.policy_images`), which a policy without depth
        ignores."""
        if isinstance(self.learner, VideoConditionedLearner):
            raise ValueError("adaptation on a robot demo needs a gradient-adapted (DAML) checkpoint; this one is the "
                             "black-box video encoder (adaptation_loss.kind=encoder), which takes no inner step")
        k = self.frame_stride
        channels = self.info.model.policy.image_channels
        if images.shape[-1] < channels:
            raise ValueError("this policy reads the camera's depth, and the demo's images have none: record the demo "
                             "in an env with depth=true and give its depth levels as a fourth channel")
        images = fit_frames(np.asarray(images[::k, ..., :channels], dtype=np.uint8), self.image_size)
        inputs = (torch.from_numpy(images), torch.as_tensor(states[::k], dtype=torch.float32))
        bc_loss = BehaviourCloningLoss(self.info.model.bc)
        targets = (torch.as_tensor(actions[::k], dtype=torch.float32),
                   torch.as_tensor(states[-1, EFFECTOR_POSITION], dtype=torch.float32))
        return self._adapter(bc_loss, inner_steps).adapt(inputs, targets)

    def initial_params(self) -> Params:
        """The meta-learned parameters themselves (no adaptation)."""
        return {name: p.detach() for name, p in self.learner.params().items()}

    def _adapter(self, inner_loss: Callable, inner_steps: int | None) -> MetaLearner:
        """A MetaLearner over the same model with another inner loss or step count, and the same inner lrs and clip.

        The learned inner lrs (if any) are copied in as fixed values: nothing here is meta-trained.
        """
        steps = self.inner_steps if inner_steps is None else inner_steps
        cfg = replace(self.learner.cfg, inner_steps=steps, learn_inner_lr=False)
        adapter = type(self.learner)(self.model, inner_loss, self.learner.outer_loss, cfg)
        adapter.inner_lrs.copy_(self.learner.inner_lrs.detach())
        return adapter

    # ----- deployment -----------------------------------------------------------------------------------
    def make_env(self, split: str = "test") -> gym.Env:
        """The environment the checkpoint was trained in (family, image size, visuals, renderer), tasks from `split`."""
        keywords = {**self.info.env, "split": split}
        return envs.make(keywords.pop("family"), **keywords)

    def actor(self, params: Params, action_gain: float | None = None) -> Actor:
        """The policy with `params` as a function of one observation, for one episode: a policy with a query anchor
        (policy.query_anchor) sees the episode's first observation beside each one, as in training. Its action is
        multiplied by `action_gain` (default: the rollout's, the checkpoint's own; `set_action_gain` says why)."""
        gain = self.action_gain if action_gain is None else action_gain
        check_action_gain(gain)
        first: list[tuple[Tensor, Tensor]] = []

        def act(obs: dict[str, np.ndarray]) -> np.ndarray:
            image = torch.from_numpy(policy_image(obs, self.info.model.policy.query_depth))[None]
            state = torch.from_numpy(np.asarray(obs["state"], dtype=np.float32))[None]
            if self.info.model.policy.query_anchor:
                if not first:
                    first.append((image, state))
                image, state = torch.cat([first[0][0], image]), torch.cat([first[0][1], state])
            with torch.no_grad():
                return gain * functional_call(self.model, params, (image, state)).actions[-1].numpy()
        return act

    def deploy(self, params: Params, env: gym.Env, task: envs.TaskSpec | dict, seed: int, keep_frames: bool = True) -> Episode:
        """Run the policy with `params` closed-loop on `task` in the arrangement drawn from `seed`."""
        return run_episode(env, self.actor(params), task, seed, keep_frames)


def video_driver(checkpoint: str, env: dict) -> Driver:
    """The driver of driven demos (`demos.collect.DriverFactory`): video -> the checkpoint's policy adapted on it.

    `env` (the collection's `EnvConfig` as a dict) must be the env the checkpoint was trained in: the policy would
    otherwise see other images. One torch thread: collection runs one worker process per core.
    """
    rollout = Rollout.from_checkpoint(checkpoint)
    trained = {k: rollout.info.env.get(k) for k in env}
    if trained != env:
        raise ValueError(f"driver={checkpoint} was trained in the env {trained}, the collection is in {env}")
    torch.set_num_threads(1)
    return lambda frames: rollout.actor(rollout.adapt(frames))


# ----- a task from a dataset ---------------------------------------------------------------------------------
@dataclass
class DatasetTask:
    """One task of a dataset split: its spec, a human video and a robot demo (for the MIL reference)."""

    split: str
    id: str
    spec: dict
    video: np.ndarray  # uint8 (T', H, W, 3)
    demo: tuple[np.ndarray, np.ndarray, np.ndarray]  # images, states, actions
    source: dict  # where the video and demo come from, for the results


def load_dataset_task(root: str | Path, task: str, split: str | None = "test", video: int = 0, demo: int = 0) -> DatasetTask:
    """A task by id or index within `split` (see `demos.export.find_task`), with video `video` and demo `demo`."""
    root = Path(root)
    split, entry = find_task(read_manifest(root), task, split)
    with open_shard(root / entry["shard"]) as f:
        (frames,) = read_episode(f, entry["id"], "videos", video)
        images, states, actions = read_episode(f, entry["id"], "demos", demo)
    source = {"source": "dataset", "dataset": str(root), "split": split, "task_id": entry["id"], "video": video, "demo": demo,
              "frames": int(len(frames))}
    return DatasetTask(split, entry["id"], entry["spec"], frames, (images, states, actions), source)


# ----- for people to watch -----------------------------------------------------------------------------------
GAP = 4  # pixels between the two panels
CAPTION_H = 20


def side_by_side(watched: np.ndarray, acting: np.ndarray, success: bool, height: int = 256) -> np.ndarray:
    """Frames (T, H, 2W + GAP, 3): the video watched (resampled to the episode's length) | the robot acting.

    Both panels are enlarged by an integer factor to about `height` pixels; the right panel's caption gives the
    outcome (green: success, red: failure).
    """
    watched = watched[resample_indices(len(watched), len(acting))]
    scale = max(1, height // acting.shape[1])
    left = enlarge(fit_frames(watched, acting.shape[1:3]), scale)
    right = enlarge(acting, scale)
    gap = np.full((len(acting), left.shape[1], GAP, 3), 255, np.uint8)
    frames = np.ascontiguousarray(np.concatenate([left, gap, right], axis=2))
    colour = (90, 230, 90) if success else (255, 90, 90)
    frames[:, :CAPTION_H] //= 3  # darken a strip behind the captions so they read on any background
    for frame in frames:
        cv2.putText(frame, "video watched", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
        cv2.putText(frame, "robot: " + ("success" if success else "failure"), (left.shape[2] + GAP + 4, 14),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)
    return frames
