"""`iqs suggest library=<album root> n=50 model=<run | .ckpt>`: which photos to label next, for the personal model.

    iqs suggest library=$HOME/Pictures n=50 model=<general run id>             # suggest.csv, nothing else
    iqs suggest library=$HOME/Pictures n=50 model=<run id> --tag --dry-run     # list the XMP changes only
    iqs suggest library=$HOME/Pictures n=50 model=<run id> --tag               # tag them iqs/label-me

The method is BADGE (Ash et al., "Deep Batch Active Learning by Diverse, Uncertain Gradient Lower Bounds",
ICLR 2020) on the frozen backbone's embeddings, kept in the training feature cache (iqs.train.features), so
a rerun on the same photos with the same model embeds nothing again. A logistic regression is fitted on the photos the
user already labelled (standardised embeddings, PCA to `pca_dims`); each unlabelled photo gets its
gradient embedding, the gradient of the cross-entropy at the classifier's own prediction with respect to
the last layer's weights, (p - onehot(argmax p)) ⊗ x. Its length is large where the classifier is unsure
(and the photo far from the mean), and k-means++ seeding over these vectors (scikit-learn's
`kmeans_plusplus`, one trial per centre, as in BADGE; its first centre is drawn at random, where BADGE's
code takes the longest gradient) picks `n` photos that are both uncertain and unlike
each other, so a batch does not spend its labels on ten frames of one burst. BADGE needs no tuning knob
between uncertainty and diversity, which is why it is chosen over margin sampling plus k-center greedy
(Sener & Savarese 2018). Until the user's labels cover two classes, the model's own head gives the
probabilities. `method=random` is the baseline of the learning curve in experiments/.

Labels are read as the personal model reads them (`dataset=digikam_xmp`, or `digikam_db`; their options
under `dataset.`). The CSV lists rank, path, the predicted class and probabilities and the gradient
length. With `--tag` the digiKam tag `iqs/label-me` is added to each suggested photo's
`Xmp.digiKam.TagsList` (iqs.core.xmp.plan_tag): nothing else in the sidecar changes, no pick label or
rating is touched, and `digikam4.db` is never written. digiKam reads the tag after "Item > Reread Metadata
From Files" on the album (or at its next scan when it is set to read metadata changes).
"""

from __future__ import annotations

import csv
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from iqs.core.config import CommandLineError, compose

log = logging.getLogger(__name__)

METHODS = ("badge", "random")
TAG = "iqs/label-me"
COLUMNS = ["rank", "path", "pred_class", "prob_bad", "prob_normal", "prob_good", "gradient_norm", "tagged"]

# ---------------------------------------------------------------- the method


