"""`oneshot-train`: meta-train the policy and its learned video loss on a dataset (also `python -m launch.train`).

    oneshot-train data=data/reach                                     # CPU defaults: meta-batch 4, default policy
    oneshot-train data=data/reach loader.frame_stride=4 steps=200     # 4x fewer frames per pass
    oneshot-train data=data/push policy=gpu meta_batch=16 device=cuda bf16=true
    oneshot-train data=data/reach run_name=exp1 resume=true           # continue runs/exp1 exactly
    torchrun --standalone --nproc_per_node=8 -m launch.train data=data/push policy=gpu meta_batch=32 run_name=ddp1

Every field is documented where it is declared (imitation/train.py TrainConfig and the dataclasses it holds);
docs/train.md has the torchrun and SLURM recipes. Exit status: 0 done, 2 bad input, 3 NaN/inf loss, 130 interrupted.
"""

from __future__ import annotations

import logging
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from demos.format import DatasetError
from imitation.train import NonFiniteTrainingError, TrainConfig, TrainingError, train

log = logging.getLogger("oneshot-train")
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # absolute: a console script has no package-relative path


def writable(schema: type) -> DictConfig:
    """The structured config of a dataclass, overridable even where the dataclass is frozen (the model configs are).

    OmegaConf marks the nodes of frozen dataclasses read-only; the frozen dataclasses themselves are rebuilt by
    ``OmegaConf.to_object`` after the overrides, so their checks (``__post_init__``) still run.
    """
    node = OmegaConf.structured(schema)
    stack = [node]
    while stack:
        current = stack.pop()
        OmegaConf.set_readonly(current, None)
        stack.extend(current._get_node(key) for key in current if isinstance(current._get_node(key), DictConfig))
    return node


def run_id(name: str) -> str:
    """The run folder's name: ``name`` when given, else time + random suffix (unique even within one second)."""
    return name or f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def register() -> None:
    """The schema in Hydra's ConfigStore (the YAML groups under conf/ merge onto its typed nodes) and the resolver."""
    ConfigStore.instance().store(name="train_schema", node=writable(TrainConfig))
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", run_id, use_cache=True)  # cached: one value per process


register()


def stop_on_interrupts() -> None:
    """Make SIGINT (Ctrl-C, `timeout -s INT`: launch/gpu_train.sh's budget) stop the run, keeping its checkpoint, even
    when it was started from a background job of a non-interactive shell (`cmd &` in a script, `nohup ... &`): such a
    job inherits SIGINT ignored, Python then installs no KeyboardInterrupt handler, and the run would go on until
    killed outright."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> Any:
    stop_on_interrupts()
    try:
        config: TrainConfig = OmegaConf.to_object(cfg)
        result = train(config)
    except NonFiniteTrainingError as e:
        print(f"oneshot-train: error: {e}", file=sys.stderr)
        raise SystemExit(3) from None
    except (TrainingError, DatasetError, ValueError) as e:
        print(f"oneshot-train: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("oneshot-train: interrupted; run the same command with resume=true (and the same run_name) to continue "
              "from the last checkpoint", file=sys.stderr)
        raise SystemExit(130) from None
    if result.checkpoint is not None:
        log.info("done: %d steps, checkpoint %s", result.step, result.checkpoint)
    return result.metrics.get("val/outer_loss_post")  # the value a Hydra sweeper would minimise


if __name__ == "__main__":
    main()
