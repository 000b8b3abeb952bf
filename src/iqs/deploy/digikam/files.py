"""Files `iqs digikam` writes: checksummed atomic copies, the install record, and the model check."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from iqs.core.export_profiles import INSTALL, ONNX, format_of
from iqs.deploy.digikam.paths import BACKUP_DIR, MANIFEST, InstallError


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


ONNX_REFUSAL = (
    "digiKam's aesthetic detector reads only weights_inceptionv3_299.pb through its TensorFlow importer "
    f"(readNetFromTensorflow, every release 8.0-9.2): install the <name>.{INSTALL.suffix} that `iqs export` writes"
)


def check_model(model: Path) -> None:
    """The file must be a TensorFlow frozen graph with one input: what digiKam's detector can load."""
    if not model.is_file():
        raise InstallError(f"model file not found: {model}")
    found = format_of(model)
    if found is ONNX:
        raise InstallError(f"{model}: an ONNX file; {ONNX_REFUSAL}")
    if found is not INSTALL.format:
        raise InstallError(f"{model}: expected the <name>.{INSTALL.suffix} of `iqs export`")
    from google.protobuf.message import DecodeError
    from tensorboard.compat.proto import graph_pb2

    graph = graph_pb2.GraphDef()
    try:
        graph.ParseFromString(model.read_bytes())
    except DecodeError as err:
        raise InstallError(f"{model}: not a TensorFlow frozen graph ({err})") from None
    inputs = [n.name for n in graph.node if n.op == "Placeholder"]
    if len(inputs) != 1:
        raise InstallError(f"{model}: a frozen graph with {len(inputs)} inputs; digiKam feeds exactly one")
