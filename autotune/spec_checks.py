"""The small checkers every part of the study-file parser uses, and the error they raise.

Owns: ``SpecError`` (``file: key: problem``), ``_Ctx`` (the file being read, the knob spellings
seen so far, and checks of one value each: mapping, keys, number, text, boolean), durations, and
how a value is quoted in a message (``_kind``, ``_shown``, ``_join`` of key paths).
Must not know about: Optuna, torch, which sections a study file has.
"""
from __future__ import annotations

import difflib
import math
import re
from pathlib import Path
from typing import Any

from autotune import knobs

MAX_SHOWN = 80                # characters of a value quoted in a message
MAX_INT = 2 ** 53             # whole numbers beyond this lose precision in Optuna's float sampling


class SpecError(Exception):
    """A mistake in a study or space file: ``file: key: problem``, each part kept short."""

    def __init__(self, file: str | Path | None, key: str, problem: str):
        self.file = _clip(str(file), 300) if file else "<study>"
        self.key, self.problem = _clip(key, 200), _clip(problem, 400)
        super().__init__(f"{self.file}: {self.key}: {self.problem}" if key
                         else f"{self.file}: {self.problem}")


def _clip(text: str, limit: int = MAX_SHOWN) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _shown(value: Any) -> str:
    """``repr(value)`` for a message, at most MAX_SHOWN characters (never a whole expanded value)."""
    if isinstance(value, (list, dict, tuple)):
        return _kind(value)
    return _clip(repr(value))

# --- small checkers -----------------------------------------------------------------------------

class _Ctx:
    """The file being read, for error messages; for the built-in objective (``aliases``) also the
    spelling of each knob named so far (canonical name -> (key, spelling)), to catch one knob
    named twice."""

    def __init__(self, file: Path | None, aliases: bool = False,
                 spellings: dict[str, tuple[str, str]] | None = None):
        self.file = file
        self.aliases = aliases
        self.spellings = {} if spellings is None else spellings

    def for_file(self, file: Path) -> "_Ctx":
        return _Ctx(file, self.aliases, self.spellings)

    def knob(self, name: str, key: str) -> tuple[str, bool]:
        """The canonical name of a knob the study sets (``key``: where), and whether its values
        are complemented (``sparsity`` = 1 - ``keep_ratio``). Without aliases: the name as is."""
        if not self.aliases:
            return name, False
        canonical, complemented = knobs.canonical(name)
        first = self.spellings.setdefault(canonical, (key, name))
        if first[1] != name:
            raise self.fail(key, f"{name!r} and {first[1]!r} ({first[0]}) both name the knob "
                                 f"{canonical!r}; keep one")
        return canonical, complemented

    def fail(self, key: str, problem: str) -> SpecError:
        return SpecError(self.file, key, problem)

    def mapping(self, value: Any, key: str) -> dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, f"must be a mapping, got {_kind(value)}")
        return value

    def keys(self, value: dict, key: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()):
        for k in value:
            if k not in allowed:
                hint = difflib.get_close_matches(str(k), allowed, n=1)
                extra = f"; did you mean {hint[0]!r}?" if hint else f"; allowed: {', '.join(allowed)}"
                raise self.fail(_join(key, k), f"unknown key{extra}")
        for k in required:
            if k not in value:
                raise self.fail(_join(key, k), "is required")

    def number(self, value: Any, key: str, *, integer: bool = False, positive: bool = False,
               minimum: float | None = None) -> float | int:
        if isinstance(value, str):
            text = value.strip()
            try:
                value = int(text) if integer and re.fullmatch(r"[-+]?\d{1,30}", text) else float(text)
            except ValueError:
                what = "a whole number" if integer else "a number"
                raise self.fail(key, f"must be {what}, got the text {_shown(text)}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(key, f"must be a number, got {_kind(value)}")
        if not math.isfinite(value):
            raise self.fail(key, f"must be finite, got {value}")
        if integer:
            if isinstance(value, float) and not value.is_integer():
                raise self.fail(key, f"must be a whole number, got {value}")
            if abs(value) > MAX_INT:
                raise self.fail(key, f"must be at most {MAX_INT} (2**53) in size, got {_shown(value)}")
            value = int(value)
        if positive and value <= 0:
            raise self.fail(key, f"must be > 0, got {value}")
        if minimum is not None and value < minimum:
            raise self.fail(key, f"must be >= {minimum}, got {value}")
        return value

    def text(self, value: Any, key: str, choices: tuple[str, ...] | None = None) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, f"must be a non-empty text, got {_kind(value)}")
        if choices is not None and value not in choices:
            hint = difflib.get_close_matches(value[:100], choices, n=1)
            extra = f"; did you mean {hint[0]!r}?" if hint else ""
            raise self.fail(key, f"{_shown(value)} is not one of {', '.join(choices)}{extra}")
        return value

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, f"must be true or false, got {_kind(value)}")
        return value


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {value}"
    if isinstance(value, (int, float)):
        return f"the number {_clip(str(value))}"
    if isinstance(value, str):
        return f"the text {_shown(value)}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _join(key: str, sub: Any) -> str:
    if isinstance(sub, int):
        return f"{key}[{sub}]"
    return f"{key}.{sub}" if key else str(sub)


_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*h)?\s*(?:(\d+(?:\.\d+)?)\s*m)?\s*(?:(\d+(?:\.\d+)?)\s*s)?\s*$")


def parse_duration(value: Any, ctx: _Ctx, key: str) -> float:
    """``90`` (seconds), ``"90s"``, ``"30m"``, ``"2h"``, ``"1h30m"`` -> seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(ctx.number(value, key, positive=True))
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m and any(m.groups()):
            h, mi, s = (float(g) if g else 0.0 for g in m.groups())
            seconds = 3600 * h + 60 * mi + s
            if seconds > 0:
                return seconds
    raise ctx.fail(key, f"must be a duration like 90s, 30m, 2h or 1h30m, got {_kind(value)}")

def _check_fraction(ctx: _Ctx, key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ctx.fail(key, f"must be a fraction between 0 and 1, got {_kind(value)}")

