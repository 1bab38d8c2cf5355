"""Print ``name==floor`` for every core dependency pyproject.toml declares with ``>=``.

pip has no "lowest versions" resolution, so ``make floor`` installs the core dependencies
with these lines as constraints. A dependency without a ``>=`` floor is an error: every
core dependency must declare the lowest version it is tested with. The test extra's
``openai`` is pinned to its floor too (the smoke test instruments it; newer openai releases
need a newer httpx than the core floor).

Usage: ``python .ci/floor_constraints.py [pyproject.toml]``
"""

from __future__ import annotations

import re
import sys

try:
    import tomllib
except ImportError:  # Python 3.10: the copy pip carries (every venv has pip)
    from pip._vendor import tomli as tomllib  # type: ignore[no-redef]

__all__ = ["floors", "main"]

_FROM_TEST_EXTRA = ("openai",)
_NOT_NAME = re.compile(r"[\s<>=!~\[;].*$")  # what follows a requirement's name
_FLOOR = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)\s*>=\s*([^,;\s]+)\s*(?:,[^;]*)?$")


def floors(pyproject: str) -> list[tuple[str, str]]:
    """``(name, lowest version)`` of each core dependency of *pyproject* (and openai)."""
    with open(pyproject, "rb") as fh:
        project = tomllib.load(fh)["project"]
    test_extra = project["optional-dependencies"]["test"]
    dependencies = list(project["dependencies"]) + [
        spec for spec in test_extra if re.sub(_NOT_NAME, "", spec) in _FROM_TEST_EXTRA
    ]
    found = []
    for spec in dependencies:
        match = _FLOOR.match(spec.strip())
        if match is None:
            raise ValueError(f"{spec!r}: a core dependency needs a '>=' floor")
        found.append((match.group(1), match.group(2)))
    return found


def main(argv: list[str]) -> int:
    """Print the constraints of ``argv[1]`` (default ``pyproject.toml``), one a line."""
    for name, version in floors(argv[1] if len(argv) > 1 else "pyproject.toml"):
        print(f"{name}=={version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
