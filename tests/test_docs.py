"""The documentation cannot rot: every ```python sample in docs/*.md runs against a local server.

Per page, the blocks run in order in one fresh namespace, as a reader pasting them into one
interpreter would, with ``KAIZEN_API_KEY``/``KAIZEN_BASE_URL`` pointing at a fresh local CT
server (so pages do not depend on each other or on other tests' data). A block right after an
HTML comment ``<!-- no-run -->`` is skipped: keep that for samples that need something the test
machine cannot have, such as a real OpenAI key. The site itself must build with
``mkdocs build --strict``, load nothing from another host, and its API reference must show
only public names.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import html
import importlib.util
import inspect
import logging
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Iterator
from html.parser import HTMLParser
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
        for name in instrument._SUPPORTED:  # every library a page may have instrumented
            module = sys.modules.get(name)
            if module is not None and instrument.instrumented(module):
                instrument.uninstrument(module)


@pytest.fixture
def page_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A fresh local CT server for one page, with the environment pointing at it."""
    from kaizen_server import LocalServer

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
    from kaizen_server import settings  # the server's own variables are named there

    defined = {*_config.__all__, *settings.__all__}
    names = [n for n in defined if n.startswith(("KAIZEN_", "OTEL_"))]
    page = (DOCS / "configuration.md").read_text(encoding="utf-8")
    rows = {m.group(1) for m in re.finditer(r"^\|\s*`([A-Z_]+)`\s*\|", page, re.M)}
    assert sorted(rows) == sorted(names)


@pytest.mark.unit
def test_samples_never_import_the_repos_tests() -> None:
    """A reader has the package, not this repository's tests/ folder."""
    imports = re.compile(r"^\s*(from|import)\s+(tests|conftest)\b", re.M)
    offending = [
        f"{b.page}:{b.line}"
        for page in _pages()
        for b in extract_blocks(page.read_text(encoding="utf-8"), page.name)
        if imports.search(b.code)
    ]
    assert offending == []


SECTIONS = ["Get started", "Guides", "Integrations", "Reference", "Operations"]


@pytest.mark.unit
def test_nav_has_the_sections_and_every_page_once() -> None:
    import yaml  # type: ignore[import-untyped]  # a dependency of mkdocs

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    nav = config["nav"]
    assert [next(iter(entry)) for entry in nav] == SECTIONS
    pages = [
        page
        for entry in nav
        for section in entry.values()
        for item in section
        for page in item.values()
    ]
    assert sorted(pages) == sorted(p.name for p in _pages())


needs_mkdocs = pytest.mark.skipif(
    importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("material") is None,
    reason="the docs extra (mkdocs, mkdocs-material) is not installed",
)


# The tests of the built site share one build (the `site` fixture, ~15 s): `slow` starts
# this file early (tests/conftest.py).
on_the_site = pytest.mark.slow


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site built once for this module, with ``mkdocs build --strict``."""
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_COLOR": "1", "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "wbr"}
_HEADINGS = {"h1", "h2", "h3", "h4", "h5", "h6"}
_ASSET_RELS = {"stylesheet", "preload", "modulepreload", "prefetch", "preconnect", "icon"}


class _Tags(HTMLParser):
    """Collect a page's script/style URLs, and the text of each heading and signature."""

    def __init__(self) -> None:
        super().__init__()
        self.assets: list[str] = []
        self.names: list[str] = []
        self._depth = 0  # > 0 while inside a heading or an API signature
        self._text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "script" and values.get("src"):
            self.assets.append(values["src"])
        if tag == "link" and _ASSET_RELS & set(values.get("rel", "").split()):
            self.assets.append(values.get("href", ""))
        if self._depth:
            self._depth += tag not in _VOID
        elif tag in _HEADINGS or "doc-signature" in values.get("class", "").split():
            self._depth, self._text = 1, ""

    def handle_endtag(self, tag: str) -> None:
        if self._depth and tag not in _VOID:
            self._depth -= 1
            if not self._depth:
                self.names.append(self._text)

    def handle_data(self, data: str) -> None:
        if self._depth:
            self._text += data


def _parse(page: Path) -> _Tags:
    tags = _Tags()
    tags.feed(page.read_text(encoding="utf-8"))
    tags.close()
    return tags


_EXTERNAL = re.compile(r"^(https?:)?//", re.I)


@needs_mkdocs
@on_the_site
def test_mkdocs_build_strict(site: Path) -> None:
    assert (site / "api" / "index.html").is_file()
    built = {p.parent.name for p in site.glob("*/index.html")}
    assert built >= {p.stem for p in _pages() if p.stem != "index"}


@needs_mkdocs
@on_the_site
def test_site_loads_no_script_or_style_from_another_host(site: Path) -> None:
    """Offline highlighting and fonts: every script and stylesheet is part of the site."""
    pages = sorted(site.rglob("*.html"))
    assets = [(p.relative_to(site), url) for p in pages for url in _parse(p).assets]
    assert len(pages) > len(_pages()) and assets, "nothing parsed"
    assert [a for a in assets if _EXTERNAL.match(a[1])] == []
    css_refs = re.compile(r"@import\s+(?:url\()?\s*['\"]?([^'\")\s;]+)|url\(\s*['\"]?([^'\")]+)")
    external_css = [
        (css.name, ref)
        for css in site.rglob("*.css")
        for match in css_refs.finditer(css.read_text(encoding="utf-8"))
        for ref in match.groups()
        if ref and _EXTERNAL.match(ref)
    ]
    assert external_css == []
    highlighted = (site / "quickstart" / "index.html").read_text(encoding="utf-8")
    assert '<span class="kn">import</span>' in highlighted  # Pygments ran at build time


@needs_mkdocs
@on_the_site
def test_api_reference_shows_only_public_names(site: Path) -> None:
    page = site / "api" / "index.html"
    text = html.unescape(re.sub(r"<[^>]+>", "", page.read_text(encoding="utf-8")))
    for literal in ("_Decorator", "Example::", "client: Any", "_TaskSpec"):
        assert literal not in text, f"{literal!r} in the API reference"
    tags = _parse(page)
    assert len(tags.names) > 100, "no headings or signatures found"
    private = re.compile(r"(?<![\w.])_[A-Za-z]\w*")
    leaks = sorted({m.group() for name in tags.names for m in private.finditer(name)})
    assert leaks == []
    # Permalinks too: `kaizen_sdk.configure`, not the private module that defines it.
    anchors = re.findall(r'id="(kaizen_sdk\.[\w.]+)"', page.read_text(encoding="utf-8"))
    assert [a for a in anchors if "._" in a] == []


@needs_mkdocs
@on_the_site
def test_api_reference_documents_every_public_name_and_fn_call(site: Path) -> None:
    import kaizen_sdk

    page = (site / "api" / "index.html").read_text(encoding="utf-8")
    anchors = set(re.findall(r'id="(kaizen_sdk\.[\w.]+)"', page))
    public = [n for n in kaizen_sdk.__all__ if n != "__version__"]
    missing = [n for n in public if not any(a.endswith("." + n) for a in anchors)]
    assert missing == []
    assert "kaizen_sdk.decorators.TaskFunction.call" in anchors
    assert "kaizen_sdk.decorators.AsyncTaskFunction.call" in anchors
