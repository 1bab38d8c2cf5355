"""The documentation cannot rot: every ```python sample in docs/*.md runs against a local server.

Per page, the blocks run in order in one fresh namespace, as a reader pasting them into one
interpreter would, with ``KAIZEN_API_KEY``/``KAIZEN_BASE_URL`` pointing at a fresh local CT
server (so pages do not depend on each other or on other tests' data). A block right after an
HTML comment ``<!-- no-run -->`` is skipped: keep that for samples that need something the test
machine cannot have, such as a real OpenAI key. The site itself must build with
``mkdocs build --strict``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import importlib.util
import inspect
import logging
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
NO_RUN = "<!-- no-run -->"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n`]*)$")


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: str
    line: int  # 1-based line of the first code line
    lang: str
    code: str
    run: bool


def extract_blocks(text: str, page: str = "<page>") -> list[Block]:
    """Return every fenced block of a Markdown text, in order, with its no-run flag."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        fence, indent = match.group("fence"), match.group("indent")
        info = match.group("info").strip()
        lang = info.split()[0].lower() if info else ""
        previous = next((ln.strip() for ln in reversed(lines[:i]) if ln.strip()), "")
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            close = lines[j].strip()
            if close.startswith(fence[0] * len(fence)) and not close.strip(fence[0]):
                break
            line = lines[j]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            j += 1
        blocks.append(
            Block(page, i + 2, lang, "\n".join(body) + "\n", run=previous != NO_RUN)
        )
        i = j + 1
    return blocks


def _pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def _runnable(page: Path) -> list[Block]:
    blocks = extract_blocks(page.read_text(encoding="utf-8"), page.name)
    return [b for b in blocks if b.lang in ("python", "py") and b.run]


PAGES_WITH_SAMPLES = [p for p in _pages() if _runnable(p)]


def _reset_sdk() -> None:
    """Undo process-wide SDK state a page may have set up (default client, patches)."""
    default = sys.modules.get("kaizen_sdk._default")
    if default is not None:
        client = default._client
        default._client = None  # the next page builds its own from its environment
        if client is not None:
            client.close()
    instrument = sys.modules.get("kaizen_sdk.instrument")
    if instrument is not None:
        for name in ("openai", "litellm"):
            module = sys.modules.get(name)
            if module is not None and instrument.instrumented(module):
                instrument.uninstrument(module)


@pytest.fixture
def page_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fresh local CT server for one page, with the environment pointing at it."""
    from kaizen_sdk.local import LocalServer

    sdk_logger = logging.getLogger("kaizen_sdk")
    level, handlers = sdk_logger.level, list(sdk_logger.handlers)
    _reset_sdk()
    with LocalServer() as server:
        monkeypatch.setenv("KAIZEN_API_KEY", server.api_key)
        monkeypatch.setenv("KAIZEN_BASE_URL", server.base_url)
        try:
            yield server
        finally:
            _reset_sdk()
            sdk_logger.setLevel(level)  # a page may turn on debug logging
            sdk_logger.handlers[:] = handlers


@pytest.mark.e2e
@pytest.mark.parametrize("page", PAGES_WITH_SAMPLES, ids=lambda p: p.name)
def test_samples_run(page: Path, page_server: Any) -> None:
    namespace: dict[str, Any] = {"__name__": "__main__", "__file__": str(page)}
    try:
        for block in _runnable(page):
            # Pad so tracebacks point at the line of the .md file.
            source = "\n" * (block.line - 1) + block.code
            code = compile(source, f"docs/{page.name}", "exec")
            try:
                exec(code, namespace)
            except BaseException as exc:
                raise AssertionError(
                    f"docs/{page.name}:{block.line}: sample failed: {type(exc).__name__}: {exc}"
                ) from exc
    finally:
        _close_llm_clients(namespace)


def _close_llm_clients(namespace: dict[str, Any]) -> None:
    """Close the LLM clients a page made, and the ones litellm caches for itself.

    Left open, their keep-alive sockets are collected at some later point, in whichever test
    is running then, as a ResourceWarning (an error under ``filterwarnings = error``).
    """
    made = list(namespace.values())
    cache = getattr(sys.modules.get("litellm"), "in_memory_llm_clients_cache", None)
    cached = getattr(cache, "cache_dict", None)
    if isinstance(cached, dict):
        made += list(cached.values())
        cached.clear()
    for value in made:
        if not type(value).__module__.startswith(("openai", "httpx")):
            continue
        close = getattr(value, "close", None)
        if callable(close) and not inspect.iscoroutinefunction(close):
            with contextlib.suppress(Exception):
                close()
    with warnings.catch_warnings():  # what is left (async clients) is collected here, now
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.mark.unit
def test_extract_blocks_handles_no_run_and_languages() -> None:
    text = "\n".join(
        [
            "# Title",
            "```python",
            "x = 1",
            "```",
            "",
            NO_RUN,
            "",
            "```python",
            "import secret_thing",
            "```",
            "```bash",
            "kaizen tasks list",
            "```",
            "- item",
            "",
            "    ```python",
            "    y = x + 1",
            "    ```",
        ]
    )
    blocks = extract_blocks(text, "t.md")
    assert [(b.lang, b.line, b.run) for b in blocks] == [
        ("python", 3, True),
        ("python", 9, False),
        ("bash", 12, True),
        ("python", 17, True),
    ]
    assert blocks[0].code == "x = 1\n"
    assert blocks[3].code == "y = x + 1\n"


@pytest.mark.unit
def test_docs_have_samples_and_few_are_skipped() -> None:
    blocks = [
        b
        for page in _pages()
        for b in extract_blocks(page.read_text(encoding="utf-8"), page.name)
        if b.lang in ("python", "py")
    ]
    skipped = [f"{b.page}:{b.line}" for b in blocks if not b.run]
    assert len(blocks) >= 10, "the docs should show runnable Python samples"
    assert len(skipped) <= len(blocks) // 4, f"too many no-run samples: {skipped}"


@pytest.mark.unit
def test_configuration_page_lists_every_variable() -> None:
    from kaizen_sdk import _config

    names = [n for n in _config.__all__ if n.startswith(("KAIZEN_", "OTEL_"))]
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    rows = {m.group(1) for m in re.finditer(r"^\|\s*`([A-Z_]+)`\s*\|", page, re.M)}
    assert sorted(rows) == sorted(names)


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs not installed")
def test_mkdocs_build_strict(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert (tmp_path / "site" / "api" / "index.html").is_file()
