"""digiKam 8.5+: copy our model next to digiKam's and write a copy of dnnmodels.conf that names it."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

from iqs.deploy.digikam_files import Plan, copy_verified, load_manifest, save_manifest, sha256
from iqs.deploy.digikam_paths import CONF_ENV, DNNMODELS, STOCK_CONF, InstallError, locate

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
        record = load_manifest(models)
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
    save_manifest(models, record)
