"""`iqs digikam install|restore`: put the exported `.pb` where digiKam loads it, and take it back out.

    iqs digikam install exports/<run>/iqs-1234abcd.digikam.pb                       # version auto-detected
    iqs digikam install exports/<run>/iqs-1234abcd.digikam.pb --digikam-version 8.2
    iqs digikam install MODEL --dry-run                                             # say what would change
    iqs digikam restore                                                             # back to the stock model

What digiKam does, read in its sources (paths relative to its repository; ../shared/digikam.md):

- Every release 8.0-9.2: `AestheticDetector::s_loadModel` (core/libs/imgqsort/detectors/
  aesthetic_detector.cpp) loads `weights_inceptionv3_299.pb` with `cv::dnn::readNetFromTensorflow` from its
  models folder, once per session. The name and the importer are fixed: digiKam never reads an ONNX file for
  this feature, and `dnnmodels.conf` (8.5+) does not change which file it opens. So the file itself is
  replaced; the stock file is backed up first, with its SHA-256, and `restore` puts those bytes back.
- The models folder (iqs.deploy.digikam.paths.models_dir): 8.0-8.4 the first existing `digikam/facesengine`
  in Qt's GenericDataLocation list; 8.5 `writableLocation(GenericDataLocation)/digikam/facesengine`; 8.6+
  `facesEnginePath` of `[System]` in `digikam_systemrc` when the user set one, else that same default.
- The model downloader (core/utilities/setup/downloader/filesdownloader.cpp, at every start) judges an
  installed file by its SIZE only; the SHA-256 is checked on a fresh download. 8.0-8.4 compare with the
  stock size (88,007,527 bytes): a replaced file of another size makes digiKam open "Download Required
  Files" at start, and "Download" overwrites ours. 8.5+ take the size from `dnnmodels.conf`, which the
  environment variable `DIGIKAM_DNN_MODEL_CONF` can replace: we write a copy whose aesthetic group keeps
  `FileName=weights_inceptionv3_299.pb` and carries our SHA256 and FileSize, and print the line that sets it.
"""

from __future__ import annotations

import datetime as dt
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from iqs.core.config import CommandLineError, compose
from iqs.deploy.digikam.dnnconf import (
    aesthetic_group,
    conf_copy,
    conf_out_default,
    stock_conf,
    write_text_atomic,
)
from iqs.deploy.digikam.files import Plan, check_model, copy_verified, load_manifest, save_manifest, sha256
from iqs.deploy.digikam.paths import (
    BACKUP_DIR,
    CONF_ENV,
    DNNMODELS,
    LEGACY,
    MANIFEST,
    MODELS_SUBDIR,
    STOCK_CONF,
    STOCK_PB,
    STOCK_PB_SHA256,
    STOCK_PB_SIZE,
    V85,
    V86,
    InstallError,
    data_dirs,
    detect_version,
    locate,
    models_dir,
    parse_version,
)
from iqs.deploy.digikam.qsettings_ini import ini_groups

__all__ = [  # the names tests and callers reach through this module
    "BACKUP_DIR",
    "CONF_ENV",
    "LEGACY",
    "MANIFEST",
    "MODELS_SUBDIR",
    "STOCK_CONF",
    "STOCK_PB",
    "V85",
    "V86",
    "InstallError",
    "aesthetic_group",
    "data_dirs",
    "detect_version",
    "ini_groups",
    "locate",
    "main",
    "models_dir",
    "parse_version",
]


# ---------------------------------------------------------------- install: replace the file digiKam opens


def _backup_steps(plan: Plan, target: Path, record: dict) -> dict:
    """Back up what is at `target` now, unless it is ours or the backup already holds it."""
    backup = target.parent / BACKUP_DIR / STOCK_PB
    if not target.exists():
        record = record or {"target": str(target), "backup": None, "stock_sha256": None}
        plan.steps.append(f"skip the backup: {target} does not exist yet")
        return record
    current = sha256(target)
    if record.get("target") == str(target) and current == record.get("installed_sha256"):
        plan.steps.append(f"replace our earlier model {target} (the backup stays: {backup})")
    elif record.get("target") == str(target) and current == record.get("stock_sha256"):
        plan.steps.append(f"replace {target}: it is the backed-up original again (digiKam's downloader?)")
    elif record:
        raise InstallError(
            f"{target} (SHA-256 {current[:12]}…) is neither the model we installed nor the backed-up one "
            f"({backup}); refusing to overwrite a file that has no backup. Move it away, then rerun"
        )
    elif backup.exists():
        raise InstallError(f"{backup} exists but has no install record; move it away, then rerun")
    else:
        stock = current == STOCK_PB_SHA256
        record = {"target": str(target), "backup": str(backup), "stock_sha256": current}
        record.update(stock_size=target.stat().st_size, stock_is_digikams=stock)
        plan.steps.append(
            f"back up {target} ({'digiKam stock model' if stock else 'NOT the stock model'}, "
            f"SHA-256 {current[:12]}…) to {backup}"
        )
    return record


