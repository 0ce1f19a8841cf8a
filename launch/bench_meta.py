"""Benchmark of the meta-learner on the default 64x64 policy: forward-only vs meta-steps, loop vs vmap, vs higher,
with the trunk frozen vs trained.

    python -m launch.bench_meta                  # CPU, 2 threads, 4 tasks, 50-frame video + 50-frame demo, meta=anil
    python -m launch.bench_meta --adapt all      # the same with full MAML (every parameter adapted)
    python -m launch.bench_meta --device cuda    # same on a GPU, also reports tasks/s
    python -m launch.bench_meta --threads 1 --cpu-time   # process CPU time: for a CPU shared with other jobs

Times are the minimum over --repeats rounds after a warm-up; each round runs the forward pass and every
variant once, in turn (all in one process, so ratios are comparable even when the load changes). Peak memory: CUDA max_memory_allocated in-process; on CPU each variant runs again in a fresh
subprocess and reports the growth of its peak resident set (VmHWM) over one meta-step. ``higher`` is a benchmark-only
dependency; ``higher_loop_fast_conv`` runs it with the conv kernels MetaLearner uses for second order on CPU, to
show how much of the difference those kernels make.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import replace
from typing import Callable

import torch

from imitation.bc import build_imitation_learner, imitation_batch
from imitation.layers import FastConvDerivatives
from imitation.maml import MetaBatch, MetaConfig, MetaLearner
from imitation.policy import GPU_POLICY, POLICY_HEAD, PolicyConfig

VARIANTS = (
    "second_order_loop", "second_order_vmap", "first_order_loop", "first_order_vmap", "frozen_trunk_loop", "higher_loop",
    "higher_loop_fast_conv",
)


def make_batch(learner: MetaLearner, tasks: int, frames: int, device: str, generator: torch.Generator) -> MetaBatch:
    h, w = learner.model.cfg.image_size
    images = lambda: torch.randint(0, 256, (tasks, frames, h, w, 3), dtype=torch.uint8, generator=generator)  # noqa: E731
    states = torch.randn(tasks, frames, 11, generator=generator)
    actions = torch.rand(tasks, frames, 4, generator=generator) * 2 - 1
    return imitation_batch(learner.model, images(), images(), states, actions).to(device)


def freeze_for(base: MetaLearner, variant: str) -> None:
    """The shared tensors a variant leaves out of meta-training: first order the learned loss; frozen_trunk the conv
    trunk (second order, as `oneshot-train frozen=[model.trunk]`)."""
    base.inner_loss.requires_grad_(not variant.startswith("first_order"))
    base.model.trunk.requires_grad_(not variant.startswith("frozen_trunk"))


def variant_learner(base: MetaLearner, variant: str) -> MetaLearner:
    """A learner sharing ``base``'s model and loss, with what the variant freezes frozen."""
    first_order = variant.startswith("first_order")
    freeze_for(base, variant)
    cfg = replace(base.cfg, first_order=first_order, task_batching=variant.rsplit("_", 1)[1])
    return MetaLearner(base.model, base.inner_loss, base.outer_loss, cfg)


def higher_step(base: MetaLearner) -> Callable[[MetaBatch], None]:
    """The same second-order meta-step (SGD inner step with element-wise clip, Adam outer) written with higher."""
    import higher

    base.inner_loss.requires_grad_(True)
    meta_opt = torch.optim.Adam(list(base.model.parameters()) + list(base.inner_loss.parameters()), base.cfg.meta_lr)
    # higher differentiates the inner loss with respect to every parameter and updates those of this optimizer
    inner_opt = torch.optim.SGD(list(base.params().values()), lr=base.cfg.inner_lr)
    clip = base.cfg.inner_grad_clip

    def clipped(grads: list) -> list:
        return [g if g is None else g.clamp(-clip, clip) for g in grads]

    def step(batch: MetaBatch) -> None:
        meta_opt.zero_grad()
        for i in range(batch.n_tasks):
            support_inputs, _, query_inputs, query_targets = batch.task(i)
            with higher.innerloop_ctx(base.model, inner_opt, copy_initial_weights=False) as (fmodel, diffopt):
                for _ in range(base.cfg.inner_steps):
                    diffopt.step(base.inner_loss(fmodel(*support_inputs)), grad_callback=clipped)
                (base.outer_loss(fmodel(*query_inputs), *query_targets) / batch.n_tasks).backward()
        meta_opt.step()

    return step


def higher_fast_conv_step(base: MetaLearner) -> Callable[[MetaBatch], None]:
    """higher's step with the conv kernels that MetaLearner uses for second order on CPU (for comparison only)."""
    step = higher_step(base)

    def fast_conv_step(batch: MetaBatch) -> None:
        with FastConvDerivatives():
            step(batch)

    return fast_conv_step


def step_fn(base: MetaLearner, variant: str) -> Callable[[MetaBatch], object]:
    if variant == "higher_loop":
        return higher_step(base)
    if variant == "higher_loop_fast_conv":
        return higher_fast_conv_step(base)
    return variant_learner(base, variant).meta_step


def variant_run(base: MetaLearner, variant: str, batch: MetaBatch) -> Callable[[], None]:
    """One step of ``variant``; what it freezes of the shared model and loss is frozen before each step."""
    step = step_fn(base, variant)

    def run() -> None:
        freeze_for(base, variant)
        step(batch)

    return run


def min_time(
    fn: Callable[[], object], repeats: int, device: str, clock: Callable[[], float] = time.perf_counter,
    warm_up: bool = True,
) -> float:
    if warm_up:
        fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = clock()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(clock() - start)
    return min(times)


