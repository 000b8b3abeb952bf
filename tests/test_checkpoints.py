"""The one checkpoint reader: weights_only loads, our Lightning checkpoints pass, anything else is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from torch.utils.data import DataLoader

from iqs.core.config import compose
from iqs.deploy.export import exporter as export
from iqs.models import build_quality_model
from iqs.models.checkpoints import CheckpointError, load_checkpoint, read_checkpoint, read_meta
from iqs.report.artifacts import read_io_meta


class Payload:
    """Any pickled object: unpickling calls whatever `__reduce__` names (here a harmless print)."""

    def __reduce__(self):
        return (print, ("the payload ran",))


def tiny_model():
    torch.manual_seed(0)
    cfg = {
        "backbone": {"name": "test_efficientnet", "weights": "none", "input_size": [64, 64]},
        "head": {"name": "regression"},
        "thresholds": {"t1": 5.0, "t2": 6.0},
    }
    return build_quality_model(cfg).eval()


def plain_checkpoint(model, path: Path, **extra) -> Path:
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "iqs_meta": dict(model.meta), **extra}, path)
    return path


def test_a_checkpoint_with_a_pickled_object_is_refused(tmp_path: Path, capsys) -> None:
    model = tiny_model()
    evil = plain_checkpoint(model, tmp_path / "evil.ckpt", extra=Payload())
    with pytest.raises(CheckpointError, match=r"evil\.ckpt: refused to load.*iqs train"):
        read_checkpoint(evil)
    assert "the payload ran" not in capsys.readouterr().out
    # what Lightning writes for save_hyperparameters(cfg): an OmegaConf object, refused the same way
    hparams = plain_checkpoint(model, tmp_path / "hparams.ckpt", hyper_parameters=OmegaConf.create({"a": 1}))
    with pytest.raises(CheckpointError, match=r"hparams\.ckpt: refused.*(omegaconf|DictConfig)"):
        load_checkpoint(hparams)
    # every caller goes through the same reader: export refuses it with the message, the card goes without
    assert export.main([f"checkpoint={evil}", f"out_dir={tmp_path / 'out'}"]) == 2
    assert "evil.ckpt: refused to load" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()
    assert read_io_meta(evil) is None


def test_bad_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"not found: .*absent\.ckpt"):
        read_checkpoint(tmp_path / "absent.ckpt")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\x00not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match=r"junk\.ckpt"):
        read_checkpoint(junk)
    no_meta = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}}, no_meta)
    with pytest.raises(CheckpointError, match=r"plain\.ckpt: no 'iqs_meta'"):
        read_meta(no_meta)
    other = tiny_model()
    wrong = tmp_path / "wrong.ckpt"
    torch.save({"state_dict": {"model.x": torch.zeros(1)}, "iqs_meta": dict(other.meta)}, wrong)
    with pytest.raises(CheckpointError, match=r"wrong\.ckpt: state_dict does not match"):
        load_checkpoint(wrong)


@pytest.mark.slow
def test_a_checkpoint_written_by_lightning_training_loads_weights_only(tmp_path: Path) -> None:
    """A real Trainer run with the training's own module, callbacks and scheduler writes the checkpoint."""
    from hydra.utils import instantiate

    from iqs.train.build import callbacks as make_callbacks
    from iqs.train.module import QualityLitModule

    cfg = compose(
        "train",
        [
            "backbone=tf_efficientnet_lite0",
            "backbone.name=test_efficientnet",
            "backbone.weights=none",
            "backbone.input_size=64",
            "head=regression",
            "trainer.max_epochs=2",
            "trainer.enable_progress_bar=false",
        ],
    )
    model = build_quality_model(cfg, pretrained=False)
    lit = QualityLitModule(
        model, ["a", "b"], optimizer=instantiate(cfg.optimizer), scheduler=instantiate(cfg.scheduler)
    )
    g = torch.Generator().manual_seed(0)
    n = 16
    rows = [
        {
            "image": torch.rand(3, 64, 64, generator=g),
            "score": torch.tensor(1.0 + 9.0 * i / n),
            "label": torch.tensor(min(2, 3 * i // n)),
            "dataset_idx": torch.tensor(i % 2),
            "dist": torch.full((10,), 0.1),
            "weight": torch.tensor(1.0),
            "row": torch.tensor(i),
        }
        for i in range(n)
    ]
    callbacks = make_callbacks(cfg, tmp_path)
    trainer = pl.Trainer(
        max_epochs=2,
        callbacks=list(callbacks.values()),
        logger=pl.loggers.CSVLogger(str(tmp_path)),  # LearningRateMonitor needs one
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(lit, DataLoader(rows, batch_size=8), DataLoader(rows, batch_size=8))
    best = Path(callbacks["checkpoint"].best_model_path)
    assert best.is_file()

    raw = torch.load(best, map_location="cpu", weights_only=True)  # the file itself is weights_only-safe
    assert {"optimizer_states", "lr_schedulers", "callbacks", "iqs_meta"} <= set(raw)
    loaded, meta = load_checkpoint(best)
    assert meta == dict(model.meta) == read_meta(best)
    x = torch.rand(2, 3, 64, 64, generator=g)
    lit.model.eval()
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x)["score"], lit.model(x)["score"])


def test_a_record_older_than_a_head_option_loads_with_its_default(tmp_path: Path) -> None:
    """A checkpoint whose `head_cfg` predates an option (here input_norm and sharpness) rebuilds with the
    option's default (the head's Options) and gives the same outputs as the model that wrote it."""
    model = tiny_model()
    old_meta = dict(model.meta)
    old_meta["head_cfg"] = {
        k: v for k, v in model.meta["head_cfg"].items() if k not in ("input_norm", "sharpness")
    }
    path = tmp_path / "old.ckpt"
    torch.save(
        {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "iqs_meta": old_meta}, path
    )
    loaded, meta = load_checkpoint(path)
    assert meta == old_meta and loaded.meta["head_cfg"] == model.meta["head_cfg"]
    assert (loaded.head.options.input_norm, loaded.head.sharpness) == ("none", 4.0)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["score"], model(x)["score"])
