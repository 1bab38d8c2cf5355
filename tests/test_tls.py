"""Cold start: one shared SSL context per trust setting, none loaded for http://, and
``import httpx`` through the SDK leaves httpx's command-line client (click, rich) unloaded."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys

import certifi
import pytest

from kaizen_sdk import AsyncCTClient, CTClient, _tls
from kaizen_sdk._config import resolve_settings

pytestmark = [pytest.mark.unit]

KEY = "sk-test-tls"


def _context_of(client: CTClient | AsyncCTClient) -> ssl.SSLContext:
    pool = client._http._transport._pool  # type: ignore[union-attr]
    context: ssl.SSLContext = pool._ssl_context
    return context


def test_http_base_url_loads_no_certificate() -> None:
    context = _tls.ssl_context("http://127.0.0.1:8000")
    assert context is _tls.ssl_context("HTTP://localhost", "/no/such/bundle.pem")
    assert context.cert_store_stats()["x509_ca"] == 0
    # trusts nothing, so it could never complete a handshake with anyone
    assert context.verify_mode == ssl.CERT_REQUIRED
    with CTClient(api_key=KEY, base_url="http://127.0.0.1:8000") as client:
        assert _context_of(client) is context


async def test_https_clients_share_one_verifying_context() -> None:
    url = "https://ct.example.test"
    with CTClient(api_key=KEY, base_url=url) as one, CTClient(api_key=KEY, base_url=url) as two:
        async with AsyncCTClient(api_key=KEY, base_url=url) as three:
            context = _context_of(one)
            assert _context_of(two) is context
            assert _context_of(three) is context
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.cert_store_stats()["x509_ca"] > 10


def test_each_trust_setting_gets_its_own_context(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "https://ct.example.test"
    default = _tls.ssl_context(url, True)
    bundle = _tls.ssl_context(url, certifi.where())
    assert bundle is not default
    assert bundle is _tls.ssl_context(url, certifi.where())
    assert bundle.cert_store_stats()["x509_ca"] > 10
    off = _tls.ssl_context(url, False)
    assert off.verify_mode == ssl.CERT_NONE
    assert off.check_hostname is False
    # SSL_CERT_FILE is what httpx reads for verify=True: the shared context honours it too
    monkeypatch.setenv("SSL_CERT_FILE", certifi.where())
    from_env = _tls.ssl_context(url, True)
    assert from_env is not default
    assert from_env.cert_store_stats()["x509_ca"] > 10


def test_httpx_options_carry_timeout_context_and_no_redirects() -> None:
    settings = resolve_settings(api_key=KEY, base_url="https://ct.example.test", timeout=7.0)
    options = _tls.httpx_options(settings)
    assert options["timeout"].read == 7.0
    assert options["verify"] is _tls.ssl_context("https://ct.example.test", True)
    assert options["follow_redirects"] is False
    assert _tls.httpx_options(settings, timeout=2.5)["timeout"].connect == 2.5


_FIRST_USE = """
import json, sys
import kaizen_sdk as ct
ct.task
client = ct.CTClient(api_key="k", base_url="https://ct.example.test")
client.close()
print(json.dumps(sorted(m for m in ("click", "rich", "pygments") if m in sys.modules)))
"""


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=60, check=False)


def test_the_sdk_does_not_load_the_httpx_command_line_client() -> None:
    proc = _python(_FIRST_USE)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


def test_the_httpx_command_still_runs() -> None:
    pytest.importorskip("click")
    pytest.importorskip("rich")
    proc = _python("import sys, kaizen_sdk, httpx\nsys.argv = ['httpx', '--help']\nhttpx.main()")
    assert proc.returncode == 0, proc.stderr
    assert "Usage: httpx" in proc.stdout


def test_httpx_imported_first_is_left_alone() -> None:
    pytest.importorskip("click")
    proc = _python("import httpx, kaizen_sdk, sys\nprint(type(httpx.main).__module__)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith("click")
