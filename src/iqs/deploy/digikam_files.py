"""Files `iqs digikam` writes: checksummed atomic copies, the install record, and the model check."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from iqs.deploy.digikam_paths import BACKUP_DIR, LEGACY, MANIFEST, InstallError


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


def load_manifest(models: Path) -> dict:
    path = models / BACKUP_DIR / MANIFEST
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise InstallError(f"{path}: unreadable install record ({err}); fix or remove it by hand") from None


def save_manifest(models: Path, record: dict) -> None:
    path = models / BACKUP_DIR / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def check_model(model: Path, version: str) -> None:
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
