"""Entry of DDP ranks 1..N-1 that rank 0 starts (iqs.train.distributed.ReplayLauncher):

    python -m iqs train replay <output_dir>/ddp/config.yaml      (conf/replay.yaml)

They train on exactly rank 0's resolved configuration, without Hydra (no folder, no MLflow run).
"""

from __future__ import annotations

import logging
import os

from omegaconf import DictConfig, OmegaConf

from iqs.train.run import train


def main(argv: list[str] | None = None) -> int:
    """The dispatcher's entry (iqs.cli): `config=<path>` or the path alone."""
    from iqs.core.config import compose

    return replay(str(compose("replay", list(argv or [])).config))


def replay(config_path: str) -> int:
    """Entry of ranks 1..N-1: train on rank 0's config, without Hydra (no folder, no MLflow run)."""
    logging.basicConfig(
        level=logging.INFO, format=f"[rank {os.environ.get('RANK', '?')}] %(levelname)s %(name)s: %(message)s"
    )
    cfg = OmegaConf.load(config_path)
    assert isinstance(cfg, DictConfig)
    train(cfg)
    return 0
