"""Bad requests get a clear JSON error naming the problem and change nothing."""

from __future__ import annotations

import logging
import socket
import uuid

import httpx
import pytest
from server_backends import local_server_on_each_backend  # noqa: F401  (SQLite + PostgreSQL)

from kaizen_sdk import models as m
from kaizen_server import MAX_BODY_BYTES, LocalServer
from kaizen_server.storage.sqlite import Store


def _error(resp: httpx.Response, status: int) -> str:
    assert resp.status_code == status, resp.text
    body = m.decode(resp.content, m.ErrorBody)
    assert body.title
    return body.detail or ""


def _count(client: httpx.Client, task: str) -> int:
    resp = client.get(f"/api/v1/tasks/{task}")
    return 0 if resp.status_code == 404 else int(resp.json()["feedback_count"])


@pytest.mark.parametrize("body", [b"{not json", b"", b"   ", b"\xff\xfe", b'{"task_id": "x"'])
def test_non_json_body_is_400(client: httpx.Client, task_name: str, body: bytes) -> None:
    detail = _error(client.post("/api/v1/feedback", content=body), 400)
    assert "JSON" in detail
    assert _count(client, task_name) == 0


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/feedback", {"score": 0.5}, "task_id"),
        ("/api/v1/feedback", {"task_id": 5}, "$.task_id"),
        ("/api/v1/feedback", {"task_id": ""}, "$.task_id"),
        ("/api/v1/feedback", {"task_id": "{t}", "score": 1.5}, "$.score"),
        ("/api/v1/feedback", {"task_id": "{t}", "score": -0.1}, "$.score"),
        ("/api/v1/feedback", {"task_id": "{t}", "score": "high"}, "$.score"),
        ("/api/v1/feedback", {"task_id": "{t}", "id": "not-a-uuid"}, "$.id"),
        ("/api/v1/feedback", {"task_id": "{t}", "scroe": 0.5}, "scroe"),
        ("/api/v1/feedback", {"task_id": "{t}", "inputs": [1]}, "$.inputs"),
        ("/api/v1/feedback", [1, 2], "object"),
        ("/api/v1/traces", {"task_id": "{t}", "tokens": "many"}, "$.tokens"),
        ("/api/v1/traces", {"prompt_text": "p"}, "task_id"),
        ("/api/v1/tasks", {"name": "{t}", "feedback_threshold": 0}, "$.feedback_threshold"),
        ("/api/v1/tasks", {"description": "no name"}, "name"),
        ("/api/v1/tasks", {"name": "{t}", "feedback_threshold": 2**70}, "$.feedback_threshold"),
        ("/api/v1/traces", {"task_id": "{t}", "tokens": -(2**64)}, "$.tokens"),
    ],
)
def test_invalid_field_is_422_naming_it(
    client: httpx.Client, task_name: str, path: str, body: object, field: str
) -> None:
    if isinstance(body, dict):
        body = {k: v.replace("{t}", task_name) if isinstance(v, str) else v
                for k, v in body.items()}
    detail = _error(client.post(path, json=body), 422)
    assert field in detail
    assert _count(client, task_name) == 0
    assert client.get(f"/api/v1/tasks/{task_name}").status_code == 404


def test_float_out_of_range_is_422(client: httpx.Client, task_name: str) -> None:
    body = b'{"task_id": "' + task_name.encode() + b'", "latency_ms": 1e400}'
    assert "$.latency_ms" in _error(client.post("/api/v1/traces", content=body), 422)


def test_score_trace_out_of_range_is_422(client: httpx.Client, task_name: str) -> None:
    trace = client.post("/api/v1/traces", json={"task_id": task_name}).json()
    for score in (1.01, -1, "x"):
        detail = _error(client.post(f"/api/v1/traces/{trace['id']}/score",
                                    json={"score": score}), 422)
        assert "$.score" in detail
    assert client.get(f"/api/v1/traces/{trace['id']}").json()["score"] is None


@pytest.mark.parametrize("limit", ["0", "-1", "x", "1001", ""])
def test_bad_limit_is_422(client: httpx.Client, limit: str) -> None:
    for path in ("/api/v1/traces", "/api/v1/feedback", "/api/v1/jobs"):
        assert "limit" in _error(client.get(path, params={"limit": limit}), 422)


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/api/v1/nothing"), ("GET", "/"), ("POST", "/api/v2/feedback"),
     ("GET", "/api/v1/tasks/a/b/c"), ("DELETE", "/api/v1/nothing")],
)
def test_unknown_route_is_404(client: httpx.Client, method: str, path: str) -> None:
    detail = _error(client.request(method, path), 404)
    assert path in detail


