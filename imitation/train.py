"""Meta-training: ``train(cfg)`` meta-learns on a dataset's train split, validates, logs and checkpoints.

``oneshot-train`` (launch/train.py) is the Hydra front end; this module works without Hydra too. Read top to
bottom: the config, then ``train`` (device, processes, run folder, data, learner), then the loop and its parts.

A run folder holds: ``config.yaml`` (resolved), ``run.json`` (git revision, command, device; one entry per start),
``metrics.jsonl``, ``checkpoints/step-NNNNNNN.pt`` + ``checkpoints/last.pt`` and, with the wandb logger, ``wandb/``.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from omegaconf import MISSING, OmegaConf

from demos.format import MANIFEST, code_version, read_manifest, sha256_file
from demos.reader import Pair, PairDataset
from envs.core import ROBOT_CAMERA
from imitation.adaptation_loss import AdaptationLossConfig
from imitation.bc import BCLossConfig
from imitation.checkpoint import (LAST, CheckpointInfo, ModelSpec, build_learner, freeze, grow_into, load_checkpoint,
                                 read_checkpoint, save_checkpoint, tensors_named)
from imitation.data import (DevicePrefetcher, LoaderConfig, StepBatchSampler, make_loader, strided_length,
                            to_meta_batch, validation_batches)
from imitation.distributed import (DistInfo, average_gradients, average_stats, broadcast_object, init_distributed,
                                   shutdown)
from imitation.maml import MetaConfig, MetaLearner, NonFiniteLossError
from imitation.policy import PolicyConfig
from imitation.tracking import LoggerConfig, RunLogger

CHECKPOINTS = "checkpoints"
LR_SCHEDULES = ("constant", "cosine")


@dataclass
class TrainConfig:
    """One meta-training run (the structured config behind `oneshot-train`; YAML groups under conf/ pick values)."""

    data: str = MISSING  # dataset folder made by oneshot-collect (train split, and a val split unless val_every=0)
    out: str = "runs"  # parent of the run folders
    run_name: str = ""  # run folder name under `out`; empty = time + random suffix. Set it to resume, and under torchrun
    run_dir: str = "${hydra:runtime.output_dir}"  # this run's folder: Hydra sets it from out/run_name; set it without Hydra
    resume: bool = False  # continue from <run_dir>/checkpoints/last.pt: same step, same next batch, same RNG states
    # A new run starts from this checkpoint's weights (fine-tuning: from step 0, with a fresh optimizer, on this
    # run's data and outer loss). The network, learned loss and adapted parameters must be the same. Ignored on resume.
    init_from: str = ""
    # With init_from: the learner's tensors whose names start with one of these keep their fresh initial values
    # (seeded by `seed`) instead of the checkpoint's, e.g. [model.fc, model.head, inner_loss.net] to learn the policy's
    # layers and the learned loss anew over a trained trunk: a new input (policy.query_depth) is then weighed from the
    # first step like every other, where a grown layer's zero columns stay nearly unused (docs/results.md).
    init_fresh: list[str] = field(default_factory=list)
    # The learner's tensors (name prefixes, as init_fresh) that meta-training leaves as they are, e.g. [model.trunk]: no
    # outer gradient flows into them, which also spares the backward pass through them.
    frozen: list[str] = field(default_factory=list)
    seed: int = 0  # initial weights and the meta-batch stream (the batch of step s depends only on seed and s)
    steps: int = 1000  # total meta-steps (a resumed run continues up to this number)
    # Outer learning rate over the run: "constant" (meta.meta_lr throughout) or "cosine" (from meta.meta_lr down to 0
    # at `steps`). Constant-lr Adam leaves late checkpoints scattered around a minimum (checkpoints/README.md); a
    # falling rate lets the run settle. A function of the step alone, so a resumed run goes on with the same rates.
    lr_schedule: str = "constant"
    meta_batch: int = 4  # tasks per meta-step over all processes (MIL/DAML used 12-25; split evenly across processes)
    val_every: int = 100  # steps between validation meta-losses on the val split (0 = no validation)
    val_batches: int = 2  # fixed validation meta-batches (of min(meta_batch, val tasks) tasks) averaged per validation
    log_every: int = 10  # steps between lines of metrics.jsonl (training figures are averaged over those steps)
    ckpt_every: int = 500  # steps between checkpoints (a final one is always written)
    device: str = "auto"  # "auto" (cuda if available, else cpu), "cpu", "cuda"
    bf16: bool = False  # bfloat16 autocast of the meta-step and validation (CUDA only)
    compile: bool = False  # torch.compile the policy's forward (CUDA only; measure: with torch.func it may not pay)
    threads: int = 0  # torch CPU threads per process (0 = torch's default)
    progress: bool = True  # tqdm progress bar on stderr (rank 0)
    policy: PolicyConfig = field(default_factory=PolicyConfig)  # network (group `policy`: cpu | gpu)
    adaptation_loss: AdaptationLossConfig = field(default_factory=AdaptationLossConfig)  # learned video loss
    bc: BCLossConfig = field(default_factory=BCLossConfig)  # outer behaviour-cloning loss
    meta: MetaConfig = field(default_factory=MetaConfig)  # MAML settings (group `meta`)
    loader: LoaderConfig = field(default_factory=LoaderConfig)  # data reading, frame stride (group `loader`)
    logger: LoggerConfig = field(default_factory=LoggerConfig)  # wandb offline | none (group `logger`)

    def __post_init__(self) -> None:
        for name in ("meta_batch", "log_every", "ckpt_every", "val_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.val_every < 0 or self.steps < 0:
            raise ValueError(f"steps and val_every must be >= 0, got {self.steps} and {self.val_every}")
        if self.init_fresh and not self.init_from:
            raise ValueError(f"init_fresh={list(self.init_fresh)} keeps tensors fresh instead of init_from's: "
                             "set init_from")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")


class TrainingError(Exception):
    """Bad input or a failed run; the message says what to change."""


class NonFiniteTrainingError(TrainingError):
    """A loss or meta-gradient became NaN/inf; the last checkpoint written is left as it was."""


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    step: int  # meta-steps done
    checkpoint: Path | None  # the last checkpoint (None on ranks other than 0)
    metrics: dict[str, float]  # the last logged training and validation figures


@dataclass(frozen=True)
class TrainData:
    """The datasets of a run and what a checkpoint records about them."""

    root: Path
    train: PairDataset
    val: PairDataset | None
    manifest_sha256: str
    env: dict[str, Any]  # keywords of envs.make: family, image_size, robot_visuals, renderer (the one used)
    episode_length: int  # frames per video/demo pass after loader.frame_stride


# ----- the run ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    """What the loop works with, set up once."""

    cfg: TrainConfig
    info: DistInfo
    device: torch.device
    run_dir: Path
    spec: ModelSpec
    data: TrainData
    config: dict[str, Any]  # the resolved config as plain containers
    learner: MetaLearner
    start: int  # meta-steps already done (0, or the step of the checkpoint resumed)


def train(cfg: TrainConfig) -> TrainResult:
    """Meta-train as ``cfg`` says, in this process or as one rank of a torchrun/SLURM job."""
    device = select_device(cfg)
    info = init_distributed(device.type)
    try:
        if device.type == "cuda" and info.enabled:
            device = torch.device("cuda", info.local_rank)
        return run_loop(set_up(cfg, info, device))
    finally:
        shutdown(info)


def set_up(cfg: TrainConfig, info: DistInfo, device: torch.device) -> Run:
    """Data checked against the model, the run folder, and a fresh or resumed learner on the device."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    spec = model_spec(cfg)
    data = open_data(cfg, spec)
    run_dir = Path(str(broadcast_object(str(Path(cfg.run_dir).resolve()), info)))  # rank 0's folder everywhere
    learner, start, origin = init_or_resume(cfg, spec, data, run_dir, device)
    cfg = replace(cfg, init_from=origin)
    config = config_dict(cfg, run_dir)
    if info.is_main:
        write_run_files(run_dir, config, info, device, start)
    if cfg.compile:
        learner.model.forward = torch.compile(learner.model.forward)
    return Run(cfg, info, device, run_dir, spec, data, config, learner, start)


