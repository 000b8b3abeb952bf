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
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

STOCK_PB = "weights_inceptionv3_299.pb"
# filesdownloader.cpp:112-116 (8.1.0): the stock aesthetic model, as digiKam's downloader knows it
STOCK_PB_SHA256 = "8923e3daff71c07533b9023ef32c69d8c058d1e0931d76d8b81241a201138538"
STOCK_PB_SIZE = 88_007_527
MODELS_SUBDIR = Path("digikam") / "facesengine"
STOCK_CONF = Path("digikam") / "dnnmodels" / "dnnmodels.conf"
CONF_ENV = "DIGIKAM_DNN_MODEL_CONF"
BACKUP_DIR = "iqs-backup"  # inside the models folder; digiKam never reads sub-folders there
MANIFEST = "iqs-install.json"
LEGACY, DNNMODELS = "8.0-8.4", "8.5+"


class InstallError(Exception):
    """Something the user has to decide; the message says what and how."""


# ---------------------------------------------------------------- where digiKam looks


def data_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """Qt's GenericDataLocation list, most specific first (what `QStandardPaths::locate` walks).

    Linux follows XDG (Qt's documented table); macOS and Windows use Qt's documented user and system folders.
    `data_dir` replaces the whole list, for a digiKam with a non-default layout (AppImage, Flatpak, tests).
    """
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    home = Path.home()
    if sys.platform == "darwin":
        return [home / "Library" / "Application Support", Path("/Library/Application Support")]
    if sys.platform == "win32":
        local = Path(os.environ.get("LOCALAPPDATA", home / "AppData" / "Local"))
        return [local, Path(os.environ.get("PROGRAMDATA", "C:/ProgramData"))]
    user = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    system = [
        Path(p) for p in (os.environ.get("XDG_DATA_DIRS") or "/usr/local/share:/usr/share").split(":") if p
    ]
    return [user, *system]


def locate(relative: Path, dirs: list[Path], want_dir: bool) -> Path | None:
    """The first `dir/relative` that exists, as `QStandardPaths::locate(GenericDataLocation, ...)` returns."""
    for root in dirs:
        candidate = root / relative
        if candidate.is_dir() if want_dir else candidate.is_file():
            return candidate
    return None


def models_dir(dirs: list[Path]) -> Path:
    """The folder digiKam reads models from; the user's own one when none exists yet (the downloader's)."""
    found = locate(MODELS_SUBDIR, dirs, want_dir=True)
    return found if found is not None else dirs[0] / MODELS_SUBDIR


def detect_version(dirs: list[Path]) -> str:
    """8.5+ ships dnnmodels.conf; a models folder without one is 8.0-8.4; neither: ask the user."""
    if os.environ.get(CONF_ENV) or locate(STOCK_CONF, dirs, want_dir=False):
        return DNNMODELS
    if locate(MODELS_SUBDIR, dirs, want_dir=True):
        return LEGACY
    raise InstallError(
        f"found neither {STOCK_CONF} (digiKam 8.5+) nor a {MODELS_SUBDIR} folder (8.0-8.4) under "
        f"{', '.join(map(str, dirs))}. Start digiKam once (it downloads its models there), "
        "or pass --digikam-version and --data-dir"
    )


def parse_version(text: str) -> str:
    """'8.2', '8.0-8.4' -> LEGACY; '8.5', '8.5+', '8.6.1' -> DNNMODELS."""
    if text in (LEGACY, DNNMODELS):
        return text
    match = re.fullmatch(r"(\d+)\.(\d+)(?:\.\d+)?\+?", text.strip())
    if not match:
        raise InstallError(
            f"--digikam-version '{text}': give a version such as 8.2 or 8.5 (or {LEGACY} / {DNNMODELS})"
        )
    major, minor = int(match[1]), int(match[2])
    if major < 8:
        raise InstallError(f"digiKam {text} has no aesthetic model to replace (it came with 8.0)")
    return LEGACY if (major, minor) < (8, 5) else DNNMODELS


