"""Labels from the clients and the decorator: get_prompt(label=), set/remove_label,
``@ct.task(label=)`` and ``KAIZEN_PROMPT_LABEL``, against a real local server."""

from __future__ import annotations

import http.server
import json
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

import kaizen_sdk as ct
from kaizen_sdk._http import prompt_key
from kaizen_sdk.async_client import AsyncCTClient
from kaizen_sdk.client import CTClient
from kaizen_sdk.errors import CTNotFoundError, CTValidationError
from kaizen_server import LocalServer

V1, V2, V3 = "v1: {{ x }}", "v2: {{ x }}", "v3: {{ x }}"


@pytest.fixture
def task(local_server: LocalServer) -> Iterator[tuple[str, str, str, str]]:
    """A task with an active v1 and versions v2, v3: (name, v1 id, v2 id, v3 id)."""
    name = f"labels-{uuid.uuid4().hex[:10]}"
    with CTClient(base_url=local_server.base_url, api_key=local_server.api_key) as admin:
        admin.create_task(name, prompt_text=V1)
        v1 = admin.get_prompt(name)
        v2 = admin.create_prompt_version(name, V2)
        v3 = admin.create_prompt_version(name, V3)
    yield name, str(v1.id), str(v2.id), str(v3.id)


def _client(server: LocalServer, refresh: float = 300) -> CTClient:
    return CTClient(base_url=server.base_url, api_key=server.api_key, prompt_refresh=refresh)


def test_get_prompt_by_label_and_moving_it(
    local_server: LocalServer, task: tuple[str, str, str, str]
) -> None:
    name, v1, v2, v3 = task
    with _client(local_server) as client:
        with pytest.raises(CTNotFoundError, match="staging"):
            client.get_prompt(name, label="staging")
        labelled = client.set_label(name, "staging", v2)
        assert (str(labelled.id), labelled.labels) == (v2, ["staging"])
        assert str(client.get_prompt(name, label="staging").id) == v2
        assert str(client.get_prompt(name).id) == v1
        assert str(client.get_prompt(name, label="production").id) == v1
        client.set_label(name, "staging", v3)  # this client sees the move at once
        assert str(client.get_prompt(name, label="staging").id) == v3
        client.activate_prompt(name, v2)  # activation moves production, not staging
        assert str(client.get_prompt(name, label="staging").id) == v3
        assert str(client.get_prompt(name).id) == v2
        assert str(client.remove_label(name, "staging").id) == v3
        with pytest.raises(CTNotFoundError):
            client.get_prompt(name, label="staging")


@pytest.mark.parametrize("label", ["production", "Staging", "", "a/b", "x" * 65])
def test_bad_labels_are_refused_before_sending(
    local_server: LocalServer, task: tuple[str, str, str, str], label: str
) -> None:
    name, _v1, v2, _v3 = task
    with _client(local_server) as client:
        with pytest.raises(CTValidationError, match="label"):
            client.set_label(name, label, v2)
        with pytest.raises(CTValidationError, match="label"):
            client.remove_label(name, label)
    if label != "production":
        with pytest.raises(CTValidationError, match="label"):
            ct.task(name, label=label)


async def test_async_client_labels(
    local_server: LocalServer, task: tuple[str, str, str, str]
) -> None:
    name, v1, v2, _v3 = task
    async with AsyncCTClient(base_url=local_server.base_url,
                             api_key=local_server.api_key) as client:
        await client.set_label(name, "eu", v2)
        assert str((await client.get_prompt(name, label="eu")).id) == v2
        assert str((await client.get_prompt(name)).id) == v1
        await client.remove_label(name, "eu")
        with pytest.raises(CTNotFoundError):
            await client.get_prompt(name, label="eu")


def _until(check: object, want: str, timeout: float = 15.0) -> str:
    """Call *check* until it returns *want* (bounded); return the last value."""
    deadline = time.monotonic() + timeout
    got = ""
    while time.monotonic() < deadline:
        got = check()  # type: ignore[operator]
        if got == want:
            return got
        time.sleep(0.02)
    return got


