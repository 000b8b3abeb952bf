"""Errors for bad inputs: they always name the file, and the row when there is one."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """A dataset file that cannot be used as it is. The message says what to do next."""

    def __init__(self, message: str, file: str | Path | None = None, row: int | None = None) -> None:
        self.file = str(file) if file is not None else None
        self.row = row
        where = ""
        if file is not None:
            where = f"{file}"
            if row is not None:
                where += f", row {row}"
            where += ": "
        super().__init__(where + message)
