"""digiKam pick labels, star ratings and tags in XMP sidecars, merged into what is there and written atomically.

The label goes to `Xmp.digiKam.PickLabel` (exiv2 knows the digiKam namespace), the stars to `Xmp.xmp.Rating`
(1-5; digiKam's 0 is "no rating", XMP's -1 "rejected"), and `add_tag` appends a tag path to
`Xmp.digiKam.TagsList`. Sidecars are named the way
digiKam names them: `photo.jpg.xmp` by default, `photo.xmp` with its compatibility option. An existing
sidecar is never replaced by a new packet: a copy is modified through exiv2, which re-serialises the whole
XMP tree (ratings, keywords, face regions, history ... survive), and then moved over the original with
`os.replace`, so a crash leaves either the old or the new sidecar, never half of one. Image files are only
ever read.

A pick label the user set is never overwritten unless asked (`overwrite=True`): before writing, both sidecar
names and the XMP embedded in the photo are read, since digiKam reads either sidecar name (by setting or, in
6.x, whichever exists) and falls back to the embedded XMP (iqs.data.adapters.digikam_xmp documents the
rules). Every label written here is also recorded as `Xmp.iqs.PickLabel`; a `Xmp.digiKam.PickLabel` that
differs from that record (or has none) was set by the user, or by another tool, and is theirs. So a rerun
with a new model updates the model's labels and keeps every label the user changed in digiKam (digiKam keeps
unknown XMP properties when it rewrites a sidecar). PickLabel 0 is digiKam's "no pick label": not a label
where iqs never wrote one, but beside an iqs record it is the user clearing the model's label, and is kept.
Star ratings follow the same rules (`Xmp.iqs.Rating` is the record; `Xmp.MicrosoftPhoto.Rating`, which
digiKam also reads, counts as the user's rating too); `Property` holds what differs between the two.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pyexiv2

from iqs.core.classes import CLASS_NAMES

PICK_LABEL_KEY = "Xmp.digiKam.PickLabel"
RATING_KEY = "Xmp.xmp.Rating"
MS_RATING_KEY = "Xmp.MicrosoftPhoto.Rating"  # Windows' percent rating, which digiKam reads as stars
TAGS_KEY = "Xmp.digiKam.TagsList"
# model class -> digiKam pick label (1 Rejected, 2 Pending, 3 Accepted)
PICK_LABELS = {CLASS_NAMES.index(name): pick for name, pick in (("bad", 1), ("normal", 2), ("good", 3))}
PICK_LABEL_NAMES = {0: "None", 1: "Rejected", 2: "Pending", 3: "Accepted"}
RATING_NAMES = {-1: "rejected", 0: "no rating", 1: "1 star", **{n: f"{n} stars" for n in range(2, 6)}}
WRITE_MODES = ("pick", "rating", "both")  # what `iqs predict --write-xmp` writes
SIDECAR_STYLES = ("appended", "basename")
NO_PICK_LABEL = "0"
# Our own record of the label iqs wrote (see the module docstring); exiv2 needs the namespace registered.
IQS_NAMESPACE = "https://iqs-digikam.invalid/ns/1.0/"
IQS_PREFIX = "iqs"
IQS_PICK_LABEL_KEY = f"Xmp.{IQS_PREFIX}.PickLabel"
IQS_RATING_KEY = f"Xmp.{IQS_PREFIX}.Rating"
pyexiv2.registerNs(IQS_NAMESPACE, IQS_PREFIX)

# The smallest valid XMP packet; exiv2 fills in the namespaces it needs.
EMPTY_XMP_PACKET = (
    '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>\n'
    '<x:xmpmeta xmlns:x="adobe:ns:meta/">\n'
    ' <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">\n'
    '  <rdf:Description rdf:about=""/>\n'
    " </rdf:RDF>\n"
    "</x:xmpmeta>\n"
    '<?xpacket end="w"?>\n'
)


class XmpError(Exception):
    """A sidecar that cannot be read or written; the message names the file."""


@dataclass(frozen=True)
class Property:
    """One value iqs writes and the user may own: its XMP key, iqs's record of it, how digiKam says "none"."""

    key: str
    record: str
    name: str
    names: dict[int, str]
    none: str = "0"
    also_user: tuple[str, ...] = ()  # other keys digiKam reads the same value from (the user's if set)


