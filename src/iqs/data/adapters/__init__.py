"""Dataset adapters: one module per dataset format, registered in `ADAPTERS` on import.

`load_source(cfg)` runs the adapter a dataset config names and the checks shared by all of them.
"""

from __future__ import annotations

from iqs.data.adapters import ava, digikam_db, digikam_xmp, eva, generic_csv, koniq10k, spaq  # noqa: F401  (registration)
from iqs.data.adapters.base import ADAPTERS, SourceData, load_source

__all__ = ["ADAPTERS", "SourceData", "load_source"]
