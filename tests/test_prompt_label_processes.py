"""Labels across running processes: two real processes serve one task, one with
``KAIZEN_PROMPT_LABEL=staging``; moving the label reaches the running staging process by
background revalidation, while the production process keeps serving production (issue 24)."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

import kaizen_sdk
from kaizen_sdk.client import CTClient
from kaizen_server import LocalServer

ROOT = Path(kaizen_sdk.__file__).resolve().parents[1]
APP = Path(__file__).with_name("label_app.py")
REFRESH = 0.5
"""The revalidation interval (``KAIZEN_PROMPT_REFRESH``) of both processes, in seconds."""
DEADLINE = 60 * REFRESH
"""Longest wait for an answer or for the move to arrive: generous for a loaded machine. The
prompt cache lives 300 s (``KAIZEN_CACHE_TTL``), so only a revalidation can bring a move."""


class _App:
    """A running `label_app` process: `call` sends one call and returns its JSON answer."""

    def __init__(self, server: LocalServer, task: str, **env: str) -> None:
        full = {k: v for k, v in os.environ.items() if not k.startswith("KAIZEN_")}
        full.update(env, KAIZEN_BASE_URL=server.base_url, KAIZEN_API_KEY=server.api_key,
                    KAIZEN_PROMPT_REFRESH=str(REFRESH), KAIZEN_PROMPT_WAIT=str(DEADLINE),
                    PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        self.proc = subprocess.Popen(
            [sys.executable, str(APP), task], env=full, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._lines.put(line)

    def call(self) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("call\n")
        self.proc.stdin.flush()
        try:
            answer: dict[str, Any] = json.loads(self._lines.get(timeout=DEADLINE))
        except queue.Empty:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
            raise AssertionError(f"no answer within {DEADLINE} s; stderr:\n{err}") from None
        return answer

    def close(self) -> tuple[int, str]:
        """Close stdin (the app flushes and exits); return its exit status and stderr."""
        try:
            _, err = self.proc.communicate(input="", timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=10)
        return self.proc.returncode, err


@pytest.fixture
def apps(local_server: LocalServer) -> Iterator[tuple[str, list[str], _App, _App]]:
    """A task with v1 active and v2 labelled staging; a staging and a production process."""
    name = f"staging-{uuid.uuid4().hex[:10]}"
    with CTClient(base_url=local_server.base_url, api_key=local_server.api_key) as admin:
        admin.create_task(name, prompt_text="v1: {{ x }}")
        ids = [str(admin.get_prompt(name).id)]
        ids += [str(admin.create_prompt_version(name, f"v{n}: {{{{ x }}}}").id) for n in (2, 3)]
        admin.set_label(name, "staging", ids[1])
    staging = _App(local_server, name, KAIZEN_PROMPT_LABEL="staging")
    production = _App(local_server, name)
    try:
        yield name, ids, staging, production
    finally:
        for app in (staging, production):
            status, err = app.close()
            assert status == 0, err


def test_a_moved_label_reaches_the_running_staging_process(
    local_server: LocalServer, apps: tuple[str, list[str], _App, _App]
) -> None:
    name, ids, staging, production = apps
    before = staging.call()
    assert (before["decorated"], before["served"]) == ("v2: a", "v2: a")
    live = production.call()
    assert (live["decorated"], live["served"]) == ("v1: a", "v1: a")

    with CTClient(base_url=local_server.base_url, api_key=local_server.api_key) as admin:
        admin.set_label(name, "staging", ids[2])  # moved by another process
    moved = time.monotonic()
    seen = staging.call()
    while seen["decorated"] != "v3: a" and time.monotonic() - moved < DEADLINE:
        time.sleep(0.02)  # a poll step
        seen = staging.call()
    took = time.monotonic() - moved
    print(f"\nthe move reached the staging process after {took:.2f} s"
          f" (revalidation interval {REFRESH} s)")

    assert (seen["decorated"], seen["served"]) == ("v3: a", "v3: a"), f"not within {DEADLINE} s"
    assert seen["pid"] == before["pid"]  # the same running process
    assert seen["changed"] == 1  # brought by one background revalidation that changed it
    # The production process revalidated after the move and still serves production.
    first = production.call()["requests"]
    while (after := production.call())["requests"] < first + 2:
        assert time.monotonic() - moved < 2 * DEADLINE, "production stopped revalidating"
        time.sleep(0.02)  # a poll step
    assert (after["decorated"], after["served"], after["changed"]) == ("v1: a", "v1: a", 0)
    assert after["pid"] == live["pid"]
