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

import argparse
import datetime as dt
import shutil
import sys
from pathlib import Path

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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="iqs digikam", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    inst = sub.add_parser(
        "install", help="copy an exported model where digiKam loads it (stock file backed up)"
    )
    inst.add_argument("model", type=Path, help="a .digikam.onnx (8.5+) or .digikam_tf.pb (8.0-8.4) export")
    rest = sub.add_parser("restore", help="put digiKam's stock model back")
    for sp in (inst, rest):
        sp.add_argument("--digikam-version", default="auto", help=f"8.2, 8.5, {LEGACY}, {DNNMODELS} or auto")
        sp.add_argument(
            "--data-dir", default=None, help="the folder holding digikam/ (default: Qt's data folders)"
        )
        sp.add_argument(
            "--models-dir",
            type=Path,
            default=None,
            help="digiKam's models folder, where newer versions let you move it (default: digikam/facesengine)",
        )
        sp.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
    inst.add_argument("--conf-out", type=Path, default=None, help="8.5+: where to write our dnnmodels.conf")
    return p


def _restore(models: Path, dry_run: bool) -> None:
    plan, record = plan_restore(models)
    _print_plan(plan, dry_run)
    if not dry_run:
        restore(models, record)


def _install(args: argparse.Namespace, dirs: list[Path], models: Path) -> None:
    version = detect_version(dirs) if args.digikam_version == "auto" else parse_version(args.digikam_version)
    model = args.model.expanduser().resolve()
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
    args = _parser().parse_args(argv)
    dirs = data_dirs(args.data_dir)
    models = args.models_dir.expanduser().resolve() if args.models_dir else models_dir(dirs)
    try:
        if args.command == "restore":
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
