"""Print ``name==floor`` for every core dependency pyproject.toml declares with ``>=``.

pip has no "lowest versions" resolution, so ``make floor`` installs the core dependencies
with these lines as constraints. A dependency without a ``>=`` floor is an error: every
core dependency must declare the lowest version it is tested with; a floor that differs
by Python version (``python_version`` markers) is taken for the running Python. The test extra's
``openai`` is pinned to its floor too (the smoke test instruments it; newer openai releases
need a newer httpx than the core floor).

Usage: ``python .ci/floor_constraints.py [pyproject.toml]``
"""

from __future__ import annotations

import sys

try:
    import tomllib
except ImportError:  # Python 3.10: the copy pip carries (every venv has pip)
    from pip._vendor import tomli as tomllib  # type: ignore[no-redef]
try:
    from packaging.requirements import Requirement
except ImportError:  # a fresh venv: the copy pip carries
    from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]

__all__ = ["floors", "main"]

_FROM_TEST_EXTRA = ("openai",)


def floors(pyproject: str) -> list[tuple[str, str]]:
    """``(name, lowest version)`` of each core dependency of *pyproject* (and openai) that
    applies to the running Python (a floor may differ by ``python_version`` marker)."""
    with open(pyproject, "rb") as fh:
        project = tomllib.load(fh)["project"]
    requirements = [Requirement(spec) for spec in project["dependencies"]] + [
        req for req in map(Requirement, project["optional-dependencies"]["test"])
        if req.name in _FROM_TEST_EXTRA
    ]
    found = []
    for req in requirements:
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        lowest = [s.version for s in req.specifier if s.operator == ">="]
        if len(lowest) != 1:
            raise ValueError(f"{str(req)!r}: a core dependency needs one '>=' floor")
        found.append((req.name, lowest[0]))
    return found


def main(argv: list[str]) -> int:
    """Print the constraints of ``argv[1]`` (default ``pyproject.toml``), one a line."""
    for name, version in floors(argv[1] if len(argv) > 1 else "pyproject.toml"):
        print(f"{name}=={version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