def run_loop(run: Run) -> TrainResult:
    """Meta-steps from ``run.start`` to ``cfg.steps``; rank 0 logs, validates and checkpoints on their schedules."""
    cfg, info = run.cfg, run.info
    sampler = StepBatchSampler(run.data.train, cfg.meta_batch, cfg.seed, run.start, cfg.steps, info.rank, info.world_size,
                               cfg.loader.frame_stride, cfg.loader.random_offsets)
    loader = make_loader(run.data.train, sampler, cfg.loader, pin_memory=run.device.type == "cuda")
    reduce_grads = average_gradients if info.enabled else None
    logger = RunLogger(run.run_dir, cfg.logger, run.config, total_steps=cfg.steps, start_step=run.start,
                       progress=cfg.progress) if info.is_main else None
    books = Books(checkpoint=latest_checkpoint(run.run_dir))
    if logger is not None and run.data.val is not None:
        books.val = validation_batches(run.data.val, cfg.seed, cfg.val_batches, cfg.meta_batch, cfg.loader.frame_stride)
    step, clock = run.start, time.perf_counter()
    try:
        for pair, batch in DevicePrefetcher(loader, run.learner.model, run.device):
            lr = set_meta_lr(run.learner.optimizer, meta_lr_factor(cfg, step))
            with guarded(run, step + 1, books.checkpoint), precision(cfg):
                stats = run.learner.meta_step(batch, reduce_grads) | {"meta_lr": lr}
            step += 1
            books.window.add(average_stats(stats, run.device) if info.enabled else stats, time.perf_counter() - clock)
            if logger is not None:
                keep_books(run, logger, books, step, pair)
            clock = time.perf_counter()  # throughput counts data wait + meta-step, not validation or checkpoints
    finally:
        if logger is not None:
            logger.close()
    return TrainResult(run.run_dir, step, books.checkpoint if info.is_main else None, books.last)


