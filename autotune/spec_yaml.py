"""Reading a study or space file: a bounded, strict YAML loader.

Owns: refusing what is not a small regular UTF-8 file, reading ``1e-4`` as a number (YAML 1.1
wants ``1.0e-4``), rejecting duplicate keys, and stopping alias bombs and deep nesting; every
problem is a ``SpecError`` naming the file.
Must not know about: what a study file holds.
"""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml

from autotune.spec_checks import SpecError, _clip, _shown

MAX_FILE_BYTES = 1 << 20      # a study or space file is a few KiB; 1 MiB is refused unread
MAX_NODES = 10_000            # YAML nodes after expanding aliases (a "billion laughs" stops here)
MAX_DEPTH = 64                # nesting of lists and mappings


# --- YAML -------------------------------------------------------------------------------------

class _Refused(yaml.YAMLError):
    """A document over the loader's bounds (nodes after alias expansion, nesting)."""

    def __init__(self, problem: str, mark: Any):
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-4`` as a float (YAML 1.1 wants ``1.0e-4``), rejects duplicate
    keys instead of silently keeping the last one, and refuses documents that expand past
    MAX_NODES nodes (aliases count as the nodes they repeat) or nest deeper than MAX_DEPTH."""

    def __init__(self, stream: Any):
        super().__init__(stream)
        self._expanded: dict[int, int] = {}   # id(node) -> its size with aliases expanded
        self._total = 0
        self._depth = 0

    def _count(self, n: int, mark: Any) -> None:
        self._total += n
        if self._total > MAX_NODES:
            raise _Refused(f"more than {MAX_NODES} values once aliases are expanded; "
                           "a study needs a few hundred at most", mark)

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            node = super().compose_node(parent, index)
            self._count(self._expanded.get(id(node), 1), mark)
            return node
        mark = self.peek_event().start_mark
        self._count(1, mark)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _Refused(f"nested more than {MAX_DEPTH} levels deep", mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        children = node.value if isinstance(node, yaml.SequenceNode) else (
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else [])
        self._expanded[id(node)] = 1 + sum(self._expanded.get(id(c), 1) for c in children)
        return node


_FLOAT = re.compile(r"""^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][-+]?[0-9]+)?$
                       |^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$""", re.X)
_Loader.yaml_implicit_resolvers = {k: [r for r in v if r[0] != "tag:yaml.org,2002:float"]
                                   for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:   # a list or mapping as a key: SafeLoader's own error says so
            break
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {_shown(key)}", key_node.start_mark)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)

_FILE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
               (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
               (stat.S_ISSOCK, "a socket"))


def _read_text(path: Path, key: str) -> str:
    """The text of a regular file of at most MAX_FILE_BYTES; anything else is refused before it is
    opened (a FIFO or a device would block the read forever)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise SpecError(path, key, "file not found") from None
    except OSError as exc:
        raise SpecError(path, key, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    if not stat.S_ISREG(st.st_mode):
        what = next((name for test, name in _FILE_KINDS if test(st.st_mode)), "not a regular file")
        raise SpecError(path, key, f"is {what}; give a YAML file")
    if st.st_size > MAX_FILE_BYTES:
        raise SpecError(path, key, f"is {st.st_size} bytes; study and space files are limited to "
                                   f"{MAX_FILE_BYTES} bytes")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise SpecError(path, key, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    if len(data) > MAX_FILE_BYTES:
        raise SpecError(path, key, f"is over {MAX_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(path, key, f"is not UTF-8 text (byte {exc.start})") from None


def _read_yaml(path: Path, key: str = "") -> Any:
    text = _read_text(path, key)
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except _Refused as exc:
        mark = exc.problem_mark
        raise SpecError(path, key, f"refused at line {mark.line + 1}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = _clip(str(getattr(exc, "problem", None) or exc), 200)
        raise SpecError(path, key, f"YAML syntax error at {where}{problem}") from None
    except (RecursionError, MemoryError) as exc:
        raise SpecError(path, key, f"too large or too deeply nested ({type(exc).__name__})") from None
    except ValueError as exc:   # e.g. an integer of more than 4300 digits
        raise SpecError(path, key, f"a value cannot be read: {_clip(str(exc))}") from None
