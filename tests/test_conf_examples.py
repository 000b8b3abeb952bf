"""Examples written in the configs' comments match what the code produces."""

from __future__ import annotations

import re

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from iqs.core.config import conf_dir
from iqs.tracking.naming import sweep_id_for


def test_example_sweep_ids_have_the_form_a_multirun_gets() -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("train", overrides=["hydra.mode=MULTIRUN"], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    try:
        with open_dict(cfg):
            cfg.logger.sweep_id = None  # not $IQS_SWEEP_ID: the id of the launch itself
        real = sweep_id_for(cfg)
    finally:
        HydraConfig.instance().cfg = None
    form = re.compile(r"train_\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_[0-9a-f]{8}")
    assert form.fullmatch(real), real
    for name in ("compare.yaml", "logger/mlflow.yaml"):
        text = (conf_dir() / name).read_text()
        examples = re.findall(r"\b\w*\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d\w*", text)
        assert examples, f"conf/{name} has no example sweep id"
        assert all(form.fullmatch(e) for e in examples), f"conf/{name}: {examples} vs real id {real}"
