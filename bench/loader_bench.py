"""Prepared-image loader vs raw full-size decode vs a fine-tuning step, measured side by side."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from skimage import data as skdata


def _make_photos(folder: Path, n: int, size: tuple[int, int]) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    bases = [skdata.astronaut(), skdata.chelsea(), skdata.coffee(), skdata.rocket()]
    paths = []
    for i in range(n):
        p = folder / f"{i:04d}.jpg"
        if not p.exists():
            im = cv2.resize(bases[i % len(bases)], size, interpolation=cv2.INTER_CUBIC).astype(np.int16)
            im += rng.integers(-12, 13, im.shape, dtype=np.int16)  # texture, so JPEGs are photo-sized
            Image.fromarray(np.clip(im, 0, 255).astype(np.uint8)).save(p, quality=92)
        paths.append(p.name)
    return paths


def _rate(fn, items, min_seconds: float = 3.0) -> float:
    done, t0 = 0, time.perf_counter()
    while True:
        for it in items:
            fn(it)
            done += 1
        if time.perf_counter() - t0 >= min_seconds:
            return done / (time.perf_counter() - t0)


def finetune_step_ips(
    size: int, batch: int = 16, n_steps: int = 3, device: str = "cpu", bf16: bool = False
) -> float:
    """Images per second of one lite0 fine-tuning step (forward + backward + AdamW), synchronised on CUDA.

    `bf16`: under bf16 autocast, as Lightning's `precision: bf16-mixed` runs it.
    """
    import torch

    from iqs.models.backbone import create_backbone

    torch.manual_seed(0)
    net, info = create_backbone("tf_efficientnet_lite0", weights="none", freeze=False, channels_last=True)
    head = torch.nn.Linear(info.num_features, 1)
    net, head = net.to(device), head.to(device)
    opt = torch.optim.AdamW([*net.parameters(), *head.parameters()], lr=1e-4)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randn(batch, device=device)
    kind = "cuda" if str(device).startswith("cuda") else "cpu"

    def sync() -> None:
        if kind == "cuda":
            torch.cuda.synchronize()

    def step() -> None:
        opt.zero_grad()
        with torch.autocast(kind, dtype=torch.bfloat16, enabled=bf16):
            out = head(net(x)).squeeze(1)
        loss = torch.nn.functional.mse_loss(out.float(), y)
        loss.backward()
        opt.step()

    step()  # warm-up: allocations, cuDNN algorithm choice, first-call dispatch
    sync()
    t0 = time.perf_counter()
    for _ in range(n_steps):
        step()
    sync()
    return n_steps * batch / (time.perf_counter() - t0)


def run(work_dir: str | Path, n_images: int = 48, size: tuple[int, int] = (3000, 2000)) -> dict:
    from iqs.core.preprocess import InputSpec, train_transform
    from iqs.data.prepare import PreparedImages, prepare_source

    work = Path(work_dir)
    paths = _make_photos(work / "full", n_images, size)
    rep = prepare_source("bench", work / "full", paths, work / "cache", short_side=256, progress=False)
    pre = PreparedImages(rep.out_dir)
    tf = train_transform(InputSpec(size=(224, 224), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)))

    def raw(p: str) -> None:
        tf(image=np.asarray(Image.open(work / "full" / p).convert("RGB")))

    def prepared(p: str) -> None:
        tf(image=pre.get(p))

    raw_ips = _rate(raw, paths[:12], 4.0)
    prep_ips = _rate(prepared, paths, 3.0)
    step_ips = finetune_step_ips(224)
    return {
        "raw_decode_ips": raw_ips,
        "prepared_loader_ips": prep_ips,
        "finetune_step_ips": step_ips,
        "loader_vs_step_ratio": prep_ips / step_ips,
        "prepared_vs_raw_decode_ratio": prep_ips / raw_ips,
        "loader_source_image": f"{size[0]}x{size[1]} JPEG, short side 256 prepared, 224 px crops",
    }


if __name__ == "__main__":
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        print(json.dumps(run(d), indent=2))
