"""Compressed (JPEG) prepared shards: round trip against raw shards, manifest format, old shards, training reads."""

from __future__ import annotations

import hashlib
import json
import logging
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image
from skimage import data as skdata

from iqs.data.prepare import PreparedImages, decode_short_side, prepare_source, source_dir
from iqs.data.shard_format import RAW, ShardFormat, decode_jpeg_batch_cuda

JPEG = ShardFormat("jpeg", 95)
# q95 4:4:4 keeps these noisy test photos above 36 dB at full size; 4:2:0 (33.5-34.3) and q75 (32-33) do not
PSNR_BOUND = 35.0


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.fixture()
def photos(tmp_path):
    root = tmp_path / "src"
    root.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i, (base, (h, w)) in enumerate(
        [(skdata.astronaut(), (400, 600)), (skdata.chelsea(), (300, 450)), (skdata.coffee(), (500, 350))]
    ):
        im = cv2.resize(base, (w, h), interpolation=cv2.INTER_AREA).astype(np.int16)
        im += rng.integers(-8, 9, im.shape, dtype=np.int16)  # sensor-like noise: the hard case for JPEG
        p = f"{i:02d}.png"
        Image.fromarray(np.clip(im, 0, 255).astype(np.uint8)).save(root / p)
        paths.append(p)
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return root, [*paths, "broken.jpg"]


def _prep(root, paths, cache, fmt=RAW, short_side=256):
    return prepare_source(
        "demo", root, paths, cache, short_side=short_side, shard_size=2, workers=1, progress=False, fmt=fmt
    )


def test_jpeg_shards_round_trip_within_psnr_of_raw_and_record_their_format(photos, tmp_path):
    root, paths = photos
    raw = _prep(root, paths, tmp_path / "c")
    jpg = _prep(root, paths, tmp_path / "c", JPEG)
    assert raw.out_dir != jpg.out_dir  # one cache per format: neither overwrites the other
    assert [p for p, _ in jpg.errors] == [str(root / "broken.jpg")]
    rows = [e for m in sorted(jpg.out_dir.glob("shard-*.json")) for e in json.loads(m.read_text())]
    good = [e for e in rows if "error" not in e]
    assert len(good) == 3 and all(e["format"] == "jpeg" and e["nbytes"] > 0 for e in good)
    raw_rows = [e for m in sorted(raw.out_dir.glob("shard-*.json")) for e in json.loads(m.read_text())]
    assert {e.get("format") for e in raw_rows if "error" not in e} == {"raw"}

    pr, pj = PreparedImages(raw.out_dir), PreparedImages(jpg.out_dir)
    assert pr.formats() == {"raw"} and pj.formats() == {"jpeg"}
    assert "broken.jpg" in pj.errors and pj.get("broken.jpg") is None
    for p in paths[:-1]:
        a, b = pr.get(p), pj.get(p)
        assert np.array_equal(a, decode_short_side(root / p, 256))
        assert b.shape == a.shape and b.dtype == np.uint8
        assert _psnr(a, b) > PSNR_BOUND, (p, _psnr(a, b))
    raw_bytes = sum(f.stat().st_size for f in raw.out_dir.glob("*.bin"))
    jpeg_bytes = sum(f.stat().st_size for f in jpg.out_dir.glob("*.bin"))
    assert jpeg_bytes < raw_bytes / 3, (jpeg_bytes, raw_bytes)
    # lower quality: smaller, worse, and another cache folder
    low = _prep(root, paths[:1], tmp_path / "c", ShardFormat("jpeg", 50))
    assert low.out_dir not in (jpg.out_dir, raw.out_dir)
    got = PreparedImages(low.out_dir).get(paths[0])
    assert _psnr(pr.get(paths[0]), got) < _psnr(pr.get(paths[0]), pj.get(paths[0]))


def test_shards_written_before_the_format_key_still_load(photos, tmp_path):
    """A pre-JPEG cache: same folder key as before, manifest rows without `format`, read as raw pixels."""
    root, paths = photos
    cache = tmp_path / "c"
    old_key = hashlib.sha256(f"{root.resolve()}|256|1".encode()).hexdigest()[:10]
    assert source_dir(cache, "demo", root, 256) == cache / "prepared" / f"demo-{old_key}"
    out = source_dir(cache, "demo", root, 256)
    out.mkdir(parents=True)
    pixels = [decode_short_side(root / p, 256) for p in paths[:2]]
    rows, offset = [], 0
    with open(out / "shard-00000-0123456789ab.bin", "wb") as fh:
        for p, rgb in zip(paths[:2], pixels, strict=True):
            fh.write(rgb.tobytes())
            rows.append({"path": p, "offset": offset, "h": rgb.shape[0], "w": rgb.shape[1]})
            offset += rgb.nbytes
    (out / "shard-00000-0123456789ab.json").write_text(json.dumps(rows))
    pre = PreparedImages(out)
    assert pre.formats() == {"raw"}
    for p, rgb in zip(paths[:2], pixels, strict=True):
        assert np.array_equal(pre.get(p), rgb)


