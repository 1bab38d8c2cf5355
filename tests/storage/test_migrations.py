"""Schema steps you can trust: numbered, frozen, and every old file ends where a new one starts.

A database created fresh must equal one migrated from every shipped schema version (its
``sqlite_master`` normalized, and ``PRAGMA table_info`` of each table). The old databases are
built here from the step files (steps 1..k only), plus a file shaped as the first release
wrote it and one with the schema release 0.1.0 made (``data/release_0.1.0_schema.sql``, the
text of its ``sqlite_master``): no database is committed.
"""

from __future__ import annotations

import argparse
import json
import re
import sqlite3
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from kaizen_sdk.models import FeedbackRequest, TraceRequest
from kaizen_server import LocalServer, commands
from kaizen_server.storage import sqlite_schema
from kaizen_server.storage.migrations import load_steps
from kaizen_server.storage.sqlite import SCHEMA_VERSION, Store
from kaizen_server.storage.sqlite_schema import SchemaError, SchemaOutdated

pytestmark = pytest.mark.unit

SHIPPED = {
    "0001_initial.sql": "0d61b87e8aa347dca5fc5dd737c95fa2591279dbbdf5cda9b09e7f4def0bcb56",
    "0002_feedback_critique.sql":
        "3f501a7292584b114e6128ede4a64ce683548af4d15ca84a7a8d5ef891f55ae0",
    "0003_rollouts.py": "89440ffbd04c74373d6de8b8703a6bcd910f19c246fd46d014c6d14708f460c2",
    "0004_trace_context.sql": "d793338ed94ce8045b4d6a31960d4dab03aba5200fe2a4ab493f1b3dcc33d160",
    "0005_held_scores.sql": "b5ff19759a4b438f2dea60acdbd0ce4765d4411f85e264f818c15ea6cf77522f",
    "0006_keys_and_audit.sql":
        "572cc0342d9f97360ea2face00e03a8ca99dace88ef83b20269f04677066ec03",
    "0007_spend.py": "860845c6995521e59027ce2d7936ffd803b90db16b407c98752498dfbd37af8b",
}
"""SHA-256 of every step a release shipped (line endings normalized). Never change an entry:
a schema change is a new step; add its line here once a release ships it."""

_RELEASE_SCHEMA = Path(__file__).parent / "data" / "release_0.1.0_schema.sql"
"""The schema (sqlite_master's SQL) of a database kaizen-server 0.1.0 created."""

# The file the first release wrote (version 1 then had tasks and feedback only; step 1 grew
# after, see 0001_initial.sql), with one feedback entry.
_FIRST_RELEASE = """
CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TEXT NOT NULL);
INSERT INTO schema_version VALUES (1, '2026-01-01T00:00:00+00:00');
CREATE TABLE tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, name TEXT NOT NULL UNIQUE,
    description TEXT, schema_json TEXT, feedback_threshold INTEGER NOT NULL,
    feedback_retention_limit INTEGER, evaluator_config TEXT, teacher_model TEXT,
    judge_model TEXT, module_type TEXT, cost_budget REAL, github_repo TEXT,
    github_base_branch TEXT, prompt_path TEXT, prompt_format TEXT, created_at TEXT NOT NULL,
    feedback_count INTEGER NOT NULL DEFAULT 0,
    feedback_since_optimization INTEGER NOT NULL DEFAULT 0, last_optimization TEXT
);
CREATE TABLE feedback (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
    task_id TEXT NOT NULL REFERENCES tasks(id), inputs TEXT, output TEXT, score REAL,
    source TEXT, metadata TEXT, created_at TEXT NOT NULL
);
INSERT INTO tasks (id, name, feedback_threshold, created_at, feedback_count)
    VALUES ('00000000-0000-4000-8000-000000000001', 'old', 50, '2026-01-01T00:00:00+00:00', 1);
INSERT INTO feedback (id, task_id, output, score, created_at) VALUES
    ('00000000-0000-4000-8000-000000000002', '00000000-0000-4000-8000-000000000001', '"o"',
     0.5, '2026-01-01T00:00:00+00:00');
"""


