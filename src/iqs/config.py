"""Locating and composing the Hydra configs in `conf/` outside a `@hydra.main` app."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

JOB_ID_RESOLVER = "iqs.job_id"


def job_suffix() -> str:
    """8 random hex digits that tell apart jobs started in the same second, on one machine or many."""
    return uuid.uuid4().hex[:8]


# `${iqs.job_id:}` in conf/train.yaml's hydra.run.dir / sweep.dir. Cached per config like Hydra's own
# `${now:}`: one value per launch, shared by the jobs of a sweep (Hydra copies the cache into each job's config).
if not OmegaConf.has_resolver(JOB_ID_RESOLVER):
    OmegaConf.register_new_resolver(JOB_ID_RESOLVER, job_suffix, use_cache=True)


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
        return hydra_compose(config_name=config_name, overrides=quote_group_options(list(overrides or [])))


_GROUP_OPTION = re.compile(r"^(?P<key>[+~]{0,2}[A-Za-z_][\w/]*(?:@[\w.]+)?)=(?P<value>[0-9][0-9._,]*)$")


def quote_group_options(argv: list[str], conf: Path | None = None) -> list[str]:
    """Quote numeric-looking config-group options: `thresholds=5_6` -> `thresholds='5_6'`.

    Hydra's override grammar reads `5_6` as the int 56 (Python digit separators) and `5_5.5` as a float,
    then refuses them as group options. Only keys that are config groups (folders of conf/) are touched;
    sweep lists (`thresholds=5_6,4.5_6.5`) are quoted element by element.
    """
    conf = conf or conf_dir()
    out = []
    for arg in argv:
        m = _GROUP_OPTION.match(arg)
        group = m and m["key"].lstrip("+~").split("@")[0]
        if m and (conf / group).is_dir():
            arg = m["key"] + "=" + ",".join(f"'{v}'" for v in m["value"].split(","))
        out.append(arg)
    return out