# ---------------------------------------------------------------- files


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def copy_verified(src: Path, dst: Path, expected_sha: str) -> None:
    """Copy via a temporary file in the target folder and rename: digiKam never sees half a model."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", dir=dst.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        if sha256(Path(tmp)) != expected_sha:
            raise InstallError(f"copy of {src} to {dst} does not match its SHA-256; nothing was replaced")
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@dataclass
class Plan:
    """What `install`/`restore` does, printed before (or instead of, with --dry-run) doing it."""

    version: str
    models: Path
    steps: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _load_manifest(models: Path) -> dict:
    path = models / BACKUP_DIR / MANIFEST
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise InstallError(f"{path}: unreadable install record ({err}); fix or remove it by hand") from None


def _save_manifest(models: Path, record: dict) -> None:
    path = models / BACKUP_DIR / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def _check_model(model: Path, version: str) -> None:
    if not model.is_file():
        raise InstallError(f"model file not found: {model}")
    if version == LEGACY and model.suffix != ".pb":
        raise InstallError(
            f"{model}: digiKam {LEGACY} loads only a TensorFlow frozen graph (.pb, readNetFromTensorflow); "
            "export one with `iqs export run_id=<run> profiles=[digikam_tf]`"
        )
    if model.suffix == ".onnx":
        from iqs.deploy.export import read_onnx_meta

        try:
            profile = read_onnx_meta(model).get("export_profile")
        except Exception as err:  # not an ONNX, or not one of ours: both end here with the reason
            raise InstallError(f"{model}: not an `iqs export` ONNX ({err})") from None
        if profile != "digikam":
            raise InstallError(
                f"{model}: a '{profile}' export; digiKam needs the 'digikam' profile "
                "(one 1x3 output, bad/normal/good): use the .digikam.onnx next to it"
            )
    elif model.suffix != ".pb":
        raise InstallError(f"{model}: expected an exported .digikam.onnx or .pb file")


# ---------------------------------------------------------------- 8.0-8.4: replace the stock file


def plan_legacy_install(model: Path, models: Path) -> tuple[Plan, dict]:
    target = models / STOCK_PB
    record = _load_manifest(models)
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
        _save_manifest(models, record)  # the backup is recorded before anything is overwritten
    copy_verified(model, target, record["installed_sha256"])
    record["installed_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    _save_manifest(models, record)


# ---------------------------------------------------------------- 8.5+: our file + our dnnmodels.conf

_GROUP = re.compile(r"^\s*\[(.+)\]\s*$")
_KEY = re.compile(r"^\s*([^=;#\s][^=]*?)\s*=(.*)$")


def ini_groups(text: str) -> dict[str, dict[str, str]]:
    """QSettings INI groups -> keys -> raw values (keys keep their case, unlike configparser's default)."""
    groups: dict[str, dict[str, str]] = {}
    current = None
    for line in text.splitlines():
        if m := _GROUP.match(line):
            current = groups.setdefault(m[1], {})
        elif current is not None and (m := _KEY.match(line)):
            current[m[1]] = m[2].strip()
    return groups


def set_keys(text: str, group: str, values: dict[str, str]) -> str:
    """Rewrite `values` inside one INI group, keeping every other line (comments, order, quoting) as it was.

    Hand-rolled: configparser would re-serialise the whole file (lower-cased keys, lost comments, changed
    quoting of QSettings' comma lists), and the file must stay what digiKam shipped except for our keys.
    """
    out, inside, missing = [], False, dict(values)
    for line in text.splitlines():
        if m := _GROUP.match(line):
            if inside:
                out.extend(f"{k}={v}" for k, v in missing.items())
                missing = {}
            inside = m[1] == group
        elif inside and (m := _KEY.match(line)) and m[1] in values:
            line = f"{m[1]}={values[m[1]]}"
            missing.pop(m[1], None)
        out.append(line)
    if inside:
        out.extend(f"{k}={v}" for k, v in missing.items())
    return "\n".join(out) + "\n"


def aesthetic_group(groups: dict[str, dict[str, str]], conf: Path) -> str:
    """The group dnnmodelmanager.cpp `loadConfig` gives DNNUsageAesthetics to (Usage contains 'aesthetics')."""
    names = [name for name, keys in groups.items() if "aesthetics" in keys.get("Usage", "").lower()]
    digikam = [n for n in names if "digikam" in groups[n].get("Application", "").lower()]
    if not digikam:
        raise InstallError(
            f"{conf}: no model group with Usage=aesthetics for digikam; is this a digiKam 8.5+ config?"
        )
    return digikam[0]


def conf_out_default(dirs: list[Path]) -> Path:
    """Outside digiKam's own folders, so `locate` never mistakes it for the stock config."""
    return dirs[0] / "iqs-digikam" / "dnnmodels.conf"


def plan_dnn_install(model: Path, models: Path, dirs: list[Path], conf_out: Path) -> tuple[Plan, dict, str]:
    stock_conf = locate(STOCK_CONF, dirs, want_dir=False)
    if stock_conf is None:
        raise InstallError(
            f"no {STOCK_CONF} under {', '.join(map(str, dirs))}: is digiKam 8.5+ installed here? "
            "Pass --data-dir <folder holding digikam/> or --digikam-version 8.4 for older versions"
        )
    text = stock_conf.read_text(encoding="utf-8")
    groups = ini_groups(text)
    group = aesthetic_group(groups, stock_conf)
    target = models / model.name
    model_sha, size = sha256(model), model.stat().st_size
    if target.exists() and sha256(target) != model_sha:
        record = _load_manifest(models)
        if record.get("installed_model") != str(target):
            raise InstallError(
                f"{target} exists and is another file; refusing to overwrite it. Rename one of them"
            )
    new_conf = set_keys(text, group, {"FileName": model.name, "SHA256": model_sha, "FileSize": str(size)})
    plan = Plan(DNNMODELS, models)
    plan.steps.append(f"copy {model} -> {target} (SHA-256 {model_sha[:12]}…, {size:,} bytes)")
    plan.steps.append(
        f"write {conf_out}: a copy of {stock_conf} whose [{group}] names {model.name} "
        f"(was {groups[group].get('FileName', '?')}); the stock files stay as they are"
    )
    plan.notes.append(f"start digiKam with {CONF_ENV}={conf_out}, for example:")
    plan.notes.append(f"  {CONF_ENV}={conf_out} digikam")
    plan.notes.append(
        f"  or for the desktop launcher: echo '{CONF_ENV}={conf_out}' >> ~/.config/environment.d/iqs-digikam.conf"
    )
    plan.notes.append(
        "rerun `iqs digikam install` after upgrading digiKam: the config copy is of this version"
    )
    record = {
        "version": DNNMODELS,
        "installed_model": str(target),
        "installed_sha256": model_sha,
        "installed_from": str(model),
        "conf": str(conf_out),
        "stock_conf": str(stock_conf),
        "group": group,
    }
    return plan, record, new_conf


def dnn_install(model: Path, models: Path, record: dict, new_conf: str) -> None:
    copy_verified(model, Path(record["installed_model"]), record["installed_sha256"])
    conf = Path(record["conf"])
    conf.parent.mkdir(parents=True, exist_ok=True)
    tmp = conf.with_name(f".{conf.name}.tmp")
    tmp.write_text(new_conf, encoding="utf-8")
    os.replace(tmp, conf)
    record["installed_at"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    _save_manifest(models, record)


# ---------------------------------------------------------------- restore


def plan_restore(models: Path) -> tuple[Plan, dict]:
    record = _load_manifest(models)
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


def main(argv: list[str] | None = None) -> int:
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
    args = p.parse_args(argv)
    dirs = data_dirs(args.data_dir)
    models = args.models_dir.expanduser().resolve() if args.models_dir else models_dir(dirs)
    try:
        if args.command == "restore":
            plan, record = plan_restore(models)
            _print_plan(plan, args.dry_run)
            if not args.dry_run:
                restore(models, record)
            return 0
        version = (
            detect_version(dirs) if args.digikam_version == "auto" else parse_version(args.digikam_version)
        )
        model = args.model.expanduser().resolve()
        _check_model(model, version)
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
