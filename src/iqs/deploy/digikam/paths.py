"""Where digiKam looks for its aesthetic model, by version (Qt's data and config locations).

Every digiKam 8.0-9.2 loads `<models folder>/weights_inceptionv3_299.pb` with `readNetFromTensorflow`; only
the models folder differs (aesthetic_detector.cpp `s_loadModel`, systemsettings.cpp, ../shared/digikam.md):
- 8.0-8.4: the FIRST existing `digikam/facesengine` in Qt's GenericDataLocation list (`QStandardPaths::locate`);
- 8.5: `writableLocation(GenericDataLocation)/digikam/facesengine`;
- 8.6+: `facesEnginePath` in the `[System]` group of `<GenericConfigLocation>/digikam_systemrc` when set
  (Settings > Miscellaneous > System, "local storage" of the model files), else the 8.5 default.
The source references are in `iqs.deploy.digikam.install`'s docstring.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from iqs.deploy.digikam.qsettings_ini import ini_groups

STOCK_PB = "weights_inceptionv3_299.pb"
# filesdownloader.cpp:112-116 (8.1.0): the stock aesthetic model, as digiKam's downloader knows it
STOCK_PB_SHA256 = "8923e3daff71c07533b9023ef32c69d8c058d1e0931d76d8b81241a201138538"
STOCK_PB_SIZE = 88_007_527
MODELS_SUBDIR = Path("digikam") / "facesengine"
STOCK_CONF = Path("digikam") / "dnnmodels" / "dnnmodels.conf"
CONF_ENV = "DIGIKAM_DNN_MODEL_CONF"
SYSTEMRC = "digikam_systemrc"  # QSettings INI in Qt's GenericConfigLocation
SYSTEMRC_GROUP, SYSTEMRC_KEY = "System", "facesEnginePath"
BACKUP_DIR = "iqs-backup"  # inside the models folder; digiKam never reads sub-folders there
MANIFEST = "iqs-install.json"
LEGACY, V85, V86 = "8.0-8.4", "8.5", "8.6+"
VERSIONS = (LEGACY, V85, V86)
DNNMODELS = "8.5+"  # install records of earlier iqs releases (an ONNX named in a dnnmodels.conf copy)


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


def config_dir() -> Path:
    """Qt's writable GenericConfigLocation: where digiKam 8.6+ keeps `digikam_systemrc`."""
    home = Path.home()
    if sys.platform == "darwin":
        return home / "Library" / "Preferences"
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", home / "AppData" / "Local"))
    return Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")


def faces_engine_path(config: Path | None = None) -> Path | None:
    """`[System] facesEnginePath` of digikam_systemrc, when the user has set one (digiKam 8.6+)."""
    rc = (config or config_dir()) / SYSTEMRC
    if not rc.is_file():
        return None
    value = ini_groups(rc.read_text(encoding="utf-8")).get(SYSTEMRC_GROUP, {}).get(SYSTEMRC_KEY, "")
    value = value.strip().strip('"')
    return Path(value).expanduser() if value else None


def models_dir(version: str, dirs: list[Path], config: Path | None = None) -> tuple[Path, str]:
    """The folder digiKam `version` loads the model from, and why (one line for the plan)."""
    if version == LEGACY:
        found = locate(MODELS_SUBDIR, dirs, want_dir=True)
        if found is not None:
            return found, f"the first existing {MODELS_SUBDIR} in {', '.join(map(str, dirs))}"
        return dirs[0] / MODELS_SUBDIR, f"no {MODELS_SUBDIR} exists yet: created in the user's data folder"
    default = dirs[0] / MODELS_SUBDIR
    if version == V86:
        custom = faces_engine_path(config)
        rc = (config or config_dir()) / SYSTEMRC
        if custom is not None:
            return custom, f"{SYSTEMRC_KEY} in [{SYSTEMRC_GROUP}] of {rc}"
        return default, f"the default ({rc} sets no {SYSTEMRC_KEY})"
    return default, "writableLocation(GenericDataLocation)/digikam/facesengine"


def detect_version(dirs: list[Path]) -> str:
    """8.5+ ships dnnmodels.conf (8.6+ is assumed: it honours facesEnginePath, which 8.5 ignores); a models
    folder without one is 8.0-8.4; neither: ask the user."""
    if os.environ.get(CONF_ENV) or locate(STOCK_CONF, dirs, want_dir=False):
        return V86
    if locate(MODELS_SUBDIR, dirs, want_dir=True):
        return LEGACY
    raise InstallError(
        f"found neither {STOCK_CONF} (digiKam 8.5+) nor a {MODELS_SUBDIR} folder (8.0-8.4) under "
        f"{', '.join(map(str, dirs))}. Start digiKam once (it downloads its models there), "
        "or pass --digikam-version and --data-dir"
    )


def parse_version(text: str) -> str:
    """'8.2', '8.0-8.4' -> LEGACY; '8.5' -> V85; '8.6', '9.2', '8.5+', '8.6+' -> V86."""
    text = str(text).strip()
    if text in VERSIONS:
        return text
    if text == DNNMODELS:
        return V86
    match = re.fullmatch(r"(\d+)\.(\d+)(?:\.\d+)?\+?", text)
    if not match:
        raise InstallError(f"--digikam-version '{text}': give a version such as 8.2, 8.5 or 9.2")
    major, minor = int(match[1]), int(match[2])
    if major < 8:
        raise InstallError(f"digiKam {text} has no aesthetic model to replace (it came with 8.0)")
    if (major, minor) < (8, 5):
        return LEGACY
    return V85 if (major, minor) == (8, 5) and not text.endswith("+") else V86
