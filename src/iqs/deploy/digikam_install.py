"""`iqs digikam install|restore`: put an exported model where digiKam loads it, and take it back out.

    iqs digikam install exports/run/iqs-1234abcd.digikam.onnx              # digiKam 8.5+ (auto-detected)
    iqs digikam install exports/run/iqs-1234abcd.digikam_tf.pb --digikam-version 8.2
    iqs digikam install MODEL --dry-run                                     # say what would change
    iqs digikam restore                                                     # back to the stock model

What digiKam does, read in its sources (paths relative to its repository):

- 8.0-8.4 (checked in 8.1.0: core/libs/imgqsort/detectors/aesthetic_detector.cpp:143-160) load
  `weights_inceptionv3_299.pb` with `cv::dnn::readNetFromTensorflow` from the FIRST existing
  `digikam/facesengine` folder in Qt's GenericDataLocation list (`QStandardPaths::locate`). There is no other
  switch, so the file itself is replaced; the stock file is backed up first, with its SHA-256.
  The model downloader (core/utilities/setup/downloader/filesdownloader.cpp:159-181, called at every start
  from core/app/main/main.cpp:453-460) only compares the file SIZE with 88,007,527 bytes. A replaced file of
  another size makes digiKam open its "Download Required Files" dialog at start; "Download" then fetches the
  stock file, checks the download's SHA-256 (filesdownloader.cpp:420-435) and overwrites ours
  (filesdownloader.cpp:437-456, writableLocation(GenericDataLocation)/digikam/facesengine, :485-491).
- 8.5+ (DNN model manager, core/libs/dnnmodels/: dnnmodelmanager.cpp `getSettings`, `loadConfig`) read the
  models from `digikam/dnnmodels/dnnmodels.conf` (QSettings INI) unless the environment variable
  `DIGIKAM_DNN_MODEL_CONF` names another file, which then replaces it completely. A group whose `Usage`
  contains `aesthetics` is the aesthetic model; `LoaderType=net` means `cv::dnn::readNet`, which reads ONNX.
  dnnmodelbase.cpp `getModelPath` finds `FileName` in the same `digikam/facesengine` folder, and
  `checkFilename` loads it only if its size equals `FileSize` (the downloader compares sizes too, and
  `SHA256` is checked on downloads only). So we copy the model next to digiKam's, and write a copy of the
  stock config whose aesthetic group names our file, size and checksum: no stock file is touched.
"""

from __future__ import annotations

import datetime as dt
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from iqs.config import CommandLineError, Flags, compose
from iqs.deploy.digikam_dnnconf import (
    aesthetic_group,
    conf_out_default,
    dnn_install,
    ini_groups,
    plan_dnn_install,
)
from iqs.deploy.digikam_files import Plan, check_model, copy_verified, load_manifest, save_manifest, sha256
from iqs.deploy.digikam_paths import (
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
    InstallError,
    data_dirs,
    detect_version,
    locate,
    models_dir,
    parse_version,
)

__all__ = [  # the names tests and callers reach through this module
    "BACKUP_DIR",
    "CONF_ENV",
    "DNNMODELS",
    "LEGACY",
    "MANIFEST",
    "MODELS_SUBDIR",
    "STOCK_CONF",
    "STOCK_PB",
    "InstallError",
    "aesthetic_group",
    "data_dirs",
    "detect_version",
    "ini_groups",
    "locate",
    "main",
    "parse_version",
]


# ---------------------------------------------------------------- 8.0-8.4: replace the stock file


def plan_legacy_install(model: Path, models: Path) -> tuple[Plan, dict]:
    target = models / STOCK_PB
    record = load_manifest(models)
    model_sha = sha256(model)
    plan = Plan(LEGACY, models)
    backup = models / BACKUP_DIR / STOCK_PB
    if target.exists():
        current = sha256(target)
        if record.get("version") == LEGACY and current == record.get("installed_sha256"):
            plan.steps.append(f"replace our earlier model {target} (the backup stays: {backup})")
        elif record.get("version") == LEGACY and current == record.get("stock_sha256"):
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
            record = {"version": LEGACY, "target": str(target), "backup": str(backup)}
            record.update(stock_sha256=current, stock_size=target.stat().st_size, stock_is_digikams=stock)
            plan.steps.append(
                f"back up {target} ({'digiKam stock model' if stock else 'NOT the stock model'}, "
                f"SHA-256 {current[:12]}…) to {backup}"
            )
    else:
        record = record or {"version": LEGACY, "target": str(target), "backup": None, "stock_sha256": None}
        plan.steps.append(f"skip the backup: {target} does not exist yet")
    record.update(installed_sha256=model_sha, installed_from=str(model))
    plan.steps.append(f"copy {model} -> {target} (SHA-256 {model_sha[:12]}…)")
    if model.stat().st_size != STOCK_PB_SIZE:
        plan.notes.append(
            f"digiKam's model downloader judges this file by its size ({STOCK_PB_SIZE:,} bytes for the stock "
            "model): at each start it opens 'Download Required Files'. Choose Close. 'Download' fetches the "
            "stock model (SHA-256 checked) and overwrites ours; `iqs digikam install` puts it back."
        )
    plan.notes.append("restart digiKam: it loads the model once per session")
    return plan, record