def meta_lr_factor(cfg: TrainConfig, step: int) -> float:
    """The outer learning rate of meta-step ``step`` (0-based) as a fraction of meta.meta_lr."""
    if cfg.lr_schedule == "constant":
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * step / cfg.steps))


def set_meta_lr(optimizer: torch.optim.Optimizer, factor: float) -> float:
    """Set the optimizer's learning rate to ``factor`` times the one it was made with (its ``defaults``, which a
    restored optimizer state does not overwrite); returns it."""
    lr = optimizer.defaults["lr"] * factor
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


@dataclass
class Books:
    """Rank 0's running records: the training window, the last figures logged, the newest checkpoint."""

    checkpoint: Path | None
    val: list[Pair] = field(default_factory=list)  # the fixed validation meta-batches (host memory)
    window: Window = field(default_factory=lambda: Window())
    last: dict[str, float] = field(default_factory=dict)


def keep_books(run: Run, logger: RunLogger, books: Books, step: int, pair: Pair) -> None:
    """After a meta-step: frame strip, training figures, validation, progress bar and checkpoint, each on its schedule."""
    cfg, final = run.cfg, step == run.cfg.steps
    logger.strip(step, pair)
    figures = books.window.flush(cfg.meta_batch) if step % cfg.log_every == 0 or final else {}
    if books.val and (step % cfg.val_every == 0 or final):
        with guarded(run, step, books.checkpoint), precision(cfg):
            figures |= validate(run.learner, books.val, run.device)
    if figures:
        logger.log(step, figures)
        books.last |= figures
    logger.progress(step, progress_figures(books.last))
    if step % cfg.ckpt_every == 0 or final:
        books.checkpoint = save(run, step)


def precision(cfg: TrainConfig) -> AbstractContextManager:
    """bfloat16 autocast when cfg.bf16 (CUDA only, checked in select_device), else nothing."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if cfg.bf16 else nullcontext()


# ----- setup -------------------------------------------------------------------------------------------------------

def select_device(cfg: TrainConfig) -> torch.device:
    """cuda when asked or (device=auto) available; bf16 and compile are GPU options and refused on a CPU."""
    if cfg.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(cfg.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise TrainingError("device=cuda but no CUDA device is visible; use device=cpu (or device=auto)")
    for flag in ("bf16", "compile"):
        if getattr(cfg, flag) and device.type != "cuda":
            raise TrainingError(f"{flag}=true is a GPU option; this run is on {device.type}: drop it or use device=cuda")
    return device


def model_spec(cfg: TrainConfig) -> ModelSpec:
    """The model's configs as frozen dataclasses (lists from YAML become tuples)."""
    parts = {name: OmegaConf.to_container(OmegaConf.structured(getattr(cfg, name)))
             for name in ("policy", "adaptation_loss", "bc", "meta")}
    return ModelSpec.from_dict(parts)


