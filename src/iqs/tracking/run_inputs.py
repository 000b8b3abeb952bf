"""What a run records about its data: rows per source x split x label, and one MLflow dataset input per
source (the runs table's Dataset column). TrackedRun.log_mixture logs both.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from iqs.core.classes import CLASS_NAMES
from iqs.tracking.config_view import cfg_get

# the fields of `mlflow.entities.Dataset`, read from `mlflow.data.Dataset.to_dict()`
DATASET_FIELDS = ("name", "digest", "source_type", "source", "schema", "profile")


def mixture_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Rows per source x split, with the bad/normal/good split of each (long format, one row per cell)."""
    keys = [c for c in ("dataset", "split", "label") if c in table.columns]
    counts = table.groupby(keys, dropna=False, observed=True).size().rename("n").reset_index()
    if "label" in counts.columns:
        counts["class"] = counts["label"].map(dict(enumerate(CLASS_NAMES)))
    return counts


def annotation_source(cfg: Any, source: str) -> str:
    """The annotation file of a mixture source (`<root>/<annotations>`, the first of a list), else its root."""
    node = cfg_get(cfg, f"data.sources.{source}")
    root = cfg_get(node, "root")
    if root is None:
        return source
    names = cfg_get(node, "annotations")
    if isinstance(names, list | tuple) or (names is not None and not isinstance(names, str)):
        names = next(iter(names), None)
    path = Path(str(root)).expanduser() / str(names) if names else Path(str(root)).expanduser()
    return str(path.resolve())


def dataset_inputs(cfg: Any, table: pd.DataFrame) -> list[Any]:
    """One MLflow `DatasetInput` per source: name = the source, digest = the fingerprint of its rows
    (iqs.data.table.fingerprint), source = its annotation file, context `mixture`."""
    import mlflow.data
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    from iqs.data.table import fingerprint as table_fingerprint

    inputs = []
    for name, rows in table.groupby(table["dataset"].astype(str), sort=True):
        with warnings.catch_warnings():
            # a local path matches two equivalent source types; MLflow picks the local-artifact one
            warnings.filterwarnings("ignore", message=".*can be interpreted in multiple ways.*")
            # the schema shown in the UI needs no advice about missing integers
            warnings.filterwarnings("ignore", message=".*Inferred schema contains integer.*")
            dataset = mlflow.data.from_pandas(
                rows.reset_index(drop=True),
                source=annotation_source(cfg, str(name)),
                name=str(name),
                digest=table_fingerprint(rows),
            )
            # the entity from the dataset's public description (the schema is inferred here, lazily)
            described = dataset.to_dict()
            entity = Dataset(**{key: described.get(key) for key in DATASET_FIELDS})
        inputs.append(DatasetInput(entity, tags=[InputTag(MLFLOW_DATASET_CONTEXT, "mixture")]))
    return inputs