def test_wrong_method_is_405_with_allow(client: httpx.Client) -> None:
    resp = client.delete("/api/v1/tasks")
    assert "DELETE" in _error(resp, 405)
    assert resp.headers["allow"] == "GET, POST"
    assert _error(client.put("/api/v1/health"), 405)
    assert "TRACE" in _error(client.request("TRACE", "/api/v1/jobs"), 405)
    assert "QUERY" in _error(client.request("QUERY", "/api/v1/feedback"), 405)
    assert "QUERY" in _error(client.request("QUERY", "/api/v1/nothing"), 404)
    head = client.head("/api/v1/health")
    assert (head.status_code, head.content) == (405, b"")
    assert client.get("/api/v1/health").status_code == 200  # connection still in sync


def test_oversized_int_in_ingest_item_is_reported(client: httpx.Client, task_name: str) -> None:
    body = {"traces": [{"task_id": task_name, "tokens": 2**64}, {"task_id": task_name}]}
    result = m.decode(client.post("/api/v1/ingest", json=body).content, m.IngestResult)
    assert result.accepted == 1
    assert [e.detail for e in result.errors] == [
        "traces[0]: Expected `int` within 64 bits - at `$.tokens`"
    ]


def test_body_over_limit_is_413(client: httpx.Client, task_name: str) -> None:
    body = b'{"task_id": "' + task_name.encode() + b'", "output": "' + b"x" * MAX_BODY_BYTES + b'"}'
    assert len(body) > MAX_BODY_BYTES
    detail = _error(client.post("/api/v1/feedback", content=body), 413)
    assert str(MAX_BODY_BYTES) in detail
    assert _count(client, task_name) == 0
    # The connection stays usable after the refused body.
    assert client.get("/api/v1/health").status_code == 200


def test_huge_declared_length_is_413_and_closes(local_server: LocalServer) -> None:
    host, port = local_server.base_url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"POST /api/v1/feedback HTTP/1.1\r\nHost: x\r\nX-API-Key: "
            + local_server.api_key.encode()
            + b"\r\nContent-Length: 1000000000\r\n\r\n{"
        )
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"}"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert b"connection: close" in head.lower()
    assert b"limit" in body


def test_chunked_body_is_accepted(client: httpx.Client, task_name: str) -> None:
    def parts() -> object:
        yield b'{"task_id": "'
        yield task_name.encode()
        yield b'", "score": 0.5}'

    resp = client.post("/api/v1/feedback", content=parts())  # type: ignore[arg-type]
    assert resp.status_code == 201, resp.text
    assert _count(client, task_name) == 1


def test_keep_alive_reuses_one_connection(local_server: LocalServer) -> None:
    peers: set[object] = set()

    def remember(response: httpx.Response) -> None:
        stream = response.extensions["network_stream"]
        peers.add(stream.get_extra_info("client_addr"))

    with httpx.Client(base_url=local_server.base_url, event_hooks={"response": [remember]},
                      headers={"X-API-Key": local_server.api_key}) as c:
        for _ in range(5):
            assert c.get("/api/v1/tasks").status_code == 200
            assert c.get("/api/v1/nothing").status_code == 404
            assert c.post("/api/v1/feedback", content=b"{").status_code == 400
    assert len(peers) == 1


def test_handler_crash_is_500_json_and_logged(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def boom(self: Store) -> list[m.Task]:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(Store, "list_tasks", boom)
    with LocalServer(api_key="k-500") as server, httpx.Client(
        base_url=server.base_url, headers={"X-API-Key": "k-500"}
    ) as c, caplog.at_level(logging.ERROR, logger="kaizen_sdk"):
        resp = c.get("/api/v1/tasks")
        detail = _error(resp, 500)
        assert "secret internals" not in detail
        assert c.get("/api/v1/health").status_code == 200
    assert any("GET /api/v1/tasks" in r.getMessage() for r in caplog.records)
    assert all("k-500" not in r.getMessage() for r in caplog.records)


def test_error_detail_never_echoes_the_key(local_server: LocalServer) -> None:
    wrong = f"wrong-{uuid.uuid4()}"
    resp = httpx.get(f"{local_server.base_url}/api/v1/tasks", headers={"X-API-Key": wrong})
    assert resp.status_code == 401
    assert wrong not in resp.text and local_server.api_key not in resp.text


def test_client_that_goes_away_mid_request_does_not_hurt(
    local_server: LocalServer, client: httpx.Client, task_name: str,
    capfd: pytest.CaptureFixture[str],
) -> None:
    host, port = local_server.base_url.removeprefix("http://").rsplit(":", 1)
    for payload in (
        b"POST /api/v1/feedback HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"task",
        b"GET /api/v1/hea",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",  # a TLS hello on a plain port
    ):
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):
                pass
    assert client.post("/api/v1/feedback", json={"task_id": task_name}).status_code == 201
    assert _count(client, task_name) == 1
    assert "Traceback" not in capfd.readouterr().err