PICK = Property(PICK_LABEL_KEY, IQS_PICK_LABEL_KEY, "PickLabel", PICK_LABEL_NAMES)
RATING = Property(RATING_KEY, IQS_RATING_KEY, "Rating", RATING_NAMES, also_user=(MS_RATING_KEY,))


@dataclass(frozen=True)
class UserLabel:
    """A pick label iqs did not write: in a sidecar, or embedded in the photo (`where` is then the photo)."""

    where: Path
    value: str
    prop: Property = PICK

    def describe(self) -> str:
        number = self.value.lstrip("-")
        name = self.prop.names.get(int(self.value), "?") if number.isdigit() else "?"
        return f"your {self.prop.name} {self.value} ({name}) in {self.where.name}"


@dataclass(frozen=True)
class XmpChange:
    image: Path
    sidecar: Path
    old_label: int | None  # None: no label (or no sidecar) yet
    new_label: int
    creates_sidecar: bool
    user_label: UserLabel | None = None  # a label the user set, anywhere digiKam reads one
    overwrite: bool = False  # replace the user's label (the sidecar's; an embedded one is never touched)
    prop: Property = PICK  # the pick label or the star rating

    @property
    def keeps_user_label(self) -> bool:
        """True when nothing may be written: the user labelled this photo and overwrite is off."""
        return self.user_label is not None and not self.overwrite

    @property
    def changes_anything(self) -> bool:
        return not self.keeps_user_label and self.old_label != self.new_label

    def describe(self) -> str:
        if self.keeps_user_label and self.user_label is not None:
            return f"{self.sidecar}: left alone, {self.user_label.describe()} (--overwrite replaces it)"
        names, what = self.prop.names, self.prop.name
        old = "none" if self.old_label is None else f"{self.old_label} ({names.get(self.old_label, '?')})"
        new = f"{self.new_label} ({names[self.new_label]})"
        if not self.changes_anything:
            return f"{self.sidecar}: {what} already {new}"
        verb = "create" if self.creates_sidecar else "update"
        return f"{self.sidecar}: {verb}, {what} {old} -> {new}"


def sidecar_path(image: str | Path, style: str = "appended") -> Path:
    """`photo.jpg` -> `photo.jpg.xmp` (digiKam's default) or `photo.xmp` (style `basename`)."""
    image = Path(image)
    if style == "appended":
        return image.with_name(image.name + ".xmp")
    if style == "basename":
        return image.with_suffix(".xmp")
    raise ValueError(f"unknown sidecar style '{style}'; expected one of {', '.join(SIDECAR_STYLES)}")


def read_xmp(sidecar: str | Path) -> dict[str, object]:
    """All XMP properties of a sidecar as pyexiv2 reports them (flattened struct paths)."""
    try:
        img = pyexiv2.Image(str(sidecar))
    except Exception as err:  # pyexiv2 raises bare RuntimeError/Exception from exiv2
        raise XmpError(f"{sidecar}: cannot read XMP sidecar: {err}") from None
    try:
        return img.read_xmp()
    finally:
        img.close()


def _raw_value(xmp: dict[str, object], key: str = PICK_LABEL_KEY) -> str | None:
    """The property as text; None when absent or empty (digiKam's "no pick label", 0, is kept)."""
    value = xmp.get(key)
    text = None if value is None else str(value).strip()
    return text or None


def _pick_value(xmp: dict[str, object], key: str = PICK_LABEL_KEY, none: str = NO_PICK_LABEL) -> str | None:
    """The property as text; None when absent, empty or digiKam's "none" (0)."""
    text = _raw_value(xmp, key)
    return text if text != none else None


def _user_value(xmp: dict[str, object], prop: Property) -> str | None:
    """A value the user set under the property's key or a key digiKam reads instead (MicrosoftPhoto)."""
    for key in (prop.key, *prop.also_user):
        value = _pick_value(xmp, key, prop.none)
        if value is not None:
            return value
    return None


