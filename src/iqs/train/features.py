"""Frozen-backbone feature cache: embed every image once, then train heads on the embeddings.

With a frozen backbone, the network's expensive part is a fixed function of the pixels, so running
it every epoch only burns time. `cached_features` embeds the rows of a table once and stores them at
`<cache_dir>/features/<key>.pt`; training steps then read (N, D) tensors and never run the backbone.

The key is a hash of everything the embeddings depend on: backbone name, weights source, a digest
of the backbone's actual parameters (so a retrained or swapped weights file can never hit a stale
entry), the input transform (size, mean, std, interpolation), the fingerprint of the embedded rows
(which images in which order: `iqs.data.table.images_fingerprint`; not their labels or splits, so the
runs of a thresholds sweep or of cross-validation folds share one entry), the storage dtype, and the
augmentation recipe. Any change
gives a new key, hence a miss; stale entries are never read.

Augmentation: cached features are of the deterministic eval transform, so training on a cache has
no augmentation -- unless `cache.aug_views: K` (K > 0) asks for K augmented views per row, embedded
once with the training transform from a fixed seed. Training then draws one of the K views per row
and epoch; val and test always read the un-augmented embedding. K views cost K extra passes of
extraction; they trade disk for some of the regularisation of on-the-fly augmentation.

Concurrency: several jobs of a sweep may ask for the same key at once. A file lock serialises the
writers; the entry is written to a temporary file in the same folder and moved into place with
`os.replace`, which is atomic, so a reader never sees a half-written file, and the second job finds
the first one's entry (a hit) instead of computing it again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from torch import nn
from torch.utils.data import DataLoader, Dataset

from iqs.core.preprocess import EVAL_RECIPE, InputSpec, eval_transform, train_transform
from iqs.data.bad_images import read_image

log = logging.getLogger(__name__)

CACHE_FORMAT = 1  # bump when the file layout changes: old entries then miss instead of mis-loading


def weights_digest(module: nn.Module) -> str:
    """Hash of the parameters and buffers: the weights' identity, whatever file or hub they came from."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        t = tensor.detach().cpu().contiguous()
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class FeatureKey:
    backbone: str
    weights: str
    weights_digest: str
    spec: InputSpec
    table_fingerprint: str
    dtype: str = "float16"
    aug_views: int = 0
    aug: dict[str, Any] = field(default_factory=dict)  # train-transform recipe, only when aug_views > 0
    aug_seed: int = 0
    pool: str = "avg"  # the backbone's pooling (e.g. "mlsp:3"): same weights, different features

    def record(self) -> dict[str, Any]:
        d = asdict(self)
        d["spec"] = self.spec.as_dict()
        d["format"] = CACHE_FORMAT
        d["eval_recipe"] = EVAL_RECIPE
        if not self.aug_views:
            d["aug"], d["aug_seed"] = {}, 0
        return d

    def digest(self) -> str:
        blob = json.dumps(self.record(), sort_keys=True, default=list).encode()
        return hashlib.sha256(blob).hexdigest()[:20]


class _ImageFiles(Dataset):
    def __init__(self, paths: Sequence[str], transform: Callable, seed: int | None = None) -> None:
        self.paths, self.transform, self.seed = list(paths), transform, seed

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.seed is not None:
            # per-item seed: an augmented view does not depend on batch size or worker count
            self.transform.set_random_seed(self.seed * 1_000_003 + i)
        return self.transform(image=read_image(self.paths[i]))["image"]