def open_data(cfg: TrainConfig, spec: ModelSpec) -> TrainData:
    """The train (and val) splits, after checking that the dataset's images and actions fit the model."""
    root = Path(cfg.data)
    manifest = read_manifest(root)
    env = manifest["env"]
    check_shapes(root, env, spec.policy)
    depth = spec.policy.query_depth
    train = PairDataset(root, cfg.loader.train_split, image_size=env["config"]["image_size"], depth=depth)
    maps = [setting for weight, setting in ((spec.bc.query_map_weight, "bc.query_map_weight>0"),
                                            (spec.bc.place_map_weight, "bc.place_map_weight>0")) if weight]
    for wanted, setting, off in ((spec.policy.target_position, "policy.target_position=true", "policy.target_position=false"),
                                 *((True, setting, setting.replace(">", "=")) for setting in maps)):
        if wanted and not train.has_target_positions:
            raise TrainingError(f"{setting} needs the target's recorded positions, which {root} (dataset format "
                                f"{manifest['format_version']}) lacks: collect it again with this code, or set {off}")
    if maps and env.get("robot_camera") != json.loads(json.dumps(asdict(ROBOT_CAMERA))):
        raise TrainingError(f"{maps[0]} places the target through this code's robot camera, and {root} was "
                            f"rendered by another ({env.get('robot_camera')}): collect it again with this code")
    if cfg.meta_batch > len(train.tasks):
        raise TrainingError(f"meta_batch={cfg.meta_batch} but split {cfg.loader.train_split!r} of {root} has "
                            f"{len(train.tasks)} tasks: lower meta_batch or collect more tasks")
    if cfg.val_every and cfg.loader.val_split not in manifest["splits"]:
        raise TrainingError(f"{root} has no {cfg.loader.val_split!r} split for validation (present: "
                            f"{', '.join(sorted(manifest['splits']))}): collect one (oneshot-collect split=val ...) "
                            "or set val_every=0")
    val = (PairDataset(root, cfg.loader.val_split, image_size=env["config"]["image_size"], depth=depth)
           if cfg.val_every else None)
    # the env a rollout of this model makes (imitation.rollout.Rollout.make_env): with the depth the policy reads
    env_keywords = {**{k: env["config"][k] for k in ("family", "image_size", "robot_visuals")},
                    "renderer": env["renderer"], **({"depth": True} if depth else {})}
    return TrainData(root, train, val, sha256_file(root / MANIFEST), env_keywords,
                     strided_length(train.demo_length, cfg.loader.frame_stride))


def check_shapes(root: Path, env: dict, policy: PolicyConfig) -> None:
    """Refuse a dataset whose images, states or actions do not fit the policy config, saying what to set."""
    size = env["config"]["image_size"]
    if tuple(policy.image_size) != (size, size):
        raise TrainingError(f"{root} has {size}x{size} images but policy.image_size={list(policy.image_size)}: "
                            f"train with policy.image_size=[{size},{size}] or collect with env.image_size="
                            f"{policy.image_size[0]}")
    for name in ("action_dim", "state_dim"):
        if env[name] != getattr(policy, name):
            raise TrainingError(f"{root} has {name}={env[name]} but policy.{name}={getattr(policy, name)}: "
                                f"set policy.{name}={env[name]}")


def init_or_resume(cfg: TrainConfig, spec: ModelSpec, data: TrainData, run_dir: Path,
                   device: torch.device) -> tuple[MetaLearner, int, str]:
    """A fresh learner (seeded by cfg.seed), or the one in the run's last checkpoint with its step and RNG states; and
    the checkpoint the run started from (``init_from``). A resumed run keeps the one it started with, which its config
    and checkpoints go on recording, whatever this command's ``init_from`` says (it is ignored on resume)."""
    last = run_dir / CHECKPOINTS / LAST
    if not cfg.resume:
        if last.exists():
            raise TrainingError(f"{run_dir} already has checkpoints: pass resume=true to continue it, or choose "
                                "another run_name")
        learner = build_learner(spec, cfg.seed)
        if cfg.init_from:
            start_from_weights(learner, cfg.init_from, cfg.init_fresh)
        try:
            freeze(learner, cfg.frozen)
        except ValueError as e:
            raise TrainingError(str(e)) from e
        return learner.to(device), 0, cfg.init_from
    if not last.exists():
        raise TrainingError(f"resume=true but {last} does not exist: nothing to resume in {run_dir}")
    learner, info, payload = load_checkpoint(last, device)  # frozen as its run was (resume_differences checks it)
    differences = resume_differences(info, cfg, spec, data)
    if differences:
        raise TrainingError(f"cannot resume {last}: it was trained with another config or dataset:\n  "
                            + "\n  ".join(differences) + "\nuse the same settings, or start a new run")
    restore_rng(payload.get("rng", {}))
    return learner, info.step, info.train_config.get("init_from", "")