def plan_install(
    model: Path, version: str, models: Path, why: str, dirs: list[Path], conf_out: Path
) -> tuple[Plan, dict, str | None]:
    """The steps, the install record and (8.5+) the text of the dnnmodels.conf copy."""
    target = models / STOCK_PB
    plan = Plan(version, models)
    plan.notes.append(f"models folder: {why}")
    record = _backup_steps(plan, target, load_manifest(models))
    model_sha, size = sha256(model), model.stat().st_size
    record.update(version=version, installed_sha256=model_sha, installed_from=str(model), conf=None)
    plan.steps.append(f"copy {model} -> {target} (SHA-256 {model_sha[:12]}…, {size:,} bytes)")
    new_conf = None
    if version == LEGACY:
        if size != STOCK_PB_SIZE:
            plan.notes.append(
                f"digiKam {LEGACY} judges this file by its size ({STOCK_PB_SIZE:,} bytes for the stock model): "
                "at each start it opens 'Download Required Files'. Choose Close: 'Download' fetches the stock "
                "model and overwrites ours (`iqs digikam install` puts it back)."
            )
    else:
        source = stock_conf(dirs)
        new_conf, group = conf_copy(source, model_sha, size)
        record.update(conf=str(conf_out), stock_conf=str(source), group=group)
        plan.steps.append(
            f"write {conf_out}: a copy of {source} whose [{group}] carries this file's SHA256 and FileSize, "
            f"so the downloader accepts it (FileName stays {STOCK_PB}; no stock file is touched)"
        )
        plan.notes.append("set this before starting digiKam (or add it to ~/.config/environment.d/):")
        plan.notes.append(f"  export {CONF_ENV}={conf_out}")
        plan.notes.append(
            "rerun `iqs digikam install` after upgrading digiKam: the config copy is of this version"
        )
    plan.notes.append("restart digiKam: it loads the model once per session")
    return plan, record, new_conf


