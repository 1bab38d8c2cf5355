"""Smoke test of kaizen_sdk at the lowest versions its core dependencies allow.

Run by ``make floor`` in ``.venv-floor``, where `floor_constraints.py` pinned every core
dependency (and openai) to the floor pyproject.toml declares. It checks that the pins took,
then, against a real local CT server and the OpenAI stand-in (both on loopback): a decorated
call whose trace the server stores, ``instrument(openai)`` / ``uninstrument`` around one chat
completion, and a few client calls. Any failure is an exception and exit status 1.

The server runs in its own process from the project's main virtualenv (``argv[2]``): it is
the kaizen-server distribution, whose own dependencies (the price table, OTLP decoding) need
newer versions of some of the SDK's core dependencies than the SDK's floors, so the two cannot
share one environment. The floors are the SDK's promise; the SDK here talks real HTTP to it.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from importlib import metadata

__all__ = ["main"]

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _norm(version: str) -> str:
    """``1.14.0`` and ``1.14`` are one version."""
    return re.sub(r"(?:\.0)+(?=$|[a-z])", "", version)


def _check_pins(constraints: str) -> None:
    """Every ``name==version`` line of *constraints* is what is installed."""
    with open(constraints, encoding="utf-8") as fh:
        pins = [line.strip().split("==") for line in fh if "==" in line]
    wrong = [f"{name} {metadata.version(name)} (want {version})"
             for name, version in pins if _norm(metadata.version(name)) != _norm(version)]
    if wrong:
        raise SystemExit("floor venv: not at the floors: " + ", ".join(wrong))
    print("floors:", ", ".join(f"{name}=={version}" for name, version in pins))


def _until(what: str, done: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


_KEY = "floor-smoke-key"


@contextlib.contextmanager
def _server(python: str) -> Iterator[str]:
    """``kaizen serve`` on a free loopback port, run by *python*; yield its base URL."""
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [python, "-m", "kaizen_sdk.cli", "serve", "--port", "0", "--api-key", _KEY,
             "--db", os.path.join(tmp, "floor.db")],
            cwd=_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + 60
            url = None
            while url is None:  # bounded: the server prints its address once it listens
                line = proc.stdout.readline()
                if not line or time.monotonic() > deadline:
                    raise SystemExit(f"floor smoke: the server did not start ({line!r})")
                found = re.search(r"listening on (http://\S+)", line)
                url = found.group(1) if found else None
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def _smoke(server_python: str) -> None:
    import openai

    import kaizen_sdk as ct
    from kaizen_sdk.instrument import instrumented

    sys.path.insert(0, os.path.join(_ROOT, "tests", "integrations"))
    from openai_standin import StandIn

    task_name = f"floor-{uuid.uuid4().hex[:8]}"
    with _server(server_python) as base_url, StandIn() as llm, ct.CTClient(
        base_url=base_url, api_key=_KEY
    ) as client:
        # a client call
        assert client.health().status == "ok"

        # a decorated call: default prompt, span, trace delivered in the background
        @client.task(task_name, default_prompt="Summarize: {{ ticket }}")
        def summarize(ticket: str, prompt: ct.Prompt = ct.PROMPT) -> str:
            return prompt.render(ticket=ticket).upper()

        result, run = summarize.call("printer on fire")
        assert result == "SUMMARIZE: PRINTER ON FIRE", result
        assert run.trace_id is not None
        assert client.flush(timeout=10.0), client.stats()
        trace = client.get_trace(run.trace_id)
        assert trace.response_text == result, trace
        assert [t.id for t in client.list_traces(task_name)] == [trace.id]

        # instrument / uninstrument around a real openai call to the stand-in
        create = openai.resources.chat.completions.Completions.create
        ct.instrument(openai, client=client)
        try:
            assert instrumented(openai)
            oai = openai.OpenAI(base_url=llm.base_url, api_key="sk-floor", max_retries=0)
            with ct.context(task=task_name):  # names the call's task: a CT record too
                answer = oai.chat.completions.create(
                    model="gpt-floor", messages=[{"role": "user", "content": "hello floor"}]
                )
            assert answer.choices[0].message.content == "echo: hello floor"
            assert getattr(answer, "ct_trace_id", None), "no ct_trace_id on the response"
            oai.close()
        finally:
            ct.uninstrument(openai)
        assert openai.resources.chat.completions.Completions.create is create
        assert not instrumented(openai)
        assert client.flush(timeout=10.0), client.stats()
        stats = client.stats()
        assert stats.dropped == 0 and stats.sent == stats.queued == 2, stats
    print("floor smoke test passed:", stats)


def main(argv: list[str]) -> int:
    """Check the pins in ``argv[1]`` (a constraints file), then run the smoke test against a
    server run by the interpreter ``argv[2]``."""
    if len(argv) != 3:
        print("usage: floor_smoke.py CONSTRAINTS SERVER_PYTHON", file=sys.stderr)
        return 2
    _check_pins(argv[1])
    _smoke(argv[2])
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
