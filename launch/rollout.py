"""`oneshot-rollout`: watch one video, adapt, act; writes a side-by-side mp4 and prints success.

    oneshot-rollout checkpoint=runs/reach/last.pt dataset=data/reach task=0                 # a test task's own video
    oneshot-rollout checkpoint=runs/reach/last.pt video=person.mp4 dataset=data/reach task=0  # any video file, that task
    oneshot-rollout checkpoint=runs/reach/last.pt video=person.gif task=spec.json           # a TaskSpec.to_dict() file
    oneshot-rollout checkpoint=checkpoints/push-linear.pt ensemble_with='[checkpoints/push-daml.pt]' ...   # an ensemble

The video says what to do; the task (from a dataset, or a JSON task spec such as an episode's "task" in an
evaluation's results.json) sets up the scene the robot acts in, and judges success. The arrangement is drawn
from the evaluation seed stream (`seed`), never from a collection seed.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional

import hydra
import numpy as np
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

import envs
from demos.export import write_mp4
from demos.format import DatasetError
from imitation.evaluate import eval_seed
from imitation.rollout import Rollout, load_dataset_task, mean_actor, require_one_env, run_episode, side_by_side
from imitation.video import VideoError, read_video

log = logging.getLogger("oneshot-rollout")
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


@dataclass
class RolloutConfig:
    """One adapt-and-act episode."""

    checkpoint: str = MISSING  # checkpoint file, or a folder with last.pt
    video: Optional[str] = None  # the video to watch (mp4, avi, gif, ...); default: the dataset task's video 0
    dataset: Optional[str] = None  # dataset folder holding `task`
    task: Optional[str] = None  # with dataset: a task id or index in `split`; without: a JSON file with a task spec
    split: str = "test"  # the split of `task` in the dataset, and of the environment's objects
    seed: int = 0  # the arrangement: seed stream of oneshot-eval (task 0, trial 0 of evaluation seed `seed`)
    inner_steps: Optional[int] = None  # test-time inner steps; None: the checkpoint's own, 0: no adaptation
    action_gain: Optional[float] = None  # multiplies the policy's action; None: the checkpoint's own (oneshot-set-gain)
    # more checkpoints of the same env: each adapts on the video too, and the robot executes the mean of all the actions
    ensemble_with: List[str] = field(default_factory=list)
    out: str = MISSING  # folder for rollout.mp4 and episode.json


ConfigStore.instance().store(name="rollout_schema", node=RolloutConfig)


def task_and_video(cfg: RolloutConfig) -> tuple[envs.TaskSpec, np.ndarray, str]:
    """The task spec, the frames to watch, and where they came from."""
    if cfg.dataset:
        if cfg.task is None:
            raise ValueError("with dataset=..., give task=<id or index in the split>")
        entry = load_dataset_task(cfg.dataset, cfg.task, cfg.split)
        spec, frames, source = envs.TaskSpec.from_dict(entry.spec), entry.video, f"{cfg.dataset} task {entry.id} video 0"
    elif cfg.task:
        if not Path(cfg.task).is_file():
            raise ValueError(f"task={cfg.task}: no such file (without dataset=, task is a JSON file with a task spec)")
        spec, frames, source = envs.TaskSpec.from_dict(json.loads(Path(cfg.task).read_text())), None, ""
    else:
        raise ValueError("the robot's scene needs a task: give dataset=<folder> task=<id or index>, or task=<spec.json>")
    if cfg.video:
        frames, source = read_video(cfg.video), cfg.video
    if frames is None:
        raise ValueError("a task from a JSON file has no video: give video=<file>")
    return spec, frames, source


def rollout(cfg: RolloutConfig) -> dict:
    """Adapt on the video, act once, write the side-by-side mp4 and episode.json; returns the episode record."""
    models = [Rollout.from_checkpoint(path, cfg.inner_steps, cfg.action_gain) for path in (cfg.checkpoint, *cfg.ensemble_with)]
    require_one_env(models, "ensemble_with")
    model = models[0]
    spec, watched, source = task_and_video(cfg)
    actor = mean_actor([m.actor(m.adapt(watched)) for m in models])
    env = model.make_env(cfg.split)
    try:
        episode = run_episode(env, actor, spec, eval_seed(cfg.seed, 0, "trial", 0))
    finally:
        env.close()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_mp4(out / "rollout.mp4", side_by_side(watched, episode.frames, episode.success), fps=10.0)
    # per member for an ensemble (as oneshot-eval records it), a plain number for one checkpoint
    steps, gains = [m.inner_steps for m in models], [m.action_gain for m in models]
    record = {"config": asdict(cfg), "video": source, "task": episode.task, "seed": episode.seed, "success": episode.success,
              "steps": episode.steps, "first_success_step": episode.first_success_step,
              "inner_steps": steps if cfg.ensemble_with else steps[0], "action_gain": gains if cfg.ensemble_with else gains[0]}
    (out / "episode.json").write_text(json.dumps(record, indent=1) + "\n")
    return record


@hydra.main(config_path=str(CONF_DIR), config_name="rollout", version_base="1.3")
def main(cfg: DictConfig) -> None:
    config: RolloutConfig = OmegaConf.to_object(cfg)
    try:
        record = rollout(config)
    except (DatasetError, VideoError, ValueError, FileNotFoundError) as e:
        print(f"oneshot-rollout: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"{'success' if record['success'] else 'failure'}: task {envs.TaskSpec.from_dict(record['task']).task_id()}, "
          f"seed {record['seed']}, {record['inner_steps']} inner steps on {record['video']}")
    print(f"side-by-side video: {Path(config.out) / 'rollout.mp4'}")


if __name__ == "__main__":
    main()
