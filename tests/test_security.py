"""Security: the API key never leaks; TLS stays on; plain http warns; content can stay home.

A distinctive key is used everywhere, and everything the SDK produces is searched for it:
log records at every level (pytest's capture and a handler on the root logger), exception
messages and reprs, span attributes, the trace and feedback records the server stored, and
the server's database file itself.
"""

from __future__ import annotations

import logging
import os
import ssl
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from reliability._proxy import FaultProxy

from kaizen_sdk import CTClient, tracing
from kaizen_sdk._config import resolve_settings
from kaizen_sdk.errors import CTAuthError, CTConnectionError, CTError
from kaizen_server import MAX_BODY_BYTES, LocalServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

SECRET = "ksk-LEAKCANARY-7f3a9c1e5b2d4f60a8e1"
"""The API key of every client here; no byte of output may contain it."""

FRAGMENTS = (SECRET, "LEAKCANARY", "7f3a9c1e5b2d4f60")
"""The key and pieces of it: a key cut short or masked badly is still a leak."""

CONTENT = "PRIVATE-CONTENT-c0ffee-4242"
"""A user's private text, for the content-capture tests."""


def assert_clean(text: str, *, what: str) -> None:
    for fragment in FRAGMENTS:
        assert fragment not in text, f"the API key leaked into {what}"


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))  # includes the formatted traceback, if any


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[Callable[[], str]]:
    """Everything logged during the test at any level, as one string."""
    caplog.set_level(logging.DEBUG)
    handler = _Collect()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield lambda: "\n".join([*handler.lines, caplog.text])
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


@pytest.fixture(scope="module")
def secret_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """A server that expects the canary key, with its database in a known file."""
    db = tmp_path_factory.mktemp("secdb") / "ct.db"
    with LocalServer(db_path=db, api_key=SECRET) as server:
        yield server


def _database_bytes(server: LocalServer) -> bytes:
    assert server.db_path is not None
    folder = Path(server.db_path).parent
    return b"".join(p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file())


# --- reprs and exceptions ----------------------------------------------------------------


def test_reprs_of_client_settings_and_errors_hide_the_key(secret_server: LocalServer) -> None:
    settings = resolve_settings(api_key=SECRET)
    with CTClient(api_key=SECRET, base_url=secret_server.base_url) as client:
        texts = [repr(client), str(client), repr(client.settings), str(client.settings)]
    texts += [repr(settings), repr(secret_server)]
    for text in texts:
        assert_clean(text, what="a repr")


def test_error_messages_never_carry_the_key(secret_server: LocalServer, logs: Any) -> None:
    wrong = SECRET[::-1]  # the server must not echo a wrong key either
    seen: list[BaseException] = []
    with CTClient(api_key=wrong, base_url=secret_server.base_url, max_retries=0) as client:
        with pytest.raises(CTAuthError) as auth:
            client.list_tasks()
        seen.append(auth.value)
    assert wrong not in str(auth.value)
    with CTClient(api_key=SECRET, base_url="http://127.0.0.1:9", max_retries=0) as down:
        with pytest.raises(CTConnectionError) as conn:
            down.list_tasks()
        seen.append(conn.value)
        with pytest.raises(CTError) as missing:
            down.get_task("")
        seen.append(missing.value)
    for exc in seen:
        chain: BaseException | None = exc
        while chain is not None:  # the httpx cause too
            assert_clean(f"{chain}\n{chain!r}\n{chain.args!r}", what="an exception")
            chain = chain.__cause__ or chain.__context__
    assert_clean(logs(), what="the logs")


def _reachable_text(obj: Any, depth: int = 0) -> str:
    """The reprs of *obj*'s exception chain: what code holding the exception can read."""
    parts: list[str] = []
    seen: BaseException | None = obj
    while seen is not None and depth < 10:
        parts += [repr(seen), repr(vars(seen))]
        request = getattr(seen, "_request", None)
        if request is not None:
            parts.append(repr(dict(request.headers)))
        seen = seen.__cause__ or seen.__context__
        depth += 1
    return "\n".join(parts)


def test_exceptions_hold_no_request_with_the_key() -> None:
    with (
        CTClient(api_key=SECRET, base_url="http://127.0.0.1:9", max_retries=0) as down,
        pytest.raises(CTConnectionError) as conn,
    ):
        down.list_tasks()
    cause = conn.value.__cause__
    assert isinstance(cause, httpx.ConnectError)  # the cause is kept, for debugging ...
    assert cause.request.headers["X-API-Key"] == "<redacted>"  # ... holding a clean copy
    assert_clean(_reachable_text(conn.value), what="an exception's cause chain")


