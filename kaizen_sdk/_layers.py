"""The module graph of kaizen_sdk and kaizen_server, and the four rules they must keep.

Run ``python -m kaizen_sdk._layers`` to print every module with its layer and what it imports,
then the rule breaks; the exit status is 1 when there is any. The server package is read from
its installed (or ``server/``) directory when there is one. It reads the source with `ast`
only (nothing is imported), so it works on a broken tree too. An import is one of three kinds:

- ``runtime`` (``->``): at module level, run when the module is imported;
- ``lazy`` (``~>``): inside a function, run when the function first runs;
- ``type`` (``..>``): under ``if TYPE_CHECKING:``, never run.

The rules:

1. **No import cycle** through runtime and lazy edges. The one sanctioned exception is
   `ALLOWED_UPWARD`: ``CTClient.task`` (and its async mirror) lazily imports the decorator
   module, a documented convenience that sits above the client.
2. **No private name across modules**: neither ``from kaizen_sdk.x import _name`` nor
   ``x._name`` on an imported kaizen_sdk module. Private *modules* are fine, as in httpx:
   ``_http`` is private, the names inside it are public.
3. **Layers**: a module imports only from its own layer or below (`LAYERS` for the SDK,
   `SERVER_LAYERS` for the server, lowest first); a package facade (``__init__``) sits on top
   and nothing of its package imports it.
4. **The boundary**: the SDK never imports the server (but the deprecated shim
   ``kaizen_sdk.local``, `ALLOWED_SERVER_IMPORTS`; the CLI finds the server's commands through
   entry points); the server imports only public SDK modules (no ``_`` part in the name), and
   rule 2 keeps it to their public names.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

__all__ = [
    "ALLOWED_SERVER_IMPORTS",
    "ALLOWED_UPWARD",
    "LAYERS",
    "PACKAGE",
    "SERVER_LAYERS",
    "SERVER_PACKAGE",
    "Edge",
    "Graph",
    "PrivateUse",
    "boundary_violations",
    "cycles",
    "layer_of",
    "layer_violations",
    "main",
    "scan",
]

Kind = Literal["runtime", "lazy", "type"]

PACKAGE = "kaizen_sdk"
"""The package this checker reads: the directory this module lives in."""

SERVER_PACKAGE = "kaizen_server"
"""The server's package (the kaizen-server distribution, ``server/`` in the repository)."""

LAYERS: tuple[tuple[str, ...], ...] = (
    # 0. leaves: names, errors, settings, wire types
    ("_version", "errors", "_config", "_template", "_recipe", "templates", "models", "_httpx_cli"),
    # 1. tools without I/O policy of their own: cache, HTTP vocabulary, TLS, spool, the
    #    record and current call, safe JSON, the caller's context, records into requests
    ("cache", "_tls", "_http", "_spool", "_record", "_sdk_spans", "_safe_json", "_context",
     "_requests"),
    # 2. the background engine, its HTTP sender, the tracer pipeline around it, prompt
    #    fetching and choosing
    ("_sender", "delivery", "tracing", "_prompts", "_rollout"),
    # 3. the clients (they own a pipeline and read its stats)
    ("client", "async_client"),
    # 4. the process-wide default client
    ("_default",),
    # 5. what users put on their code
    ("decorators", "instrument", "integrations", "_served"),
    # 6. programs built on the SDK
    ("cli", "local", "_layers", "_job_report", "_cost_report", "reports"),
)
"""Module groups, lowest first, by name below ``kaizen_sdk`` (a package stands for its
modules). A module may import its own layer and the layers below it."""

ALLOWED_UPWARD: frozenset[tuple[str, str, str]] = frozenset(
    {
        ("kaizen_sdk.client", "kaizen_sdk.decorators", "CTClient.task"),
        ("kaizen_sdk.async_client", "kaizen_sdk.decorators", "AsyncCTClient.task"),
    }
)
"""(importer, imported, function) of the lazy imports allowed to go up a layer and close a
cycle: the convenience method ``client.task(...)`` documented in docs/tasks.md."""

