"""Diagnostic (not a test): would the robot camera's depth under a checkpoint's adapted target query locate the target
better than the query's 2-D point does?

    python -m launch.probe_depth --checkpoint checkpoints/pick_place-daml.pt --data data/pp3d   # 250 tasks, ~20 s

For a checkpoint with a target query and a dataset collected with env.depth=true (the same env). For every 4th task
of the split (at most `--tasks` of them), the policy adapts to the task's first video and runs over its first demo;
at each kept frame (the checkpoint's frame stride) it gives the query's soft-argmax point (u, v), and the depth
under the query's softmax gives (z, z u, z v) (imitation.policy.depth_cells: what policy.query_depth feeds the
policy). Least squares from (1, u, v, u^2, uv, v^2), and from those and (z, z u, z v), to the target's recorded
centre, fit on the first 60% of the tasks and tested on the rest, give the RMSE in x, y, z: over all frames, on the
first frames, and where the effector is within 5 cm of the target. Through a pinhole camera the point a pixel sees
is affine in (z, z u, z v), so the second fit is as good as the query is; the first cannot tell a taller object from
a nearer one along the camera's axis. Most of the frames with the effector near the target are the carry (the target
held and lifted), so each fit is made again on the approach alone (the frames before the fingers first close), where
the grasp is decided: there the 2-D point knows the height, which the table fixes for each object.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.func import functional_call

from demos.reader import PairDataset
from envs.robot import FINGER_OPEN
from imitation.layers import spatial_soft_argmax
from imitation.policy import depth_cells, map_under_query, quadratic
from imitation.rollout import Rollout

NEAR_TARGET = 0.05  # metres: frames with the effector this close to the target's centre are the grasp's
# The approach: the frames before the fingers first close (their opening, index FINGER_OPENING of the robot state,
# 1 cm or more below wide open), with the target on the table (its centre within LIFTED of its first height). The
# frames with the effector near the target are mostly the carry's, whose lifted target a 2-D point cannot place in
# height.
LIFTED = 0.01
FINGER_OPENING = 3
OPEN = 2 * FINGER_OPEN - 0.01  # metres between the fingers: 0.07
TRAIN_FRACTION = 0.6


def query_rows(rollout: Rollout, data: PairDataset, task: int) -> np.ndarray:
    """One row per kept frame of the task's first demo: (u, v), (z, z u, z v), frame, target centre, effector, finger
    opening."""
    pair = data.pair(task, 0, 0)
    params = rollout.adapt(pair.video.numpy())
    k = rollout.frame_stride
    images, states = pair.images[::k], pair.states[::k]
    channels = rollout.info.model.policy.image_channels
    with torch.no_grad():
        out = functional_call(rollout.model, params, (images[..., :channels].contiguous(), states))
    point = spatial_soft_argmax(out.query_logits[:, None], torch.ones(()))
    depth = map_under_query(depth_cells(images[..., 3].float(), out.feature_map.shape[-2:], 1.0), out.query_logits)
    frame = torch.arange(len(point), dtype=torch.float32)[:, None]
    return torch.cat([point, depth, frame, pair.target_positions[::k], states[:, :FINGER_OPENING + 1]], dim=1).numpy()


def approach_frames(target_height: np.ndarray, finger_opening: np.ndarray) -> np.ndarray:
    """(T,) of one demo -> (T,) bool: the frames before the fingers first close, with the target still on the table."""
    closed = finger_opening <= OPEN
    before_close = np.arange(len(closed)) < (closed.argmax() if closed.any() else len(closed))
    return before_close & (target_height < target_height[0] + LIFTED)


def held_out_errors(features: np.ndarray, targets: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Least squares from (1, features) to targets on the `train` rows; the errors on every row."""
    x = np.c_[np.ones(len(features)), features]
    weights, *_ = np.linalg.lstsq(x[train], targets[train], rcond=None)
    return x @ weights - targets


def rmse_cm(errors: np.ndarray) -> str:
    return ", ".join(f"{v:.2f}" for v in np.sqrt((errors ** 2).mean(0)) * 100)


def probe(checkpoint: str, data_root: str, tasks: int) -> list[str]:
    rollout = Rollout.from_checkpoint(checkpoint)
    if not rollout.info.model.policy.target_query:
        raise SystemExit(f"{checkpoint} has no target query (policy.target_query): nothing to probe")
    size = rollout.image_size[0]
    data = PairDataset(data_root, "train", image_size=size, family=rollout.info.env["family"], depth=True)
    chosen = list(range(0, len(data.tasks), 4))[:tasks]
    if len(chosen) < 5:
        raise SystemExit(f"{data_root} gives {len(chosen)} tasks (every 4th); the fit needs at least 5")
    per_task = [query_rows(rollout, data, t) for t in chosen]
    rows = np.concatenate(per_task)
    task = np.concatenate([np.full(len(r), i) for i, r in enumerate(per_task)])
    point, depth, frame, target, effector = rows[:, :2], rows[:, 2:5], rows[:, 5], rows[:, 6:9], rows[:, 9:12]
    train, test = task < TRAIN_FRACTION * len(chosen), task >= TRAIN_FRACTION * len(chosen)
    near = np.linalg.norm(effector - target, axis=1) < NEAR_TARGET
    approach = np.concatenate([approach_frames(r[:, 8], r[:, 12]) for r in per_task])
    lines = [f"{checkpoint} on {data_root}: {len(chosen)} tasks, {int(test.sum())} held-out frames; "
             "RMSE x, y, z of the target's centre (cm)"]
    for name, features in (("point", quadratic(torch.from_numpy(point)).numpy()),
                           ("point + depth", np.c_[quadratic(torch.from_numpy(point)).numpy(), depth])):
        errors = held_out_errors(features, target, train)
        first = test & (frame == 0)
        lines.append(f"{name:14s} all frames {rmse_cm(errors[test])}; first frames {rmse_cm(errors[first])}; "
                     f"effector within {NEAR_TARGET * 100:.0f} cm ({int((test & near).sum())} frames) "
                     f"{rmse_cm(errors[test & near])}")
        errors = held_out_errors(features, target, train & approach)  # a map of its own: on the table, not carried
        lines.append(f"{'':14s} the approach alone ({int((test & approach).sum())} frames) "
                     f"{rmse_cm(errors[test & approach])}; its frames with the effector within "
                     f"{NEAR_TARGET * 100:.0f} cm ({int((test & approach & near).sum())}) "
                     f"{rmse_cm(errors[test & approach & near])}")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint with a target query (file, or run folder)")
    parser.add_argument("--data", required=True, help="a dataset of the same env collected with env.depth=true")
    parser.add_argument("--tasks", type=int, default=250,
                        help="tasks probed, every 4th of the train split (default 250)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    for line in probe(args.checkpoint, args.data, args.tasks):
        print(line)
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
