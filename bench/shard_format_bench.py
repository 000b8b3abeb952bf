"""JPEG vs raw prepared shards: bytes per image, decode rate on 2 loader workers, and the CPU fine-tune step.

Two image sets, both prepared at short side 320 (the default):
- the demo (1,770 images, long side 288, so stored at their own size): the decode ratios come from it;
- photo-sized images (3000x2000 JPEGs with sensor-like noise, stored at 480x320, as AVA's photos would be):
  the bytes per image, and what AVA's 255k photos would take in each format. The noise makes this a
  pessimistic case for JPEG (noise is what JPEG compresses worst).

"Decode" is `PreparedImages.get` (raw: a memory-mapped view; JPEG: one libjpeg-turbo decode) served by a
DataLoader with 2 workers, as training reads shards; "loader" adds the train augmentation to 299 px; the step is lite0 forward + backward + AdamW at 299 px,
digiKam's view, batch 16, on all cores. The ratios are measured in one run, so the machine's load cancels.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

AVA_IMAGES = 255_000
SHORT_SIDE = 320
WORKERS = 2


class _Reads:
    """A Dataset over the shards: `get` alone (the format's decode), or `get` + the train augmentation."""

    def __init__(self, pre, paths: list[str], transform=None) -> None:
        self.pre, self.paths, self.transform = pre, paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> int:
        rgb = self.pre.get(self.paths[i])
        if self.transform is not None:
            rgb = self.transform(image=rgb)["image"]
        return int(rgb.shape[0])  # the work happens in the worker; only a number crosses back


def _loader_ips(pre, paths: list[str], transform=None, min_seconds: float = 4.0) -> float:
    from torch.utils.data import DataLoader

    loader = DataLoader(
        _Reads(pre, paths, transform),
        batch_size=64,
        num_workers=WORKERS,
        persistent_workers=True,
        collate_fn=list,
    )
    for _ in loader:  # worker start-up and first page-in are not the format's cost
        pass
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_seconds:
        for batch in loader:
            done += len(batch)
    return done / (time.perf_counter() - t0)


def _bytes_per_image(out_dir: Path, n: int) -> float:
    return sum(f.stat().st_size for f in out_dir.glob("*.bin")) / n


def _prepare(name: str, root: Path, paths: list[str], cache: Path, fmt):
    from iqs.data.prepare import PreparedImages, prepare_source

    rep = prepare_source(
        name, root, paths, cache, short_side=SHORT_SIDE, workers=WORKERS, progress=False, fmt=fmt
    )
    if rep.errors:
        raise RuntimeError(f"{len(rep.errors)} unreadable images, e.g. {rep.errors[0]}")
    return rep.out_dir, PreparedImages(rep.out_dir)


def _psnr_min(a_pre, b_pre, paths: list[str]) -> float:
    worst = np.inf
    for p in paths:
        a, b = a_pre.get(p).astype(np.float64), b_pre.get(p).astype(np.float64)
        worst = min(worst, 10 * np.log10(255.0**2 / max(np.mean((a - b) ** 2), 1e-12)))
    return float(worst)


def run(work_dir: str | Path, n_photos: int = 16) -> dict:
    from loader_bench import _make_photos, finetune_step_ips

    from iqs.core.preprocess import InputSpec, train_transform
    from iqs.data.demo.build import ensure_demo
    from iqs.data.shard_format import RAW, ShardFormat

    jpeg = ShardFormat("jpeg")
    work = Path(work_dir)
    demo = ensure_demo(work / "demo", progress=False)
    demo_paths = sorted(str(p.relative_to(demo)) for p in demo.rglob("*") if p.suffix in (".jpg", ".png"))
    raw_dir, raw_pre = _prepare("demo", demo, demo_paths, work / "cache", RAW)
    jpg_dir, jpg_pre = _prepare("demo", demo, demo_paths, work / "cache", jpeg)

    photos = _make_photos(work / "photos", n_photos, (3000, 2000))
    praw_dir, praw = _prepare("photos", work / "photos", photos, work / "cache", RAW)
    pjpg_dir, pjpg = _prepare("photos", work / "photos", photos, work / "cache", jpeg)
    photo_raw_b = _bytes_per_image(praw_dir, len(photos))
    photo_jpg_b = _bytes_per_image(pjpg_dir, len(photos))

    raw_ips = _loader_ips(raw_pre, demo_paths)
    jpeg_ips = _loader_ips(jpg_pre, demo_paths)
    # what a training loader pays: decode + train augmentation to digiKam's 299 px view (ImageNet mean/std)
    tf = train_transform(InputSpec(size=(299, 299), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)))
    raw_aug_ips = _loader_ips(raw_pre, demo_paths, tf)
    jpeg_aug_ips = _loader_ips(jpg_pre, demo_paths, tf)
    step_ips = finetune_step_ips(299)
    demo_raw_b = _bytes_per_image(raw_dir, len(demo_paths))
    demo_jpg_b = _bytes_per_image(jpg_dir, len(demo_paths))
    return {
        "jpeg_decode_vs_raw": jpeg_ips / raw_ips,
        "jpeg_decode_vs_train_step": jpeg_ips / step_ips,
        "jpeg_loader_vs_raw_loader": jpeg_aug_ips / raw_aug_ips,
        "jpeg_loader_vs_train_step": jpeg_aug_ips / step_ips,
        "jpeg_vs_raw_bytes_ratio": demo_jpg_b / demo_raw_b,
        "photo_jpeg_vs_raw_bytes_ratio": photo_jpg_b / photo_raw_b,
        "demo_raw_kb_per_image": demo_raw_b / 1e3,
        "demo_jpeg_kb_per_image": demo_jpg_b / 1e3,
        "photo_raw_kb_per_image": photo_raw_b / 1e3,
        "photo_jpeg_kb_per_image": photo_jpg_b / 1e3,
        "ava_raw_gb_estimate": photo_raw_b * AVA_IMAGES / 1e9,
        "ava_jpeg_gb_estimate": photo_jpg_b * AVA_IMAGES / 1e9,
        "raw_shard_read_ips": raw_ips,
        "jpeg_shard_decode_ips": jpeg_ips,
        "raw_loader_ips": raw_aug_ips,
        "jpeg_loader_ips": jpeg_aug_ips,
        "finetune_step_ips": step_ips,
        "demo_jpeg_min_psnr_db": _psnr_min(raw_pre, jpg_pre, demo_paths),
        "photo_jpeg_min_psnr_db": _psnr_min(praw, pjpg, photos),
        "shard_format_setup": (
            f"demo ({len(demo_paths)} images) and {n_photos} 3000x2000 noisy JPEGs prepared at short side "
            f"{SHORT_SIDE}; JPEG q{jpeg.quality} 4:4:4; reads through a DataLoader with {WORKERS} workers; "
            "step = lite0 fwd+bwd+AdamW, 299 px, batch 16"
        ),
    }


if __name__ == "__main__":
    import json
    import sys
    import tempfile

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    with tempfile.TemporaryDirectory() as d:
        print(json.dumps(run(d), indent=2))
