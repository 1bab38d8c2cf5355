"""The two distributions: kaizen-sdk has no server code, kaizen-server pins it, the old path warns.

Both wheels are built offline with the build backend (hatchling) into a temporary directory,
and everything is read from what they hold (files, METADATA, entry points).
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import kaizen_sdk
import kaizen_server

pytestmark = [pytest.mark.unit]

ROOT = Path(__file__).resolve().parent.parent
VERSION = kaizen_sdk.__version__


def _build(project: Path, out: Path) -> dict[str, bytes]:
    """Build *project*'s wheel into *out*; its files by name."""
    done = subprocess.run(
        [sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", str(out)],
        cwd=project, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = out.glob("*.whl")
    with zipfile.ZipFile(wheel) as z:
        return {name: z.read(name) for name in z.namelist()}


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, bytes]]:
    out = tmp_path_factory.mktemp("wheels")
    return {"sdk": _build(ROOT, out / "sdk"), "server": _build(ROOT / "server", out / "server")}


def _dist_info(files: dict[str, bytes], name: str) -> list[str]:
    (path,) = [n for n in files if n.endswith(f".dist-info/{name}")]
    return files[path].decode().splitlines()


def _requires(files: dict[str, bytes]) -> list[str]:
    return [line.removeprefix("Requires-Dist: ") for line in _dist_info(files, "METADATA")
            if line.startswith("Requires-Dist: ")]


def test_one_version_pinned_both_ways(wheels: dict[str, dict[str, bytes]]) -> None:
    assert kaizen_server.__version__ == VERSION
    assert f"Version: {VERSION}" in _dist_info(wheels["sdk"], "METADATA")
    assert f"Version: {VERSION}" in _dist_info(wheels["server"], "METADATA")
    assert f"kaizen-sdk=={VERSION}" in _requires(wheels["server"])
    sdk = _requires(wheels["sdk"])
    assert sorted(r for r in sdk if r.startswith("kaizen-")) == [
        f"kaizen-server=={VERSION}; extra == 'server'",
        f"kaizen-server[optimize]=={VERSION}; extra == 'optimize'",
    ]
    # `pip install -e '.[test]'` asks the package index for no kaizen-server (the Makefile
    # installs server/): the test extra names neither package.
    assert [r for r in sdk if "extra == 'test'" in r and r.startswith("kaizen")] == []
    extras = {line.removeprefix("Provides-Extra: ")
              for line in _dist_info(wheels["server"], "METADATA")
              if line.startswith("Provides-Extra: ")}
    assert extras == {"postgres", "optimize"}


def test_the_sdk_wheel_has_no_server_code(wheels: dict[str, dict[str, bytes]]) -> None:
    names = list(wheels["sdk"])
    assert "kaizen_sdk/cli.py" in names  # the wheel is the SDK's
    assert [n for n in names if not n.startswith(("kaizen_sdk/", "kaizen_sdk-"))] == []
    # the deprecated shim is all that is left of the server
    assert [n for n in names if n.startswith("kaizen_sdk/local/")] == [
        "kaizen_sdk/local/__init__.py"]
    server_modules = {n.rpartition("/")[2] for n in wheels["server"] if n.endswith(".py")}
    assert {"sqlite.py", "worker.py", "routes.py", "demo.py"} <= server_modules
    assert not [n for n in names if n.endswith(("/store.py", "/jobs.py", "/_demo.py"))]


def test_the_server_wheel_has_the_server_and_its_commands(
    wheels: dict[str, dict[str, bytes]],
) -> None:
    names = list(wheels["server"])
    assert "kaizen_server/storage/sqlite.py" in names
    assert "kaizen_server/py.typed" in names
    assert [n for n in names if n.startswith("kaizen_sdk")] == []
    points = _dist_info(wheels["server"], "entry_points.txt")
    group = points[points.index("[kaizen.commands]") + 1:]
    assert group[:4] == ["db = kaizen_server.commands:add_db",
                         "demo = kaizen_server.commands:add_demo",
                         "eval = kaizen_server.commands:add_eval",
                         "serve = kaizen_server.commands:add_serve"]


def test_the_server_wheel_carries_every_schema_step(wheels: dict[str, dict[str, bytes]]) -> None:
    """The numbered step files are package data: each is in the wheel, byte for byte."""
    steps = ROOT / "server" / "kaizen_server" / "storage" / "migrations" / "sqlite"
    files = sorted(p for p in steps.iterdir() if p.name[:4].isdigit())
    assert len(files) >= 7
    for path in files:
        name = f"kaizen_server/storage/migrations/sqlite/{path.name}"
        assert wheels["server"].get(name) == path.read_bytes(), name


def test_the_old_import_path_warns_and_still_gives_the_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delitem(sys.modules, "kaizen_sdk.local", raising=False)
    with pytest.warns(DeprecationWarning, match="kaizen_server") as caught:
        shim = importlib.import_module("kaizen_sdk.local")
    assert len(caught) == 1
    assert shim.LocalServer is kaizen_server.LocalServer
    assert shim.DEV_API_KEY == kaizen_server.DEV_API_KEY
    assert shim.MAX_BODY_BYTES == kaizen_server.MAX_BODY_BYTES


def test_the_old_import_path_without_the_server_says_what_to_install() -> None:
    code = ("import sys, warnings; sys.modules['kaizen_server'] = None\n"
            "warnings.simplefilter('ignore', DeprecationWarning)\n"
            "try:\n    import kaizen_sdk.local\nexcept ImportError as exc:\n    print(exc)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout == (
        "The CT server is the kaizen-server package: pip install 'kaizen-sdk[server]'\n")


def test_the_server_wheel_ships_the_web_uis_templates_and_files(
    wheels: dict[str, dict[str, bytes]]
) -> None:
    server = wheels["server"]
    templates = Path(ROOT / "server/kaizen_server/ui/templates")
    static = Path(ROOT / "server/kaizen_server/ui/static")
    shipped = {f"kaizen_server/ui/templates/{p.name}" for p in templates.iterdir()}
    shipped |= {f"kaizen_server/ui/static/{p.name}" for p in static.iterdir()}
    assert len(shipped) >= 25 and shipped <= set(server)
    assert server["kaizen_server/ui/static/htmx.min.js"].startswith(b"var htmx=")
    assert b"Zero-Clause BSD" in server["kaizen_server/ui/static/htmx-LICENSE.txt"]
    assert any(r.startswith("jinja2>=") for r in _requires(server))
