"""Locating and composing the Hydra configs in `conf/` outside a `@hydra.main` app."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig


def conf_dir() -> Path:
    """`conf/` of the checkout (editable install), or $IQS_CONF_DIR."""
    env = os.environ.get("IQS_CONF_DIR")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve().parents[2] / "conf"
    if here.is_dir():
        return here
    raise FileNotFoundError(
        "cannot find the Hydra configs: set IQS_CONF_DIR to the project's conf/ folder "
        "(or install the project with `make setup`, which installs it in editable mode)"
    )


def compose(config_name: str, overrides: list[str] | None = None) -> DictConfig:
    """Compose `conf/<config_name>.yaml` with command-line style overrides (`key=value`)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=list(overrides or []))