def interleaved_min_times(
    runs: dict[str, Callable[[], object]], repeats: int, device: str, clock: Callable[[], float]
) -> dict[str, float]:
    """Minimum time of each run over ``repeats`` rounds; each round runs every one of them once, in turn, so
    that a change of load on a shared machine falls on all of them rather than on whichever ran then."""
    for fn in runs.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            times[name].append(min_time(fn, 1, device, clock, warm_up=False))
    return {name: min(values) for name, values in times.items()}


def setup(args: argparse.Namespace) -> tuple[MetaLearner, MetaBatch]:
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    policy_cfg = GPU_POLICY if args.policy == "gpu" else PolicyConfig()
    meta_cfg = MetaConfig(adapt_only=POLICY_HEAD if args.adapt == "head" else ())  # inner lr: the speed does not depend on it
    learner = build_imitation_learner(policy_cfg, meta_cfg=meta_cfg, generator=generator).to(args.device)
    return learner, make_batch(learner, args.tasks, args.frames, args.device, generator)


def peak_memory_mib(args: argparse.Namespace, variant: str) -> float:
    """Peak memory of one meta-step of ``variant``: CUDA allocator peak, or maxrss growth in a fresh process."""
    if args.device == "cuda":
        base, batch = setup(args)
        step = step_fn(base, variant)
        step(batch)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step(batch)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    cmd = [sys.executable, "-m", "launch.bench_meta", "--memory-of", variant, "--threads", str(args.threads)]
    cmd += ["--tasks", str(args.tasks), "--frames", str(args.frames), "--policy", args.policy, "--adapt", args.adapt]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)["peak_mib"]


def peak_rss_mib() -> float:
    """VmHWM, the peak resident set of this process (unlike ru_maxrss, not inherited across exec)."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def rss_growth_of_one_step(args: argparse.Namespace) -> None:
    base, batch = setup(args)
    step = step_fn(base, args.memory_of)
    before = peak_rss_mib()
    step(batch)
    print(json.dumps({"peak_mib": peak_rss_mib() - before}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--tasks", type=int, default=4, help="tasks per meta-batch")
    parser.add_argument("--frames", type=int, default=50, help="frames per video and per demo")
    parser.add_argument("--policy", default="default", choices=("default", "gpu"), help="PolicyConfig or GPU_POLICY")
    parser.add_argument(
        "--adapt", default="head", choices=("all", "head"),
        help="parameters the inner step adapts: the layers after the conv trunk (ANIL: meta=anil, the training "
        "default) or all of them (full MAML: meta=maml)",
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument(
        "--cpu-time", action="store_true",
        help="time by process CPU time (time.process_time) instead of wall time: robust to other jobs sharing the "
        "cores; use with --threads 1 (with more threads it adds up the threads' time, spin-waits included)",
    )
    parser.add_argument("--memory-of", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_of:
        return rss_growth_of_one_step(args)
    if args.cpu_time and args.device == "cuda":
        parser.error("--cpu-time is for CPU runs")
    clock = time.process_time if args.cpu_time else time.perf_counter

    base, batch = setup(args)
    n_params = sum(p.numel() for p in base.model.parameters())
    print(f"device={args.device} threads={torch.get_num_threads()} torch={torch.__version__} policy={n_params} params")
    h, w = base.model.cfg.image_size
    print(f"inner step adapts: {args.adapt} ({len(base.param_names)} of {len(list(base.model.parameters()))} tensors)")
    print(f"batch: {args.tasks} tasks x ({args.frames}-frame video + {args.frames}-frame demo), {h}x{w} uint8")
    print(f"times: minimum of {args.repeats} interleaved rounds, {'process CPU time' if args.cpu_time else 'wall time'}")

    def forward() -> None:
        base.model(*batch.support_inputs)
        base.model(*batch.query_inputs)

    def no_grad_forward() -> None:
        with torch.no_grad():
            forward()

    runs: dict[str, Callable[[], object]] = {"forward": no_grad_forward, "forward_grad": forward}
    for variant in VARIANTS:
        runs[variant] = variant_run(base, variant, batch)
    times = interleaved_min_times(runs, args.repeats, args.device, clock)
    fwd, fwd_grad = times.pop("forward"), times.pop("forward_grad")
    print(f"forward only (video + demo, no_grad): {fwd:.4f} s   with autograd recording: {fwd_grad:.4f} s")
    print(f"{'variant':<20}{'s/step':>9}{'steps/s':>9}{'tasks/s':>9}{'x fwd':>7}{'peak MiB':>10}")
    for variant, seconds in times.items():
        memory = "-" if args.no_memory else f"{peak_memory_mib(args, variant):.0f}"
        print(
            f"{variant:<20}{seconds:>9.4f}{1 / seconds:>9.2f}{args.tasks / seconds:>9.1f}"
            f"{seconds / fwd:>7.2f}{memory:>10}"
        )
    best = min(("loop", "vmap"), key=lambda b: times[f"second_order_{b}"])
    print(f"second order, fastest task batching on {args.device}: {best} (MetaConfig task_batching='auto' picks "
          f"{'vmap' if args.device == 'cuda' else 'loop'})")
    print(f"second-order loop / forward-only: {times['second_order_loop'] / fwd:.2f}x (target <= 3.5x)")
    print(f"meta-steps/s vs higher (loop): {times['higher_loop'] / times['second_order_loop']:.2f}x (target >= 1.2x)")
    print(f"  (vs higher given the same conv kernels: {times['higher_loop_fast_conv'] / times['second_order_loop']:.2f}x)")
    print(f"meta-steps/s with the trunk frozen (oneshot-train frozen=[model.trunk]) vs trained: "
          f"{times['second_order_loop'] / times['frozen_trunk_loop']:.2f}x")


if __name__ == "__main__":
    main()
