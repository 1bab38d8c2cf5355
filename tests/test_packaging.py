"""The package as the index shows it: a wheel built from this tree with hatchling.

An editable install's ``importlib.metadata`` is whatever pyproject.toml said when it was
installed, so these tests build the wheel (half a second) and read its METADATA,
entry points and license file. The floors the wheel declares are the ones
``.ci/floor_constraints.py`` pins for ``make floor``.
"""

from __future__ import annotations

import email
import email.message
import importlib
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

__all__: list[str] = []

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY = "https://github.com/kaizen-sdk/kaizen-sdk"
SUPPORTED_PYTHONS = ("3.10", "3.11", "3.12", "3.13")

pytestmark = [pytest.mark.unit]


class Wheel:
    """The dist-info files of one built wheel."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with zipfile.ZipFile(path) as archive:
            self.files = {name: archive.read(name) for name in archive.namelist()}
        info = next(n for n in self.files if n.endswith(".dist-info/METADATA"))
        self.dist_info = info.rsplit("/", 1)[0]
        self.metadata: email.message.Message = email.message_from_bytes(self.files[info])

    def text(self, name: str) -> str:
        return self.files[f"{self.dist_info}/{name}"].decode()

    def entry_points(self, group: str) -> dict[str, str]:
        section, found = None, {}
        for line in self.text("entry_points.txt").splitlines():
            line = line.strip()
            if line.startswith("["):
                section = line.strip("[]")
            elif line and section == group:
                name, _, value = line.partition("=")
                found[name.strip()] = value.strip()
        return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Wheel:
    from hatchling.builders.wheel import WheelBuilder

    out = tmp_path_factory.mktemp("wheel")
    path = next(iter(WheelBuilder(str(ROOT)).build(directory=str(out), versions=["standard"])))
    return Wheel(Path(path))


def test_project_urls_point_at_the_repository(wheel: Wheel) -> None:
    urls = dict(
        (part.strip() for part in value.split(",", 1))  # type: ignore[misc]
        for value in wheel.metadata.get_all("Project-URL", [])
    )
    assert set(urls) >= {"Homepage", "Documentation", "Repository", "Issues"}
    assert urls["Repository"] == urls["Homepage"] == REPOSITORY
    assert urls["Issues"] == f"{REPOSITORY}/issues"
    assert all(url.startswith(REPOSITORY) for url in urls.values()), urls
    docs = urls["Documentation"].removeprefix(f"{REPOSITORY}/blob/main/")
    assert (ROOT / docs).is_file(), urls["Documentation"]


def test_license_is_apache_2_with_its_text_in_the_wheel(wheel: Wheel) -> None:
    assert wheel.metadata["License-Expression"] == "Apache-2.0"
    assert wheel.metadata.get_all("License-File") == ["LICENSE"]
    text = wheel.text("licenses/LICENSE")
    assert text == (ROOT / "LICENSE").read_text()
    assert text.split() [:4] == ["Apache", "License", "Version", "2.0,"]
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text


def test_classifiers_name_every_supported_python_and_are_known(wheel: Wheel) -> None:
    from trove_classifiers import classifiers as known

    classifiers = wheel.metadata.get_all("Classifier", [])
    versions = sorted(
        c.rsplit(" :: ", 1)[1] for c in classifiers
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    )
    assert tuple(versions) == SUPPORTED_PYTHONS
    assert wheel.metadata["Requires-Python"] == f">={SUPPORTED_PYTHONS[0]}"
    assert "Typing :: Typed" in classifiers
    assert [c for c in classifiers if c not in known] == []
    # an SPDX License-Expression replaces the license classifiers (PEP 639)
    assert [c for c in classifiers if c.startswith("License ::")] == []


def test_the_core_dependencies_are_the_floors_make_floor_installs(wheel: Wheel) -> None:
    from packaging.requirements import Requirement

    core = [Requirement(r) for r in wheel.metadata.get_all("Requires-Dist", [])
            if "extra ==" not in r]
    assert sorted({r.name for r in core}) == [
        "httpx", "msgspec", "opentelemetry-api", "opentelemetry-sdk",
        "opentelemetry-semantic-conventions", "wrapt",
    ]
    here = {r.name: r for r in core if r.marker is None or r.marker.evaluate()}
    assert len(here) == 6  # exactly one floor of each for this Python
    out = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "floor_constraints.py"), str(ROOT / "pyproject.toml")],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.split()
    pins = dict(line.split("==") for line in out)
    assert {name: f">={version}" for name, version in pins.items() if name != "openai"} == {
        name: str(r.specifier) for name, r in here.items()
    }
    assert "openai" in pins  # the test extra's, for the smoke test's instrument()


def test_readme_links_are_absolute_and_their_targets_exist(wheel: Wheel) -> None:
    readme = wheel.metadata.get_payload()
    assert isinstance(readme, str) and readme.startswith("# kaizen_sdk")
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    assert links, "the README has links"
    relative = [link for link in links if not re.match(r"https?://", link)]
    assert relative == [], "relative links break on the package index"
    for link in links:
        for kind in ("blob", "raw"):  # pages, and images shown inline
            if link.startswith(f"{REPOSITORY}/{kind}/main/"):
                target = link.removeprefix(f"{REPOSITORY}/{kind}/main/").split("#", 1)[0]
                assert (ROOT / target).exists(), link


def test_the_instrumentor_entry_points_name_base_instrumentor_classes(wheel: Wheel) -> None:
    from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
        BaseInstrumentor,
    )

    points = wheel.entry_points("opentelemetry_instrumentor")
    assert set(points) == {"kaizen_openai", "kaizen_litellm"}
    for name, value in points.items():
        module, _, attr = value.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        assert issubclass(cls, BaseInstrumentor), name
        library = name.removeprefix("kaizen_")
        assert [d.split()[0] for d in cls().instrumentation_dependencies()] == [library]


def test_kaizen_sdk_does_not_import_opentelemetry_instrumentation() -> None:
    code = (
        "import sys, kaizen_sdk, kaizen_sdk.instrument, kaizen_sdk.integrations._common\n"
        "assert 'opentelemetry.instrumentation' not in sys.modules, 'imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
