"""The architecture pins: no import cycle, layers kept, private names only where listed, and
``async_client.py`` a mirror of ``client.py`` (see `kaizen_sdk._layers` and docs/architecture.md).
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kaizen_sdk import _layers

pytestmark = [pytest.mark.unit]

PACKAGE_DIR = Path(_layers.__file__).resolve().parent

# (importer, owner, name) -> why it is still there. The test fails when one disappears (take
# it off the list) or a new one appears (don't add one: make the name public in its module
# instead, the httpx rule). Empty: every name used across modules is public in its module.
ALLOWLIST: dict[tuple[str, str, str], str] = {}

# Differences between async_client.py and client.py once ``async``/``await`` are gone:
# (text in async_client.py, what client.py has instead). Each must still be found.
MIRROR_DELTAS: list[tuple[str, str]] = [
    # the module docstring and imports
    ("import asyncio\nimport logging\n", "import logging\nimport time\n"),
    ("Awaitable, Callable", "Callable"),
    # the class docstring
    ("Asynchronous Python client for Kaizen: `CTClient` with ``async`` methods.",
     "Synchronous Python client for Kaizen."),
    ("Use it as an async\n    context manager so the HTTP connection pool is closed on exit:",
     "Use it as a context\n    manager so the HTTP connection pool is closed on exit:"),
    # the I/O types and calls
    ("AsyncCTClient", "CTClient"),
    ("httpx.AsyncBaseTransport", "httpx.BaseTransport"),
    ("httpx.AsyncClient(", "httpx.Client("),
    ("Callable[[float], Awaitable[Any]] = asyncio.sleep", "Callable[[float], Any] = time.sleep"),
    ("__aenter__", "__enter__"),
    ("__aexit__", "__exit__"),
    (".aclose()", ".close()"),
    ("aget_or_load(", "get_or_load("),
    # the paging iterators: async generators cannot ``yield from``
    ("AsyncIterator, Callable, Sequence", "Callable, Iterator, Sequence"),
    ("AsyncIterator[", "Iterator["),
    ("for item in items:\n                yield item", "yield from items"),
    ("for item in self._iter_pages(", "yield from self._iter_pages("),
    ("]):\n            yield item\n", "])\n"),
    # blocking pipeline work goes to a thread, off the event loop
    ("asyncio.to_thread(self._close_prompts)", "self._close_prompts()"),
    ("asyncio.to_thread(self._pipeline.shutdown)", "self._pipeline.shutdown()"),
    ("asyncio.to_thread(self._pipeline.flush, timeout)", "self._pipeline.flush(timeout)"),
    # only a trace still queued is worth a thread hop before scoring it
    ("if delivery.is_pending(trace_id):\n                asyncio.to_thread(delivery.flush_trace, "
     "trace_id)", "delivery.flush_trace(trace_id)"),
]


def _code(path: Path) -> str:
    """The file without its module docstring (which says which of the pair it is)."""
    text = path.read_text(encoding="utf-8")
    return text[text.index("\nfrom __future__") :]


@pytest.fixture(scope="module")
def graph() -> _layers.Graph:
    """The two packages as they are, scanned once for the module (a scan reads and parses every
    module of both: ~0.9 s of CPU); the checks only read it."""
    return _layers.scan()


def test_no_import_cycle(graph: _layers.Graph) -> None:
    assert _layers.cycles(graph) == []


def test_the_only_cycle_is_the_documented_client_task_import(graph: _layers.Graph) -> None:
    found = _layers.cycles(graph, allowed=frozenset())
    # client ~> decorators -> _default ~> client (async_client ~> decorators closes none)
    assert found == [
        ["kaizen_sdk._default", "kaizen_sdk.client", "kaizen_sdk.decorators",
         "kaizen_sdk._default"],
    ]
    upward = {(e.source, e.target, e.scope)
              for e in _layers.layer_violations(graph, allowed=frozenset())
              if isinstance(e, _layers.Edge)}
    assert upward == _layers.ALLOWED_UPWARD


def test_every_module_is_in_a_layer_and_no_import_goes_up(graph: _layers.Graph) -> None:
    assert _layers.layer_violations(graph) == []


def test_private_names_across_modules_are_only_the_listed_ones(graph: _layers.Graph) -> None:
    found = {(p.source, p.target, p.name) for p in graph.private}
    assert sorted(found - ALLOWLIST.keys()) == [], "new private reach-ins: make the name public"
    assert sorted(ALLOWLIST.keys() - found) == [], "gone: take it off ALLOWLIST"


def test_async_client_mirrors_client() -> None:
    mirrored = re.sub(r"\bawait |\basync (?=def |with |for )", "",
                      _code(PACKAGE_DIR / "async_client.py"))
    for old, new in MIRROR_DELTAS:
        assert old in mirrored, f"stale delta, no longer in async_client.py: {old!r}"
        mirrored = mirrored.replace(old, new)
    sync = _code(PACKAGE_DIR / "client.py")
    if mirrored != sync:
        import difflib

        diff = "\n".join(difflib.unified_diff(sync.splitlines(), mirrored.splitlines(),
                                              "client.py", "async_client.py (mirrored)",
                                              lineterm="", n=1))
        pytest.fail(f"async_client.py drifted from client.py:\n{diff}")


# --- the checker itself, on small made-up packages ---------------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "kaizen_sdk"
    for name, body in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(body), encoding="utf-8")
    return root


def test_checker_sees_runtime_lazy_and_type_only_cycles_apart(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "errors.py": """
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from kaizen_sdk import models
        """,
        "models.py": "from kaizen_sdk.errors import CTError\n",
        "cache.py": "def f():\n    from kaizen_sdk import _http\n",
        "_http.py": "from . import cache\n",
    })
    graph = _layers.scan(root)
    kinds = {(e.source, e.target): e.kind for e in graph.edges}
    assert kinds == {
        ("kaizen_sdk.errors", "kaizen_sdk.models"): "type",
        ("kaizen_sdk.models", "kaizen_sdk.errors"): "runtime",
        ("kaizen_sdk.cache", "kaizen_sdk._http"): "lazy",
        ("kaizen_sdk._http", "kaizen_sdk.cache"): "runtime",
    }
    # errors <-> models closes only through TYPE_CHECKING: no cycle; cache <-> _http does.
    assert _layers.cycles(graph) == [["kaizen_sdk._http", "kaizen_sdk.cache", "kaizen_sdk._http"]]


def test_checker_finds_private_imports_reach_ins_and_upward_imports(tmp_path: Path) -> None:
    root = _package(tmp_path, {
        "errors.py": "_x = 1\n__version__ = '1'\n",
        "models.py": """
            from kaizen_sdk.errors import _x, __version__
            from kaizen_sdk import errors as e
            y = e._x
            def _own():
                return _own
        """,
        "_version.py": "def f():\n    from kaizen_sdk import client\n",
        "client.py": "",
        "mystery.py": "",
    })
    graph = _layers.scan(root)
    assert sorted(str(p) for p in graph.private) == [
        "kaizen_sdk.models:2 imports kaizen_sdk.errors._x",
        "kaizen_sdk.models:4 reaches kaizen_sdk.errors._x",
    ]
    assert [str(v) for v in _layers.layer_violations(graph)] == [
        "kaizen_sdk.mystery is in no layer: add it to kaizen_sdk._layers.LAYERS",
        "kaizen_sdk._version:2 ~> kaizen_sdk.client in f",
    ]


def test_command_prints_the_graph_and_exits_non_zero_on_a_break(
    tmp_path: Path, graph: _layers.Graph
) -> None:
    clean = _package(tmp_path / "clean",
                     {"errors.py": "", "models.py": "import kaizen_sdk.errors\n"})
    assert _layers.main(["--root", str(clean)]) == 0
    broken = _package(tmp_path / "broken", {"errors.py": "from kaizen_sdk.models import _y\n",
                                            "models.py": "_y = 1\n"})
    assert _layers.main(["--root", str(broken)]) == 1

    proc = subprocess.run([sys.executable, "-m", "kaizen_sdk._layers"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert "kaizen_sdk.decorators  [layer 5]" in proc.stdout
    assert "~> kaizen_sdk.decorators  (in CTClient.task)" in proc.stdout
    assert "import cycles (runtime and lazy edges): 0" in proc.stdout
    uses = len(graph.private)
    assert f"private names used across modules: {uses}" in proc.stdout
    assert proc.returncode == (1 if uses else 0)


# --- the SDK/server boundary -------------------------------------------------------------------


def test_both_packages_are_read_and_the_boundary_holds(graph: _layers.Graph) -> None:
    assert "kaizen_server.storage.sqlite" in graph.modules  # the server is read, not skipped
    assert "kaizen_sdk.cli" in graph.modules
    assert _layers.boundary_violations(graph) == []
    # the one SDK module that imports the server is the deprecated shim
    assert {e.source for e in graph.edges if e.source.startswith("kaizen_sdk")
            and e.target.startswith("kaizen_server")} == {"kaizen_sdk.local"}
    # the server uses the SDK through public modules only
    used = {e.target for e in graph.edges if e.source.startswith("kaizen_server")
            and e.target.startswith("kaizen_sdk")}
    assert used == {"kaizen_sdk", "kaizen_sdk.cli", "kaizen_sdk.client", "kaizen_sdk.decorators",
                    "kaizen_sdk.errors", "kaizen_sdk.models", "kaizen_sdk.reports",
                    "kaizen_sdk.templates"}


def test_checker_finds_imports_across_the_boundary(tmp_path: Path) -> None:
    sdk = _package(tmp_path, {
        "client.py": "def f():\n    from kaizen_server.store import Store\n",
        "local.py": "import kaizen_server\n",
        "_http.py": "def is_loopback(h):\n    return True\n",
    })
    server = tmp_path / "kaizen_server"
    server.mkdir()
    (server / "__init__.py").write_text("")
    (server / "store.py").write_text(
        "from kaizen_sdk._http import is_loopback\nfrom kaizen_sdk.client import _x\n"
    )
    graph = _layers.scan(sdk, server)
    found = {(e.source, e.target) for e in _layers.boundary_violations(graph)}
    assert found == {("kaizen_sdk.client", "kaizen_server.store"),
                     ("kaizen_server.store", "kaizen_sdk._http")}  # local: the allowed shim
    assert {(p.source, p.target, p.name) for p in graph.private} == {
        ("kaizen_server.store", "kaizen_sdk.client", "_x")}
    assert _layers.main(["--root", str(sdk), "--server", str(server)]) == 1
