"""Where digiKam looks for its aesthetic model (Qt's GenericDataLocation), and which model loader it has.

The digiKam source references behind these paths are in `iqs.deploy.digikam_install`'s docstring.
"""

from __future__ import annotations

import os
import re
import sys
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
