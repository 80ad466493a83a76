"""The one-line form of a pydantic validation error, used for every bad study file, trial
configuration, command-line option and report setting: `source: field: message (got value)`."""
from __future__ import annotations

from pydantic import ValidationError


def one_line(err: ValidationError, source: str | None = "trial config", under: tuple[str, ...] = ()) -> str:
    """The first error of `err`, naming `source` (a file, an option) and the field; `under`: the
    section the validated data sits in (e.g. `("stats",)`). Custom checks' messages carry their
    own values, so `(got ...)` is added only to the type and range errors."""
    e = err.errors()[0]
    # a union's member tags (`function-after[_ordered(), LogRange]`, `list[float]`) are pydantic's, not the user's
    loc = ".".join(str(p) for p in (*under, *e["loc"]) if not (isinstance(p, str) and "[" in p))
    msg = e["msg"].removeprefix("Value error, ")
    got = "" if e["type"] in ("value_error", "missing") else f" (got {e['input']!r})"
    parts = [p for p in (source, loc) if p]
    return ": ".join([*parts, f"{msg}{got}"])
