"""Dataset adapters: one module per dataset format, registered in `ADAPTERS` on import.

`load_source(cfg)` runs the adapter a dataset config names and the checks shared by all of them.
"""

from __future__ import annotations

from iqs.core.registry import import_submodules
from iqs.data.adapters.base import ADAPTERS, SourceData, load_source

import_submodules(__name__)  # each format's module registers itself: a new dataset needs no edit here

__all__ = ["ADAPTERS", "SourceData", "load_source"]
