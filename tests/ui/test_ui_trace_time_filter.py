"""The traces page's time filter: ``since`` and ``until`` (ISO dates or datetimes, UTC when
without an offset) keep the traces created in that range, read through bounded pages like the
other filters; a bad date is a clear 422 page naming the field."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import httpx

from kaizen_server import LocalServer

TIMES = ["2026-01-09T23:59:59+00:00", "2026-01-10T00:00:00+00:00", "2026-01-10T18:30:00+00:00",
         "2026-01-11T00:00:00+00:00", "2026-01-12T08:00:00+00:00"]


def _shown(html: str) -> list[str]:
    return re.findall(r'href="/ui/traces/([0-9a-f-]{36})"', html)


def test_since_and_until_keep_the_traces_of_that_time(tmp_path: Path) -> None:
    db = tmp_path / "time.db"
    with LocalServer(db) as srv, httpx.Client(
            base_url=srv.base_url, headers={"X-API-Key": srv.api_key}, timeout=10) as api:
        assert api.post("/api/v1/tasks", json={"name": "timed"}).status_code == 201
        ids = []
        for i in range(len(TIMES)):
            resp = api.post("/api/v1/traces", json={"task_id": "timed", "response_text": f"r{i}"})
            assert resp.status_code == 201, resp.text
            ids.append(resp.json()["id"])
        with sqlite3.connect(db) as conn:  # the server stamps its own time: set the times
            conn.executemany("UPDATE traces SET created_at = ? WHERE id = ?",
                             list(zip(TIMES, ids, strict=True)))
        conn.close()
        with httpx.Client(base_url=srv.base_url, timeout=10) as ui:
            assert ui.post("/ui/signin", data={"key": srv.api_key,
                                               "next": "/ui/tasks"}).status_code == 303

            def shown(**params: str) -> set[int]:
                resp = ui.get("/ui/traces", params={"task": "timed", **params})
                assert resp.status_code == 200, resp.text
                return {ids.index(t) for t in _shown(resp.text)}

            assert shown() == {0, 1, 2, 3, 4}
            assert shown(since="2026-01-10") == {1, 2, 3, 4}
            assert shown(until="2026-01-10") == {0, 1, 2}  # a date: to the end of that day
            assert shown(since="2026-01-10", until="2026-01-10") == {1, 2}
            assert shown(since="2026-01-10T18:30", until="2026-01-11T00:00:00Z") == {2, 3}
            assert shown(since="2026-01-10T20:30+02:00") == {2, 3, 4}
            page = ui.get("/ui/traces", params={"task": "timed", "since": "2026-01-11"}).text
            assert 'value="2026-01-11"' in page and "2 matching among the 5 traces read" in page
            bad = ui.get("/ui/traces", params={"task": "timed", "until": "last tuesday"})
    assert bad.status_code == 422
    assert re.search(r'id="problem">`until` must be an ISO date or datetime .*'
                     r"got &#39;last tuesday&#39;", bad.text)
