"""digiKam 8.5+: a copy of dnnmodels.conf that tells the model downloader our `.pb` is the right file.

The aesthetic detector never reads this config (it opens `weights_inceptionv3_299.pb` by name with
readNetFromTensorflow); only the downloader does, and it checks an installed file by its size. A copy whose
aesthetic group keeps `FileName=weights_inceptionv3_299.pb` but carries our file's `SHA256` and `FileSize`,
named by `DIGIKAM_DNN_MODEL_CONF`, stops digiKam from offering to "repair" the replaced model at every start.
"""

from __future__ import annotations

import os
from pathlib import Path

from iqs.deploy.digikam.paths import CONF_ENV, STOCK_CONF, STOCK_PB, InstallError, locate
from iqs.deploy.digikam.qsettings_ini import ini_groups, set_keys


def aesthetic_group(groups: dict[str, dict[str, str]], conf: Path) -> str:
    """The group dnnmodelmanager.cpp `loadConfig` gives DNNUsageAesthetics to (Usage contains 'aesthetics')."""
    names = [name for name, keys in groups.items() if "aesthetics" in keys.get("Usage", "").lower()]
    digikam = [n for n in names if "digikam" in groups[n].get("Application", "digikam").lower()]
    if not digikam:
        raise InstallError(
            f"{conf}: no model group with Usage=aesthetics for digikam; is this a digiKam 8.5+ config?"
        )
    return digikam[0]


def conf_out_default(dirs: list[Path]) -> Path:
    """Outside digiKam's own folders, so `locate` never mistakes it for the stock config."""
    return dirs[0] / "iqs-digikam" / "dnnmodels.conf"


def stock_conf(dirs: list[Path]) -> Path:
    """The dnnmodels.conf digiKam reads now: $DIGIKAM_DNN_MODEL_CONF's (unless it is ours) or the stock one."""
    named = os.environ.get(CONF_ENV)
    if named and Path(named).is_file() and Path(named).resolve() != conf_out_default(dirs).resolve():
        return Path(named)
    found = locate(STOCK_CONF, dirs, want_dir=False)
    if found is None:
        raise InstallError(
            f"no {STOCK_CONF} under {', '.join(map(str, dirs))}: is digiKam 8.5+ installed here? "
            "Pass --data-dir <folder holding digikam/>, or --digikam-version 8.4 for 8.0-8.4"
        )
    return found


def conf_copy(source: Path, sha256: str, size: int) -> tuple[str, str]:
    """(the text of the copy, its aesthetic group): our file's SHA256 and FileSize, the stock FileName."""
    text = source.read_text(encoding="utf-8")
    groups = ini_groups(text)
    group = aesthetic_group(groups, source)
    name = groups[group].get("FileName", STOCK_PB)
    if name != STOCK_PB:
        raise InstallError(
            f"{source}: [{group}] names {name}, but the aesthetic detector opens {STOCK_PB} by name; "
            f"restore digiKam's own {STOCK_CONF} (or unset {CONF_ENV}) first"
        )
    return set_keys(text, group, {"SHA256": sha256, "FileSize": str(size)}), group


def write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