def test_staging_process_serves_staging_and_follows_a_move(
    local_server: LocalServer, task: tuple[str, str, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """KAIZEN_PROMPT_LABEL=staging serves the staging version while another client serves
    production; a label moved elsewhere reaches it by background revalidation."""
    name, _v1, v2, v3 = task
    with _client(local_server) as admin:
        admin.set_label(name, "staging", v2)
    with _client(local_server, refresh=0.2) as staging, _client(local_server) as prod:

        @staging.task(name)
        def staged(x: str, prompt: ct.Prompt = ct.PROMPT) -> str:
            return prompt.render(x=x)

        @prod.task(name)
        def live(x: str, prompt: ct.Prompt = ct.PROMPT) -> str:
            return prompt.render(x=x)

        monkeypatch.setenv("KAIZEN_PROMPT_LABEL", "staging")
        assert staged("a") == "v2: a"
        monkeypatch.delenv("KAIZEN_PROMPT_LABEL")
        assert live("a") == "v1: a"
        with _client(local_server) as admin:  # another client moves the label
            admin.set_label(name, "staging", v3)
        assert _until(lambda: staged("a"), "v3: a") == "v3: a"
        assert live("a") == "v1: a"


def test_decorator_label_argument(
    local_server: LocalServer, task: tuple[str, str, str, str]
) -> None:
    name, _v1, v2, _v3 = task
    with _client(local_server) as client:
        client.set_label(name, "dev-ann", v2)

        @client.task(name, label="dev-ann")
        def mine(x: str, prompt: ct.Prompt = ct.PROMPT) -> str:
            return prompt.render(x=x)

        @client.task(name)
        def live(x: str, prompt: ct.Prompt = ct.PROMPT) -> str:
            return prompt.render(x=x)

        assert (mine("a"), live("a")) == ("v2: a", "v1: a")
        client.activate_prompt(name, v2)  # this client's activation: production only
        client.set_label(name, "dev-ann", task[3])
        assert (mine("a"), live("a")) == ("v3: a", "v2: a")


class _NoLabels(http.server.BaseHTTPRequestHandler):
    """A CT server from before labels: ``GET /prompts/{task}`` ignores ``?label=``."""

    def do_GET(self) -> None:
        body = json.dumps({"id": str(uuid.uuid4()), "version_number": 3, "status": "active",
                           "prompt_text": "active: {{ x }}"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def old_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NoLabels)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_a_server_without_labels_never_passes_the_active_version_off_as_a_label(
    old_server: str,
) -> None:
    with CTClient(base_url=old_server, api_key="k", prompt_wait=2) as client:
        assert client.get_prompt("t").version_number == 3  # no label: as before
        with pytest.raises(ct.CTError, match="staging"):
            client.get_prompt("t", label="staging")

        @client.task("t", label="staging", default_prompt="default: {{ x }}")
        def staged(x: str, prompt: ct.Prompt = ct.PROMPT) -> str:
            return prompt.render(x=x)

        assert staged("a") == "default: a"  # the default, not the active version


def test_prefetch_warms_the_process_label(
    local_server: LocalServer, task: tuple[str, str, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, _v1, v2, _v3 = task
    with _client(local_server) as client:
        client.set_label(name, "staging", v2)
        monkeypatch.setenv("KAIZEN_PROMPT_LABEL", "staging")
        assert ct.prefetch(name, client=client, timeout=10)
        cached = client.get_prompt_cached(prompt_key(name, "staging"))
        assert cached is not None and str(cached.id) == v2
        monkeypatch.setenv("KAIZEN_PROMPT_LABEL", "Not A Label")
        assert ct.prefetch(name, client=client, timeout=1) is False  # logged, never raised


def test_bad_label_query_is_422(local_server: LocalServer) -> None:
    import httpx

    resp = httpx.get(f"{local_server.base_url}/api/v1/prompts/x?label=Bad!",
                     headers={"X-API-Key": local_server.api_key})
    assert resp.status_code == 422
    assert "label" in resp.json()["detail"]
