"""The frozen-backbone feature cache: keys, hits, invalidation, augmented views, concurrent writers."""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from iqs.core.decode import load_rgb
from iqs.core.preprocess import InputSpec, eval_transform
from iqs.train.features import FeatureCache, cached_features, weights_digest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

SPEC = InputSpec(
    size=(32, 32), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), interpolation="bilinear"
)


class TinyBackbone(nn.Module):
    """Conv + global pooling: a real (if small) embedding of the pixels."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(12):
        img = rng.integers(0, 256, (40 + i, 48, 3), dtype=np.uint8)
        p = root / f"{i}.jpg"
        cv2.imwrite(str(p), img)
        paths.append(str(p))
    return paths


def embed(paths, cache_dir, backbone=None, spec=SPEC, fingerprint="fp0", **kw):
    return cached_features(
        backbone or TinyBackbone(),
        backbone_name="tiny",
        weights="none",
        spec=spec,
        paths=paths,
        table_fingerprint=fingerprint,
        cache_dir=cache_dir,
        batch_size=5,
        **kw,
    )


def test_miss_then_hit_gives_the_same_embeddings_of_the_pixels(images, tmp_path):
    first = embed(images, tmp_path)
    assert not first.hit and first.path.is_file() and first.path.parent == tmp_path / "features"
    again = embed(images, tmp_path)
    assert again.hit and again.path == first.path
    torch.testing.assert_close(again.eval, first.eval, rtol=0, atol=0)
    # the stored rows are the images in order, through the eval transform (float16 storage)
    bb = TinyBackbone().eval()
    with torch.inference_mode():
        direct = torch.stack([bb(eval_transform(SPEC)(image=load_rgb(p))["image"][None])[0] for p in images])
    torch.testing.assert_close(first.eval, direct.half().float(), rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize(
    "change",
    ["weights", "size", "mean", "std", "interpolation", "rows", "aug_views", "dtype"],
)
def test_any_key_change_invalidates(images, tmp_path, change):
    base = embed(images, tmp_path)
    kwargs: dict = {}
    if change == "weights":
        kwargs["backbone"] = TinyBackbone(seed=1)
    elif change in ("size", "mean", "std", "interpolation"):
        value = {
            "size": (24, 24),
            "mean": (0.5, 0.5, 0.5),
            "std": (0.5, 0.5, 0.5),
            "interpolation": "bicubic",
        }
        kwargs["spec"] = dataclasses.replace(SPEC, **{change: value[change]})
    elif change == "rows":
        kwargs["fingerprint"] = "fp1"
    elif change == "aug_views":
        kwargs["aug_views"] = 1
    else:
        kwargs["dtype"] = "float32"
    other = embed(images, tmp_path, **kwargs)
    assert not other.hit and other.path != base.path
    assert embed(images, tmp_path).hit  # the old entry is still valid for the old key


def test_weights_digest_follows_parameters_and_buffers():
    a, b = TinyBackbone(), TinyBackbone()
    assert weights_digest(a) == weights_digest(b)
    with torch.no_grad():
        b.bn.running_mean += 1e-3
    assert weights_digest(a) != weights_digest(b)


def test_augmented_views_are_seeded_and_distinct(images, tmp_path):
    aug = {"crop": 0.1, "hflip": 0.5}
    f = embed(images, tmp_path / "a", aug_views=2, aug=aug, aug_seed=3)
    assert f.aug.shape == (2, len(images), 8)
    assert not torch.equal(f.aug[0], f.aug[1]) and not torch.equal(f.aug[0], f.eval)
    g = embed(images, tmp_path / "b", aug_views=2, aug=aug, aug_seed=3)
    torch.testing.assert_close(g.aug, f.aug, rtol=0, atol=0)


def test_unreadable_entry_is_recomputed(images, tmp_path):
    first = embed(images, tmp_path)
    first.path.write_bytes(b"truncated")
    again = embed(images, tmp_path)
    assert not again.hit
    torch.testing.assert_close(again.eval, first.eval, rtol=0, atol=0)


def _writer(paths: list[str], cache_dir: str, out: str) -> None:
    torch.set_num_threads(1)
    f = embed(paths, Path(cache_dir))
    torch.save({"eval": f.eval, "hit": f.hit}, out)


@pytest.mark.slow  # starts two interpreters that import torch
def test_concurrent_writers_leave_one_valid_entry(images, tmp_path):
    ctx = mp.get_context("spawn")
    procs = [
        ctx.Process(target=_writer, args=(images, str(tmp_path), str(tmp_path / f"r{i}.pt")))
        for i in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    results = [torch.load(tmp_path / f"r{i}.pt", weights_only=True) for i in range(2)]
    # the lock lets exactly one compute; the other waits and reads the finished file
    assert sorted(r["hit"] for r in results) == [False, True]
    torch.testing.assert_close(results[0]["eval"], results[1]["eval"], rtol=0, atol=0)
    files = sorted(p.name for p in (tmp_path / "features").iterdir())
    assert len([f for f in files if f.endswith(".pt")]) == 1 and not [f for f in files if f.endswith(".tmp")]
    cache = FeatureCache(tmp_path / "features")
    entry = torch.load((tmp_path / "features" / files[0]), weights_only=True)
    assert entry["eval"].shape == (len(images), 8)
    assert cache.root.is_dir()