def test_the_key_is_in_no_plain_attribute_of_the_client() -> None:
    with CTClient(api_key=SECRET, base_url="http://127.0.0.1:9") as client:
        for name, value in vars(client).items():
            assert_clean(repr(value), what=f"client.{name}")
            if isinstance(value, dict):
                assert_clean(str(list(value.values())), what=f"client.{name}")


def test_missing_key_message_names_the_variable_and_no_value() -> None:
    with pytest.raises(CTError) as caught:
        CTClient(base_url="http://127.0.0.1:9")
    assert "KAIZEN_API_KEY" in str(caught.value)


# --- logs, spans, stored records ---------------------------------------------------------


def test_key_is_absent_from_logs_spans_and_everything_stored(
    secret_server: LocalServer, logs: Any, tmp_path: Path
) -> None:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    task_name = f"sec-{uuid.uuid4().hex[:8]}"
    client = CTClient(api_key=SECRET, base_url=secret_server.base_url, tracer_provider=provider)

    @client.task(task_name, default_prompt="Answer {{ q }}", log_feedback=True)
    def answer(q: str, prompt: Any = None) -> str:
        return f"answer to {q}"

    for i in range(5):
        assert answer(f"question {i}") == f"answer to question {i}"
    fid = client.log_feedback(task_name, inputs={"q": "x"}, output="y", score=0.5)
    client.flush()
    assert client.stats().sent == 5
    traces = client.list_traces(task_name)
    feedback = client.list_feedback(task_name)
    client.close()

    assert len(traces) == 5 and len(feedback) == 6 and fid is not None
    stored = "".join(repr(t) for t in traces) + "".join(repr(f) for f in feedback)
    assert_clean(stored, what="stored records")
    finished = spans.get_finished_spans()
    assert len(finished) >= 5
    for span in finished:
        assert_clean(repr(dict(span.attributes or {})), what="span attributes")
        assert_clean(span.to_json(), what="a span")
    db = _database_bytes(secret_server)
    assert task_name.encode() in db  # the file really holds the records ...
    for fragment in FRAGMENTS:
        assert fragment.encode() not in db  # ... and never the key
    assert_clean(logs(), what="the logs")


@pytest.fixture
def secret_proxy(secret_server: LocalServer) -> Iterator[FaultProxy]:
    """The fault proxy in front of the canary server."""
    with FaultProxy(secret_server.base_url) as proxy:
        yield proxy


def test_key_is_absent_from_logs_when_delivery_fails(
    secret_proxy: FaultProxy, logs: Any, tmp_path: Path
) -> None:
    proxy = secret_proxy
    proxy.fail_next(50, 503)
    spool = tmp_path / "spool"
    with CTClient(
        api_key=SECRET, base_url=proxy.url, max_retries=1, spool_dir=str(spool),
        shutdown_timeout=2,
    ) as client:

        @client.task(f"sec-fail-{uuid.uuid4().hex[:8]}", default_prompt="p")
        def f(x: int, prompt: Any = None) -> int:
            return x

        for i in range(3):
            f(i)
        client.flush(10)
    files = [p for p in spool.rglob("*") if p.is_file()]
    assert files and client.stats().spooled == 3  # the spool really holds the records ...
    spooled = b"".join(p.read_bytes() for p in files)
    assert b"sec-fail-" in spooled
    for fragment in FRAGMENTS:
        assert fragment.encode() not in spooled
    assert_clean(logs(), what="the logs")


# --- transport security ------------------------------------------------------------------


def _ok(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=[], request=request)


def test_plain_http_to_a_remote_host_warns_once(
    logs: Any, caplog: pytest.LogCaptureFixture
) -> None:
    host = f"ct-{uuid.uuid4().hex[:8]}.example.test"
    with CTClient(
        api_key=SECRET, base_url=f"http://{host}", transport=httpx.MockTransport(_ok)
    ) as client:
        client.list_tasks()
        client.list_tasks()
    with CTClient(
        api_key=SECRET, base_url=f"http://{host}", transport=httpx.MockTransport(_ok)
    ) as again:
        again.list_tasks()
    warnings = [r for r in caplog.records if "plain http" in r.getMessage()]
    assert len(warnings) == 1
    assert host in warnings[0].getMessage()
    assert warnings[0].levelno == logging.WARNING
    assert_clean(logs(), what="the logs")


@pytest.mark.parametrize(
    "base_url", ["https://ct.example.test", "http://127.0.0.1:8000", "http://localhost:8000"]
)
def test_https_or_loopback_does_not_warn(base_url: str, logs: Any) -> None:
    with CTClient(api_key=SECRET, base_url=base_url, transport=httpx.MockTransport(_ok)) as c:
        c.list_tasks()
    assert "plain http" not in logs()


