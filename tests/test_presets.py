"""Experiment presets are minimal deltas, and composing each still gives the configuration it always did.

EXPECTED holds, per preset, every key its file (or the preset it extends) stated before the presets were cut
down to what differs from the defaults, with the value it composed to then. A preset that loses a key
it needs, or a default that moves under a preset, fails here.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest
import yaml
from omegaconf import OmegaConf

from iqs.core.config import compose, conf_dir

EXPECTED: dict[str, dict[str, Any]] = {
    "demo": {
        "backbone.freeze": True,
        "backbone.input_size": 299,
        "backbone.name": "tf_efficientnet_lite0",
        "backbone.pool": "mlsp",
        "backbone.pool_levels": 3,
        "cache.enabled": True,
        "callbacks.early_stopping.patience": 12,
        "data.name": "demo",
        "head.dropout": 0.2,
        "head.hidden": [512],
        "head.input_norm": "batchnorm",
        "head.name": "regression",
        "loader.batch_size": 64,
        "loader.eval_batch_size": 256,
        "tags.experiment": "demo",
        "thresholds.t1": 5.0,
        "thresholds.t2": 6.0,
        "trainer.log_every_n_steps": 10,
        "trainer.max_epochs": 40,
    },
    "nima_ava": {
        "augment.crop": 0.05,
        "augment.hflip": 0.5,
        "backbone.channels_last": True,
        "backbone.freeze": False,
        "backbone.name": "tf_efficientnet_lite0",
        "backbone_lr_scale": 0.1,
        "callbacks.early_stopping.patience": 4,
        "data.name": "ava",
        "head.name": "distribution",
        "loader.batch_size": 64,
        "loader.eval_batch_size": 128,
        "loader.num_workers": 8,
        "optimizer.lr": 0.0003,
        "optimizer.weight_decay": 0.0001,
        "tags.experiment": "nima_ava",
        "thresholds.t1": 5.0,
        "thresholds.t2": 6.0,
        "trainer.max_epochs": 15,
    },
    "seed_ava_3class": {
        "backbone.freeze": True,
        "backbone.name": "tf_efficientnet_lite0",
        "data.name": "ava",
        "head.name": "classification",
        "loader.batch_size": 256,
        "loader.eval_batch_size": 512,
        "tags.experiment": "seed_ava_3class",
        "thresholds.t1": 5.0,
        "thresholds.t2": 6.0,
        "trainer.max_epochs": 60,
    },
    "seed_combined": {
        "backbone.freeze": True,
        "backbone.name": "tf_efficientnet_lite0",
        "data.name": "seed_combined",
        "head.name": "classification",
        "loader.batch_size": 256,
        "loader.eval_batch_size": 512,
        "tags.experiment": "seed_combined",
        "thresholds.t1": 5.0,
        "thresholds.t2": 6.0,
        "trainer.max_epochs": 60,
    },
}
# lodo_demo is the demo preset swept over held-out sources; rank_mixture the demo with the rank head
EXPECTED["lodo_demo"] = {**EXPECTED["demo"], "tags.experiment": "lodo_demo"}
EXPECTED["rank_mixture"] = {
    **EXPECTED["demo"],
    "decision_cuts.enabled": True,
    "decision_cuts.objective": "macro_f1",
    "decision_cuts.per_source": True,
    "head.name": "rank",
    "loss.sources_per_batch": None,
    "loss.within_source_batches": "auto",
    "tags.experiment": "rank_mixture",
}


@pytest.mark.parametrize("preset", sorted(EXPECTED))
def test_preset_composes_to_its_configuration(preset: str) -> None:
    cfg = compose("train", [f"experiment={preset}"])
    got = {
        key: OmegaConf.to_container(v) if OmegaConf.is_config(v := OmegaConf.select(cfg, key)) else v
        for key in EXPECTED[preset]
    }
    assert got == EXPECTED[preset]


def test_every_preset_is_checked() -> None:
    presets = {p.stem for p in (conf_dir() / "experiment").glob("*.yaml")}
    assert set(EXPECTED) <= presets
    assert not presets - set(EXPECTED) - {"personal"}, "add the new preset's keys to EXPECTED"


@functools.cache
def _defaults(head: str) -> dict[str, Any]:
    return OmegaConf.to_container(compose("train", [f"head={head}"]), resolve=False)


def _restated(body: dict, base: dict, prefix: str = "") -> list[str]:
    out = []
    for key, value in body.items():
        if key in ("defaults", "hydra") or key not in base:
            continue
        if isinstance(value, dict) and isinstance(base[key], dict):
            out += _restated(value, base[key], f"{prefix}{key}.")
        elif value == base[key]:
            out.append(f"{prefix}{key}")
    return out


@pytest.mark.slow
@pytest.mark.parametrize("preset", sorted(EXPECTED))
def test_preset_states_only_what_differs(preset: str) -> None:
    """No value equal to the default it overrides, and no `override /group: <the default option>`."""
    body = yaml.safe_load((conf_dir() / "experiment" / f"{preset}.yaml").read_text())
    # the head axis stays free in the presets: a head setting restates a default only if it does for every head
    heads = sorted(p.stem for p in (conf_dir() / "head").glob("*.yaml"))
    restated = set.intersection(*(set(_restated(body, _defaults(h))) for h in heads))
    assert sorted(restated) == []
    train = yaml.safe_load((conf_dir() / "train.yaml").read_text())
    default_options = {k: v for d in train["defaults"] if isinstance(d, dict) for k, v in d.items()}
    for entry in body.get("defaults", []):
        if isinstance(entry, dict):
            for key, option in entry.items():
                group = key.removeprefix("override /")
                assert default_options.get(group) != option, (
                    f"{preset}: override /{group}: {option} is the default"
                )
