"""The test library's `digikam4.db`, built from digiKam's schema with the labels its scanner would have read."""

from __future__ import annotations

import shutil
import sqlite3
from datetime import datetime
from pathlib import Path

from iqs.data.adapters.digikam_schema import (
    CATEGORY_IMAGE,
    INTERNAL_TAGS_ROOT,
    PICK_LABEL_TAGS,
    SCHEMA_VERSION,
    SCHEMAS,
    STATUS_VISIBLE,
)
from iqs.data.demo.library_layout import STATUS_TRASHED, TRASHED, Frame


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.000")


class _Database:
    """One open digikam4.db: its album root, the pick-label tags and the albums created so far."""

    def __init__(self, con: sqlite3.Connection, root: Path, schema_version: int) -> None:
        self.con, self.root = con, root
        con.executescript(SCHEMAS[schema_version])
        con.executemany(
            "INSERT INTO Settings (keyword, value) VALUES (?, ?)",
            [("DBVersion", str(schema_version)), ("DBVersionRequired", str(schema_version))],
        )
        # digiKam: volumeid:?path=<absolute path>, specificPath "/" (collectionmanager_location.cpp line 79)
        con.execute(
            "INSERT INTO AlbumRoots (id, label, status, type, identifier, specificPath) "
            "VALUES (1, 'Pictures', 0, 1, ?, '/')",
            (f"volumeid:?path={root.resolve().as_posix()}",),
        )
        self.pick_tag = self._pick_tags()
        self.albums: dict[str, int] = {}

    def _pick_tags(self) -> dict[int, int]:
        """The internal tags digiKam keeps pick labels in: pick label value -> tag id."""
        cur = self.con.execute("INSERT INTO Tags (pid, name) VALUES (0, ?)", (INTERNAL_TAGS_ROOT,))
        internal = cur.lastrowid
        self.con.execute("INSERT INTO TagProperties VALUES (?, 'internalTag', NULL)", (internal,))
        pick_tag = {}
        for value, tag in PICK_LABEL_TAGS.items():
            cur = self.con.execute("INSERT INTO Tags (pid, name) VALUES (?, ?)", (internal, tag))
            pick_tag[value] = cur.lastrowid
            self.con.execute("INSERT INTO TagProperties VALUES (?, 'internalTag', NULL)", (cur.lastrowid,))
        return pick_tag

    def album_id(self, folder: str) -> int:
        rel = "/" + folder if folder else "/"
        if rel not in self.albums:
            if folder:
                self.album_id(folder.rpartition("/")[0])
            cur = self.con.execute(
                "INSERT INTO Albums (albumRoot, relativePath, date) VALUES (1, ?, '2024-01-01')", (rel,)
            )
            self.albums[rel] = cur.lastrowid
        return self.albums[rel]

    def add_image(self, path: str, status: int, rating: int, pick: int | None) -> None:
        folder, _, name = path.rpartition("/")
        f = self.root / path
        mtime = datetime.fromtimestamp(f.stat().st_mtime)
        cur = self.con.execute(
            "INSERT INTO Images (album, name, status, category, modificationDate, fileSize) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (self.album_id(folder), name, status, CATEGORY_IMAGE, _iso(mtime), f.stat().st_size),
        )
        image_id = cur.lastrowid
        # creationDate: DateTimeOriginal, else the file time (digiKam's scanner does the same)
        self.con.execute(
            "INSERT INTO ImageInformation (imageid, rating, creationDate, format) VALUES (?, ?, ?, 'JPG')",
            (image_id, rating, _iso(mtime)),
        )
        if pick is not None:
            self.con.execute("INSERT INTO ImageTags VALUES (?, ?)", (image_id, self.pick_tag[pick]))


def write_database(
    root: Path, frames: list[Frame], bad: list[dict], db_path: Path, schema_version: int = SCHEMA_VERSION
) -> dict:
    """digikam4.db with one album root (identified by path, as digiKam does for a plain folder)."""
    con = sqlite3.connect(db_path)
    try:
        db = _Database(con, root, schema_version)
        for fr in frames:
            has_pick = fr.storage not in ("unlabelled", "rating_only", "ms_rating_only")
            # unlabelled: no rating; digiKam reads XMP -1 as no rating, and the DB holds NoRating (-1)
            rating = fr.stars if fr.stars is not None and fr.stars >= 0 else -1
            db.add_image(fr.path, STATUS_VISIBLE, rating, fr.cls + 1 if has_pick else None)
        for case in bad:
            # digiKam's scanner sees no label in a broken sidecar; a rating of 7 in the database is what
            # another tool writing into it could leave (digiKam itself would store -1)
            rating = 7 if case["reason"] == "rating out of range" else -1
            db.add_image(case["path"], STATUS_VISIBLE, rating, None)
        # a trashed photo keeps its row and labels (status Trashed); its file is in .dtrash
        trash = root / ".dtrash" / "files"
        trash.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / frames[0].path, trash / TRASHED)
        db.add_image(f".dtrash/files/{TRASHED}", STATUS_TRASHED, 5, 3)
        con.commit()
    finally:
        con.close()
    return {"album_roots": 1, "albums": len(db.albums), "images": len(frames) + len(bad) + 1, "trashed": 1}
