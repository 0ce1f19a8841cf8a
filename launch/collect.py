"""`oneshot-collect`: collect robot demos and human-proxy videos into a dataset (also `python -m launch.collect`).

    oneshot-collect env=push split=train num_tasks=200 demos_per_task=6 videos_per_task=6 out=data/push
    oneshot-collect -m shard=0,1 num_shards=2 workers=1 env=reach num_tasks=20 out=data/reach   # Hydra multirun
    oneshot-collect env=push num_tasks=200 demos_per_task=3 videos_per_task=3 driven_demos_per_task=2 \
        driver=checkpoints/push-linear.pt out=data/push-driven      # + demos begun by a trained policy (DAgger-like)

Every field is documented in demos/config.py; Hydra's resolved config and log go to out/logs/.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from demos.collect import DriverFactory, collect
from demos.config import CollectConfig, EnvConfig
from demos.format import DatasetError

log = logging.getLogger("oneshot-collect")
# absolute: a relative path would be resolved as a Python package when run as a console script
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

ConfigStore.instance().store(name="collect_schema", node=CollectConfig)
ConfigStore.instance().store(group="env", name="env_schema", node=EnvConfig)


@hydra.main(config_path=str(CONF_DIR), config_name="collect", version_base="1.3")
def main(cfg: DictConfig) -> None:
    config: CollectConfig = OmegaConf.to_object(cfg)
    try:
        report = collect(config, _driver_factory(config))
    except (DatasetError, ValueError) as e:
        print(f"oneshot-collect: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print("oneshot-collect: interrupted; complete shards are kept: run the same command to resume", file=sys.stderr)
        raise SystemExit(130) from None
    log.info("%s", report.summary())
    if report.manifest:
        log.info("dataset complete: %s", report.manifest)


def _driver_factory(config: CollectConfig) -> DriverFactory | None:
    """The trained policy's driver for driven demos; imported only then (torch is not needed to collect otherwise)."""
    if not config.driven_demos_per_task:
        return None
    from imitation.rollout import video_driver  # noqa: PLC0415
    return video_driver


if __name__ == "__main__":
    main()
