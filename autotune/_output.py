"""What read-only commands hand to files, terminals and spreadsheets.

Owns: writing an output file without overwriting one unasked or writing through a symbolic link;
file names made from study names; text from the store made safe for a terminal (no escape
sequences) and for a spreadsheet (no formulas).
Must not know about: Optuna, the store.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any, Callable

_ESCAPE = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)?|[@-Z\\-_])")  # CSI, OSC, 2-byte
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class OutputRefused(Exception):
    """The output file exists (and ``--force`` was not given) or is a symbolic link."""


def printable(value: Any) -> str:
    """Text from the store as a terminal should show it: escape sequences and other control
    characters removed (a study name or attribute could otherwise rewrite the screen)."""
    return _CONTROL.sub("", _ESCAPE.sub("", str(value)))


def csv_safe(value: Any) -> Any:
    """A text cell a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``, tab, CR
    first) gets a leading ``'``; numbers stay numbers."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def file_name_part(name: str) -> str:
    """A study name as part of a file name in the working folder: no folders, no hidden file."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).lstrip(".") or "study"


def refuse_existing(target: Path, force: bool) -> None:
    if target.is_symlink() and not force:
        raise OutputRefused(f"{target} is a symbolic link; refusing to write through it "
                            "(--force replaces the link)")
    if target.exists() and not force:
        raise OutputRefused(f"{target} exists; pass --force to overwrite it")


def write_new(target: Path, write: Callable[[Path], Any], force: bool, mode: int | None = None) -> Path:
    """``write`` a temporary file beside ``target``, then move it there: never through a symbolic
    link (``force`` replaces the link itself), never over an existing file without ``force``.
    ``mode`` (e.g. 0o600 for a file that holds a secret) instead of what the umask allows."""
    refuse_existing(target, force)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o666 & ~umask if mode is None else mode)   # default: as a plain write would
        if force:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)          # fails if it appeared meanwhile
            except FileExistsError:
                raise OutputRefused(f"{target} exists; pass --force to overwrite it") from None
            except OSError:                   # no hard links on this file system
                refuse_existing(target, force)
                os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
