"""`iqs predict` writes every row, whatever the file names: a non-UTF-8 name is escaped, never fatal."""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path

import pytest
from PIL import Image

from iqs.deploy.predict import command as predict_cli
from iqs.deploy.predict import scorer as predict
from test_predict import _photo, model_and_onnx  # noqa: F401

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="needs a file system that stores raw bytes")


@pytest.fixture
def odd_names(tmp_path: Path) -> tuple[Path, list[bytes]]:
    """17 files as in the report: 15 photos, one with a non-UTF-8 name (b'\\xff'), and a broken one."""
    root = tmp_path / "odd"
    root.mkdir()
    names = [f"img{i:02d}.jpg".encode() for i in range(14)]
    names += [b"bad\xffname.jpg", "caf\u00e9 \U0001f4f7.jpg".encode(), b"broken\xfe.jpg"]
    for i, name in enumerate(names):
        path = os.path.join(os.fsencode(root), name)  # bytes paths: the name reaches the disk as is
        if name.startswith(b"broken"):
            with open(path, "wb") as fh:
                fh.write(b"not a photo")
        else:
            Image.fromarray(_photo(i, (96, 64))).save(os.fsdecode(path), format="JPEG", quality=90)
    return root, names


def escaped(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_non_utf8_names_are_escaped_and_every_row_is_written(model_and_onnx, odd_names, tmp_path, fmt):  # noqa: F811
    _, onnx_path, _ = model_and_onnx
    root, names = odd_names
    out = tmp_path / f"scores.{fmt}"
    assert predict_cli.main([str(root), "-o", str(out), f"model={onnx_path}", "--workers", "2"]) == 0
    text = out.read_text(encoding="utf-8")  # strict UTF-8: the file must be valid
    rows = list(csv.DictReader(text.splitlines())) if fmt == "csv" else json.loads(text)
    assert len(rows) == len(names) == 17
    by_name = {Path(r["path"]).name: r for r in rows}
    assert set(by_name) == {escaped(n) for n in names}
    assert "bad\\xffname.jpg" in by_name  # the documented escape: the byte as \xNN
    assert "caf\u00e9 \U0001f4f7.jpg" in by_name  # UTF-8 names are written as they are
    assert by_name["bad\\xffname.jpg"]["score"] not in ("", None)  # scored like any other photo
    broken = by_name["broken\\xfe.jpg"]
    assert broken["score"] in ("", None) and "not_an_image" in broken["error"] and "\\xfe" in broken["error"]
    # the escape names the file: decoding it back gives the bytes on disk
    raw = os.fsencode(str(root)) + b"/" + b"bad\\xffname.jpg".decode("unicode_escape").encode("latin-1")
    assert os.path.isfile(raw)


def test_printable_leaves_valid_text_alone_and_escapes_lone_surrogates():
    assert predict.printable("photo é.jpg") == "photo é.jpg"
    assert predict.printable(os.fsdecode(b"a\xffb")) == "a\\xffb"
    assert predict.printable("x\ud800y") == "x\\ud800y"  # not from a byte: escaped as a code point