def _ssl_context(client: CTClient) -> ssl.SSLContext:
    pool = client._http._transport._pool  # type: ignore[attr-defined]
    context: ssl.SSLContext = pool._ssl_context
    return context


def test_tls_verification_is_on_by_default() -> None:
    with CTClient(api_key=SECRET, base_url="https://ct.example.test") as client:
        assert client.settings.verify is True
        context = _ssl_context(client)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True


def test_a_ca_bundle_path_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    import certifi

    bundle = certifi.where()
    with CTClient(api_key=SECRET, base_url="https://ct.example.test", verify=bundle) as client:
        assert client.settings.verify == bundle
        context = _ssl_context(client)
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert len(context.get_ca_certs()) > 10
        tracing.pipeline_for(client)  # the background exporter takes the bundle too
    monkeypatch.setenv("KAIZEN_CA_BUNDLE", bundle)
    assert resolve_settings(api_key=SECRET).verify == bundle


# --- the local server --------------------------------------------------------------------


def test_local_server_binds_loopback_by_default() -> None:
    with LocalServer() as server:
        assert server.host == "127.0.0.1"
        assert server.base_url.startswith("http://127.0.0.1:")
        assert server.bound_address[0] == "127.0.0.1"


def test_local_server_compares_keys_in_constant_time(
    secret_server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hmac

    from kaizen_server.domain import keys as keys_module  # where every key is compared

    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def counting(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(keys_module.hmac, "compare_digest", counting)
    base = secret_server.base_url
    bad = httpx.get(f"{base}/api/v1/tasks", headers={"X-API-Key": "nope"})
    good = httpx.get(f"{base}/api/v1/tasks", headers={"X-API-Key": SECRET})
    assert (bad.status_code, good.status_code) == (401, 200)
    assert len(calls) == 2
    assert_clean(bad.text, what="a 401 body")


def test_local_server_limits_the_body_size(secret_server: LocalServer) -> None:
    too_big = b"{" + b" " * MAX_BODY_BYTES + b"}"
    resp = httpx.post(
        f"{secret_server.base_url}/api/v1/traces",
        content=too_big,
        headers={"X-API-Key": SECRET, "Content-Type": "application/json"},
        timeout=30,
    )
    assert resp.status_code == 413
    assert httpx.get(f"{secret_server.base_url}/api/v1/health").status_code in (200, 401)


# --- content capture ---------------------------------------------------------------------


def _run_private_calls(client: CTClient, task_name: str, prompt_text: str) -> None:
    @client.task(task_name, default_prompt=prompt_text, log_feedback=True)
    def private(secret_input: str, prompt: Any = None) -> str:
        return f"output {CONTENT}"

    for _ in range(3):
        assert private(f"input {CONTENT}") == f"output {CONTENT}"
    client.flush()


def test_capture_content_false_keeps_content_out_of_records(
    secret_server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAIZEN_CAPTURE_CONTENT", "false")
    task_name = f"nocap-{uuid.uuid4().hex[:8]}"
    with CTClient(api_key=SECRET, base_url=secret_server.base_url) as client:
        assert client.settings.capture_content is False
        _run_private_calls(client, task_name, f"prompt {CONTENT}")
        traces = client.list_traces(task_name)
        feedback = client.list_feedback(task_name)
    assert (len(traces), len(feedback)) == (3, 3)
    stored = "".join(repr(t) for t in traces) + "".join(repr(f) for f in feedback)
    assert CONTENT not in stored
    assert all(t.model is None or CONTENT not in t.model for t in traces)


def test_mask_redacts_inputs_and_outputs_before_they_leave(secret_server: LocalServer) -> None:
    def mask(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace(CONTENT, "[MASKED]")
        if isinstance(value, dict):
            return {k: mask(v) for k, v in value.items()}
        if isinstance(value, list):
            return [mask(v) for v in value]
        return value

    task_name = f"mask-{uuid.uuid4().hex[:8]}"
    with CTClient(api_key=SECRET, base_url=secret_server.base_url, mask=mask) as client:
        _run_private_calls(client, task_name, "an ordinary prompt")
        traces = client.list_traces(task_name)
        feedback = client.list_feedback(task_name)
    assert (len(traces), len(feedback)) == (3, 3)
    stored = "".join(repr(t) for t in traces) + "".join(repr(f) for f in feedback)
    assert CONTENT not in stored
    assert "[MASKED]" in stored
    assert os.environ.get("KAIZEN_CAPTURE_CONTENT") is None