def start_from_weights(learner: MetaLearner, path: str, fresh: Sequence[str] = ()) -> None:
    """Load another run's learned weights into a fresh learner (its optimizer stays fresh), but for the tensors named
    by the prefixes ``fresh``, which keep their initial values. The learner may have grown from that run's model
    (``imitation.checkpoint.grow_into``: new parameters, new inputs at the end)."""
    if not Path(path).is_file():
        raise TrainingError(f"init_from={path}: no such checkpoint")
    payload = read_checkpoint(path)
    try:
        fresh_names = tensors_named(learner, fresh, "init_fresh")
    except ValueError as e:
        raise TrainingError(str(e)) from e
    try:
        grown = grow_into(learner, {name: value for name, value in payload["learner"].items()
                                    if name not in fresh_names})
    except ValueError as e:
        theirs = ModelSpec.from_dict(payload["model"])
        raise TrainingError(f"init_from={path}: its weights do not fit this model (its policy: {theirs.policy}; its "
                            f"adaptation loss: {theirs.adaptation_loss}; its meta: {theirs.meta}):\n{e}") from e
    grown = [name for name in grown if name not in fresh_names]
    if grown:
        print(f"init_from={path}: new or grown here (new inputs start at zero): {', '.join(grown)}", file=sys.stderr)
    if fresh_names:
        print(f"init_from={path}: left at their initial values (init_fresh): {', '.join(sorted(fresh_names))}",
              file=sys.stderr)


def resume_identity(model: dict, train_config: dict, manifest_sha256: str) -> dict[str, Any]:
    """What must not change when a run is resumed (the number of steps, logging and device may)."""
    loader = train_config.get("loader", {})
    identity = {"model": model, "seed": train_config.get("seed"), "meta_batch": train_config.get("meta_batch"),
                "loader.frame_stride": loader.get("frame_stride"), "loader.train_split": loader.get("train_split"),
                "loader.random_offsets": loader.get("random_offsets", False),  # runs before it had none
                "frozen": list(train_config.get("frozen", [])),  # the optimizer's state holds the other tensors only
                "dataset manifest sha256": manifest_sha256}
    return json.loads(json.dumps(identity))  # tuples -> lists, so both sides compare alike


def resume_differences(info: CheckpointInfo, cfg: TrainConfig, spec: ModelSpec, data: TrainData) -> list[str]:
    theirs = _flatten(resume_identity(info.model.to_dict(), info.train_config, info.dataset.get("manifest_sha256")))
    ours = _flatten(resume_identity(spec.to_dict(), config_dict(cfg, Path(cfg.run_dir)), data.manifest_sha256))
    return [f"{key}: checkpoint {theirs.get(key)!r}, now {ours.get(key)!r}"
            for key in sorted(set(theirs) | set(ours)) if theirs.get(key) != ours.get(key)]


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def rng_state(device: torch.device) -> dict[str, Any]:
    """torch's RNG states (nothing in the loop draws from them today; kept so that anything that does resumes exactly)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def config_dict(cfg: TrainConfig, run_dir: Path) -> dict[str, Any]:
    """The resolved config as plain containers (what config.yaml, checkpoints and wandb record)."""
    container = OmegaConf.to_container(OmegaConf.structured(cfg), resolve=False)
    container["run_dir"] = str(run_dir)
    return container


def write_run_files(run_dir: Path, config: dict, info: DistInfo, device: torch.device, start: int) -> None:
    """config.yaml (resolved) and run.json (git revision, command, device; one entry appended per start)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(config)))
    runs_file = run_dir / "run.json"
    starts = json.loads(runs_file.read_text())["starts"] if runs_file.exists() else []
    starts.append({"started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "from_step": start,
                   "code": code_version(), "argv": sys.argv, "device": str(device), "world_size": info.world_size,
                   "torch": torch.__version__})
    runs_file.write_text(json.dumps({"starts": starts}, indent=1) + "\n")


# ----- the parts of a step -----------------------------------------------------------------------------------------