def test_bad_formats_are_refused_with_the_key_to_fix():
    with pytest.raises(ValueError, match="prepare.format must be one of raw, jpeg"):
        ShardFormat.from_cfg({"format": "png"})
    with pytest.raises(ValueError, match="prepare.jpeg_quality"):
        ShardFormat.from_cfg({"format": "jpeg", "jpeg_quality": 101})
    with pytest.raises(ValueError, match="prepare.jpeg_quality must be 1-100, got 0"):
        ShardFormat.from_cfg({"format": "jpeg", "jpeg_quality": 0})  # not silently the default 95
    with pytest.raises(ValueError, match="prepare.format must be one of raw, jpeg, got ''"):
        ShardFormat.from_cfg({"format": ""})
    assert ShardFormat.from_cfg({"format": None, "jpeg_quality": None}) == RAW  # unset keys: the defaults
    from iqs.data.shard_format import decode

    with pytest.raises(ValueError, match="unknown shard format 'webp'.*iqs data prepare"):
        decode({"format": "webp", "h": 1, "w": 1}, np.zeros(3, np.uint8))


def test_training_reads_the_jpeg_prepared_source_the_config_names(photos, tmp_path, caplog):
    from iqs.core.preprocess import InputSpec, eval_transform
    from iqs.data.table import make_table
    from iqs.train.datamodule import ImageRows
    from iqs.train.options import prepared_images

    root, paths = photos
    good = paths[:-1]
    cache = tmp_path / "c"
    raw = _prep(root, good, cache, short_side=320)
    jpg = _prep(root, good, cache, JPEG, short_side=320)
    mixture = SimpleNamespace(roots={"demo": root})

    def cfg(**prepare):
        return OmegaConf.create(
            {"paths": {"cache_dir": str(cache)}, "prepare": {"short_side": 320, **prepare}}
        )

    assert prepared_images(cfg(), mixture)["demo"].out_dir == raw.out_dir  # format unset: raw, as before
    found = prepared_images(cfg(format="jpeg", jpeg_quality=95), mixture)
    assert found["demo"].out_dir == jpg.out_dir and found["demo"].formats() == {"jpeg"}
    # the handler sits on the logger itself: records reach it whatever an earlier in-process Hydra job
    # (hydra/job_logging=disabled) did to the root logger of this worker
    logger = logging.getLogger("iqs.data.prepared_folders")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger=logger.name):
            assert prepared_images(cfg(format="jpeg", jpeg_quality=80), mixture) == {}  # not prepared at q80
    finally:
        logger.removeHandler(caplog.handler)
    # ... and the run says which options would have used the prepared shards, instead of decoding silently
    (warning,) = {r.getMessage() for r in caplog.records if r.name == logger.name}
    assert "prepare.jpeg_quality=80" in warning and "decodes the original images" in warning
    assert "prepare.short_side=320 prepare.format=raw" in warning
    assert "prepare.short_side=320 prepare.format=jpeg prepare.jpeg_quality=95" in warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="iqs.data.prepared_folders"):
        prepared_images(cfg(format="jpeg", jpeg_quality=95), mixture)
        prepared_images(
            OmegaConf.create({"paths": {"cache_dir": str(cache)}, "prepare": {"short_side": 320}}),
            SimpleNamespace(roots={"other": root}),
        )
    assert not [r for r in caplog.records if r.name == "iqs.data.prepared_folders"]  # used, or never prepared

    n = len(good)
    table = make_table("demo", good, good, np.full(n, 5.0), np.full(n, 5.0), np.full((n, 10), 0.1))
    table["label"] = 1
    spec = InputSpec(size=(64, 64), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    rows = ImageRows(
        table, np.arange(n), np.zeros(n, int), np.ones(n), np.array([str(root / p) for p in good]),
        eval_transform(spec), found,
    )  # fmt: skip
    for p in good:  # the originals are gone: only the JPEG shards can serve them now
        (root / p).unlink()
    raw_pre = PreparedImages(raw.out_dir)
    for i, p in enumerate(good):
        assert _psnr(rows.pixels(i), raw_pre.get(p)) > PSNR_BOUND
    assert rows[0]["image"].shape == (3, 64, 64)


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU (nvJPEG)")
def test_gpu_decode_matches_the_loader_decode(photos, tmp_path):
    root, paths = photos
    pre = PreparedImages(_prep(root, paths[:-1], tmp_path / "c", JPEG).out_dir)
    hits = [pre.encoded(p) for p in paths[:-1]]
    on_gpu = decode_jpeg_batch_cuda([data.tobytes() for data, _ in hits])
    for (_, entry), t in zip(hits, on_gpu, strict=True):
        cpu = pre.get(entry["path"])
        gpu = t.permute(1, 2, 0).cpu().numpy()
        assert gpu.shape == cpu.shape
        assert np.abs(gpu.astype(int) - cpu.astype(int)).mean() < 1.0  # IDCTs differ by rounding only
