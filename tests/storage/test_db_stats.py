"""``kaizen db stats``: rows and bytes per table and the file's size, read-only."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

from kaizen_sdk.models import FeedbackRequest, TraceRequest
from kaizen_server import commands
from kaizen_server.storage.sqlite import Store

pytestmark = pytest.mark.unit


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    commands.add_db(parser.add_subparsers())
    args = parser.parse_args(list(argv))
    result: int = args.command(args)
    return result


def test_db_stats_shows_rows_and_bytes_per_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "stats.db"
    store = Store(str(path))
    try:
        store.ingest([TraceRequest(task_id="s", response_text="r" * 2000) for _ in range(300)],
                     [FeedbackRequest(task_id="s", output="o") for _ in range(7)])
    finally:
        store.close()
    before = path.read_bytes()
    assert _run("db", "stats", "--db", str(path), "--json") == 0
    report = json.loads(capsys.readouterr().out)
    tables = {t["name"]: t for t in report["tables"]}
    assert (tables["traces"]["rows"], tables["feedback"]["rows"], tables["tasks"]["rows"]) == (
        300, 7, 1)
    assert report["tables"][0]["name"] == "traces"  # the largest first
    assert tables["traces"]["table_bytes"] > 300 * 2000
    assert tables["traces"]["index_bytes"] > 0
    page_sum = sum(t["table_bytes"] + t["index_bytes"] for t in report["tables"])
    assert page_sum <= report["file_bytes"] == os.path.getsize(path)
    assert path.read_bytes() == before  # read-only
    assert _run("db", "stats", "--db", str(path)) == 0
    out = capsys.readouterr().out
    assert "traces" in out and "300" in out and "File: " in out


def test_db_stats_of_a_missing_file_says_so_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "none.db"
    with pytest.raises(Exception, match="no database file"):
        _run("db", "stats", "--db", str(path))
    assert not path.exists()


def test_db_stats_of_a_postgresql_database(
    pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from kaizen_server.storage.postgres import PostgresStore

    store = PostgresStore(pg_url)
    try:
        store.ingest([TraceRequest(task_id="s", response_text="r" * 2000) for _ in range(300)],
                     [FeedbackRequest(task_id="s", output="o") for _ in range(7)])
    finally:
        store.close()
    assert _run("db", "stats", "--db", pg_url, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    tables = {t["name"]: t for t in report["tables"]}
    assert (tables["traces"]["rows"], tables["feedback"]["rows"], tables["tasks"]["rows"]) == (
        300, 7, 1)
    assert tables["traces"]["table_bytes"] > 0 and tables["traces"]["index_bytes"] > 0
    assert report["file_bytes"] >= sum(t["table_bytes"] + t["index_bytes"]
                                       for t in report["tables"])
