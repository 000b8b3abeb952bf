"""Every config group's yamls resolve in the registry behind it, and every registry entry has a yaml.

A plug-in (head, rebalance strategy, dataset adapter) is a module that registers itself on import plus a
yaml in conf/<group>/; these tests fail when one of the two is missing or their names drift apart.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from iqs.core.config import compose, conf_dir
from iqs.data.adapters import ADAPTERS
from iqs.models.backbone import BackboneConfig, check_backbone_name
from iqs.models.heads import HEADS, build_head
from iqs.rebalance import REBALANCERS
from iqs.train.build import instantiate_node

BUILD_KEYS = {"_target_", "_partial_"}  # how iqs.train.build instantiates a group, not an option


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


def composed(group: str, option: str):
    """The group's node as `iqs train` composes it with `<group>=<option>`."""
    return compose("train", [f"{group}={option}"])[group]


@pytest.mark.parametrize("option", group_options("head"))
def test_every_head_yaml_builds_its_registered_head(option: str) -> None:
    node = composed("head", option)
    assert node.name == option, f"conf/head/{option}.yaml names head '{node.name}'"
    head = instantiate_node(node)(in_features=8, t1=5.0, t2=6.0)  # as iqs.train.build does
    assert type(head) is HEADS.get(option)


def test_every_registered_head_has_a_yaml() -> None:
    assert HEADS.names() == group_options("head")


@pytest.mark.parametrize("option", group_options("rebalance"))
def test_every_rebalance_yaml_builds_its_registered_strategy(option: str) -> None:
    node = composed("rebalance", option)
    assert node.name == option
    assert type(instantiate_node(node)) is REBALANCERS.get(option)


@pytest.mark.parametrize("option", group_options("rebalance"))
def test_rebalancer_code_defaults_are_its_yaml(option: str) -> None:
    """A strategy built in code (tests, notebooks) behaves as `rebalance=<option>`: every constructor default
    equals the yaml's value, and the yaml states every parameter."""
    import inspect

    node = OmegaConf.to_container(composed("rebalance", option))
    params = inspect.signature(REBALANCERS.get(option).__init__).parameters
    code = {k: v.default for k, v in params.items() if k != "self" and v.kind is v.POSITIONAL_OR_KEYWORD}
    assert {k: node[k] for k in code if k in node} == code, f"conf/rebalance/{option}.yaml vs its class"
    assert set(node) - {"name", *BUILD_KEYS} <= set(code), (
        f"conf/rebalance/{option}.yaml has keys its class lacks"
    )


def test_every_registered_rebalancer_has_a_yaml() -> None:
    assert REBALANCERS.names() == group_options("rebalance")


def dataset_yamls() -> dict[str, dict]:
    folder = conf_dir() / "dataset"
    return {p.stem: OmegaConf.to_container(OmegaConf.load(p)) for p in sorted(folder.glob("*.yaml"))}


@pytest.mark.parametrize("option", sorted(dataset_yamls()))
def test_every_dataset_yaml_names_a_registered_adapter(option: str) -> None:
    cfg = dataset_yamls()[option]
    assert cfg["name"] == option
    assert cfg["adapter"] in ADAPTERS, f"conf/dataset/{option}.yaml: adapter '{cfg['adapter']}'"


def test_every_registered_adapter_has_a_dataset_yaml() -> None:
    used = {cfg["adapter"] for cfg in dataset_yamls().values()}
    assert sorted(set(ADAPTERS.names()) - used) == []


@pytest.mark.parametrize("option", group_options("backbone"))
def test_every_backbone_yaml_names_its_timm_model(option: str) -> None:
    node = composed("backbone", option)
    assert node.name == option
    check_backbone_name(node.name)


def test_a_backbone_yaml_builds_the_backbone_it_names() -> None:
    backbone, info = instantiate_node(composed("backbone", "tf_efficientnet_lite0")).create(weights="none")
    assert info.name == "tf_efficientnet_lite0" and backbone.frozen


def test_registry_groups_are_the_folders_of_conf() -> None:
    # the groups above are real folders (a renamed folder must not silently empty a parametrisation)
    for group in ("head", "rebalance", "dataset", "backbone"):
        assert group_options(group), f"no yaml in {Path('conf') / group}"


# ------------------------------------ defaults: in the code's signatures, stated again by the yaml (as params)


@pytest.mark.parametrize("option", group_options("head"))
def test_a_head_built_in_code_gets_the_yaml_defaults(option: str) -> None:
    """A head's `Options` defaults are conf/head/<name>.yaml's values: code and `iqs train head=<name>` agree,
    and the yaml states every option (each becomes an MLflow param)."""
    composed_head = OmegaConf.to_container(composed("head", option))
    for key in ("name", *BUILD_KEYS):
        composed_head.pop(key)
    assert build_head(option, 8, 5.0, 6.0).cfg == composed_head
    assert instantiate_node(composed("head", option))(in_features=8, t1=5.0, t2=6.0).cfg == composed_head


