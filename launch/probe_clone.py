"""Diagnostic (not a test): can a family's scripted expert be cloned from the true state, and how precisely must a
policy know where things are?

    python -m launch.probe_clone --family push                       # 200 episodes to fit, 40 to act (~8 minutes)
    python -m launch.probe_clone --family push --noise 0 0.01 0.02   # position errors of 1 and 2 cm too

Apart from vision and the video: an MLP is given the privileged state (the effector's position and gripper opening,
the commanded position, the target's position and, where the family has one, the goal's or the target container's)
and fit to the expert's xyz actions on `--fit-episodes` expert episodes. Those execute the expert's action plus
Gaussian noise (`--demo-noise`, as `oneshot-collect demo_noise`) and record the clean one. Then the MLP acts in
closed loop, on `--test-episodes` other episodes (train-split tasks, other seeds), once per `--noise` level: a
Gaussian error of that standard deviation (metres) is added at every step to each x and y it is given of the target
and of the goal or container. It prints the held-out action RMSE beside the expert's action std, and the
closed-loop success at each level. A family whose clone fails from the true state cannot be learned from pixels;
the success under noise says how precisely a vision policy must locate the objects.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

import envs
from demos.collect import with_dart_noise
from demos.seeds import split_tasks
from envs.scene import container_name

SEED_BASE = 5000  # episode seeds of the fit; the closed-loop episodes use SEED_BASE + 4000 + i
TARGET_XY = slice(7, 9)  # where the target's x, y sit in the privileged state
PLACE_XY = slice(10, 12)  # and the goal's (or the target container's)


def privileged_state(env: gym.Env, obs: dict) -> np.ndarray:
    """[effector xyz, gripper, commanded xyz, target xyz, goal or target container xy (push, pick_place)]."""
    view = env.unwrapped.privileged_view()
    place = []
    if view.arrangement.goal is not None:
        place = list(view.arrangement.goal)
    elif view.task.target_container >= 0:
        place = list(view.world.position(container_name(view.task.target_container))[:2])
    return np.array([*view.ee, obs["state"][3], *env.unwrapped.robot.target, *view.target_position, *place],
                    dtype=np.float32)


def expert_episodes(env: gym.Env, tasks: list[envs.TaskSpec], demo_noise: float) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """Per episode (one per task): privileged states and the expert's clean xyz actions; and how many succeeded."""
    states, actions, successes = [], [], 0
    for i, task in enumerate(tasks):
        obs, _ = env.reset(seed=SEED_BASE + i, options={"task": task})
        perturb = np.random.default_rng(SEED_BASE + i)
        episode_states, episode_actions = [], []
        done = False
        while not done:
            action = env.unwrapped.expert_action()
            episode_states.append(privileged_state(env, obs))
            episode_actions.append(action[:3])
            obs, _, terminated, truncated, info = env.step(with_dart_noise(action, perturb, demo_noise))
            done = terminated or truncated
        states.append(np.stack(episode_states))
        actions.append(np.stack(episode_actions).astype(np.float32))
        successes += bool(info["is_success"])
    return states, actions, successes


class Clone(torch.nn.Module):
    """An MLP on the standardised privileged state."""

    def __init__(self, states: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", states.mean(0))
        self.register_buffer("std", states.std(0) + 1e-6)
        self.net = torch.nn.Sequential(torch.nn.Linear(states.shape[1], 256), torch.nn.ReLU(),
                                       torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 3))

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        return self.net((states - self.mean) / self.std)


