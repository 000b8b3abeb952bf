"""`iqs train experiment=personal dataset.root=<library> init_from=<run>`: general vs personal vs scratch.

Three MLflow runs on the user's own labelled photos, one per role (iqs.train.init_from), each a plain
`iqs train` run (`fit_and_test`: same splits, feature cache, test metrics with intervals over groups,
predictions, decision cuts, artifacts):

1. `general`: the init run's model as is, not trained (0 epochs), its predictions classed the way its export
   classes them. Its `*_tuned` metrics show what the user's cuts alone would give it.
2. `personal`: the init run's head fine-tuned on the user's training photos (early stopping on theirs).
3. `scratch`: a fresh head of the same shape trained on the same features: does the general model's head
   help at all on this library?

They share one sweep id, unique per job (in an `-m` launch too: `personal_id_for`), which is also their
`personal_id` tag, so `iqs compare sweep=<id>` shows them side by side and
`iqs compare sweep=<id> baseline=<general run>` pairs them on the same test photos. The launcher's sweep
id stays on them as `launch_sweep_id`. This module runs both views for `personal.compare_metrics` and logs
them (markdown + plots) into each run under `compare/`. The backbone is embedded once: the three runs read
one feature-cache entry.

The class cuts (decision_cuts.objective=target) follow the user's own class shares in the training photos,
and the personal run bakes them into its checkpoint, so `iqs export run_id=<personal run>` and `iqs predict`
class photos with them. So do the star-rating cuts (`iqs predict --write-xmp rating`): where the user rated
training photos (`label_from=rating`, or ratings beside pick labels), they follow the user's own star shares
(`rating_shares`); else they nest in the class cuts (iqs.train.decision_cuts).
"""

from __future__ import annotations

import copy
import logging
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict

from iqs.core.scale import CLASS_NAMES
from iqs.data.mixture import ConfigError
from iqs.train.init_from import ROLES, InitFromError, fill_model_groups, resolve_checkpoint

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

COMPARE_DIR = "compare"
PERSONAL = "personal"  # the source name of the library in the tables and metrics (test/personal/...)
# params that differ between the roles for the role's sake, not the experiment's (hidden in the comparison)
ROLE_PARAMS = ("trainer.", "scheduler.", "decision_cuts.bake", "output_dir")


def train_shares(table: pd.DataFrame) -> list[float]:
    """The user's class shares (bad, normal, good) among the training photos of the personal split."""
    labels = table.loc[table["split"] == "train", "label"].to_numpy()
    if not len(labels):
        raise ConfigError("the personal library has no labelled training photos; label some in digiKam first")
    counts = np.bincount(labels, minlength=len(CLASS_NAMES)).astype(float)
    return [float(c) for c in counts / counts.sum()]


# the digiKam adapters' readers of every photo's pick label and stars (iqs.data.adapters.digikam_labels.Photo)
PHOTO_READERS = {
    "digikam_xmp": "iqs.data.adapters.digikam_xmp:read_library",
    "digikam_db": "iqs.data.adapters.digikam_db:read_database",
}


def read_photos(dataset_cfg: dict[str, Any]) -> list[Any]:
    """Every readable photo of a digiKam dataset (labelled or not) with its pick label and stars."""
    import importlib

    adapter = str(dataset_cfg.get("adapter", ""))
    if adapter not in PHOTO_READERS:
        raise ConfigError(
            f"dataset adapter '{adapter}' is not a digiKam library; use one of {sorted(PHOTO_READERS)}"
        )
    module, _, name = PHOTO_READERS[adapter].partition(":")
    photos, _, _ = getattr(importlib.import_module(module), name)(dataset_cfg)
    return photos


def star_shares(table: pd.DataFrame, dataset_cfg: dict[str, Any]) -> list[float] | None:
    """The user's shares of 1..5 stars among the rated training photos (XMP "rejected", -1, counts as one
    star); None when the adapter reads no stars or no training photo is rated."""
    if str(dataset_cfg.get("adapter", "")) not in PHOTO_READERS:
        return None
    photos = read_photos({**dataset_cfg, "label_from": "both"})
    train = set(table.loc[table["split"] == "train", "path"].astype(str))
    stars = [max(1, int(p.stars)) for p in photos if p.stars not in (None, 0) and p.path in train]
    if not stars:
        return None
    counts = np.bincount(np.asarray(stars) - 1, minlength=5).astype(float)
    return [float(c) for c in counts / counts.sum()]


