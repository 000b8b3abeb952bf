from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import timm
import torch
from omegaconf import OmegaConf
from PIL import Image
from skimage.data import chelsea
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

import iqs.models.backbone as backbone_mod
from iqs.core.config import compose, conf_dir
from iqs.models import HEADS, build_quality_model, create_backbone, pooling
from iqs.models.backbone import BackboneConfig, build_timm_model, resolve_info
from iqs.models.packaged_weights import (
    LITE0_STAGE_SIZES,
    lukemelas_to_timm_key,
    packaged_names,
    packaged_path,
)

LITE0 = "tf_efficientnet_lite0"
TINY = "test_efficientnet"  # timm's tiny test network: BN, depthwise convs, 100k parameters


@pytest.fixture(scope="module")
def lite0_classifier() -> torch.nn.Module:
    return build_timm_model(LITE0, "packaged", keep_classifier=True).eval()


def _eval_tensor(image: np.ndarray, size: int, crop_pct: float, mean, std) -> torch.Tensor:
    """timm's eval transform with PIL: bicubic resize of the short side to size/crop_pct, centre crop."""
    img = Image.fromarray(image)
    short = int(size / crop_pct)
    w, h = img.size
    scale = short / min(w, h)
    img = img.resize((round(w * scale), round(h * scale)), Image.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    img = img.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return ((x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None])[None]


def test_key_mapping_covers_every_packaged_key() -> None:
    raw = torch.load(packaged_path(LITE0), map_location="cpu", weights_only=True)
    assert len(raw) == 296
    mapped = [lukemelas_to_timm_key(k) for k in raw]
    assert len(set(mapped)) == len(mapped)  # one to one
    model = timm.create_model(LITE0, pretrained=False)
    assert set(mapped) == set(model.state_dict())
    assert tuple(len(stage) for stage in model.blocks) == LITE0_STAGE_SIZES
    for k in raw:
        assert raw[k].shape == model.state_dict()[lukemelas_to_timm_key(k)].shape, k
    with pytest.raises(KeyError, match="no timm name"):
        lukemelas_to_timm_key("_blocks.0._expand_conv.weight")  # stage 0 has no expansion


def test_packaged_weights_classify_chelsea(lite0_classifier) -> None:
    info = resolve_info(lite0_classifier, LITE0, "packaged")
    assert info.mean == tuple(IMAGENET_DEFAULT_MEAN) and info.std == tuple(IMAGENET_DEFAULT_STD)
    assert info.input_size == (224, 224) and info.interpolation == "bicubic"
    x = _eval_tensor(chelsea(), info.input_size[0], info.crop_pct, info.mean, info.std)
    with torch.no_grad():
        top5 = lite0_classifier(x)[0].topk(5).indices.tolist()
    assert 281 <= top5[0] <= 285  # a cat
    assert top5 == [285, 281, 282, 287, 284]


def test_packaged_backbone_gives_the_classifier_pre_logits(lite0_classifier) -> None:
    backbone, info = create_backbone(LITE0, weights="packaged", freeze=True, channels_last=True)
    assert info.num_features == 1280 and info.weights == "packaged"
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        expected = lite0_classifier.forward_head(lite0_classifier.forward_features(x), pre_logits=True)
    torch.testing.assert_close(backbone(x), expected, rtol=1e-4, atol=1e-5)


def test_packaged_unknown_name_lists_what_is_packaged() -> None:
    with pytest.raises(ValueError, match="packaged: tf_efficientnet_lite0"):
        create_backbone("resnet18", weights="packaged")


def test_unknown_backbone_gets_did_you_mean() -> None:
    with pytest.raises(KeyError, match="Did you mean .*'convnext_tiny'"):
        create_backbone("convnext_tinny", weights="none")


def _bn_stats(module: torch.nn.Module) -> list[torch.Tensor]:
    return [b.clone() for n, b in module.named_buffers() if "running_" in n]


def test_freeze_stops_gradients_and_bn_updates() -> None:
    backbone, _ = create_backbone(TINY, weights="none", freeze=True)
    before = _bn_stats(backbone)
    backbone.train()
    assert not backbone.body.training
    assert not any(p.requires_grad for p in backbone.parameters())
    out = backbone(torch.randn(4, 3, 64, 64) * 3 + 1)
    assert not out.requires_grad
    assert all(torch.equal(a, b) for a, b in zip(before, _bn_stats(backbone), strict=True))
    # The same network unfrozen does update its statistics: the check above can fail.
    backbone.set_frozen(False)
    backbone.train()
    backbone(torch.randn(4, 3, 64, 64) * 3 + 1).sum().backward()
    assert not all(torch.equal(a, b) for a, b in zip(before, _bn_stats(backbone), strict=True))
    assert all(p.grad is not None for p in backbone.parameters())


def test_weights_from_a_state_dict_file(tmp_path) -> None:
    source, _ = create_backbone(TINY, weights="none")
    plain = tmp_path / "backbone.pth"
    torch.save(source.body.state_dict(), plain)
    full = tmp_path / "with_classifier.pth"
    torch.save(timm.create_model(TINY, num_classes=1000).state_dict(), full)
    x = torch.randn(2, 3, 64, 64)
    loaded, info = create_backbone(TINY, weights=str(plain))
    assert info.weights == str(plain)
    torch.testing.assert_close(loaded.eval()(x), source.eval()(x))
    create_backbone(TINY, weights=str(full))  # a classifier's file: the classifier is left out
    wrong = tmp_path / "other.pth"
    torch.save(timm.create_model("test_resnet", num_classes=0).state_dict(), wrong)
    with pytest.raises(ValueError, match="other.pth"):
        create_backbone(TINY, weights=str(wrong))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        create_backbone(TINY, weights=str(tmp_path / "missing.pth"))


def test_hub_failure_gives_clear_advice(monkeypatch) -> None:
    real = timm.create_model

    def offline(name, pretrained=False, **kwargs):
        if pretrained:
            raise ConnectionError("no network")
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(backbone_mod.timm, "create_model", offline)
    with pytest.raises(RuntimeError, match="weights=packaged") as err:
        create_backbone(TINY, weights="hub")
    assert "no network" in str(err.value)


def test_channels_last_and_preprocessing_overrides() -> None:
    torch.manual_seed(0)
    plain, info = create_backbone(
        TINY, weights="none", channels_last=False, input_size=[120, 96], mean=[0.5] * 3, std=[0.25] * 3
    )  # channels_last=False: the default (BackboneConfig) is True
    assert info.input_size == (120, 96) and info.mean == (0.5, 0.5, 0.5) and info.std == (0.25, 0.25, 0.25)
    fast, _ = create_backbone(TINY, weights="none", channels_last=True)
    fast.load_state_dict(plain.state_dict())
    conv = next(m for m in fast.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(fast.eval()(x), plain.eval()(x), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="mean needs 3 values"):
        create_backbone(TINY, weights="none", mean=[0.5])


@pytest.mark.parametrize("head", HEADS.names())
def test_quality_model_rebuilds_from_its_meta(head: str) -> None:
    cfg = {
        "backbone": {
            "name": TINY,
            "weights": "none",
            "freeze": False,
            "channels_last": True,
            "input_size": None,
        },
        "head": {"name": head},
        "thresholds": {"name": "5_6", "t1": 5.0, "t2": 6.0},
    }
    model = build_quality_model(cfg).eval()
    meta = json.loads(json.dumps(model.meta))  # what a checkpoint or an export carries
    assert meta["head"] == head and meta["thresholds"] == [5.0, 6.0]
    assert meta["class_names"] == ["bad", "normal", "good"] and meta["num_bins"] == 10
    assert meta["input_size"] == [160, 160]  # timm's own metadata for this network
    rebuilt = build_quality_model(meta).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert rebuilt.meta == meta
    x = torch.randn(2, 3, 64, 64)
    out, again = model(x), rebuilt(x)
    assert set(out) == set(again)
    for k in out:
        torch.testing.assert_close(out[k], again[k])
    torch.testing.assert_close(model.forward_head(model.forward_features(x))["score"], out["score"])
    # Frozen model: only the head learns.
    frozen = build_quality_model({**cfg, "backbone": {**cfg["backbone"], "freeze": True}}).train()
    batch = {
        "score": torch.tensor([3.0, 7.0]),
        "dist": torch.full((2, 10), 0.1),
        "label": torch.tensor([0, 2]),
        "dataset_idx": torch.tensor([0, 0]),  # a training batch's sources (pairwise heads rank within one)
    }
    frozen.loss(frozen(x), batch).backward()
    assert all(p.grad is None for p in frozen.backbone.parameters())
    assert all(p.grad is not None for p in frozen.head.parameters())


def test_meta_of_an_unloaded_packaged_config_keeps_its_preprocessing() -> None:
    cfg = {
        "backbone": {"name": LITE0, "weights": "packaged", "freeze": True, "channels_last": True},
        "head": {"name": "regression", "loss": "balanced_mse"},
        "thresholds": {"t1": 5.0, "t2": 6.0},
    }
    meta = build_quality_model(cfg, pretrained=False).meta
    assert meta["weights"] == "packaged" and meta["mean"] == list(IMAGENET_DEFAULT_MEAN)
    assert meta["head_cfg"]["loss"] == "balanced_mse" and meta["num_features"] == 1280
    with pytest.raises(KeyError, match="lacks"):
        build_quality_model({k: v for k, v in meta.items() if k != "mean"})


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted((conf_dir() / "backbone").glob("*.yaml")), ids=lambda p: p.stem)
def test_backbone_configs_are_valid(path) -> None:
    cfg = OmegaConf.to_container(compose("train", [f"backbone={path.stem}"]).backbone)
    assert cfg["name"] == path.stem and timm.is_model(cfg["name"])
    assert set(cfg) - {"_target_"} <= {f.name for f in dataclasses.fields(BackboneConfig)}
    assert cfg["weights"] in ("packaged", "hub")
    if cfg["weights"] == "packaged":
        assert cfg["name"] in packaged_names()


@pytest.mark.parametrize("path", sorted((conf_dir() / "head").glob("*.yaml")), ids=lambda p: p.stem)
def test_head_configs_build_their_head(path) -> None:
    cfg = OmegaConf.load(path)
    assert cfg.name == path.stem and cfg.name in HEADS
    model = build_quality_model(
        {"backbone": {"name": TINY, "weights": "none"}, "head": cfg, "thresholds": {"t1": 4.5, "t2": 6.5}}
    )
    assert model.meta["head_cfg"] == {
        k: v for k, v in OmegaConf.to_container(cfg).items() if k not in ("name", "_target_", "_partial_")
    }


def _reference_mlsp(body: torch.nn.Module, x: torch.Tensor, extra_blocks: bool) -> torch.Tensor:
    """Per level: channel means, then sqrt(population variance + eps), from torch's own reductions."""
    maps = body.forward_intermediates(x, intermediates_only=True, extra_blocks=extra_blocks)
    stats = []
    for m in maps:
        var = m.var(dim=(2, 3), unbiased=False)
        stats += [m.mean(dim=(2, 3)), torch.sqrt(var + pooling.STD_EPS)]
    return torch.cat(stats, dim=1)


@pytest.mark.parametrize("pool", ["mlsp", "mlsp_blocks"])
def test_mlsp_pool_is_mean_and_std_of_every_level(pool: str) -> None:
    torch.manual_seed(0)
    plain, info = create_backbone(TINY, weights="none", channels_last=False, pool=pool)
    fast, fast_info = create_backbone(TINY, weights="none", channels_last=True, pool=pool)
    fast.load_state_dict(plain.state_dict())
    x = torch.randn(3, 3, 64, 48)
    with torch.no_grad():
        ref = _reference_mlsp(plain.body.eval(), x, extra_blocks=pool == "mlsp_blocks")
    feats = plain.eval()(x)
    channels = [int(m.shape[1]) for m in plain.body.forward_intermediates(x, intermediates_only=True)]
    assert feats.shape == (3, info.num_features) == ref.shape
    assert info.pool == fast_info.pool == pool and fast.num_features == info.num_features
    if pool == "mlsp":
        assert info.num_features == 2 * sum(channels)
    else:
        assert info.num_features > 2 * sum(channels)  # the extra block groups add levels
    torch.testing.assert_close(feats, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(fast.eval()(x), feats, rtol=1e-4, atol=1e-4)


def test_std_pool_of_a_constant_channel_is_finite() -> None:
    x = torch.full((2, 4, 5, 5), 3.0, requires_grad=True)
    mean, std = pooling.mean_std_pool(x)
    torch.testing.assert_close(mean, torch.full((2, 4), 3.0))
    assert torch.all(std <= 1e-2) and torch.all(torch.isfinite(std))
    std.sum().backward()
    assert torch.all(torch.isfinite(x.grad))


def test_unknown_pool_gets_a_hint() -> None:
    with pytest.raises(ValueError, match="Did you mean 'mlsp'"):
        create_backbone(TINY, weights="none", pool="mslp")


@pytest.mark.parametrize("head", HEADS.names())
def test_mlsp_pool_is_recorded_and_rebuilt_from_meta(head: str) -> None:
    cfg = {
        "backbone": {"name": TINY, "weights": "none", "pool": "mlsp", "input_size": 64},
        "head": {"name": head, "input_norm": "batchnorm", "hidden": [8]},
        "thresholds": {"t1": 5.0, "t2": 6.0},
    }
    model = build_quality_model(cfg).eval()
    meta = json.loads(json.dumps(model.meta))
    assert meta["pool"] == "mlsp" and meta["num_features"] == model.backbone.num_features
    rebuilt = build_quality_model(meta).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    assert rebuilt.meta == meta
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(rebuilt(x)["score"], model(x)["score"])
    # A record written before the option existed means the model's own pooling.
    legacy = {
        k: v
        for k, v in build_quality_model({**cfg, "backbone": {"name": TINY, "weights": "none"}}).meta.items()
    }
    legacy.pop("pool")
    assert build_quality_model(legacy).backbone.pool == "avg"


@pytest.mark.slow  # exports the real lite0 backbone
def test_mlsp_model_exports_to_onnx_and_opencv_matches_torch(tmp_path) -> None:
    import cv2

    from iqs.deploy.export.exporter import export_onnx
    from iqs.deploy.export.onnx_wrappers import wrap

    torch.manual_seed(0)
    cfg = {
        "backbone": {
            "name": TINY,
            "weights": "none",
            "pool": "mlsp",
            "channels_last": True,
            "input_size": 64,
        },
        "head": {"name": "regression", "input_norm": "batchnorm", "hidden": [16]},
        "thresholds": {"t1": 5.0, "t2": 6.0},
    }
    model = build_quality_model(cfg)
    # Give the head's running statistics and output something other than their initial values.
    model.train()
    for _ in range(3):
        model(torch.randn(4, 3, 64, 64))
    model.eval()
    path = export_onnx(model, model.meta, tmp_path / "mlsp.contract.onnx", "contract_onnx")
    net = cv2.dnn.readNet(str(path))
    graph = wrap(model, dict(model.meta), "contract").eval()
    rng = np.random.default_rng(0)
    for _ in range(2):
        blob = rng.uniform(-1.0, 1.0, (1, 3, 299, 299)).astype(np.float32)
        with torch.no_grad():
            ref = graph(torch.from_numpy(blob))
        ref = (ref[0] if isinstance(ref, (tuple, list)) else ref).numpy()
        net.setInput(blob)
        np.testing.assert_allclose(net.forward(), ref, atol=1e-4, rtol=0)


def test_pool_levels_keep_the_shallow_levels_and_key_the_cache() -> None:
    from iqs.core.preprocess import InputSpec
    from iqs.train.features import FeatureKey

    torch.manual_seed(0)
    full, full_info = create_backbone(TINY, weights="none", pool="mlsp")
    shallow, info = create_backbone(TINY, weights="none", pool="mlsp", pool_levels=2)
    shallow.load_state_dict(full.state_dict())
    # eval first: a train-mode probe would move the BN statistics of one copy only
    full.eval()
    shallow.eval()
    x = torch.randn(2, 3, 64, 64)
    channels = [int(m.shape[1]) for m in full.body.forward_intermediates(x, intermediates_only=True)]
    assert info.pool_levels == 2 and info.num_features == 2 * sum(channels[:2]) < full_info.num_features
    # the shallow features are the leading block of the full ones (same levels, same order)
    torch.testing.assert_close(shallow(x), full(x)[:, : info.num_features])
    assert (full.pooling, shallow.pooling) == ("mlsp", "mlsp:2")
    with pytest.raises(ValueError, match="has 5 levels"):
        create_backbone(TINY, weights="none", pool="mlsp", pool_levels=9)
    with pytest.raises(ValueError, match="positive integer"):
        create_backbone(TINY, weights="none", pool="mlsp", pool_levels=0)
    # same weights, different pooling: the feature cache must not hand one the other's embeddings
    spec = InputSpec((64, 64), (0.5,) * 3, (0.5,) * 3)
    keys = {FeatureKey(TINY, "none", "d", spec, "t", pool=p).digest() for p in ("avg", "mlsp", "mlsp:2")}
    assert len(keys) == 3