SERVER_LAYERS: tuple[tuple[str, ...], ...] = (
    # 0. names: the version, the environment variables
    ("_version", "settings", "scrub"),
    # 1. every upstream call (deadline, size cap, cancel); the LLM endpoint and its prices
    ("outbound", "llm"),
    # 2. optimizers and judges (the judge reads the optimizer's examples, the DSPy optimizer
    #    judges its candidates)
    ("optimize", "evaluate"),
    # 3. the rules: keys, rollouts, task settings
    ("domain",),
    # 4. storage
    ("storage",),
    # 5. the job worker and the pull requests it opens
    ("jobs",),
    # 6. what each route means, and the web UI's pages over the same operations
    ("api", "ui"),
    # 7. HTTP and LocalServer
    ("http",),
    # 8. programs: the demo, the kaizen commands
    ("demo", "commands"),
)
"""The server's module groups, lowest first, by name below ``kaizen_server``."""

ALLOWED_SERVER_IMPORTS: frozenset[str] = frozenset({"kaizen_sdk.local"})
"""SDK modules allowed to import the server: the deprecated shim, for one release."""

_MARK: dict[Kind, str] = {"runtime": "->", "lazy": "~>", "type": "..>"}


@dataclass(frozen=True)
class Edge:
    """One import of a kaizen_sdk module by another, where it is and of which kind."""

    source: str
    target: str
    kind: Kind
    line: int
    scope: str = ""
    """The qualified name of the function holding a lazy import ("" at module level)."""

    def __str__(self) -> str:
        where = f" in {self.scope}" if self.scope else ""
        return f"{self.source}:{self.line} {_MARK[self.kind]} {self.target}{where}"


@dataclass(frozen=True)
class PrivateUse:
    """A ``_name`` of one kaizen_sdk module used by another."""

    source: str
    line: int
    target: str
    name: str
    how: Literal["import", "attribute"]

    def __str__(self) -> str:
        verb = "imports" if self.how == "import" else "reaches"
        return f"{self.source}:{self.line} {verb} {self.target}.{self.name}"


@dataclass
class Graph:
    """The modules of the package and every import between them."""

    modules: list[str]
    edges: list[Edge] = field(default_factory=list)
    private: list[PrivateUse] = field(default_factory=list)

    def imports_of(self, module: str) -> list[Edge]:
        """The edges leaving *module*, in source order."""
        return [e for e in self.edges if e.source == module]


# --- reading the source ------------------------------------------------------------------


