"""digiKam's core database schema (`digikam4.db`, SQLite): the tables the `digikam_db` adapter reads.

Copied, not guessed. Two sources, which agree on every column the adapter reads:

- digiKam's own schema file `core/data/database/dbconfig.xml.cmake.in` (KDE/digikam on GitHub, master
  2019-08-07, commit 33d0457e20, digiKam 6.3, core schema version 10: `CoreDbSchemaUpdater::schemaVersion()`
  in `core/libs/database/coredb/coredbschemaupdater.cpp` line 59). Action "CreateDB", lines 99-270
  (AlbumRoots 100, Albums 109, Images 119, ImageInformation 131, Tags 204, TagsTree 212, ImageTags 217,
  Settings 242, TagProperties 257); trigger "insert_tagstree" in "CreateTriggers", lines 292-370.
- a `digikam4.db` written by a current digiKam (Settings `DBVersion` = `DBVersionRequired` = 16, the
  schema of digiKam 8.x), dumped with `sqlite3 .dump` in afistfullofash/rust-digikam-orm,
  `tests/fixtures/db.sql` (commit da9deda0). The statements below are that dump's, verbatim but for
  indentation. Schema 16 adds `AlbumRoots.caseSensitivity` and `Albums.modificationDate` to version 10;
  the adapter reads neither. `SCHEMAS` holds both versions; the tests build the test database in each.

The internal tags that hold pick labels (`_Digikam_Internal_Tags_/Pick Label None|Rejected|Pending|Accepted`)
are named in `core/libs/database/coredb/coredbconstants.cpp` lines 119-134 and
`core/libs/database/tags/tagscache.cpp` lines 235-244 and 325-329 (same 2019 snapshot); the dump above
holds exactly these tags (ids 28-31 under id 1), so digiKam 8.x still uses them.
"""

from __future__ import annotations

# schema version these statements come from (Settings.DBVersion of the dump), and the oldest checked
SCHEMA_VERSION = 16
OLDEST_CHECKED_VERSION = 10

INTERNAL_TAGS_ROOT = "_Digikam_Internal_Tags_"
# digiKam's PickLabel enum (core/app/utils/digikam_globals.h: NoPickLabel=0, Rejected, Pending, Accepted)
PICK_LABEL_TAGS = {
    0: "Pick Label None",
    1: "Pick Label Rejected",
    2: "Pick Label Pending",
    3: "Pick Label Accepted",
}
# Images.status and Images.category (core/libs/database/coredb/coredbconstants.h lines 84-102)
STATUS_VISIBLE = 1
CATEGORY_IMAGE = 1

# the two tables that differ between the versions, verbatim from the version-16 dump
_ALBUM_TABLES_16 = """
CREATE TABLE AlbumRoots
    (id INTEGER PRIMARY KEY,
    label TEXT,
    status INTEGER NOT NULL,
    type INTEGER NOT NULL,
    identifier TEXT,
    specificPath TEXT,
    caseSensitivity INTEGER,
    UNIQUE(identifier, specificPath));
CREATE TABLE Albums
    (id INTEGER PRIMARY KEY,
    albumRoot INTEGER NOT NULL,
    relativePath TEXT NOT NULL,
    date DATE,
    caption TEXT,
    collection TEXT,
    icon INTEGER,
    modificationDate DATETIME,
    UNIQUE(albumRoot, relativePath));
"""
# the columns schema 16 added to version 10 (`dbconfig.xml.cmake.in` above has neither): version 10's
# album tables are the dump's without these lines, rather than a second copy of the same statements
_ADDED_IN_16 = ("    caseSensitivity INTEGER,\n", "    modificationDate DATETIME,\n")


def _without(sql: str, lines: tuple[str, ...]) -> str:
    for line in lines:
        if sql.count(line) != 1:
            raise AssertionError(f"schema line {line.strip()!r} must occur exactly once")
        sql = sql.replace(line, "")
    return sql


_ALBUM_TABLES_10 = _without(_ALBUM_TABLES_16, _ADDED_IN_16)
# identical in versions 10 and 16 (checked column by column with PRAGMA table_info)
_COMMON = """
CREATE TABLE Images
    (id INTEGER PRIMARY KEY,
    album INTEGER,
    name TEXT NOT NULL,
    status INTEGER NOT NULL,
    category INTEGER NOT NULL,
    modificationDate DATETIME,
    fileSize INTEGER,
    uniqueHash TEXT,
    manualOrder INTEGER,
    UNIQUE (album, name));
CREATE TABLE ImageInformation
    (imageid INTEGER PRIMARY KEY,
    rating INTEGER,
    creationDate DATETIME,
    digitizationDate DATETIME,
    orientation INTEGER,
    width INTEGER,
    height INTEGER,
    format TEXT,
    colorDepth INTEGER,
    colorModel INTEGER);
CREATE TABLE Tags
    (id INTEGER PRIMARY KEY,
    pid INTEGER,
    name TEXT NOT NULL,
    icon INTEGER,
    iconkde TEXT,
    UNIQUE (name, pid));
CREATE TABLE TagsTree
    (id INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    UNIQUE (id, pid));
CREATE TABLE ImageTags
    (imageid INTEGER NOT NULL,
    tagid INTEGER NOT NULL,
    UNIQUE (imageid, tagid));
CREATE TABLE Settings
    (keyword TEXT NOT NULL UNIQUE,
    value TEXT);
CREATE TABLE TagProperties
    (tagid INTEGER,
    property TEXT,
    value TEXT);
CREATE INDEX dir_index  ON Images (album);
CREATE INDEX hash_index ON Images (uniqueHash);
CREATE INDEX tag_index  ON ImageTags (tagid);
CREATE INDEX tag_id_index  ON ImageTags (imageid);
CREATE INDEX image_name_index ON Images (name);
CREATE INDEX creationdate_index ON ImageInformation (creationDate);
CREATE INDEX tagproperties_index ON TagProperties (tagid);
CREATE TRIGGER delete_albumroot DELETE ON AlbumRoots
    BEGIN
        DELETE FROM Albums
        WHERE Albums.albumRoot = OLD.id;
    END;
CREATE TRIGGER delete_album DELETE ON Albums
    BEGIN
        DELETE FROM Images
        WHERE Images.album = OLD.id;
    END;
CREATE TRIGGER insert_tagstree AFTER INSERT ON Tags
    BEGIN
    INSERT INTO TagsTree
        SELECT NEW.id, NEW.pid
        UNION
        SELECT NEW.id, pid FROM TagsTree WHERE id=NEW.pid;
    END;
"""
# core schema version -> CREATE statements of the tables the adapter reads
SCHEMAS = {16: _ALBUM_TABLES_16 + _COMMON, 10: _ALBUM_TABLES_10 + _COMMON}
CORE_SCHEMA = SCHEMAS[SCHEMA_VERSION]