def label_source(cfg: DictConfig, thresholds: tuple[float, float]) -> None:
    """The library is labelled with the init model's own pair, so `test/all` pits the user's classes against
    the classes the model itself outputs (what digiKam shows), and any head can be fine-tuned.

    The digiKam adapters store the class as a score (1 / 5.5 / 10, `native_range: [0, 2]`) and bring a pair
    that keeps it; a model pair must also class those three scores as bad / normal / good."""
    from iqs.core.scale import assign_labels, to_common

    source = OmegaConf.to_container(cfg.dataset, resolve=True)
    with open_dict(cfg):
        cfg.data.sources = {PERSONAL: {**source, "thresholds": None}}
    class_index = list(source.get("native_range") or []) == [0, 2]  # raw_score is the class, not a rating
    if str(source.get("adapter", "")).startswith("digikam") and class_index:
        scores = to_common(np.arange(len(CLASS_NAMES), dtype=float), 0.0, 2.0)
        got = assign_labels(scores, *thresholds)
        if list(got) != list(range(len(CLASS_NAMES))):
            raise InitFromError(
                f"the init run's thresholds {thresholds[0]:g}_{thresholds[1]:g} cannot tell the user's classes "
                f"apart (the adapter puts bad/normal/good at {', '.join(f'{s:g}' for s in scores)} on the common "
                f"scale and this pair classes them {[CLASS_NAMES[g] for g in got]}); start from a run whose "
                f"thresholds t1 < {scores[1]:g} <= t2, e.g. thresholds=t5_6"
            )


def role_config(cfg: DictConfig, role: str, output_dir: Path) -> DictConfig:
    """The run config of one role: its output folder; the general model is only tested (0 epochs)."""
    out = copy.deepcopy(cfg)  # nested nodes (trainer, personal) must not be shared between the roles
    with open_dict(out):
        out.personal.role = role
        out.output_dir = str(output_dir / role)
        if role == "general":
            out.trainer.max_epochs = 0
            out.trainer.min_epochs = 0
            out.decision_cuts.bake = False  # nothing trained, no checkpoint of its own to bake into
    return out


def personal_id_for(cfg: DictConfig) -> str:
    """One id per job, the sweep id of its three runs: `<launcher sweep id>-<8 hex>` in a sweep (every job of
    `iqs train -m experiment=personal dataset.root=A,B` compares only its own runs), else
    `personal-<time>-<8 hex>`. The launcher's sweep id stays on the runs as the `launch_sweep_id` tag."""
    from iqs.core.config import job_suffix
    from iqs.tracking.naming import sweep_id_for

    given = sweep_id_for(cfg)
    base = given if given != "none" else "personal-" + datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    return f"{base}-{job_suffix()}"


def compare_config(cfg: DictConfig, personal_id: str, metric: str, baseline: str | None) -> DictConfig:
    """`iqs compare sweep=<personal_id> metric=<m> [baseline=<general run>]` on the run's own store."""
    from iqs.report.compare import load_config

    argv = [f"sweep={personal_id}", f"metric={metric}", "status=FINISHED"]
    if baseline:
        argv.append(f"baseline={baseline}")
    out = load_config(argv)
    with open_dict(out):
        out.paths = cfg.paths
        out.logger = cfg.logger
        out.ignore_params = [*out.ignore_params, *ROLE_PARAMS]
    return out


def compare_roles(
    cfg: DictConfig, personal_id: str, general_run: str, folder: Path
) -> tuple[str, list[Path]]:
    """Per metric: each run's value [CI], then personal and scratch minus general with paired CIs.

    Returns the markdown of all tables (printed and logged) and the plots written into `folder`."""
    from iqs.report.compare import compare
    from iqs.report.compare_render import notes_for, title_for, write_figure
    from iqs.tracking.store import tracking_uri_for

    folder.mkdir(parents=True, exist_ok=True)
    sections, plots = [f"# Personal model {personal_id}: general vs personal vs scratch\n"], []
    for metric in [str(m) for m in cfg.personal.compare_metrics]:
        for baseline in (None, general_run):
            ccfg = compare_config(cfg, personal_id, metric, baseline)
            with open_dict(ccfg):
                ccfg.format = "markdown"
            table, text = compare(ccfg)
            if table.empty:
                continue
            title = title_for(table, ccfg, tracking_uri_for(ccfg))
            sections.append(f"## {title}\n\n{text}")
            kind = "vs_general" if baseline else "values"
            png = folder / f"{metric}_{kind}.png"
            write_figure(table, "png", title, png, 3)
            plots.append(png)
            log.debug("compare %s %s: %s", metric, kind, notes_for(table))
    return "\n".join(sections), plots


