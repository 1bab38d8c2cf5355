"""Numbered, frozen schema steps, one directory per storage backend.

``migrations/<backend>/NNNN_name.sql`` (statements separated by ``;``, ``--`` comment lines
ignored) or ``NNNN_name.py`` (a module with ``upgrade(conn)``, for a step that needs code)
brings a database of version ``NNNN - 1`` to ``NNNN``. The numbers run 1, 2, 3 ... without a
gap or a repeat; the highest is the version the backend's code writes. A step that shipped is
never edited (`tests/storage/test_migrations.py` keeps each shipped step's checksum): a change
of schema is a new step with the next number. The files are package data of the wheel.

This module only reads the steps; each backend's runner (`kaizen_server.storage.sqlite_schema`
for SQLite) applies them inside one transaction and records the version.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.resources
import re
from collections.abc import Callable
from typing import Any

__all__ = ["Step", "load_steps", "split_sql"]

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.(sql|py)$")


@dataclasses.dataclass(frozen=True)
class Step:
    """One schema step: the *version* it brings a database to, and what to run.

    ``statements`` for a ``.sql`` step, ``upgrade`` (a function of the connection) for a
    ``.py`` step; ``checksum`` is the SHA-256 of the file, so a test can keep it frozen.
    """

    version: int
    name: str
    filename: str
    checksum: str
    statements: tuple[str, ...] = ()
    upgrade: Callable[[Any], None] | None = None


def split_sql(text: str) -> tuple[str, ...]:
    """The statements of a ``.sql`` step: ``--`` comment lines dropped, split at ``;``."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    return tuple(s.strip("\n") for s in "\n".join(lines).split(";") if s.strip())


def load_steps(backend: str, *, package: str | None = None) -> list[Step]:
    """Every step of *backend* (``"sqlite"``), by version; raises `RuntimeError` when the
    numbers repeat or leave a gap (two branches that both added the same number).

    *package* is where the files are (default: this package's *backend* subpackage).
    """
    package = package or f"{__name__}.{backend}"
    steps: dict[int, Step] = {}
    for entry in importlib.resources.files(package).iterdir():
        match = _NAME.match(entry.name)
        if match is None:
            continue
        version, name, kind = int(match[1]), match[2], match[3]
        data = entry.read_bytes()
        checksum = hashlib.sha256(data.replace(b"\r\n", b"\n")).hexdigest()  # any checkout
        if kind == "sql":
            step = Step(version, name, entry.name, checksum, statements=split_sql(data.decode()))
        else:
            module = importlib.import_module(f"{package}.{entry.name[:-3]}")
            step = Step(version, name, entry.name, checksum, upgrade=module.upgrade)
        if version in steps:
            raise RuntimeError(
                f"two {backend} schema steps are numbered {version}: "
                f"{steps[version].filename} and {entry.name}; renumber the newer one"
            )
        steps[version] = step
    ordered = [steps[v] for v in sorted(steps)]
    if [s.version for s in ordered] != list(range(1, len(ordered) + 1)):
        raise RuntimeError(
            f"the {backend} schema steps must be numbered 1, 2, 3 ... without a gap; found "
            f"{[s.filename for s in ordered]}"
        )
    return ordered
