"""The web UI's sessions on every storage backend: what several server processes share."""

from __future__ import annotations

from kaizen_server.storage.interface import StorageInterface
from kaizen_server.storage.ui_sessions import SessionRecord


def _record(name: str, seen: float) -> SessionRecord:
    return SessionRecord(name, "admin", None, None, f"csrf-{name}", seen, seen)


def test_sessions_are_stored_touched_bounded_and_closed(store: StorageInterface) -> None:
    assert store.get_session("a" * 64) is None
    store.open_session("a" * 64, _record("a", 100.0), keep=2, expired_before=0.0)
    store.open_session("b" * 64, _record("b", 101.0), keep=2, expired_before=0.0)
    assert store.get_session("a" * 64) == _record("a", 100.0)
    store.touch_session("a" * 64, 150.0)
    store.touch_session("a" * 64, 120.0)  # an older time never moves it back
    got = store.get_session("a" * 64)
    assert got is not None and (got.created, got.seen) == (100.0, 150.0)
    # a third session past keep=2: the least recently seen one ("b") goes
    store.open_session("c" * 64, _record("c", 160.0), keep=2, expired_before=0.0)
    assert [store.get_session(n * 64) is not None for n in "abc"] == [True, False, True]
    # sessions last seen before expired_before go when another one opens
    store.open_session("d" * 64, _record("d", 200.0), keep=10, expired_before=155.0)
    assert [store.get_session(n * 64) is not None for n in "acd"] == [False, True, True]
    store.close_session("c" * 64)
    store.close_session("c" * 64)  # twice: nothing happens
    assert store.get_session("c" * 64) is None
    assert store.get_session("d" * 64) == _record("d", 200.0)