def _normal(sql: str) -> str:
    """SQL text without layout: one space between words, none around ``(``, ``,`` or ``)``."""
    return re.sub(r"\s*([(),])\s*", r"\1", " ".join(sql.split()))


def _schema(path: Path) -> dict[str, Any]:
    """What must be equal: every schema object (its SQL without layout) and every table's
    columns in order (name, type, not null, default, primary key), and the version."""
    conn = sqlite3.connect(path)
    try:
        master = sorted(
            (kind, name, table, _normal(sql or ""))
            for kind, name, table, sql in conn.execute(
                "SELECT type, name, tbl_name, sql FROM sqlite_master"
                " WHERE name NOT LIKE 'sqlite_%'"
            )
        )
        columns = {
            name: [tuple(row) for row in conn.execute(f"PRAGMA table_info({name})")]
            for kind, name, _, _ in master if kind == "table"
        }
        version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
    finally:
        conn.close()
    return {"master": master, "columns": columns, "version": version}


def _shape(path: Path) -> dict[str, Any]:
    return _shape_of(_schema(path))


def _shape_of(schema: dict[str, Any]) -> dict[str, Any]:
    return {"master": schema["master"], "columns": schema["columns"]}


def _at_version(path: Path, version: int) -> None:
    """A database as a release at *version* left it: steps 1..version only."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        sqlite_schema.upgrade(conn, to=version)
        conn.execute("COMMIT")
    finally:
        conn.close()


def _open(path: Path, **kwargs: Any) -> int:
    store = Store(str(path), **kwargs)
    try:
        return store.schema_version()
    finally:
        store.close()


@pytest.fixture
def fresh(tmp_path: Path) -> dict[str, Any]:
    """The schema of a database the current server creates from nothing."""
    path = tmp_path / "fresh.db"
    assert _open(path) == SCHEMA_VERSION
    return _schema(path)


def test_the_steps_are_numbered_one_to_the_target() -> None:
    steps = sqlite_schema.STEPS
    assert [s.version for s in steps] == list(range(1, SCHEMA_VERSION + 1))
    assert SCHEMA_VERSION == 13
    assert [s.filename for s in steps][:len(SHIPPED)] == list(SHIPPED)


def test_shipped_steps_are_frozen() -> None:
    """A shipped step's file never changes (its checksum is pinned here)."""
    have = {s.filename: s.checksum for s in sqlite_schema.STEPS}
    assert {name: have.get(name) for name in SHIPPED} == SHIPPED


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION + 1))
def test_migrated_from_every_shipped_version_equals_fresh(
    tmp_path: Path, fresh: dict[str, Any], version: int
) -> None:
    path = tmp_path / f"v{version}.db"
    _at_version(path, version)
    assert _schema(path)["version"] == version
    expected = sqlite_schema.STEPS[version:]
    assert list(sqlite_schema.read_status(path).pending) == list(expected)
    assert _open(path) == SCHEMA_VERSION
    assert _schema(path) == fresh
    assert sqlite_schema.read_status(path).up_to_date


def test_a_file_of_the_first_release_is_migrated_whole(
    tmp_path: Path, fresh: dict[str, Any]
) -> None:
    path = tmp_path / "first.db"
    conn = sqlite3.connect(path)
    conn.executescript(_FIRST_RELEASE)
    conn.close()
    pending = [s.version for s in sqlite_schema.read_status(path).pending]
    assert pending == [1, *range(2, SCHEMA_VERSION + 1)]  # step 1 again: tables are missing
    store = Store(str(path))
    try:
        assert store.schema_version() == SCHEMA_VERSION
        entries = store.list_feedback("old", 10).items
        assert [(e.output, e.score, e.comment, e.correction) for e in entries] == [
            ("o", 0.5, None, None)]
    finally:
        store.close()
    assert _schema(path) == fresh


