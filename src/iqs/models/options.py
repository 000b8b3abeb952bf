"""The check every config-built part runs on its options before its constructor sees them (heads,
backbones, rebalancers): a misspelt key is an error that names it and the nearest valid one, not a bare
TypeError from the constructor nor a silently ignored setting."""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any


def unknown_key_error(kind: str, key: str, known: Sequence[str]) -> str:
    """`unknown option 'dropuot' for head 'distribution'. Did you mean 'dropout'? Known: ...`."""
    hint = difflib.get_close_matches(str(key), known, n=1)
    did_you_mean = f" Did you mean '{hint[0]}'?" if hint else ""
    return f"unknown option '{key}' for {kind}.{did_you_mean} Known: {', '.join(sorted(known))}"


def check_options(kind: str, options: Mapping[str, Any], known: Sequence[str]) -> None:
    """Raise KeyError(unknown_key_error(...)) for the first key of `options` not in `known`."""
    for key in options:
        if key not in known:
            raise KeyError(unknown_key_error(kind, str(key), known))