def _sidecar_user_label(sidecar: Path, xmp: dict[str, object], prop: Property = PICK) -> UserLabel | None:
    """The user's label in a sidecar: any label when iqs never wrote there; beside our record, any value
    that differs from it, 0 (digiKam's "no pick label", how it clears one) or a removed label included."""
    record = _raw_value(xmp, prop.record)
    if record is None:
        label = _user_value(xmp, prop)
        return None if label is None else UserLabel(sidecar, label, prop)
    label = _raw_value(xmp, prop.key) or prop.none
    return None if label == record else UserLabel(sidecar, label, prop)


def embedded_xmp(image: str | Path) -> dict[str, object]:
    """The XMP inside the photo (read only). Unreadable: an XmpError, since then nothing may be written."""
    if not Path(image).exists():
        return {}  # no photo (a sidecar planned for a name), so no label inside it
    try:
        img = pyexiv2.Image(str(image))
    except Exception as err:
        raise XmpError(
            f"{image}: exiv2 cannot read the photo's own XMP, so it cannot tell whether you labelled it; "
            f"nothing written ({err})"
        ) from None
    try:
        return img.read_xmp()
    finally:
        img.close()


def _find_user_label(
    image: Path, prop: Property = PICK
) -> tuple[UserLabel | None, dict[Path, dict[str, object]]]:
    """find_user_label, plus the sidecars it read (path -> XMP), so a caller need not read them again."""
    read: dict[Path, dict[str, object]] = {}
    for style in SIDECAR_STYLES:
        sidecar = sidecar_path(image, style)
        if sidecar.is_file():
            read[sidecar] = read_xmp(sidecar)
            user = _sidecar_user_label(sidecar, read[sidecar], prop)
            if user is not None:
                return user, read
    label = _user_value(embedded_xmp(image), prop)
    return (None if label is None else UserLabel(image, label, prop)), read


def find_user_label(image: str | Path, prop: Property = PICK) -> UserLabel | None:
    """A pick label (or, with RATING, a star rating) the user set: in either sidecar name, then in the
    photo's embedded XMP (module docstring)."""
    return _find_user_label(Path(image), prop)[0]


def _label_number(xmp: dict[str, object], key: str = PICK_LABEL_KEY) -> int | None:
    value = xmp.get(key)
    try:
        return int(str(value)) if value is not None else None
    except ValueError:
        return None


def read_pick_label(sidecar: str | Path) -> int | None:
    if not Path(sidecar).exists():
        return None
    return _label_number(read_xmp(sidecar))


def plan_pick_label(
    image: str | Path, model_class: int, style: str = "appended", overwrite: bool = False
) -> XmpChange:
    """What writing the pick label for `model_class` would do, without doing it (reads the XMP only)."""
    if model_class not in PICK_LABELS:
        raise ValueError(f"model class must be 0, 1 or 2, got {model_class}")
    return _plan(Path(image), PICK, PICK_LABELS[model_class], style, overwrite)


def plan_rating(image: str | Path, stars: int, style: str = "appended", overwrite: bool = False) -> XmpChange:
    """What writing `stars` (1-5) as `Xmp.xmp.Rating` would do, without doing it (reads the XMP only)."""
    if stars not in range(1, 6):
        raise ValueError(f"stars must be 1..5, got {stars}")
    return _plan(Path(image), RATING, int(stars), style, overwrite)


def _plan(image: Path, prop: Property, value: int, style: str, overwrite: bool) -> XmpChange:
    user, read = _find_user_label(image, prop)
    sidecar = sidecar_path(image, style)
    if overwrite and user is not None and user.where.suffix.lower() == ".xmp":
        sidecar = user.where  # replace the user's label where it is, whatever the style
    exists = sidecar.exists()
    if sidecar in read:
        old_label = _label_number(read[sidecar], prop.key)
    else:
        old_label = _label_number(read_xmp(sidecar), prop.key) if exists else None
    return XmpChange(
        image=image,
        sidecar=sidecar,
        old_label=old_label,
        new_label=value,
        creates_sidecar=not exists,
        user_label=user,
        overwrite=overwrite,
        prop=prop,
    )


