"""LightningDataModule over a Mixture: image rows (with albumentations) or cached backbone features.

Every batch is a dict: `image` (N, 3, H, W) or `features` (N, D), `score` (N,) on the common scale,
`dist` (N, 10), `label` (N,) 0/1/2, `dataset_idx` (N,) into `dataset_names`, `weight` (N,) the
rebalancer's per-sample loss weight (1 outside training), and `row` (N,) the row's position in
`datamodule.table`, which maps predictions back to image ids.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from iqs.core.preprocess import InputSpec, eval_transform, train_transform
from iqs.data.bad_images import MISSING, BadImagePolicy, find_bad_images, missing_files, read_image
from iqs.data.prepare import PreparedImages
from iqs.data.table import DIST_COLUMNS, SPLITS, fingerprint
from iqs.train.features import CachedFeatures
from iqs.train.samplers import eval_sampler, shard_batches, train_sampler

if TYPE_CHECKING:
    from iqs.data.mixture import Mixture
    from iqs.rebalance.base import Rebalancer

log = logging.getLogger(__name__)


class _Rows(Dataset):
    """The targets of a set of table rows; subclasses add the input (pixels or features)."""

    def __init__(
        self, table: pd.DataFrame, rows: np.ndarray, dataset_idx: np.ndarray, weight: np.ndarray
    ) -> None:
        part = table.iloc[rows]
        # torch.tensor copies: pandas' copy-on-write hands out read-only arrays, which torch cannot share
        self.rows = torch.tensor(rows, dtype=torch.long)
        self.score = torch.tensor(part["score"].to_numpy(np.float32))
        self.dist = torch.tensor(part[DIST_COLUMNS].to_numpy(np.float32))
        self.label = torch.tensor(part["label"].to_numpy(np.int64))
        self.dataset_idx = torch.tensor(dataset_idx[rows], dtype=torch.long)
        self.weight = torch.tensor(np.asarray(weight, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.rows)

    def targets(self, i: int) -> dict[str, torch.Tensor]:
        return {
            "score": self.score[i],
            "dist": self.dist[i],
            "label": self.label[i],
            "dataset_idx": self.dataset_idx[i],
            "weight": self.weight[i],
            "row": self.rows[i],
        }


class ImageRows(_Rows):
    """Rows served as pixels: from `iqs data prepare` shards when the source has them, else decoded."""

    def __init__(
        self,
        table,
        rows,
        dataset_idx,
        weight,
        paths: np.ndarray,
        transform: Callable,
        prepared: Mapping[str, PreparedImages] | None = None,
    ) -> None:
        super().__init__(table, rows, dataset_idx, weight)
        self.paths = [str(p) for p in paths[rows]]
        part = table.iloc[rows]
        self.keys = list(zip(part["dataset"].astype(str), part["path"].astype(str), strict=True))
        self.prepared = dict(prepared or {})
        self.transform = transform

    def pixels(self, i: int) -> np.ndarray:
        source, rel = self.keys[i]
        shards = self.prepared.get(source)
        image = shards.get(rel) if shards is not None else None
        return read_image(self.paths[i]) if image is None else image

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        image = self.transform(image=self.pixels(i))["image"]
        return {"image": image, **self.targets(i)}


class FeatureRows(_Rows):
    """Rows served from cached embeddings; `augmented` draws one of the K cached views per access."""

    def __init__(self, table, rows, dataset_idx, weight, features: CachedFeatures, augmented: bool) -> None:
        super().__init__(table, rows, dataset_idx, weight)
        self.eval = features.eval[self.rows]
        self.aug = features.aug[:, self.rows] if augmented and features.aug.numel() else None

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = self.eval[i] if self.aug is None else self.aug[int(torch.randint(len(self.aug), ()))][i]
        return {"features": x, **self.targets(i)}


class QualityDataModule(pl.LightningDataModule):
    """Train/val/test loaders over `mixture.table`, without the rows whose image is unreadable.

    `bad_images`: decode every image once (iqs.data.bad_images) and drop the unreadable ones under that policy;
    None only drops missing files. Either way `skipped` lists the dropped rows.
    """

    def __init__(
        self,
        mixture: Mixture,
        spec: InputSpec,
        rebalancer: Rebalancer,
        *,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        augment: Mapping[str, Any] | None = None,
        seed: int = 0,
        prepared: Mapping[str, PreparedImages] | None = None,
        within_source_batches: Mapping[str, Any] | None = None,
        bad_images: BadImagePolicy | None = None,
    ) -> None:
        super().__init__()
        # kwargs of iqs.train.pair_batches.WithinSourceBatchSampler for the training loader; None = shuffle
        self.within_source_batches = None if within_source_batches is None else dict(within_source_batches)
        self.prepared = dict(prepared or {})
        self.mixture = mixture
        self.spec = spec
        self.rebalancer = rebalancer
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.augment = dict(augment or {})
        self.seed = int(seed)
        self.features: CachedFeatures | None = None

        table = mixture.table.reset_index(drop=True)
        paths = np.asarray(mixture.abs_paths(table)).astype(str)
        skipped = self._unreadable_rows(table, paths, bad_images)
        # every dropped row: the run's metric data/<source>/skipped and artifact data/skipped_images.csv
        self.skipped: pd.DataFrame = skipped.reset_index(drop=True)
        self.n_missing = int((skipped["reason"] == MISSING).sum())
        keep = ~table.index.isin(skipped.index)
        table, paths = table.loc[keep].reset_index(drop=True), paths[keep]
        self.table = table
        self.paths = paths
        # mixture order (pd.unique keeps first appearance), so tables list sources as configured
        self.dataset_names: list[str] = [str(d) for d in pd.unique(table["dataset"])]
        self.dataset_idx = table["dataset"].map({n: i for i, n in enumerate(self.dataset_names)}).to_numpy()
        for split in SPLITS:
            if not (table["split"] == split).any():
                raise ValueError(f"mixture '{getattr(mixture, 'name', '?')}' has no {split} rows with images")
        self.train_df: pd.DataFrame | None = None
        self._datasets: dict[str, Dataset] = {}

    def _unreadable_rows(
        self, table: pd.DataFrame, paths: np.ndarray, bad_images: BadImagePolicy | None
    ) -> pd.DataFrame:
        """The rows to drop: unreadable under `bad_images` (which may refuse too many), else missing files."""
        if bad_images is not None:
            skipped = find_bad_images(
                table,
                paths,
                self.mixture.roots,
                prepared=self.prepared,
                cache_dir=bad_images.cache_dir,
                workers=bad_images.workers,
            )
            bad_images.enforce(skipped, table["dataset"].value_counts().to_dict())
        else:
            skipped = missing_files(table, paths)
        if len(skipped):
            log.warning(
                "dropped %d row(s) whose image is missing or unreadable (%s), e.g. %s",
                len(skipped),
                ", ".join(f"{k}: {v}" for k, v in skipped["dataset"].value_counts().sort_index().items()),
                skipped["file"].iloc[0],
            )
        return skipped

    @property
    def fingerprint(self) -> str:
        """Fingerprint of the rows that are embedded/trained on (after dropping missing images)."""
        return fingerprint(self.table)

    def attach_features(self, features: CachedFeatures) -> None:
        """Serve cached embeddings (aligned with `self.table`) instead of images."""
        if len(features.eval) != len(self.table):
            raise ValueError(f"{len(features.eval)} cached embeddings for {len(self.table)} rows")
        self.features = features
        self._datasets.clear()

    def rows_of(self, split: str) -> np.ndarray:
        return np.flatnonzero((self.table["split"] == split).to_numpy())

    def setup(self, stage: str | None = None) -> None:
        if self._datasets:
            return
        train_df = self.table.iloc[self.rows_of("train")]
        self.rebalancer.prepare(train_df)
        train_df = self.rebalancer.filter_train(train_df)
        self.train_df = train_df
        train_rows = train_df.index.to_numpy()
        w = self.rebalancer.sample_weights(
            torch.tensor(train_df["score"].to_numpy(np.float32)),
            torch.tensor(train_df["label"].to_numpy(np.int64)),
        )
        # Per-sample weights depend on (score, label) only, so they are computed once here.
        train_w = np.ones(len(train_rows), np.float32) if w is None else w.detach().cpu().numpy()
        self._datasets["train"] = self._rows(train_rows, train_w, train=True)
        for split in ("val", "test"):
            rows = self.rows_of(split)
            self._datasets[split] = self._rows(rows, np.ones(len(rows), np.float32), train=False)

    def _rows(self, rows: np.ndarray, weight: np.ndarray, train: bool) -> Dataset:
        if self.features is not None:
            return FeatureRows(self.table, rows, self.dataset_idx, weight, self.features, augmented=train)
        tf = train_transform(self.spec, **self.augment) if train else eval_transform(self.spec)
        return ImageRows(self.table, rows, self.dataset_idx, weight, self.paths, tf, self.prepared)

    def _loader(self, split: str, shuffle: bool, sampler=None, batch_sampler=None) -> DataLoader:
        gen = torch.Generator()
        gen.manual_seed(self.seed)
        batch_size = self.batch_size if split == "train" else self.eval_batch_size
        batching: dict[str, Any] = (
            {"batch_sampler": batch_sampler}
            if batch_sampler is not None
            else {"batch_size": batch_size, "shuffle": shuffle and sampler is None, "sampler": sampler}
        )
        return DataLoader(
            self._datasets[split],
            **batching,
            num_workers=self.num_workers if self.features is None else 0,
            persistent_workers=self.num_workers > 0 and self.features is None,
            pin_memory=torch.cuda.is_available(),
            generator=gen,
        )

    def train_dataloader(self) -> DataLoader:
        assert self.train_df is not None
        sampler = self.rebalancer.sampler(self.train_df)
        if self.within_source_batches is not None:
            from iqs.train.pair_batches import WithinSourceBatchSampler

            if sampler is not None:
                raise ValueError(
                    f"rebalance '{self.rebalancer.name}' draws its own training rows, which within-source "
                    "batches cannot honour; use loss.within_source_batches=false or another rebalance"
                )
            group = self._datasets["train"].dataset_idx.numpy()
            batches = WithinSourceBatchSampler(
                group, self.batch_size, seed=self.seed, **self.within_source_batches
            )
            return self._loader("train", shuffle=False, batch_sampler=shard_batches(batches))
        # under DDP each rank draws a disjoint shard (iqs.train.distributed); otherwise `sampler` as is
        return self._loader(
            "train", shuffle=True, sampler=train_sampler(self._datasets["train"], sampler, self.seed)
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False, sampler=eval_sampler(self._datasets["val"]))

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False, sampler=eval_sampler(self._datasets["test"]))