def test_a_file_made_by_the_current_release_is_brought_up_with_its_data(
    tmp_path: Path, fresh: dict[str, Any]
) -> None:
    """The steps 1..7 make exactly the schema release 0.1.0's code made; its file needs
    steps 8 (which fills feedback.trace_id of old rows and changes no table), 9, 10 and 11,
    keeps its rows, and then opens as it is."""
    path = tmp_path / "current.db"
    trace = str(uuid.uuid4())
    conn = sqlite3.connect(path)
    conn.executescript(_RELEASE_SCHEMA.read_text())
    conn.executemany("INSERT INTO schema_version VALUES (?, '2026-12-01T00:00:00+00:00')",
                     [(v,) for v in range(1, 8)])
    conn.execute("INSERT INTO tasks (id, name, feedback_threshold, created_at, feedback_count)"
                 " VALUES ('00000000-0000-4000-8000-000000000001', 'kept', 50,"
                 " '2026-01-01T00:00:00+00:00', 1)")
    # an entry of a version-1 file: its trace named only in the metadata (upper case, too)
    conn.execute("INSERT INTO feedback (id, task_id, inputs, output, metadata, created_at)"
                 " VALUES ('00000000-0000-4000-8000-000000000002',"
                 " '00000000-0000-4000-8000-000000000001', '{\"q\":1}', '\"o\"', ?,"
                 " '2026-01-01T00:00:00+00:00')",
                 (json.dumps({"trace_id": trace.upper()}),))
    conn.commit()
    conn.close()
    at_7 = tmp_path / "at7.db"
    _at_version(at_7, 7)
    assert _shape(path) == _shape(at_7)
    assert [s.version for s in sqlite_schema.read_status(path).pending] == [8, 9, 10, 11, 12, 13]
    with pytest.raises(SchemaOutdated):
        Store(str(path), migrate=False)
    store = Store(str(path))
    try:
        store.add_trace(TraceRequest(task_id="kept", id=uuid.UUID(trace), response_text="r"))
        store.score_trace(trace, 0.75, "judge")
        entries = store.list_feedback("kept", 10).items
        # the score found the old entry through the filled column, and made no new one
        assert [(e.inputs, e.score, str(e.trace_id)) for e in entries] == [
            ({"q": 1}, 0.75, trace)]
    finally:
        store.close()
    assert _schema(path) == fresh
    assert sqlite_schema.read_status(path).up_to_date
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == 13
    finally:
        conn.close()


def _score_lookup(store: Store, trace: str) -> str:
    """The SQL (values bound) by which `score_trace` looks up the trace's feedback entry."""
    conn = store._conn()  # this thread's connection: the one score_trace uses
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        store.score_trace(trace, 1.0, "judge")
    finally:
        conn.set_trace_callback(None)
    (lookup,) = [s for s in statements if s.startswith("SELECT") and "FROM feedback" in s
                 and "trace_id" in s]
    return lookup


