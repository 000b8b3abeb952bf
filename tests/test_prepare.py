from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from iqs.data.prepare import PreparedImages, decode_short_side, prepare_source


@pytest.fixture()
def photo_folder(tmp_path):
    root = tmp_path / "src"
    (root / "img").mkdir(parents=True)
    base = skdata.astronaut()
    paths = []
    for i, (h, w) in enumerate([(600, 800), (800, 600), (512, 512), (300, 900), (700, 1000), (640, 480)]):
        im = cv2.resize(base, (w, h), interpolation=cv2.INTER_AREA)
        p = f"img/{i:02d}.jpg"
        Image.fromarray(im).save(root / p, quality=92)
        paths.append(p)
    Image.fromarray(skdata.chelsea()).save(root / "img/cat.png")
    paths.append("img/cat.png")
    (root / "img/broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    paths.append("img/broken.jpg")
    return root, paths


def test_shards_give_the_pixels_of_a_direct_decode(photo_folder, tmp_path):
    root, paths = photo_folder
    rep = prepare_source(
        "demo", root, paths, tmp_path / "cache", short_side=256, shard_size=3, workers=1, progress=False
    )
    assert rep.shards_written == 3 and rep.shards_reused == 0
    assert [p for p, _ in rep.errors] == [str(root / "img/broken.jpg")]
    pre = PreparedImages(rep.out_dir)
    assert len(pre) == len(paths) - 1 and "img/broken.jpg" in pre.errors
    for p in paths[:-1]:
        got = pre.get(p)
        # reference: full decode (no DCT scaling), then the same short-side resize
        full = np.asarray(Image.open(root / p).convert("RGB"))
        h, w = full.shape[:2]
        s = 256 / min(h, w)
        size = (round(w * s), round(h * s))
        ref = cv2.resize(full, size, interpolation=cv2.INTER_AREA) if min(h, w) > 256 else full
        # DCT-domain downscaling differs from a full decode only by rounding: 1 px of size at most
        assert min(got.shape[:2]) == min(256, min(h, w))
        assert max(abs(a - b) for a, b in zip(got.shape, ref.shape, strict=True)) <= 1, (
            p,
            got.shape,
            ref.shape,
        )
        if got.shape != ref.shape:
            got = cv2.resize(got, ref.shape[1::-1], interpolation=cv2.INTER_AREA)
        diff = np.abs(got.astype(int) - ref.astype(int))
        assert diff.mean() < 3.0, (p, diff.mean())
        assert np.array_equal(pre.get(p), decode_short_side(root / p, 256))


def test_prepare_resumes_and_rebuilds_only_missing_shards(photo_folder, tmp_path):
    root, paths = photo_folder
    cache = tmp_path / "cache"
    rep = prepare_source("demo", root, paths, cache, short_side=128, shard_size=3, workers=1, progress=False)
    metas = sorted(rep.out_dir.glob("shard-*.json"))
    assert len(metas) == 3
    # simulate a run interrupted after its first shards: remove the last one
    metas[-1].unlink()
    again = prepare_source(
        "demo", root, paths, cache, short_side=128, shard_size=3, workers=1, progress=False
    )
    assert again.shards_reused == 2 and again.shards_written == 1
    entries = [e for m in sorted(again.out_dir.glob("shard-*.json")) for e in json.loads(m.read_text())]
    assert sorted(e["path"] for e in entries) == sorted(paths)
    # another short side is another cache
    other = prepare_source("demo", root, paths, cache, short_side=96, shard_size=3, workers=1, progress=False)
    assert other.out_dir != again.out_dir and other.shards_written == 3


def test_prepared_images_pickle_without_open_maps(photo_folder, tmp_path):
    import pickle

    root, paths = photo_folder
    rep = prepare_source(
        "demo", root, paths, tmp_path / "c", short_side=64, shard_size=4, workers=1, progress=False
    )
    pre = PreparedImages(rep.out_dir)
    first = pre.get(paths[0]).copy()
    clone = pickle.loads(pickle.dumps(pre))
    assert clone._maps == {}
    assert np.array_equal(clone.get(paths[0]), first)
    assert clone.get("img/absent.jpg") is None


def test_training_rows_read_pixels_from_the_shards(photo_folder, tmp_path):
    from iqs.core.preprocess import InputSpec, eval_transform
    from iqs.data.table import make_table
    from iqs.train.datamodule import ImageRows

    root, paths = photo_folder
    good = paths[:-1]
    rep = prepare_source(
        "demo", root, good, tmp_path / "c", short_side=320, shard_size=4, workers=1, progress=False
    )
    n = len(good)
    table = make_table("demo", good, good, np.full(n, 5.0), np.full(n, 5.0), np.full((n, 10), 0.1))
    table["label"] = 1
    spec = InputSpec(size=(64, 64), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    rows = ImageRows(
        table,
        np.arange(n),
        np.zeros(n, int),
        np.ones(n),
        np.array([str(root / p) for p in good]),
        eval_transform(spec),
        {"demo": PreparedImages(rep.out_dir)},
    )
    expected = [rows.pixels(i).copy() for i in range(n)]
    for p in good:  # the originals are gone: only the shards can serve them now
        (root / p).unlink()
    for i in range(n):
        assert np.array_equal(rows.pixels(i), expected[i])
    assert rows[0]["image"].shape == (3, 64, 64)
