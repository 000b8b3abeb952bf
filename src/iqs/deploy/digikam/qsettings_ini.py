"""Qt's QSettings INI files (digiKam's dnnmodels.conf and digikam_systemrc), read and edited line by line.

Hand-rolled: configparser would re-serialise the whole file (lower-cased keys, lost comments, changed quoting
of QSettings' comma lists), and a copy of digiKam's file must stay what digiKam shipped except for our keys.
"""

from __future__ import annotations

import re

_GROUP = re.compile(r"^\s*\[(.+)\]\s*$")
_KEY = re.compile(r"^\s*([^=;#\s][^=]*?)\s*=(.*)$")


def ini_groups(text: str) -> dict[str, dict[str, str]]:
    """QSettings INI groups -> keys -> raw values (keys keep their case, unlike configparser's default)."""
    groups: dict[str, dict[str, str]] = {}
    current = None
    for line in text.splitlines():
        if m := _GROUP.match(line):
            current = groups.setdefault(m[1], {})
        elif current is not None and (m := _KEY.match(line)):
            current[m[1]] = m[2].strip()
    return groups


def set_keys(text: str, group: str, values: dict[str, str]) -> str:
    """Rewrite `values` inside one INI group, keeping every other line (comments, order, quoting) as it was."""
    out, inside, missing = [], False, dict(values)
    for line in text.splitlines():
        if m := _GROUP.match(line):
            if inside:
                out.extend(f"{k}={v}" for k, v in missing.items())
                missing = {}
            inside = m[1] == group
        elif inside and (m := _KEY.match(line)) and m[1] in values:
            line = f"{m[1]}={values[m[1]]}"
            missing.pop(m[1], None)
        out.append(line)
    if inside:
        out.extend(f"{k}={v}" for k, v in missing.items())
    return "\n".join(out) + "\n"