@pytest.mark.slow
def test_backbone_code_defaults_are_the_yaml_defaults() -> None:
    """BackboneConfig's defaults are conf/backbone_defaults.yaml's, and every conf/backbone/*.yaml states
    every option."""
    from dataclasses import fields

    from iqs.models.backbone import create_backbone

    base = OmegaConf.to_container(OmegaConf.load(conf_dir() / "backbone_defaults.yaml"))
    code = {f.name: f.default for f in fields(BackboneConfig) if f.name != "name"}
    assert {k: v for k, v in base.items() if k not in BUILD_KEYS} == code
    backbone, info = create_backbone("test_efficientnet", weights="none")  # timm's tiny test network
    assert (backbone.frozen, backbone.channels_last, info.pool) == (
        code["freeze"],
        code["channels_last"],
        code["pool"],
    )
    for option in group_options("backbone"):
        node = OmegaConf.to_container(composed("backbone", option))
        assert set(node) - BUILD_KEYS == {"name", *code}, option


# ------------------------------------------------------- config becomes objects in one place


SRC = Path(__file__).resolve().parents[1] / "src" / "iqs"
# below iqs.train.build: typed arguments only, no config object nor config file
TYPED_FLOORS = [*sorted((SRC / "models").rglob("*.py")), *sorted((SRC / "rebalance").rglob("*.py"))]
TYPED_FLOORS += [SRC / "train" / "module.py", SRC / "train" / "datamodule.py"]


def imported_names(path: Path) -> set[str]:
    import ast

    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names |= {f"{node.module}.{a.name}" for a in node.names} | {str(node.module)}
    return names


@pytest.mark.parametrize("path", TYPED_FLOORS, ids=lambda p: str(p.relative_to(SRC)))
def test_models_and_rebalancers_read_no_config(path: Path) -> None:
    """Defaults live in the signatures: no OmegaConf, no conf/ file read at run time."""
    imported = imported_names(path)
    assert not {n for n in imported if n.split(".")[0] in ("omegaconf", "hydra")}, imported
    assert "iqs.core.config.conf_dir" not in imported and "conf_dir" not in path.read_text()


def test_instantiate_is_called_in_one_place() -> None:
    callers = sorted(
        str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if "hydra.utils.instantiate" in imported_names(p)
    )
    assert callers == ["train/build.py"]


@pytest.mark.slow
def test_callbacks_come_from_the_config_in_order_with_their_folder_and_switches(tmp_path: Path) -> None:
    from pytorch_lightning.callbacks import (
        EarlyStopping,
        LearningRateMonitor,
        ModelCheckpoint,
        RichProgressBar,
    )

    from iqs.train import build

    cfg = compose("train", ["callbacks.early_stopping.patience=3", "monitor.metric=val/all/plcc"])
    built = build.callbacks(cfg, tmp_path)
    # checkpoint callbacks run in list order: the best before last.ckpt of the same epoch
    assert list(built) == ["lr", "checkpoint", "last", "early_stopping", "progress"]
    assert isinstance(built["lr"], LearningRateMonitor) and isinstance(built["progress"], RichProgressBar)
    best, last, stop = built["checkpoint"], built["last"], built["early_stopping"]
    assert isinstance(best, ModelCheckpoint) and isinstance(stop, EarlyStopping)
    assert Path(best.dirpath) == Path(last.dirpath) == tmp_path / "checkpoints"
    assert best.monitor == stop.monitor == "val/all/plcc" and last.monitor is None
    assert stop.patience == 3 and stop.check_finite is False

    off = compose(
        "train",
        [
            "callbacks.early_stopping.enabled=false",
            "callbacks.checkpoint.save_last=false",
            "trainer.enable_progress_bar=false",
        ],
    )
    assert list(build.callbacks(off, tmp_path)) == ["lr", "checkpoint"]
    assert list(build.callbacks(compose("train", ["callbacks.checkpoint.enabled=false"]), tmp_path)) == [
        "lr",
        "early_stopping",
        "progress",
    ]


@pytest.mark.slow
def test_save_last_without_a_folder_is_refused_before_any_run() -> None:
    from iqs.data.mixture import ConfigError
    from iqs.train.options import check_values

    cfg = compose("train", ["~callbacks.checkpoint.dirpath"])
    with pytest.raises(ConfigError, match=r"callbacks\.checkpoint\.dirpath"):
        check_values(cfg)
    check_values(compose("train", ["~callbacks.checkpoint.dirpath", "callbacks.checkpoint.save_last=false"]))