def _vm_steps(conn: sqlite3.Connection, sql: str) -> int:
    """How many virtual-machine instructions SQLite runs for *sql* (grows with rows read)."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    conn.set_progress_handler(count, 1)
    try:
        conn.execute(sql).fetchall()
    finally:
        conn.set_progress_handler(None, 1)
    return steps


def test_a_score_finds_its_feedback_through_the_trace_index(tmp_path: Path) -> None:
    """The lookup of a score's feedback entry searches the ``feedback_trace`` index: the
    work it does is the same at 300 and 3,000 rows of the task (it read every row's metadata
    before: 42 ms at 50k rows)."""
    store = Store(str(tmp_path / "plan.db"))
    try:
        def grow(n: int) -> None:
            store.ingest([], [FeedbackRequest(task_id="big", output="o", score=0.5)
                              for _ in range(n)])

        trace = str(uuid.uuid4())
        store.add_trace(TraceRequest(task_id="big", id=uuid.UUID(trace), response_text="r"))
        grow(300)
        lookup = _score_lookup(store, trace)
        conn = sqlite3.connect(store.path)
        try:
            plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + lookup)]
            assert plan == ["SEARCH feedback USING INDEX feedback_trace (trace_id=?)"]
            small = _vm_steps(conn, lookup)
            grow(2700)
            assert _vm_steps(conn, lookup) == small
        finally:
            conn.close()
    finally:
        store.close()


def test_no_migrate_refuses_an_outdated_database_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _at_version(path, 4)
    before = _schema(path)
    with pytest.raises(SchemaOutdated, match="kaizen db upgrade") as info:
        Store(str(path), migrate=False)
    assert "schema version 4" in str(info.value)
    assert _schema(path) == before
    server = LocalServer(db_path=path, migrate=False)
    try:
        with pytest.raises(SchemaOutdated, match="kaizen db upgrade"):
            server.start()
    finally:
        server.stop()  # stops it should it have started
    assert _schema(path)["version"] == 4


def test_a_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    _open(path)
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_version VALUES (?, 'later')", (SCHEMA_VERSION + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(SchemaError, match="newer than this kaizen-server"):
        Store(str(path))
    with pytest.raises(SchemaError, match="newer"):
        sqlite_schema.read_status(path)


def test_step_numbers_may_not_repeat_or_leave_a_gap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two branches that both add step 8 fail loudly, not by running one of them."""
    package = tmp_path / "seam_steps_probe"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "0001_initial.sql").write_text("CREATE TABLE a (x INTEGER);\n")
    (package / "0002_more.sql").write_text("-- a comment\nCREATE TABLE b (x INTEGER);\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    steps = load_steps("probe", package="seam_steps_probe")
    assert [(s.version, s.statements) for s in steps] == [
        (1, ("CREATE TABLE a (x INTEGER)",)), (2, ("CREATE TABLE b (x INTEGER)",))]
    (package / "0002_other.sql").write_text("CREATE TABLE c (x INTEGER);\n")
    with pytest.raises(RuntimeError, match="two probe schema steps are numbered 2"):
        load_steps("probe", package="seam_steps_probe")
    (package / "0002_other.sql").rename(package / "0004_other.sql")
    with pytest.raises(RuntimeError, match="without a gap"):
        load_steps("probe", package="seam_steps_probe")
    sys.modules.pop("seam_steps_probe", None)


# --- kaizen db status / upgrade, kaizen serve --no-migrate -------------------------------------


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    commands.add_db(sub)
    commands.add_serve(sub)
    args = parser.parse_args(list(argv))
    result: int = args.command(args)
    return result


def test_kaizen_db_status_and_upgrade(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cli.db"
    assert _run("db", "status", "--db", str(path), "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["current_version"], report["target_version"], len(report["pending"])) == (
        None, SCHEMA_VERSION, SCHEMA_VERSION)
    assert not path.exists()  # status creates nothing
    _at_version(path, 5)
    assert _run("db", "status", "--db", str(path)) == 0
    out = capsys.readouterr().out
    assert f"Schema version: 5 (this kaizen-server writes {SCHEMA_VERSION})" in out
    after_5 = [step.filename for step in sqlite_schema.STEPS[5:]]
    assert after_5[:2] == ["0006_keys_and_audit.sql", "0007_spend.py"]
    assert "Pending steps: " + ", ".join(after_5) in out
    assert "kaizen db upgrade" in out
    assert _run("db", "upgrade", "--db", str(path), "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["current_version"], report["ran"], report["pending"]) == (
        SCHEMA_VERSION, after_5, [])
    assert _run("db", "upgrade", "--db", str(path)) == 0
    assert "Steps run: none (already up to date)" in capsys.readouterr().out


def test_kaizen_serve_no_migrate_names_the_upgrade_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "serve.db"
    _at_version(path, 6)
    assert _run("serve", "--no-migrate", "--port", "0", "--db", str(path)) == 1
    err = capsys.readouterr().err
    assert "schema version 6" in err
    assert f"kaizen db upgrade --db {path}" in err
    assert _schema(path)["version"] == 6