def _module_names(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under *root* (the package directory)."""
    names: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Reader(ast.NodeVisitor):
    """Collects the kaizen_sdk imports of one module and its private reach-ins."""

    def __init__(self, module: str, is_package: bool, known: set[str]) -> None:
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.known = known
        self.edges: list[Edge] = []
        self.private: list[PrivateUse] = []
        self.aliases: dict[str, str] = {}  # local name -> kaizen_sdk module it is bound to
        self._scope: list[str] = []
        self._functions = 0
        self._type_only = 0

    # where we are
    def _kind(self) -> Kind:
        if self._type_only:
            return "type"
        return "lazy" if self._functions else "runtime"

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self._type_only += 1
            for child in node.body:
                self.visit(child)
            self._type_only -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def _visit_function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for deco in node.decorator_list:  # decorators run where the function is defined
            self.visit(deco)
        self._scope.append(node.name)
        self._functions += 1
        for child in node.body:
            self.visit(child)
        self._functions -= 1
        self._scope.pop()

    visit_FunctionDef = _visit_function
    visit_AsyncFunctionDef = _visit_function

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._scope.append(node.name)
        self.generic_visit(node)
        self._scope.pop()

    # the imports
    def _edge(self, target: str, line: int) -> None:
        scope = ".".join(self._scope) if self._functions else ""
        self.edges.append(Edge(self.module, target, self._kind(), line, scope))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name not in self.known:
                continue
            self._edge(alias.name, node.lineno)
            if alias.asname:
                self.aliases[alias.asname] = alias.name
            elif "." not in alias.name:
                self.aliases[alias.name] = alias.name

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = node.module or ""
        if node.level:
            anchor = self.package.split(".")
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, *([base] if base else [])])
        if _package_of(base) is None:
            return
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            if sub in self.known:  # `from kaizen_sdk import delivery`: a module
                self._edge(sub, node.lineno)
                self.aliases[alias.asname or alias.name] = sub
                continue
            self._edge(base, node.lineno)
            if _private(alias.name) and base != self.module:
                self.private.append(PrivateUse(self.module, node.lineno, base, alias.name,
                                               "import"))

    # reach-ins: `delivery._live()` where `delivery` is an imported kaizen_sdk module
    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.value, ast.Name) and _private(node.attr):
            target = self.aliases.get(node.value.id)
            if target is not None and target != self.module:
                self.private.append(PrivateUse(self.module, node.lineno, target, node.attr,
                                               "attribute"))
        self.generic_visit(node)


def _package_of(module: str) -> str | None:
    """`PACKAGE` or `SERVER_PACKAGE` when *module* is one of theirs, else None."""
    top = module.split(".")[0]
    return top if top in (PACKAGE, SERVER_PACKAGE) else None


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def server_root() -> Path | None:
    """The directory of the ``kaizen_server`` package: installed, else ``server/`` beside this
    package in a checkout; None when there is neither (nothing is imported to find it)."""
    import importlib.util

    spec = importlib.util.find_spec(SERVER_PACKAGE)
    if spec is not None and spec.origin is not None:
        return Path(spec.origin).resolve().parent
    here = Path(__file__).resolve().parent.parent / "server" / SERVER_PACKAGE
    return here if (here / "__init__.py").is_file() else None


def scan(root: Path | None = None, server: Path | None = None) -> Graph:
    """Read every module of the package at *root* and of the server package at *server* into
    one `Graph` (default: this package and `server_root`; a *root* given alone is read alone)."""
    if root is None:
        root, server = Path(__file__).resolve().parent, server or server_root()
    files = _module_names(root)
    if server is not None:
        files.update(_module_names(server))
    known = set(files)
    graph = Graph(modules=sorted(files))
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        reader = _Reader(name, path.name == "__init__.py", known)
        reader.visit(tree)
        graph.edges += reader.edges
        graph.private += reader.private
    return graph


# --- the rules ---------------------------------------------------------------------------


def _running_edges(graph: Graph, allowed: frozenset[tuple[str, str, str]]) -> Iterator[Edge]:
    for e in graph.edges:
        if e.kind != "type" and e.source != e.target and (
            (e.source, e.target, e.scope) not in allowed
        ):
            yield e


def cycles(
    graph: Graph, allowed: frozenset[tuple[str, str, str]] = ALLOWED_UPWARD
) -> list[list[str]]:
    """Import cycles through runtime and lazy edges but the *allowed* ones, each as a closed
    path ``[a, b, ..., a]``; one path per strongly connected group."""
    succ: dict[str, list[str]] = {m: [] for m in graph.modules}
    for e in _running_edges(graph, allowed):
        if e.target not in succ[e.source]:
            succ[e.source].append(e.target)
    # Tarjan's strongly connected components, iterative (no recursion limit to meet).
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for start in graph.modules:
        if start in index:
            continue
        work: list[tuple[str, int]] = [(start, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            if i < len(succ[node]):
                work.append((node, i + 1))
                nxt = succ[node][i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                group: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(group)
    return [_path_within(sorted(g), succ) for g in groups]


def _path_within(group: list[str], succ: dict[str, list[str]]) -> list[str]:
    """A shortest closed path from the group's first member back to itself, inside the group."""
    start, members = group[0], set(group)
    came: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt_frontier: list[str] = []
        for node in frontier:
            for nxt in succ[node]:
                if nxt == start:
                    path = [start]
                    while node != start:
                        path.insert(1, node)
                        node = came[node]
                    return [*path, start]
                if nxt in members and nxt not in came:
                    came[nxt] = node
                    nxt_frontier.append(nxt)
        frontier = nxt_frontier
    return [*group, start]  # unreachable for a real strongly connected group


def layer_of(module: str) -> int | None:
    """The index in `LAYERS` (`SERVER_LAYERS` for a server module) of *module*; the length of
    the table for the facade, None if unlisted."""
    package = _package_of(module)
    layers = SERVER_LAYERS if package == SERVER_PACKAGE else LAYERS
    if module == package:
        return len(layers)
    if package is None:
        return None
    head = module.removeprefix(package + ".").split(".")[0]
    for i, names in enumerate(layers):
        if head in names:
            return i
    return None


def layer_violations(
    graph: Graph, allowed: frozenset[tuple[str, str, str]] = ALLOWED_UPWARD
) -> list[Edge | str]:
    """Running edges into a higher layer but the *allowed* ones, and (as text) modules that
    no layer lists."""
    out: list[Edge | str] = [
        f"{m} is in no layer: add it to kaizen_sdk._layers."
        f"{'SERVER_LAYERS' if _package_of(m) == SERVER_PACKAGE else 'LAYERS'}"
        for m in graph.modules if layer_of(m) is None
    ]
    for e in _running_edges(graph, allowed):
        if _package_of(e.source) != _package_of(e.target):
            continue  # across the boundary: `boundary_violations`
        low, high = layer_of(e.source), layer_of(e.target)
        if low is not None and high is not None and high > low:
            out.append(e)
    return out


def boundary_violations(
    graph: Graph, allowed: frozenset[str] = ALLOWED_SERVER_IMPORTS
) -> list[Edge]:
    """Imports across the boundary, of any kind: an SDK module (but the *allowed*) importing
    the server, or a server module importing an SDK module with a private part in its name."""
    out: list[Edge] = []
    for e in graph.edges:
        source, target = _package_of(e.source), _package_of(e.target)
        sdk_to_server = source == PACKAGE and target == SERVER_PACKAGE
        server_to_sdk = source == SERVER_PACKAGE and target == PACKAGE
        if (sdk_to_server and e.source not in allowed) or (
            server_to_sdk and any(_private(part) for part in e.target.split("."))
        ):
            out.append(e)
    return out


# --- the command -------------------------------------------------------------------------


def _report(graph: Graph) -> tuple[list[str], int]:
    lines = ["kaizen_sdk and kaizen_server module graph ('->' runtime, '~>' lazy, "
             "'..>' TYPE_CHECKING only)", ""]
    for module in graph.modules:
        layer = layer_of(module)
        lines.append(f"{module}  [layer {'?' if layer is None else layer}]")
        seen: set[tuple[str, Kind]] = set()
        for e in graph.imports_of(module):
            if (e.target, e.kind) in seen or e.target == module:
                continue
            seen.add((e.target, e.kind))
            where = f"  (in {e.scope})" if e.scope else ""
            lines.append(f"    {_MARK[e.kind]} {e.target}{where}")
    found = cycles(graph)
    layered = layer_violations(graph)
    crossing = boundary_violations(graph)
    problems = len(found) + len(graph.private) + len(layered) + len(crossing)
    lines += ["", f"import cycles (runtime and lazy edges): {len(found)}"]
    lines += [f"    {' -> '.join(c)}" for c in found]
    lines += [f"private names used across modules: {len(graph.private)}"]
    lines += [f"    {p}" for p in graph.private]
    lines += [f"imports into a higher layer: {len(layered)}"]
    lines += [f"    {v}" for v in layered]
    lines += [f"imports across the SDK/server boundary: {len(crossing)}"]
    lines += [f"    {c}" for c in crossing]
    return lines, problems


def main(argv: Sequence[str] | None = None) -> int:
    """Print the module graph and the rule breaks; return 1 if there are any, else 0."""
    parser = argparse.ArgumentParser(prog="python -m kaizen_sdk._layers",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--root", type=Path, default=None,
                        help="the package directory to read (default: the installed kaizen_sdk "
                             "and kaizen_server)")
    parser.add_argument("--server", type=Path, default=None,
                        help="the server package directory to read with --root")
    args = parser.parse_args(argv)
    lines, problems = _report(scan(args.root, args.server))
    print("\n".join(lines))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