def install(models: Path, record: dict, new_conf: str | None) -> None:
    target = Path(record["target"])
    backup = models / BACKUP_DIR / STOCK_PB
    if target.exists() and record.get("backup") and not backup.exists():
        copy_verified(target, backup, record["stock_sha256"])
        save_manifest(models, record)  # the backup is recorded before anything is overwritten
    copy_verified(Path(record["installed_from"]), target, record["installed_sha256"])
    if new_conf is not None:
        write_text_atomic(Path(record["conf"]), new_conf)
    record["installed_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    save_manifest(models, record)


# ---------------------------------------------------------------- restore


def plan_restore(models: Path) -> tuple[Plan, dict]:
    record = load_manifest(models)
    if not record:
        raise InstallError(f"no install record in {models / BACKUP_DIR}: nothing installed by iqs here")
    plan = Plan(record.get("version", "?"), models)
    if record.get("version") == DNNMODELS:  # an earlier iqs release's ONNX install: its own files only
        plan.steps.append(f"remove {record['conf']} and {record['installed_model']}")
    else:
        target = Path(record["target"])
        if record.get("backup"):
            plan.steps.append(f"copy the backup {record['backup']} back to {target} (SHA-256 checked)")
        elif target.exists():
            plan.steps.append(f"remove {target} (there was no model before)")
        if record.get("conf"):
            plan.steps.append(f"remove {record['conf']}")
    if record.get("conf"):
        plan.notes.append(
            f"unset {CONF_ENV} (and remove it from ~/.config/environment.d/ if you added it there)"
        )
    plan.steps.append(f"remove {models / BACKUP_DIR}")
    plan.notes.append("restart digiKam")
    return plan, record


def restore(models: Path, record: dict) -> None:
    if record.get("version") == DNNMODELS:
        Path(record["conf"]).unlink(missing_ok=True)
        installed = Path(record["installed_model"])
        if installed.exists() and sha256(installed) == record["installed_sha256"]:
            installed.unlink()
        shutil.rmtree(models / BACKUP_DIR)
        return
    target = Path(record["target"])
    known = {record["installed_sha256"], record.get("stock_sha256")}
    if target.exists() and sha256(target) not in known:
        raise InstallError(f"{target} is neither our model nor the backed-up one; left as it is")
    if record.get("backup"):
        backup = Path(record["backup"])
        if not backup.is_file() or sha256(backup) != record["stock_sha256"]:
            raise InstallError(f"{backup} is missing or changed; {target} left as it is")
        copy_verified(backup, target, record["stock_sha256"])
    elif target.exists():
        target.unlink()
    if record.get("conf"):
        Path(record["conf"]).unlink(missing_ok=True)
    shutil.rmtree(models / BACKUP_DIR)


# ---------------------------------------------------------------- command line


def _print_plan(plan: Plan, dry_run: bool) -> None:
    print(f"digiKam {plan.version}, models folder {plan.models}")
    for step in plan.steps:
        print(("  would " if dry_run else "  ") + step)
    for note in plan.notes:
        print(note)


# the bare words are `args` (install|restore [model]); the flags: iqs.core.config.ALIASES
ACTIONS = ("install", "restore")


@dataclass
class DigikamOptions:
    """conf/digikam.yaml, checked: the values come from the yaml, the types from here."""

    action: str
    model: Path | None
    digikam_version: str
    data_dir: str | None
    models_dir: Path | None
    conf_out: Path | None
    dry_run: bool


def options(argv: list[str]) -> DigikamOptions:
    """The command line through conf/digikam.yaml (iqs.core.config.compose, as every subcommand)."""
    cfg = compose("digikam", argv)
    words = [str(w) for w in cfg.args]
    if not words or words[0] not in ACTIONS or len(words) != (2 if words[0] == "install" else 1):
        raise CommandLineError(f"expected `install MODEL` or `restore`, got {' '.join(words) or 'nothing'!r}")
    if not isinstance(cfg.dry_run, bool):
        raise CommandLineError(f"dry_run must be true or false, got '{cfg.dry_run}'")

    def path(value: object) -> Path | None:
        return Path(str(value)).expanduser() if value else None

    return DigikamOptions(
        action=words[0],
        model=path(words[1]) if len(words) == 2 else None,
        digikam_version=str(cfg.digikam_version),
        data_dir=str(cfg.data_dir) if cfg.data_dir else None,
        models_dir=path(cfg.models_dir),
        conf_out=path(cfg.conf_out),
        dry_run=cfg.dry_run,
    )


def _restore(models: Path, dry_run: bool) -> None:
    plan, record = plan_restore(models)
    _print_plan(plan, dry_run)
    if not dry_run:
        restore(models, record)


def _version(args: DigikamOptions, dirs: list[Path]) -> str:
    return detect_version(dirs) if args.digikam_version == "auto" else parse_version(args.digikam_version)


def _models(args: DigikamOptions, version: str, dirs: list[Path]) -> tuple[Path, str]:
    if args.models_dir:
        return args.models_dir.resolve(), "--models-dir"
    return models_dir(version, dirs)


def _install(args: DigikamOptions, dirs: list[Path]) -> None:
    assert args.model is not None
    model = args.model.resolve()
    check_model(model)
    version = _version(args, dirs)
    models, why = _models(args, version, dirs)
    conf_out = (args.conf_out or conf_out_default(dirs)).expanduser().resolve()
    plan, record, new_conf = plan_install(model, version, models, why, dirs, conf_out)
    _print_plan(plan, args.dry_run)
    if not args.dry_run:
        install(models, record, new_conf)


def _restore_from(args: DigikamOptions, dirs: list[Path]) -> Path:
    """The models folder holding our install record: --models-dir, else wherever a version would look."""
    if args.models_dir:
        return args.models_dir.resolve()
    versions = [parse_version(args.digikam_version)] if args.digikam_version != "auto" else [V86, V85, LEGACY]
    candidates = [models_dir(v, dirs)[0] for v in versions]
    for folder in candidates:
        if (folder / BACKUP_DIR / MANIFEST).is_file():
            return folder
    return candidates[0]


def main(argv: list[str] | None = None) -> int:
    args = options(list(argv or []))
    dirs = data_dirs(args.data_dir)
    try:
        if args.action == "restore":
            _restore(_restore_from(args, dirs), args.dry_run)
        else:
            _install(args, dirs)
    except InstallError as err:
        print(f"iqs digikam: {err}", file=sys.stderr)
        return 2
    except PermissionError as err:
        print(
            f"iqs digikam: {err}; rerun as a user who may write there (digiKam reads that folder)",
            file=sys.stderr,
        )
        return 2
    return 0
