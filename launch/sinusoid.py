"""Full MAML sinusoid experiment (Finn et al. 2017) through imitation.maml.MetaLearner, with the pre-trained baseline.

    python -m launch.sinusoid                       # 70k meta-iterations, 600 fixed test tasks, seed 0
    python -m launch.sinusoid --meta-iterations 5000 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from imitation.sinusoid import SinusoidConfig, run


def main() -> None:
    defaults = SinusoidConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--meta-iterations", type=int, default=defaults.meta_iterations)
    parser.add_argument("--meta-lr", type=float, default=defaults.meta_lr)
    parser.add_argument("--inner-lr", type=float, default=defaults.inner_lr)
    parser.add_argument("--test-tasks", type=int, default=defaults.test_tasks)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (the MLP is tiny)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = replace(
        defaults,
        meta_iterations=args.meta_iterations,
        meta_lr=args.meta_lr,
        inner_lr=args.inner_lr,
        test_tasks=args.test_tasks,
    )
    print(cfg)
    for seed in args.seeds:
        start = time.perf_counter()
        result = run(cfg, seed)
        maml, pretrained = result["maml"], result["pretrained"]
        print(
            f"seed {seed}: {cfg.test_tasks} test tasks, K={cfg.k_shot}, one inner step (lr {cfg.inner_lr}), "
            f"MSE on {cfg.test_points} query points per task | MAML pre {maml['pre_mse']:.3f} "
            f"post {maml['post_mse']:.3f} (x{maml['pre_mse'] / maml['post_mse']:.1f} lower) | "
            f"pre-trained pre {pretrained['pre_mse']:.3f} fine-tuned {pretrained['post_mse']:.3f} | "
            f"{time.perf_counter() - start:.0f} s",
            flush=True,
        )


if __name__ == "__main__":
    main()