def legacy_install(model: Path, models: Path, record: dict) -> None:
    target = models / STOCK_PB
    if target.exists() and record.get("backup") and not (models / BACKUP_DIR / STOCK_PB).exists():
        copy_verified(target, models / BACKUP_DIR / STOCK_PB, record["stock_sha256"])
        save_manifest(models, record)  # the backup is recorded before anything is overwritten
    copy_verified(model, target, record["installed_sha256"])
    record["installed_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    save_manifest(models, record)


# ---------------------------------------------------------------- restore


def plan_restore(models: Path) -> tuple[Plan, dict]:
    record = load_manifest(models)
    if not record:
        raise InstallError(f"no install record in {models / BACKUP_DIR}: nothing installed by iqs here")
    plan = Plan(record["version"], models)
    if record["version"] == LEGACY:
        target = Path(record["target"])
        if record.get("backup"):
            plan.steps.append(f"copy the backup {record['backup']} back to {target} (SHA-256 checked)")
        elif target.exists():
            plan.steps.append(f"remove {target} (there was no model before)")
    else:
        plan.steps.append(f"remove {record['conf']} and {record['installed_model']}")
        plan.notes.append(
            f"unset {CONF_ENV} (and remove it from ~/.config/environment.d/ if you added it there)"
        )
    plan.steps.append(f"remove {models / BACKUP_DIR}")
    plan.notes.append("restart digiKam")
    return plan, record


def restore(models: Path, record: dict) -> None:
    if record["version"] == LEGACY:
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
    else:
        Path(record["conf"]).unlink(missing_ok=True)
        installed = Path(record["installed_model"])
        if installed.exists() and sha256(installed) == record["installed_sha256"]:
            installed.unlink()
    shutil.rmtree(models / BACKUP_DIR)


# ---------------------------------------------------------------- command line


def _print_plan(plan: Plan, dry_run: bool) -> None:
    print(f"digiKam {plan.version}, models folder {plan.models}")
    for step in plan.steps:
        print(("  would " if dry_run else "  ") + step)
    for note in plan.notes:
        print(note)


# the flags users know from the docs, as aliases of conf/digikam.yaml's keys; the bare words are `args`
FLAGS = Flags(
    switches={"--dry-run": "dry_run"},
    options={
        "--digikam-version": "digikam_version",
        "--data-dir": "data_dir",
        "--models-dir": "models_dir",
        "--conf-out": "conf_out",
    },
    positional="args",
    strings=("digikam_version", "data_dir", "models_dir", "conf_out"),
)
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
    """The command line through conf/digikam.yaml (iqs.config.compose, as every subcommand)."""
    cfg = compose("digikam", argv, FLAGS)
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


def _install(args: DigikamOptions, dirs: list[Path], models: Path) -> None:
    version = detect_version(dirs) if args.digikam_version == "auto" else parse_version(args.digikam_version)
    assert args.model is not None
    model = args.model.resolve()
    check_model(model, version)
    if version == LEGACY:
        plan, record = plan_legacy_install(model, models)
        _print_plan(plan, args.dry_run)
        if not args.dry_run:
            legacy_install(model, models, record)
    else:
        conf_out = (args.conf_out or conf_out_default(dirs)).expanduser().resolve()
        plan, record, new_conf = plan_dnn_install(model, models, dirs, conf_out)
        _print_plan(plan, args.dry_run)
        if not args.dry_run:
            dnn_install(model, models, record, new_conf)


def main(argv: list[str] | None = None) -> int:
    args = options(list(sys.argv[1:] if argv is None else argv))
    dirs = data_dirs(args.data_dir)
    models = args.models_dir.resolve() if args.models_dir else models_dir(dirs)
    try:
        if args.action == "restore":
            _restore(models, args.dry_run)
        else:
            _install(args, dirs, models)
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
