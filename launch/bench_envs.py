"""Environment benchmark: rendering, stepping, experts and human videos on this machine, as ratios.

    python -m launch.bench_envs                 # the full run (100 expert episodes per family)
    python -m launch.bench_envs --episodes 10   # a quick look

Prints: frames/s of low-poly vs stock robot visuals at 64x64 (target ratio >= 8x) and what the depth adds to a
frame, env steps/s with rendering,
expert success rate and demos per minute per core for each family, human videos per minute, and the
throughput of 2 processes vs 1 (target >= 1.8x).
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

import envs
from envs.core import ROBOT_CAMERA


def render_fps(robot_visuals: str, frames: int, size: int, depth: bool = False) -> float:
    env = envs.make("reach", robot_visuals=robot_visuals, image_size=size)
    env.reset(seed=0)
    world = env.unwrapped.world
    world.capture(ROBOT_CAMERA, size, size, depth=depth)
    start = time.perf_counter()
    for _ in range(frames):
        world.capture(ROBOT_CAMERA, size, size, depth=depth)
    env.close()
    return frames / (time.perf_counter() - start)


def expert_episodes(family: str, seeds: list[int]) -> tuple[int, int, float]:
    """(successes, steps, seconds) of expert episodes, frames rendered every step."""
    env = envs.make(family)
    successes = steps = 0
    start = time.perf_counter()
    for seed in seeds:
        env.reset(seed=seed)
        done = False
        while not done:
            _, _, terminated, truncated, info = env.step(env.unwrapped.expert_action())
            steps += 1
            done = terminated or truncated
        successes += bool(info["is_success"])
    seconds = time.perf_counter() - start
    env.close()
    return successes, steps, seconds


def human_videos(family: str, count: int) -> tuple[int, float]:
    env = envs.make(family)
    env.reset(seed=0)
    achieved = 0
    start = time.perf_counter()
    for seed in range(count):
        achieved += bool(env.unwrapped.render_human_video(seed=seed)[1]["task_achieved"])
    seconds = time.perf_counter() - start
    env.close()
    return achieved, seconds


def parallel_speedup(family: str, episodes_per_worker: int) -> tuple[float, float]:
    """Episodes/s with 1 process and with 2 processes each running the same number of episodes."""
    seeds = list(range(5000, 5000 + episodes_per_worker))
    with ProcessPoolExecutor(1) as pool:
        pool.submit(expert_episodes, family, seeds[:1]).result()  # warm the worker (imports, URDF cache)
        start = time.perf_counter()
        pool.submit(expert_episodes, family, seeds).result()
        one = episodes_per_worker / (time.perf_counter() - start)
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(expert_episodes, [family] * 2, [seeds[:1]] * 2))
        start = time.perf_counter()
        list(pool.map(expert_episodes, [family] * 2, [seeds, [s + 10_000 for s in seeds]]))
        two = 2 * episodes_per_worker / (time.perf_counter() - start)
    return one, two


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=100, help="expert episodes per family (default 100)")
    parser.add_argument("--frames", type=int, default=300, help="frames per renderer measurement")
    parser.add_argument("--videos", type=int, default=10, help="human videos per family")
    parser.add_argument("--families", nargs="+", default=list(envs.ENV_IDS), choices=list(envs.ENV_IDS), help="families to run")
    parser.add_argument("--skip-render", action="store_true", help="skip the low-poly vs stock measurement")
    args = parser.parse_args()

    if not args.skip_render:
        low, stock = render_fps("lowpoly", args.frames, 64), render_fps("stock", max(args.frames // 5, 20), 64)
        print(f"render 64x64: low-poly {low:.0f} frames/s, stock {stock:.0f} frames/s, ratio {low / stock:.1f}x (target >= 8x)")
        deep = render_fps("lowpoly", args.frames, 64, depth=True)
        print(f"render 64x64 low-poly with the depth in metres (env depth=True): {deep:.0f} frames/s, "
              f"{low / deep:.2f}x the time of RGB alone")

    for family in args.families:
        ok, steps, seconds = expert_episodes(family, list(range(args.episodes)))
        print(f"{family:>10}: expert success {ok}/{args.episodes} (seeds 0-{args.episodes - 1}); "
              f"{steps / seconds:.0f} env steps/s with rendering; {60 * args.episodes / seconds:.0f} demos/min/core")
        achieved, seconds = human_videos(family, args.videos)
        print(f"{'':>10}  human videos: {60 * args.videos / seconds:.0f}/min, task achieved in {achieved}/{args.videos} (seeds 0-{args.videos - 1})")

    one, two = parallel_speedup("push", max(args.episodes // 10, 4))
    print(f"push episodes/s: 1 process {one:.2f}, 2 processes {two:.2f}, speed-up {two / one:.2f}x (target >= 1.8x)")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