def fit_probabilities(
    features: np.ndarray, labelled: np.ndarray, labels: np.ndarray, pca_dims: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(P (N, 3) class probabilities of every row, Z (N, d) the classifier's input) from a logistic
    regression on the labelled rows (`labelled` indexes `features`). Classes absent from `labels` get 0."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from iqs.core.classes import CLASS_NAMES

    x = np.asarray(features, dtype=np.float64)
    dims = max(1, min(int(pca_dims), x.shape[1], len(x) - 1))
    embed = make_pipeline(StandardScaler(), PCA(n_components=dims, random_state=seed)).fit(x)
    z = embed.transform(x)
    clf = LogisticRegression(max_iter=2000, class_weight="balanced").fit(z[labelled], labels)
    probs = np.zeros((len(x), len(CLASS_NAMES)))
    probs[:, clf.classes_] = clf.predict_proba(z)
    return probs, z


def gradient_embedding(probs: np.ndarray, z: np.ndarray) -> np.ndarray:
    """BADGE's (p - onehot(argmax p)) ⊗ [z, 1]: the cross-entropy gradient w.r.t. the last layer (weights and
    bias) at the predicted label, one row per photo."""
    residual = probs.copy()
    residual[np.arange(len(probs)), probs.argmax(1)] -= 1.0
    zb = np.hstack([z, np.ones((len(z), 1))])
    return (residual[:, :, None] * zb[:, None, :]).reshape(len(z), -1)


def badge_select(grad: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of `n` rows by k-means++ seeding on the gradient embeddings, in the order chosen."""
    from sklearn.cluster import kmeans_plusplus

    n = min(int(n), len(grad))
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if np.allclose(grad, 0):  # a classifier certain everywhere: nothing to tell them apart, take any
        return np.random.default_rng(seed).permutation(len(grad))[:n]
    _, idx = kmeans_plusplus(grad, n_clusters=n, random_state=seed, n_local_trials=1)
    return np.asarray(idx, dtype=np.int64)


def select(
    method: str,
    features: np.ndarray,
    labelled: np.ndarray,
    labels: np.ndarray,
    n: int,
    *,
    pca_dims: int = 64,
    seed: int = 0,
    fallback_probs: np.ndarray | None = None,
    candidates: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(chosen rows of `features`, in order; P (N, 3); gradient length per row). Candidates are
    `candidates` (default: every row not in `labelled`). With labels of fewer than two classes the
    probabilities are `fallback_probs` (the model's head) and Z the standardised features."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got '{method}'")
    labelled = np.asarray(labelled, dtype=np.int64)
    pool = np.arange(len(features)) if candidates is None else np.asarray(candidates, dtype=np.int64)
    pool = np.setdiff1d(pool, labelled)
    if len(np.unique(labels)) >= 2:
        probs, z = fit_probabilities(features, labelled, np.asarray(labels), pca_dims, seed)
    else:
        if fallback_probs is None:
            raise ValueError("fewer than two classes labelled and no model probabilities to start from")
        probs = np.asarray(fallback_probs, dtype=np.float64)
        z = (features - features.mean(0)) / (features.std(0) + 1e-8)
    grad = gradient_embedding(probs, z)
    norm = np.linalg.norm(grad, axis=1)
    if method == "random":
        chosen = np.random.default_rng(seed).permutation(pool)[: min(int(n), len(pool))]
    else:
        chosen = pool[badge_select(grad[pool], n, seed)]
    return chosen, probs, norm


# ---------------------------------------------------------------- the library


@dataclass
class LibraryPhotos:
    paths: list[Path]  # absolute
    classes: list[int | None]  # the user's class (None: unlabelled), by the adapter's rules


def read_library_labels(dataset_cfg: dict[str, Any]) -> LibraryPhotos:
    """Every readable photo of the album root and the user's class, as the personal model reads them."""
    from iqs.data.adapters.digikam_labels import rules_from_cfg
    from iqs.train.personal import read_photos

    photos = read_photos(dataset_cfg)
    rules = rules_from_cfg(dataset_cfg)
    root = Path(str(dataset_cfg["root"]))
    return LibraryPhotos([root / p.path for p in photos], [rules.decide(p.pick, p.stars)[0] for p in photos])


def embed_library(model: Any, paths: list[Path], cache_dir: Path) -> np.ndarray:
    """The model's frozen-backbone embeddings of `paths`, through the training feature cache."""
    import pandas as pd

    from iqs.core.preprocess import InputSpec
    from iqs.data.table import images_fingerprint
    from iqs.train.features import cached_features

    rows = pd.DataFrame(
        {"dataset": "suggest", "image_id": [str(p) for p in paths], "path": [str(p) for p in paths]}
    )
    feats = cached_features(
        model.backbone,
        backbone_name=str(model.meta["backbone"]),
        weights=str(model.meta["weights"]),
        spec=InputSpec.from_meta(model.meta),
        paths=[str(p) for p in paths],
        table_fingerprint=images_fingerprint(rows),
        cache_dir=cache_dir,
    )
    return feats.eval.numpy()


def head_probabilities(model: Any, features: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = model.eval().forward_head(torch.from_numpy(features).float())
    return out["probs"].double().numpy()


# ---------------------------------------------------------------- the command


def _problem(cfg: Any) -> str | None:
    if not cfg.model:
        return "choose the model whose backbone embeds the photos: model=<MLflow run id | .ckpt>"
    if not Path(str(cfg.library)).is_dir():
        return f"library {cfg.library} is not a folder; library=<the digiKam album root>"
    if str(cfg.method) not in METHODS:
        return f"method must be one of {', '.join(METHODS)}, got '{cfg.method}'"
    if isinstance(cfg.n, bool) or not isinstance(cfg.n, int) or cfg.n < 1:
        return f"n must be an integer >= 1, got '{cfg.n}'"
    return None


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console

    from iqs.core.errors import DataError
    from iqs.core.xmp import XmpError

    console = Console(stderr=True)
    try:
        cfg = compose("suggest", list(argv or []))
    except CommandLineError:
        raise  # iqs.cli prints it with the way to --help
    except ValueError as exc:
        console.print(f"iqs suggest: {exc}", markup=False, soft_wrap=True)
        return 2
    problem = _problem(cfg)
    if problem:
        console.print(f"iqs suggest: {problem}", markup=False, soft_wrap=True)
        return 2
    try:
        return suggest(cfg, console)
    except (DataError, ValueError, XmpError, FileNotFoundError) as exc:
        console.print(f"iqs suggest: {exc}", markup=False, soft_wrap=True)
        return 2


def suggest(cfg: Any, console: Any) -> int:
    from omegaconf import OmegaConf

    from iqs.models.checkpoints import load_checkpoint
    from iqs.train.init_from import resolve_checkpoint

    dataset = {**OmegaConf.to_container(cfg.dataset, resolve=True), "root": str(cfg.library)}
    photos = read_library_labels(dataset)
    if not photos.paths:
        raise ValueError(f"{cfg.library}: no photos found (extensions {dataset.get('extensions')})")
    labelled = np.asarray([i for i, c in enumerate(photos.classes) if c is not None], dtype=np.int64)
    labels = np.asarray([photos.classes[i] for i in labelled], dtype=np.int64)
    with tempfile.TemporaryDirectory(prefix="iqs-suggest-") as tmp:
        model, _ = load_checkpoint(resolve_checkpoint(str(cfg.model), cfg, Path(tmp)))
    features = embed_library(model, photos.paths, Path(str(cfg.paths.cache_dir)))
    fallback = head_probabilities(model, features) if len(np.unique(labels)) < 2 else None
    chosen, probs, norm = select(
        str(cfg.method), features, labelled, labels, int(cfg.n),
        pca_dims=int(cfg.pca_dims), seed=int(cfg.seed), fallback_probs=fallback,
    )  # fmt: skip
    tagged = _tag(cfg, [photos.paths[i] for i in chosen], console) if cfg.tag or cfg.dry_run else {}
    _write_csv(cfg, photos, chosen, probs, norm, tagged)
    console.print(
        f"{len(photos.paths)} photos, {len(labelled)} labelled ({len(np.unique(labels))} classes), "
        f"{len(chosen)} suggested by {cfg.method} -> {cfg.output}"
        + (f"; tag {cfg.tag_name}: {dict(tagged.get('_counts', {}))}" if tagged else "")
    )
    return 0


def _tag(cfg: Any, paths: list[Path], console: Any) -> dict:
    """Add the tag to each suggested photo (dry run: list the changes); path -> what happened."""
    from collections import Counter

    from iqs.core.xmp import XmpError, apply_tag, plan_tag

    out: dict = {}
    counts: Counter = Counter()
    for path in paths:
        try:
            change = plan_tag(path, str(cfg.tag_name), str(cfg.sidecar_style))
            if cfg.dry_run:
                console.print(f"[dry-run] {change.describe()}", markup=False, highlight=False, soft_wrap=True)
                out[str(path)] = "would add" if change.changes_anything else "already"
            elif apply_tag(change):
                out[str(path)] = "added"
            else:
                out[str(path)] = "already"
        except (XmpError, OSError) as err:
            out[str(path)] = "failed"
            console.print(f"{path}: tag not written: {err}", markup=False, soft_wrap=True)
        counts[out[str(path)]] += 1
    out["_counts"] = counts
    return out


def _write_csv(cfg: Any, photos: LibraryPhotos, chosen: np.ndarray, probs: np.ndarray, norm: np.ndarray,
               tagged: dict) -> None:  # fmt: skip
    from iqs.core.classes import CLASS_NAMES
    from iqs.deploy.predict.scorer import printable

    with open(str(cfg.output), "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for rank, i in enumerate(chosen, 1):
            path = photos.paths[i]
            writer.writerow(
                {
                    "rank": rank,
                    "path": printable(str(path)),
                    "pred_class": CLASS_NAMES[int(probs[i].argmax())],
                    **{f"prob_{c}": f"{probs[i, k]:.4f}" for k, c in enumerate(CLASS_NAMES)},
                    "gradient_norm": f"{norm[i]:.4f}",
                    "tagged": tagged.get(str(path), ""),
                }
            )