def apply_change(change: XmpChange) -> bool:
    """Write the planned label; returns False when nothing was written: the sidecar already had it, or
    the user labelled the photo and the change does not overwrite."""
    if change.keeps_user_label or (not change.changes_anything and not change.creates_sidecar):
        return False
    label = str(change.new_label)
    write_properties(change.sidecar, {change.prop.key: label, change.prop.record: label})
    return True


@dataclass(frozen=True)
class TagChange:
    """Adding one digiKam tag path (`iqs/label-me`) to a photo's `Xmp.digiKam.TagsList`."""

    image: Path
    sidecar: Path
    tag: str
    tags: tuple[str, ...]  # the sidecar's TagsList before
    creates_sidecar: bool

    @property
    def changes_anything(self) -> bool:
        return self.tag not in self.tags

    def describe(self) -> str:
        if not self.changes_anything:
            return f"{self.sidecar}: tag {self.tag} already there"
        verb = "create" if self.creates_sidecar else "update"
        return f"{self.sidecar}: {verb}, add tag {self.tag} to TagsList ({len(self.tags)} tags before)"


def _tag_list(xmp: dict[str, object]) -> tuple[str, ...]:
    value = xmp.get(TAGS_KEY)
    if value is None or value == "":
        return ()
    return tuple(str(v) for v in value) if isinstance(value, list) else (str(value),)


def plan_tag(image: str | Path, tag: str, style: str = "appended") -> TagChange:
    """What adding `tag` would do. The tag goes to the sidecar digiKam reads: an existing one of either name
    (the `style` name first), else a new one under `style`. A new sidecar starts as a copy of the photo's
    embedded XMP, since a sidecar replaces the embedded XMP for digiKam: its labels, ratings and tags stay."""
    image = Path(image)
    names = [sidecar_path(image, style), *(sidecar_path(image, s) for s in SIDECAR_STYLES if s != style)]
    sidecar = next((p for p in names if p.is_file()), names[0])
    exists = sidecar.is_file()
    xmp = read_xmp(sidecar) if exists else embedded_xmp(image)
    return TagChange(image, sidecar, tag, _tag_list(xmp), not exists)


def apply_tag(change: TagChange) -> bool:
    """Add the planned tag (keeping every other tag and property); False when it was already there."""
    if not change.changes_anything:
        return False
    start = None if not change.creates_sidecar else _embedded_packet(change.image)
    write_properties(change.sidecar, {TAGS_KEY: [*change.tags, change.tag]}, start_packet=start)
    return True


def _embedded_packet(image: Path) -> str | None:
    """The photo's own XMP packet (None: none, or no photo), the start of a sidecar that replaces it."""
    if not image.exists():
        return None
    try:
        img = pyexiv2.Image(str(image))
    except Exception as err:
        raise XmpError(f"{image}: exiv2 cannot read the photo's XMP; nothing written ({err})") from None
    try:
        packet = img.read_raw_xmp()
    finally:
        img.close()
    return packet or None


def write_properties(
    sidecar: str | Path, properties: dict[str, str | list[str]], start_packet: str | None = None
) -> None:
    """Merge `properties` into a sidecar (created when missing, from `start_packet` or an empty packet)
    through a temp copy and `os.replace`. A list value is an XMP bag (e.g. `Xmp.digiKam.TagsList`)."""
    sidecar = Path(sidecar)
    folder = sidecar.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{sidecar.name}.", suffix=".tmp", dir=folder)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            if sidecar.exists():
                with open(sidecar, "rb") as source:
                    shutil.copyfileobj(source, handle)
            else:
                handle.write((start_packet or EMPTY_XMP_PACKET).encode("utf-8"))
        if sidecar.exists():
            shutil.copymode(sidecar, tmp)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        try:
            img = pyexiv2.Image(str(tmp))
        except Exception as err:
            raise XmpError(f"{sidecar}: not a readable XMP sidecar, left unchanged: {err}") from None
        try:
            img.modify_xmp(properties)
        except Exception as err:
            raise XmpError(f"{sidecar}: exiv2 could not write {sorted(properties)}: {err}") from None
        finally:
            img.close()
        os.replace(tmp, sidecar)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