def train_personal(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    """The three runs and their comparison; returns the personal run's (metrics, objects) like `train`."""
    import pytorch_lightning as pl
    import torch

    from iqs.models.checkpoints import read_meta
    from iqs.tracking import tracked_run
    from iqs.tracking.naming import sweep_id_for
    from iqs.train.launchers import threads_per_job
    from iqs.train.pipeline import fit_and_test, job_output_dir
    from iqs.train.stages import build_data

    output_dir = job_output_dir(cfg)
    threads = threads_per_job(cfg)  # num_threads=, or this job's share of the cores in a parallel sweep
    if threads:
        torch.set_num_threads(threads)
    ckpt = resolve_checkpoint(str(cfg.init_from), cfg, output_dir / "init")
    meta = read_meta(ckpt)
    fill_model_groups(cfg, meta, str(cfg.init_from))
    label_source(cfg, (float(meta["thresholds"][0]), float(meta["thresholds"][1])))
    with open_dict(cfg):
        cfg.personal.checkpoint = str(ckpt.resolve())
    # the library's sidecars and database are read once; the three roles train and test on this one mixture
    mixture, _ = build_data(cfg)
    cuts = cfg.decision_cuts
    if cuts.enabled and cuts.objective == "target" and cuts.target is None:
        if not cfg.personal.cuts_from_train_shares:
            raise ConfigError(
                "decision_cuts.objective=target needs decision_cuts.target or cuts_from_train_shares"
            )
        with open_dict(cfg):
            cfg.decision_cuts.target = train_shares(mixture.table)
        log.info("class cuts follow the training photos' shares %s", list(cfg.decision_cuts.target))
    by_user = cfg.personal.get("ratings_from_train_shares", True)
    if cuts.enabled and cuts.get("ratings", True) and cuts.get("rating_shares") is None and by_user:
        shares = star_shares(mixture.table, OmegaConf.to_container(cfg.dataset, resolve=True))
        with open_dict(cfg):
            cfg.decision_cuts.rating_shares = shares
        log.info("star cuts follow the training photos' star shares %s", shares or "(none rated)")

    personal_id = personal_id_for(cfg)
    # `iqs compare tags.launch_sweep_id=<id>` finds every job of one -m launch
    launch_sweep = sweep_id_for(cfg)
    tags = {str(k): str(v) for k, v in (cfg.get("tags") or {}).items()}
    runs: dict[str, str] = {}
    results: dict[str, tuple[dict[str, float], dict[str, Any]]] = {}
    for role in ROLES:
        role_cfg = role_config(cfg, role, output_dir)
        pl.seed_everything(int(cfg.seed), workers=True)  # personal and scratch see the same batches
        role_tags = {**tags, "sweep_id": personal_id, "personal_id": personal_id, "personal_role": role,
                     "launch_sweep_id": launch_sweep, "init_from": str(cfg.init_from)}  # fmt: skip
        with tracked_run(role_cfg, run_name=f"personal-{role}", tags=role_tags) as run:
            results[role] = fit_and_test(role_cfg, run, job_output_dir(role_cfg), mixture=mixture)
            runs[role] = run.run_id
        log.info("%s model: MLflow run %s", role, runs[role])

    text, plots = compare_roles(cfg, personal_id, runs["general"], output_dir / COMPARE_DIR)
    report = output_dir / COMPARE_DIR / "personal_vs_general.md"
    report.write_text(text, encoding="utf-8")
    _log_comparison(cfg, runs, [report, *plots])
    _print_comparison(text, personal_id, runs)

    metrics, objects = results["personal"]
    objects = {**objects, "personal_id": personal_id, "runs": runs, "comparison": report}
    return metrics, objects


def _log_comparison(cfg: DictConfig, runs: dict[str, str], files: list[Path]) -> None:
    from mlflow import MlflowClient

    from iqs.tracking.store import tracking_uri_for

    client = MlflowClient(tracking_uri_for(cfg))
    for run_id in runs.values():
        for path in files:
            client.log_artifact(run_id, str(path), COMPARE_DIR)


def _print_comparison(text: str, personal_id: str, runs: dict[str, str]) -> None:
    from rich.console import Console
    from rich.markdown import Markdown

    console = Console(width=max(Console().width, 100))
    console.print(Markdown(text))
    console.print(
        f"runs: {', '.join(f'{k} {v[:8]}' for k, v in runs.items())}. Again: "
        f"[bold]iqs compare sweep={personal_id} baseline={runs['general'][:8]} metric=macro_f1[/bold]; "
        f"export the personal model: [bold]iqs export run_id={runs['personal']}[/bold]"
    )