def extract_features(
    backbone: nn.Module,
    paths: Sequence[str],
    transform: Callable,
    *,
    batch_size: int = 32,
    num_workers: int = 0,
    seed: int | None = None,
    description: str = "embedding",
    channels_last: bool = True,
) -> torch.Tensor:
    """(N, D) float32 embeddings of `paths`, in order, with a rich progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    loader = DataLoader(
        _ImageFiles(paths, transform, seed), batch_size=batch_size, shuffle=False, num_workers=num_workers
    )
    was_training = backbone.training
    backbone.eval()
    chunks: list[torch.Tensor] = []
    device = next(backbone.parameters()).device
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with torch.inference_mode(), Progress(*columns, transient=False) as progress:
            task = progress.add_task(description, total=len(paths))
            for images in loader:
                images = images.to(device)
                if channels_last:
                    images = images.contiguous(memory_format=torch.channels_last)
                chunks.append(backbone(images).float().cpu())
                progress.advance(task, len(images))
    finally:
        backbone.train(was_training)
    if not chunks:
        return torch.empty(0, 0)
    return torch.cat(chunks)


class FeatureCache:
    """`<root>/<key>.pt` files holding {'key': record, 'eval': (N, D), 'aug': (K, N, D) or empty}."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: FeatureKey) -> Path:
        return self.root / f"{key.digest()}.pt"

    def load(self, key: FeatureKey) -> dict[str, torch.Tensor] | None:
        """The entry for `key`, or None when absent or unreadable (an unreadable entry is recomputed)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated by a crash before this cache's atomic writes, disk errors
            log.warning("feature cache %s is unreadable (%s): recomputing it", path, err)
            return None
        if entry.get("key") != json.loads(json.dumps(key.record(), default=list)):
            log.warning("feature cache %s holds another key (hash collision?): recomputing it", path)
            return None
        return entry

    def get_or_compute(
        self, key: FeatureKey, compute: Callable[[], dict[str, torch.Tensor]]
    ) -> tuple[dict[str, torch.Tensor], bool]:
        """(entry, hit). `compute` returns {'eval': (N, D), 'aug': (K, N, D)}; it runs at most once per key
        across concurrent processes sharing the folder."""
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path(key)
        entry = self.load(key)
        if entry is not None:
            return entry, True
        with FileLock(str(path) + ".lock"):
            entry = self.load(key)  # another job may have written it while we waited
            if entry is not None:
                return entry, True
            dtype = getattr(torch, key.dtype)
            computed = compute()
            entry = {
                "key": json.loads(json.dumps(key.record(), default=list)),
                "eval": computed["eval"].to(dtype).contiguous(),
                "aug": computed.get("aug", torch.empty(0)).to(dtype).contiguous(),
            }
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=f".{path.stem}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as fh:
                    torch.save(entry, fh)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return entry, False


@dataclass
class CachedFeatures:
    """Embeddings aligned with the rows of the table they were computed for."""

    eval: torch.Tensor  # (N, D)
    aug: torch.Tensor  # (K, N, D), K may be 0
    hit: bool
    path: Path
    key: FeatureKey

    @property
    def dim(self) -> int:
        return int(self.eval.shape[1])


def cached_features(
    backbone: nn.Module,
    *,
    backbone_name: str,
    weights: str,
    spec: InputSpec,
    paths: Sequence[str],
    table_fingerprint: str,
    cache_dir: Path,
    aug_views: int = 0,
    aug: dict[str, Any] | None = None,
    aug_seed: int = 0,
    dtype: str = "float16",
    batch_size: int = 32,
    num_workers: int = 0,
    device: str | torch.device | None = None,
) -> CachedFeatures:
    """Embeddings of `paths` (the rows whose fingerprint is `table_fingerprint`), from the cache or computed.

    `device`: where to run the backbone on a miss (e.g. "cuda"); it is moved back afterwards.
    """
    aug = dict(aug or {})
    key = FeatureKey(
        backbone=backbone_name,
        weights=str(weights),
        weights_digest=weights_digest(backbone),
        spec=spec,
        table_fingerprint=table_fingerprint,
        dtype=dtype,
        aug_views=int(aug_views),
        aug=aug if aug_views else {},
        aug_seed=int(aug_seed) if aug_views else 0,
        pool=str(getattr(backbone, "pooling", "avg")),
    )
    cache = FeatureCache(Path(cache_dir) / "features")

    def compute() -> dict[str, torch.Tensor]:
        log.info("feature cache miss: embedding %d images with %s", len(paths), backbone_name)
        views = AugViews(int(aug_views), aug, int(aug_seed))
        return embed_on(backbone, device, paths, spec, views, batch_size=batch_size, num_workers=num_workers)

    # Extraction draws from the global RNG (DataLoader seeds): fork it, so that training after a miss
    # sees the same random stream as after a hit and both give the same model.
    with torch.random.fork_rng(devices=[]):
        entry, hit = cache.get_or_compute(key, compute)
    if len(entry["eval"]) != len(paths):
        raise RuntimeError(
            f"feature cache {cache.path(key)} has {len(entry['eval'])} rows for {len(paths)} images"
        )
    log.info("feature cache %s: %s", "hit" if hit else "miss", cache.path(key))
    return CachedFeatures(
        eval=entry["eval"].float(), aug=entry["aug"].float(), hit=hit, path=cache.path(key), key=key
    )


@dataclass(frozen=True)
class AugViews:
    """K augmented views of every image: the albumentations settings and the seed they are drawn with."""

    count: int
    aug: dict[str, Any]
    seed: int


def embed_on(
    backbone: nn.Module,
    device: str | torch.device | None,
    paths: Sequence[str],
    spec: InputSpec,
    views: AugViews,
    **loader: int,
) -> dict[str, torch.Tensor]:
    """`eval` (N, D) embeddings and `aug` (K, N, D) augmented ones, computed on `device`; the backbone is
    moved back to where it was afterwards."""
    home = next(backbone.parameters()).device
    if device is not None:
        backbone.to(device)
    try:
        out = {
            "eval": extract_features(backbone, paths, eval_transform(spec), description="embedding", **loader)
        }
        aug_views = [
            extract_features(
                backbone,
                paths,
                train_transform(spec, **views.aug),
                seed=views.seed * 997 + k,
                description=f"augmented view {k + 1}/{views.count}",
                **loader,
            )
            for k in range(views.count)
        ]
        out["aug"] = torch.stack(aug_views) if aug_views else torch.empty(0)
        return out
    finally:
        backbone.to(home)
