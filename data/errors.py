"""The one error type of the data layer: a bad input, reported as one line that names the file, the
row (or key) and the offending value, so `attnsweep data check` can print it and exit non-zero."""
from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """A dataset that cannot be used as given. `str(err)` is one line: `file:row: message`."""

    def __init__(self, message: str, file: str | Path | None = None, row: int | str | None = None,
                 value: object = None):
        self.file, self.row, self.value = file, row, value
        where = "" if file is None else f"{file}" + ("" if row is None else f":{row}") + ": "
        got = "" if value is None else f" (value {value!r})"
        super().__init__(f"{where}{message}{got}".replace("\n", " "))
