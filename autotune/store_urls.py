"""Storage URLs: the default and the environment variable, SQLite paths, a syntax check, and
masking passwords in anything printed (URLs, libpq DSN text, a driver's error message).

Owns: ``StoreError`` / ``StoreMissing`` (what the store raises for users), which text of a URL or an
error may be shown. Must not know about: engines, Optuna, the model.
"""
from __future__ import annotations

import re
from pathlib import Path

import optuna
import sqlalchemy

DEFAULT_STORAGE = "sqlite:///autotune.db"


ENV_STORAGE = "AUTOTUNE_STORAGE"


class StoreError(Exception):
    """A storage URL that cannot be opened, or a study that cannot be created/loaded as asked."""


class StoreMissing(StoreError):
    """No study store at the URL yet (a missing SQLite file, an empty database): ``run`` creates
    one there, a reader finds nothing."""


_SECRET_KEYS = r"(?:password|passwd|pwd|sslpassword|secret|token|api_?key|access_?key)"
# scheme://user:SECRET@ ; greedy up to the last "@" of the token: a password may hold "/", ":", "@"


_USERINFO = re.compile(r"(?P<head>[A-Za-z][\w+.-]*://[^\s:/@'\"]*):[^\s'\"]*@")
# ?password=SECRET&... (URL query) and password=SECRET / password='SEC RET' (libpq DSN text)


_QUERY_SECRET = re.compile(rf"(?P<head>[?&;]{_SECRET_KEYS}=)[^&#\s'\"]*", re.IGNORECASE)


_DSN_SECRET = re.compile(rf"(?P<head>\b{_SECRET_KEYS}\s*=\s*)(?:'(?:[^'\\]|\\.)*'|[^\s'\"&;]+)",
                         re.IGNORECASE)


def mask_secrets(text: str, url: str | None = None) -> str:
    """``text`` with every password hidden: in URLs (``user:***@``, ``?password=***``), in libpq
    DSN text (``password=***``), and, when ``url`` is given, its password wherever it appears
    (a driver's error message may quote the DSN it was given)."""
    if url is not None:
        for secret in _secrets_of(url):
            text = text.replace(secret, "***")
    text = _USERINFO.sub(r"\g<head>:***@", text)
    text = _QUERY_SECRET.sub(r"\g<head>***", text)
    return _DSN_SECRET.sub(r"\g<head>***", text)


def _secrets_of(url: str) -> list[str]:
    found = []
    userinfo = re.match(r"[A-Za-z][\w+.-]*://[^\s:/@]*:(?P<pw>\S*)@", url)
    if userinfo:   # up to the last "@": what the user meant, also where SQLAlchemy splits earlier
        found += [userinfo["pw"], *userinfo["pw"].split("@")]
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except Exception:
        return sorted((s for s in found if s), key=len, reverse=True)
    found += [parsed.password] if parsed.password else []
    for key, value in parsed.query.items():
        if re.fullmatch(_SECRET_KEYS, key, re.IGNORECASE):
            found += [value] if isinstance(value, str) else list(value)
    return sorted((s for s in found if s), key=len, reverse=True)


def mask_url(url: str) -> str:
    """``postgresql://user:secret@host/db?password=x`` -> ``postgresql://user:***@host/db?password=***``.

    SQLAlchemy's own rendering with the password hidden, secret query parameters masked too;
    for what SQLAlchemy cannot parse (or parses oddly, as ``p@ss`` in a password), the
    patterns of ``mask_secrets``."""
    try:
        parsed = sqlalchemy.engine.make_url(url)
        if parsed.password is not None or any(
                re.fullmatch(_SECRET_KEYS, k, re.IGNORECASE) for k in parsed.query):
            parsed = parsed.set(query={k: ("***" if re.fullmatch(_SECRET_KEYS, k, re.IGNORECASE)
                                           else v) for k, v in parsed.query.items()})
            url = parsed.render_as_string(hide_password=True).replace("%2A%2A%2A", "***")
    except Exception:
        pass
    return mask_secrets(url)


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def sqlite_path(url: str) -> Path | None:
    """The file behind a ``sqlite:///path`` URL, or None for in-memory databases."""
    m = re.match(r"sqlite(\+\w+)?:///(.*)$", url)
    if not m or m.group(2) in ("", ":memory:"):
        return None
    return Path(m.group(2))


def check_storage_url(url: str) -> None:
    """Cheap syntax check (no connection): raises StoreError for URLs SQLAlchemy cannot parse."""
    try:
        sqlalchemy.engine.make_url(url)
    except Exception as exc:
        raise StoreError(f"storage {mask_url(url)!r} is not a database URL: {first_error_line(exc, url)}") from None


def first_error_line(exc: BaseException, url: str | None = None) -> str:
    """The first line of a (driver's) error, passwords masked: it may quote the DSN."""
    if isinstance(exc, optuna.exceptions.StorageInternalError) and exc.__cause__ is not None:
        exc = exc.__cause__   # Optuna's own text blames "invalid data in the commit"
    text = mask_secrets(str(getattr(exc, "orig", None) or exc).strip(), url)
    return text.splitlines()[0] if text else type(exc).__name__