def fit(states: np.ndarray, actions: np.ndarray, steps: int, seed: int) -> Clone:
    torch.manual_seed(seed)
    x, y = torch.from_numpy(states), torch.from_numpy(actions)
    clone = Clone(x)
    optimizer = torch.optim.Adam(clone.parameters(), lr=1e-3)
    for _ in range(steps):
        batch = torch.randint(0, len(x), (256,))
        loss = ((clone(x[batch]) - y[batch]) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return clone


def closed_loop_success(env: gym.Env, clone: Clone, tasks: list[envs.TaskSpec], noise: float) -> int:
    """Episodes in which the clone's xyz actions (the expert's gripper command) achieve the task."""
    errors = np.random.default_rng(1)
    successes = 0
    for i, task in enumerate(tasks):
        obs, _ = env.reset(seed=SEED_BASE + 4000 + i, options={"task": task})
        done = False
        while not done:
            state = privileged_state(env, obs)
            state[TARGET_XY] += errors.normal(0.0, noise, 2)
            state[PLACE_XY] += errors.normal(0.0, noise, len(state[PLACE_XY]))
            with torch.no_grad():
                xyz = clone(torch.from_numpy(state)).numpy()
            action = env.unwrapped.expert_action()
            action[:3] = np.clip(xyz, -1.0, 1.0)
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
        successes += bool(info["is_success"])
    return successes


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="push", choices=list(envs.ENV_IDS), help="task family (default push)")
    parser.add_argument("--fit-episodes", type=int, default=200, help="expert episodes to fit on (default 200)")
    parser.add_argument("--test-episodes", type=int, default=40, help="closed-loop episodes per noise level (default 40)")
    parser.add_argument("--demo-noise", type=float, default=0.1, help="executed-action noise of the fit episodes (default 0.1)")
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0],
                        help="position error std(s) in metres for the closed loop (default 0)")
    parser.add_argument("--steps", type=int, default=6000, help="Adam steps of the fit, batch 256 (default 6000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if min(args.fit_episodes, args.test_episodes, args.steps) < 1:
        parser.error("--fit-episodes, --test-episodes and --steps must be at least 1")
    if args.fit_episodes < 2:
        parser.error("--fit-episodes must be at least 2: one episode is fit on, one held out")
    if min(args.noise) < 0 or args.demo_noise < 0:
        parser.error("--noise and --demo-noise are standard deviations: they cannot be negative")
    return args


@dataclass(frozen=True)
class CloneReport:
    """What the probe measured (main prints it)."""

    expert_wins: int  # fit episodes the noisy expert succeeded in
    rmse: np.ndarray  # held-out xyz action RMSE of the clone
    action_std: np.ndarray  # the expert's xyz action std: the RMSE's yardstick
    fit_on: int  # episodes fit on (the rest of --fit-episodes is held out for the RMSE)
    closed_loop: dict[float, int]  # position error std (m) -> closed-loop successes of --test-episodes


def probe(args: argparse.Namespace) -> CloneReport:
    """Fit the clone on expert episodes, measure its held-out RMSE, then let it act at each position-error level."""
    env = envs.make(args.family, split="train", image_size=32)
    try:
        tasks = split_tasks(args.seed, args.family, "train", args.fit_episodes + args.test_episodes)
        held_out = max(1, args.fit_episodes // 10)  # episodes kept out of the fit for the RMSE
        states, actions, expert_wins = expert_episodes(env, tasks[:args.fit_episodes], args.demo_noise)
        fit_on = args.fit_episodes - held_out
        clone = fit(np.concatenate(states[:fit_on]), np.concatenate(actions[:fit_on]), args.steps, args.seed)
        test_states, test_actions = np.concatenate(states[fit_on:]), np.concatenate(actions[fit_on:])
        with torch.no_grad():
            rmse = ((clone(torch.from_numpy(test_states)) - torch.from_numpy(test_actions)) ** 2).mean(0).sqrt()
        closed_loop = {noise: closed_loop_success(env, clone, tasks[args.fit_episodes:], noise) for noise in args.noise}
    finally:
        env.close()
    return CloneReport(expert_wins, rmse.numpy(), np.concatenate(actions).std(0), fit_on, closed_loop)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    report = probe(args)
    print(f"{args.family}: expert with demo noise {args.demo_noise}: "
          f"{report.expert_wins}/{args.fit_episodes} episodes succeed")
    print(f"held-out xyz RMSE {np.round(report.rmse, 3)} (fit on {report.fit_on} episodes, "
          f"{args.fit_episodes - report.fit_on} held out); the expert's action std {np.round(report.action_std, 3)}")
    for noise, wins in report.closed_loop.items():
        print(f"closed loop, position error std {noise:.3f} m: {wins}/{args.test_episodes} succeed")
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