@contextmanager
def guarded(run: Run, step: int, checkpoint: Path | None) -> Iterator[None]:
    """Turn a NaN/inf loss or a CUDA out-of-memory error into a TrainingError that says what to do."""
    try:
        yield
    except NonFiniteLossError as e:
        kept = f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint had been written yet"
        raise NonFiniteTrainingError(f"stopped at step {step}: {e}\n{kept} (resume=true continues from it)") from e
    except torch.cuda.OutOfMemoryError as e:
        cfg, info = run.cfg, run.info
        share = cfg.meta_batch // info.world_size
        raise TrainingError(
            f"out of GPU memory at step {step} with {share} tasks per process (meta_batch={cfg.meta_batch}, "
            f"{info.world_size} processes), {cfg.loader.frame_stride=}, policy.image_size={list(cfg.policy.image_size)}, "
            f"meta.task_batching={cfg.meta.task_batching}. Lower meta_batch (or use more GPUs), raise "
            "loader.frame_stride, use meta.task_batching=loop (vmap holds every task's graph at once) or a smaller "
            "policy preset (policy=cpu)") from e


def validate(learner: MetaLearner, batches: list[Pair], device: torch.device) -> dict[str, float]:
    """Mean inner/outer losses before and after adaptation over the fixed validation batches.

    ``adaptation_gain`` is what adapting gained; ``video_gain`` what adapting on the task's own video gained over
    adapting on another task's video (``outer_loss_other_video``): only the latter shows that the video is used.
    """
    totals: dict[str, float] = defaultdict(float)
    for pair in batches:
        batch = to_meta_batch(learner.model, pair, device)
        for key, value in learner.evaluate(batch).items():
            totals[key] += value / len(batches)
        if batch.n_tasks > 1:
            other_video = batch.with_support_of_other_tasks()
            totals["outer_loss_other_video"] += learner.adapted_outer_loss(other_video) / len(batches)
    gains = {"val/adaptation_gain": totals["outer_loss_pre"] - totals["outer_loss_post"]}
    if "outer_loss_other_video" in totals:
        gains["val/video_gain"] = totals["outer_loss_other_video"] - totals["outer_loss_post"]
    return {f"val/{k}": v for k, v in totals.items()} | gains


class Window:
    """Training figures averaged over the steps since the last flush, and their throughput."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.steps, self.seconds = 0, 0.0

    def add(self, stats: dict[str, float], seconds: float) -> None:
        for key, value in stats.items():
            self.sums[key] += value
        self.steps += 1
        self.seconds += seconds

    def flush(self, meta_batch: int) -> dict[str, float]:
        rate = self.steps / max(self.seconds, 1e-9)
        figures = {f"train/{k}": v / self.steps for k, v in self.sums.items()}
        figures |= {"train/meta_steps_per_s": rate, "train/tasks_per_s": rate * meta_batch}
        self.__init__()
        return figures


PROGRESS_KEYS = {"train/outer_loss": "loss", "train/grad_norm": "grad", "val/outer_loss_pre": "val_pre",
                 "val/outer_loss_post": "val_post", "train/meta_steps_per_s": "steps/s", "train/tasks_per_s": "tasks/s"}


def progress_figures(last: dict[str, float]) -> dict[str, float]:
    figures = {short: last[key] for key, short in PROGRESS_KEYS.items() if key in last}
    if "train/inner_lr_mean" in last:
        figures["inner_lr"] = last["train/inner_lr_mean"]
    return figures


def save(run: Run, step: int) -> Path:
    """A checkpoint of the learner at ``step`` with everything needed to rebuild the policy and its env, and resume."""
    data = run.data
    info = CheckpointInfo(
        step=step, model=run.spec, env=data.env, episode_length=data.episode_length,
        dataset={"path": str(data.root.resolve()), "manifest_sha256": data.manifest_sha256,
                 "splits": {"train": data.train.split, "val": data.val.split if data.val else None},
                 "frame_stride": run.cfg.loader.frame_stride},
        train_config=run.config, git_revision=str(code_version().get("git", "unknown")),
    )
    path = run.run_dir / CHECKPOINTS / f"step-{step:07d}.pt"
    return save_checkpoint(path, run.learner, info, rng_state(run.device))


def latest_checkpoint(run_dir: Path) -> Path | None:
    last = run_dir / CHECKPOINTS / LAST
    return last if last.exists() else None
