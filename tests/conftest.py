"""Shared fixtures: a clean environment for every test and a real local CT server per session."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pg_cluster import Cluster

    from kaizen_server import LocalServer

# litellm fetches a price map from the network at import unless told not to.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"


@pytest.hookimpl(wrapper=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> Generator[None, int, int]:
    """``-n auto`` starts two workers more than xdist counts cores.

    Most tests spend their time waiting (on loopback servers, subprocesses, PostgreSQL, a
    server that is slow on purpose): with one spare worker on 2 cores the suite used 1.2
    cores on average and took 326 s; with two spares, 259 s in the same conditions. Each
    worker collects the suite once (~10 s of CPU) before it runs anything.
    ``PYTEST_XDIST_AUTO_NUM_WORKERS`` still sets the number outright.
    """
    cores = yield
    return cores if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS") else cores + 2


RELIABILITY = Path(__file__).parent / "reliability"


def _long_first(item: pytest.Item) -> int:
    if item.get_closest_marker("slow") is not None:
        return 0
    # the fault suite: outages, slow and hostile servers, mostly waiting on purpose
    return 1 if RELIABILITY in item.path.parents else 2


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the `slow` tests first, then the fault suite, then the rest (each in collection order).

    With ``-n`` (``--dist loadfile``), their files then go out first, while there is plenty
    left for the other workers, instead of one worker finishing a long file alone at the end.
    """
    items.sort(key=_long_first)


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts without KAIZEN_*, the OTel GenAI switches or a terminal width set.

    ``COLUMNS`` may come from the shell that runs the tests (or a library that sets it); the
    CLI fits its tables to it, so a test that wants a width sets it itself.
    """
    otel = ("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "OTEL_SEMCONV_STABILITY_OPT_IN")
    for name in list(os.environ):
        if name.startswith("KAIZEN_") or name in otel or name in ("COLUMNS", "LINES"):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def sqlite_local_server() -> Iterator[LocalServer]:
    """The session's real local CT server: a free loopback port, a temporary SQLite database."""
    from kaizen_server import LocalServer

    with LocalServer() as server:
        yield server


@pytest.fixture(scope="session")
def local_server(sqlite_local_server: LocalServer) -> LocalServer:
    """A real local CT server on a free loopback port with a temporary database (the one
    `sqlite_local_server` of the session; tests/server_backends.py adds PostgreSQL)."""
    return sqlite_local_server


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """A private PostgreSQL server for this session (this xdist worker), started on first use
    and removed at the end; FAILS (never skips) when PostgreSQL is not installed."""
    from pg_cluster import INSTALL_HINT, Cluster, find_bindir

    bindir = find_bindir()
    if bindir is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    cluster = Cluster(bindir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> Iterator[str]:
    """The URL of a fresh PostgreSQL database at the current schema, dropped afterwards."""
    url = pg_cluster.fresh_database()
    try:
        yield url
    finally:
        pg_cluster.drop(url)
