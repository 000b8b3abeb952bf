"""digiKam album roots: where the folder an `AlbumRoots` row names lies on this machine.

Album root identifiers (`CollectionManager::Private::volumeIdentifier` and `locationForPath`, in
core/libs/database/collection/collectionmanager_p.cpp lines 173-245 and collectionmanager_location.cpp
lines 780-806, KDE/digikam 2019-08-07):
- `volumeid:?path=/abs/folder`: the folder itself (specificPath is "/" and ignored);
- `volumeid:?uuid=...` / `volumeid:?label=...`: the volume's mount point + specificPath (found through
  /dev/disk/by-uuid or by-label and /proc/mounts, on Linux);
- `volumeid:?mountpath=/mnt/x` and `networkshareid:?mountpath=/mnt/x`: that mount point + specificPath.
An album root that moved (or a volume not mounted here) is mapped with `root_map: {old: new}`, the key
being the old resolved path, the album root's label, or its id.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from iqs.core.errors import DataError
from iqs.data.adapters.reading import config_key, plain


@dataclass(frozen=True)
class AlbumRoot:
    id: int
    label: str
    identifier: str
    specific_path: str
    path: Path | None  # resolved absolute folder, None when it cannot be found here


def _mounts() -> dict[str, str]:
    """Device -> mount point, from /proc/mounts (first mount wins); empty where there is none."""
    out: dict[str, str] = {}
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mnt, *_ = line.split()
            out.setdefault(os.path.realpath(dev), mnt.replace("\\040", " "))
    except OSError:
        pass
    return out


def _volume_mount(kind: str, value: str) -> str | None:
    link = Path("/dev/disk") / f"by-{kind}" / value
    if not link.exists():
        return None
    return _mounts().get(os.path.realpath(link))


def resolve_identifier(identifier: str, specific_path: str) -> str | None:
    """The absolute folder of an album root as digiKam would find it on this machine (None: not found)."""
    url = urlsplit(identifier or "")
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    specific = (specific_path or "/").rstrip("/")
    if url.scheme == "volumeid":
        if "path" in query:
            return query["path"]
        for kind in ("uuid", "label"):
            if kind in query:
                mount = _volume_mount(kind, query[kind])
                return None if mount is None else mount.rstrip("/") + specific
        if "mountpath" in query:
            return query["mountpath"].rstrip("/") + specific
    if url.scheme == "networkshareid":
        paths = parse_qs(url.query).get("mountpath", [])
        existing = [p for p in paths if Path(p).is_dir()]
        if existing or paths:
            return (existing or paths)[0].rstrip("/") + specific
    return None


def root_map(cfg: Mapping) -> dict[str, str]:
    value = plain(cfg.get("root_map") or {})
    if not isinstance(value, Mapping):
        raise DataError(
            f"{config_key(cfg, 'root_map')} must be a mapping {{old path or album root label or id: new path}}, "
            f"got {value!r}"
        )
    return {str(k).rstrip("/") or "/": str(v) for k, v in value.items()}


def album_roots(rows: list[tuple], mapping: dict[str, str]) -> dict[int, AlbumRoot]:
    out = {}
    for rid, label, identifier, specific in rows:
        resolved = resolve_identifier(identifier, specific)
        keys = [str(rid), str(label or ""), str(identifier or "")]
        if resolved:
            keys.append(resolved.rstrip("/") or "/")
        new = next((mapping[k] for k in keys if k in mapping), None)
        path = new if new is not None else resolved
        out[int(rid)] = AlbumRoot(
            int(rid),
            str(label or ""),
            str(identifier or ""),
            str(specific or ""),
            Path(path) if path else None,
        )
    return out
