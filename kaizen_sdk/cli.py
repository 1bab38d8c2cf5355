"""The ``kaizen`` command line: run a local CT server, and explore or script any CT server.

Example::

    kaizen serve                                   # a local CT server on port 8000
    kaizen status                                  # server, key, each task's live version
    kaizen tasks                                   # a group alone lists
    kaizen optimize summarize_ticket --wait        # live progress, ends on the final status
    kaizen jobs get 5f0c... --json | jq .status

Commands that talk to a server read ``--api-key``/``--base-url``, else ``KAIZEN_API_KEY``/
``KAIZEN_BASE_URL``, and print an aligned table fitted to the terminal, or JSON with
``--json``. ``kaizen completion bash|zsh|fish`` prints a completion script. Exit status:
0 success, 1 failure (server or network error, a job that failed), 2 usage, 3 authentication,
4 not found; the error is one line on stderr, never a traceback, and never shows the API key.

``serve``, ``demo`` and ``eval`` come from kaizen-server (``pip install 'kaizen-sdk[server]'``)
through the `COMMAND_GROUP` entry points: ``kaizen --help`` lists them only when it is installed.

Each subcommand is one ``_cmd_<name>(args) -> int`` function (or, for commands that talk to a
server, a ``(client, args) -> int`` function wrapped by `_api`) plus one ``_add_<name>(sub)``
function that declares its arguments; `build_parser` registers them from `_SUBCOMMANDS`.
To add a subcommand, write both functions and append the pair there.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from kaizen_sdk._version import __version__
from kaizen_sdk.errors import CTAuthError, CTConnectionError, CTError, CTNotFoundError

if TYPE_CHECKING:
    from kaizen_sdk.client import CTClient
    from kaizen_sdk.models import Job

__all__ = [
    "COMMAND_GROUP",
    "DEFAULT_DB_PATH",
    "EXIT_AUTH",
    "EXIT_FAILURE",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
    "CLIError",
    "build_parser",
    "command_plugins",
    "emit",
    "format_fields",
    "format_table",
    "leaf_command",
    "main",
    "number",
    "terminal_width",
    "version_id",
]

DEFAULT_DB_PATH = os.path.join(".kaizen", "local.db")
"""Database of ``kaizen serve`` when ``--db`` is not given (relative to the current folder)."""

_MAX_LIMIT = 1000  # the largest page the CT API serves

EXIT_OK = 0
"""Exit status of a command that succeeded."""
EXIT_FAILURE = 1
"""Exit status of any failure not listed below (server, network, a failed job)."""
EXIT_USAGE = 2
"""Exit status of a usage error: unknown command, missing or malformed argument."""
EXIT_AUTH = 3
"""Exit status when no API key is set or the server rejects it (401/403)."""
EXIT_NOT_FOUND = 4
"""Exit status when the task, prompt version, job or trace does not exist (404)."""

_MAX_CELL = 60
_Command = Callable[[argparse.Namespace], int]
_ApiCommand = Callable[["CTClient", argparse.Namespace], int]


class CLIError(Exception):
    """A failure the CLI reports as one line, with its exit status."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        for name in (e for e in _SUBCOMMANDS if isinstance(e, str)):  # the server's commands
            if message.startswith(f"argument COMMAND: invalid choice: '{name}'"):
                message = (f"'{name}' is a command of the CT server, which is not installed: "
                           "pip install 'kaizen-sdk[server]'")
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --- formatting ----------------------------------------------------------------------------


def _age(value: datetime, now: datetime) -> str:
    """How long ago *value* was, in the largest whole unit: ``45s ago``, ``3h ago``."""
    seconds = (now - value).total_seconds()
    if seconds < 0:  # clocks disagree a little: the server's is ahead
        seconds = 0
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            if unit == "d" and seconds >= 30 * 86400:
                return value.strftime("%Y-%m-%d")
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def _cell(value: Any, max_width: int = _MAX_CELL, *, now: datetime | None = None) -> str:
    """Render one value for a table cell: short, single-line, ``-`` for nothing.

    With *now*, a time is shown as its age (``5m ago``), which keeps table rows narrow.
    """
    if value is None:
        text = "-"
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, datetime):
        if value.tzinfo is None:  # the CT API speaks UTC
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        text = _age(value, now) if now is not None else value.strftime("%Y-%m-%d %H:%M:%S")
    elif isinstance(value, (dict, list)):
        from kaizen_sdk.models import encode

        text = encode(value).decode()
    else:
        text = str(value)
    text = " ".join(text.split()) if ("\n" in text or "\t" in text) else text
    return _clip(text, max_width)


def _clip(text: str, width: int) -> str:
    """*text* cut to *width* characters, the last one an ellipsis when cut (0: no limit)."""
    if width and len(text) > width:
        return text[: width - 1] + "…"
    return text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def terminal_width() -> int | None:
    """Columns to fit tables into: ``COLUMNS``, else the terminal's; None when piped."""
    import shutil

    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    if not getattr(sys.stdout, "isatty", lambda: False)():
        return None  # a pipe or a file: whole values, for scripts
    return shutil.get_terminal_size().columns


_GAP = 2  # spaces between columns
_SHORT = 10  # values this long (states, models, ages) are cut only when nothing else helps
_MIN_CELL = 5  # a cut column keeps this many characters, the last one an ellipsis


def _fit(widths: list[int], floors: list[int], width: int) -> list[int]:
    """Narrow the widest columns above their floor, one character at a time, until they fit."""
    widths = list(widths)
    excess = sum(widths) + _GAP * (len(widths) - 1) - width
    while excess > 0:
        candidates = [i for i, w in enumerate(widths) if w > floors[i]]
        if not candidates:
            break
        widest = max(candidates, key=lambda i: (widths[i], i))  # ties: the rightmost
        widths[widest] -= 1
        excess -= 1
    return widths


def _layout(
    titles: list[str], widths: list[int], width: int, keep: Sequence[int],
    optional: Sequence[int],
) -> tuple[list[int], list[int]]:
    """The columns to show and their widths so that a row fits in *width* characters.

    Long values are cut first (ids in *keep* never), down to their header or `_SHORT`; if
    that is not enough the *optional* columns are left out in turn; last, short values and
    headers are cut too.
    """
    shown = list(range(len(titles)))
    dropping = [i for i in optional if i not in keep]
    while True:
        natural = [widths[i] for i in shown]
        floors = [w if i in keep else min(w, max(_SHORT, len(titles[i])))
                  for i, w in zip(shown, natural, strict=True)]
        fitted = _fit(natural, floors, width)
        if sum(fitted) + _GAP * (len(fitted) - 1) <= width:
            return shown, fitted
        if not dropping:
            break
        shown.remove(dropping.pop(0))
    floors = [w if i in keep else min(w, _MIN_CELL) for i, w in zip(shown, fitted, strict=True)]
    return shown, _fit(fitted, floors, width)


def format_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    max_width: int = _MAX_CELL,
    width: int | None = None,
    keep: Sequence[int] = (),
    optional: Sequence[int] = (),
    now: datetime | None = None,
) -> str:
    """Format rows as aligned columns under upper-case headers; numbers align right.

    With *width*, every line fits in *width* characters and no row wraps: long values are
    cut first (ending in ``…``), never those of the columns in *keep* (ids a user copies);
    then the *optional* columns are left out, in that order; then anything is cut. With
    *now*, times show as ages (``5m ago``).

    Example:

        >>> print(format_table(["name", "score"], [["a", 0.5], ["bb", 0.75]]))
        NAME  SCORE
        a       0.5
        bb     0.75
    """
    cells = [[_cell(v, max_width, now=now) for v in row] for row in rows]
    titles = [h.upper() for h in headers]
    widths = [max([len(t)] + [len(r[i]) for r in cells]) for i, t in enumerate(titles)]
    right = [
        bool(cells) and all(r[i] == "-" or _is_number(r[i]) for r in cells)
        and any(r[i] != "-" for r in cells)
        for i in range(len(titles))
    ]
    shown = list(range(len(titles)))
    if width is not None:
        shown, fitted = _layout(titles, widths, width, keep, optional)
        widths = [fitted[shown.index(i)] if i in shown else 0 for i in range(len(titles))]

    def line(values: Sequence[str]) -> str:
        parts = [
            _clip(values[i], widths[i]).rjust(widths[i]) if right[i]
            else _clip(values[i], widths[i]).ljust(widths[i])
            for i in shown
        ]
        text = (" " * _GAP).join(parts).rstrip()
        return text if width is None else _clip(text, width)  # nothing left to narrow

    return "\n".join([line(titles), *(line(r) for r in cells)])


def format_fields(pairs: Sequence[tuple[str, Any]]) -> str:
    """Format ``(name, value)`` pairs as an aligned two-column listing."""
    width = max((len(k) for k, _ in pairs), default=0)
    return "\n".join(f"{k.ljust(width)}  {_cell(v, 0)}".rstrip() for k, v in pairs)


def _struct_fields(obj: Any, skip: Sequence[str] = ()) -> list[tuple[str, Any]]:
    """The fields of a model, in declaration order (legacy ``name_`` aliases left out)."""
    return [
        (name, getattr(obj, name))
        for name in type(obj).__struct_fields__
        if name not in skip and not name.endswith("_")
    ]


def _write(text: str) -> None:
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _emit_json(value: Any) -> None:
    import msgspec

    from kaizen_sdk.models import encode

    _write(msgspec.json.format(encode(value), indent=2).decode())


def _emit(args: argparse.Namespace, value: Any, render: Callable[[Any], str]) -> None:
    """Print *value* as JSON with ``--json``, else as *render* formats it."""
    if args.json:
        _emit_json(value)
    else:
        _write(render(value))


def _detail(obj: Any, skip: Sequence[str] = ()) -> str:
    return format_fields(_struct_fields(obj, skip))


# --- renderers -------------------------------------------------------------------------------


def _table(
    headers: Sequence[str], rows: Sequence[Sequence[Any]], *, keep: Sequence[int] = (),
    optional: Sequence[int] = (),
) -> str:
    """A list command's table, fitted to the terminal, times shown as ages."""
    return format_table(headers, rows, width=terminal_width(), keep=keep, optional=optional,
                        now=datetime.now(timezone.utc))


def _tasks_table(tasks: Sequence[Any]) -> str:
    if not tasks:
        return "No tasks."
    rows = [
        [t.name, t.feedback_count,
         t.threshold_progress or f"?/{t.feedback_threshold}",
         t.active_prompt_score, t.last_optimization, t.created_at, t.id]
        for t in tasks
    ]
    # a task is addressed by its name, so the name stays whole and the id may shrink
    return _table(
        ["name", "feedback", "next job", "score", "optimized", "created", "id"], rows,
        keep=[0], optional=[6, 4],
    )


def _prompts_table(prompts: Sequence[Any]) -> str:
    if not prompts:
        return "No prompt versions."
    rows = [
        [p.version_number, p.status, p.optimizer, _score_cell(p), p.created_at,
         _content_hash(p.prompt_text), p.prompt_text]
        for p in prompts
    ]
    return _table(
        ["version", "status", "optimizer", "score", "created", "hash", "prompt"], rows,
        keep=[0, 5], optional=[2, 3],
    )


def _score_cell(p: Any) -> Any:
    """A version's score with what it was compared against: judged scores come from one
    job's sample and compare only with that job's baseline, never across versions."""
    baseline = getattr(p, "baseline_version", None)
    if p.eval_score is None or baseline is None:
        return p.eval_score
    base = getattr(p, "baseline_score", None)
    base_text = "?" if base is None else f"{base:.3f}"
    return (f"{p.eval_score:.3f} vs v{baseline} {base_text}"
            f" (n={getattr(p, 'eval_sample_size', None) or '?'}, {p.verdict or 'unjudged'})")


def _content_hash(text: str) -> str:
    """A short hash of a prompt text: equal texts, equal hashes (tells versions apart)."""
    import hashlib

    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def _prompt_detail(prompt: Any) -> str:
    head = format_fields(
        [(k, v) for k, v in _struct_fields(prompt)
         if k not in ("prompt_text", "messages", "config")]
    )
    return f"{head}\n\n{_recipe_text(prompt)}"


def _recipe_text(prompt: Any) -> str:
    """A version as people read it: its text (a chat version's messages under ``[role]``
    headers), then its settings one per line, sorted (what ``prompts diff`` compares)."""
    import msgspec

    config = getattr(prompt, "config", None)
    if not config:
        return str(prompt.prompt_text)
    settings = "\n".join(f"{k}: {msgspec.json.encode(config[k]).decode()}" for k in sorted(config))
    return f"{prompt.prompt_text}\n\n[settings]\n{settings}"


def _jobs_table(jobs: Sequence[Any]) -> str:
    if not jobs:
        return "No jobs."
    rows = [
        [j.id, j.status, j.progress_step, j.triggered_by, j.feedback_count, j.created_at,
         j.completed_at]
        for j in jobs
    ]
    return _table(
        ["id", "status", "step", "trigger", "feedback", "created", "completed"], rows,
        keep=[0], optional=[6, 4, 3],
    )


def _traces_table(traces: Sequence[Any]) -> str:
    if not traces:
        return "No traces."
    rows = [
        [t.id, t.model, t.tokens, t.latency_ms, t.score, t.scored_by, t.created_at,
         t.response_text]
        for t in traces
    ]
    return _table(
        ["id", "model", "tokens", "latency ms", "score", "scored by", "created", "response"],
        rows, keep=[0], optional=[5, 3, 2],
    )


def _feedback_table(entries: Sequence[Any]) -> str:
    if not entries:
        return "No feedback."
    rows = [[f.id, f.score, f.source, f.created_at, f.output] for f in entries]
    return _table(["id", "score", "source", "created", "output"], rows, keep=[0], optional=[2])


# --- argument types ----------------------------------------------------------------------------


def _score(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a score must be between 0 and 1, got {text}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _limit(text: str) -> int:
    value = _positive_int(text)
    if value > _MAX_LIMIT:
        raise argparse.ArgumentTypeError(
            f"must be at most {_MAX_LIMIT} (use --all for everything), got {text}"
        )
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def _json_object(text: str) -> dict[str, Any]:
    import msgspec

    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object, like '{\"key\": 1}'")
    return value


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


# --- the API commands ----------------------------------------------------------------------------


def _api(fn: _ApiCommand) -> _Command:
    """Wrap a command that talks to the CT server: build the client, close it after."""

    def handler(args: argparse.Namespace) -> int:
        from kaizen_sdk.client import CTClient

        api_key = args.api_key or os.environ.get("KAIZEN_API_KEY")
        if not api_key:
            raise CLIError(
                "no API key: pass --api-key or set the KAIZEN_API_KEY environment variable",
                EXIT_AUTH,
            )
        with CTClient(api_key=api_key, base_url=args.base_url or None) as client:
            return fn(client, args)

    return handler


def _tasks_list(client: CTClient, args: argparse.Namespace) -> int:
    _emit(args, client.list_tasks(), _tasks_table)
    return EXIT_OK


def _tasks_get(client: CTClient, args: argparse.Namespace) -> int:
    _emit(args, client.get_task(args.task), _detail)
    return EXIT_OK


def _tasks_costs(client: CTClient, args: argparse.Namespace) -> int:
    from kaizen_sdk._cost_report import costs_report

    costs = client.get_task_costs(args.task, days=args.days)
    _emit(args, costs, lambda c: costs_report(c, task=args.task))
    return EXIT_OK


def _tasks_create(client: CTClient, args: argparse.Namespace) -> int:
    extra = _given_settings(args, skip=("description", "schema_json", "feedback_threshold"))
    config = dict(extra.pop("evaluator_config", None) or {})
    for key in _CONFIG_KEYS:  # the shorthands go into evaluator_config on create
        if key in extra:
            config[key] = extra.pop(key)
    if config:
        extra["evaluator_config"] = config
    task = client.create_task(
        args.name,
        description=args.description,
        schema_json=args.schema_json,
        feedback_threshold=args.feedback_threshold,
        prompt_text=args.prompt_text,
        **extra,
    )
    _emit(args, task, _detail)
    return EXIT_OK


def _tasks_update(client: CTClient, args: argparse.Namespace) -> int:
    settings: dict[str, Any] = _given_settings(args)
    for name in args.unset or ():
        if name in settings:
            raise CLIError(f"--unset {name} and --{name.replace('_', '-')} contradict each other",
                           EXIT_USAGE)
        settings[name] = None
    if not settings:
        raise CLIError("nothing to change: give at least one setting (see kaizen tasks update "
                       "--help)", EXIT_USAGE)
    _emit(args, client.update_task(args.task, **settings), _detail)
    return EXIT_OK


def _prompts_get(client: CTClient, args: argparse.Namespace) -> int:
    prompt = client.get_prompt(args.task, label=args.label)
    if args.text and not args.json:
        _write(prompt.prompt_text)
    else:
        _emit(args, prompt, _prompt_detail)
    return EXIT_OK


def _prompts_show(client: CTClient, args: argparse.Namespace) -> int:
    if args.version is None:
        return _prompts_get(client, args)
    if args.label is not None:
        raise CLIError("give a VERSION or --label, not both", EXIT_USAGE)
    wanted = _version_id(client, args.task, args.version)
    found = next((p for p in client.list_prompt_versions(args.task) if str(p.id) == wanted), None)
    if found is None:
        raise CLIError(f"task {args.task!r} has no prompt version {args.version}", EXIT_NOT_FOUND)
    if args.text and not args.json:
        _write(found.prompt_text)
    else:
        _emit(args, found, _prompt_detail)
    return EXIT_OK


def _prompts_versions(client: CTClient, args: argparse.Namespace) -> int:
    _emit(args, client.list_prompt_versions(args.task), _prompts_table)
    return EXIT_OK


def _version_id(client: CTClient, task: str, version: str) -> str:
    """Accept a version's UUID, or its number (``3`` or ``v3``)."""
    number = version[1:] if version[:1] in ("v", "V") else version
    if not number.isdigit():
        return version
    for prompt in client.list_prompt_versions(task):
        if prompt.version_number == int(number) and prompt.id is not None:
            return str(prompt.id)
    raise CLIError(f"task {task!r} has no prompt version {int(number)}", EXIT_NOT_FOUND)


def _prompts_create(client: CTClient, args: argparse.Namespace) -> int:
    base = None
    if args.from_version is not None:
        wanted = _version_id(client, args.task, args.from_version)
        base = next((p for p in client.list_prompt_versions(args.task) if str(p.id) == wanted),
                    None)
        if base is None:
            raise CLIError(f"task {args.task!r} has no prompt version {args.from_version}",
                           EXIT_NOT_FOUND)
    text: str | None = None
    if args.file is not None:
        try:
            with open(args.file, encoding="utf-8") as handle:
                text = handle.read()
        except OSError as exc:
            raise CLIError(f"cannot read --file {args.file}: {exc.strerror}", EXIT_USAGE) from None
    elif args.text is not None:
        text = args.text
    elif base is None:
        raise CLIError("give --text, --file or --from VERSION", EXIT_USAGE)
    if text is not None and not text.strip():
        raise CLIError("the prompt text is empty", EXIT_USAGE)
    messages = None
    config = None if base is None else base.config
    if text is None and base is not None:  # --from: the version's text or messages, as they are
        text = None if base.messages is not None else base.prompt_text
        messages = base.messages
    if args.config is not None:
        config = {**(config or {}), **args.config}
    if args.model is not None:
        config = {**(config or {}), "model": args.model}
    prompt = client.create_prompt_version(
        args.task, text, activate=args.activate, messages=messages, config=config
    )
    _emit(args, prompt, _prompt_detail)
    return EXIT_OK


def _prompts_label(client: CTClient, args: argparse.Namespace) -> int:
    version = _version_id(client, args.task, args.version)
    _emit(args, client.set_label(args.task, args.label, version), _prompt_detail)
    return EXIT_OK


def _prompts_unlabel(client: CTClient, args: argparse.Namespace) -> int:
    _emit(args, client.remove_label(args.task, args.label), _prompt_detail)
    return EXIT_OK


def _prompts_diff(client: CTClient, args: argparse.Namespace) -> int:
    import difflib

    versions = client.list_prompt_versions(args.task)
    texts = []
    for given in (args.v1, args.v2):
        number = given[1:] if given[:1] in ("v", "V") else given
        found = next(
            (p for p in versions
             if (number.isdigit() and p.version_number == int(number)) or str(p.id) == given),
            None,
        )
        if found is None:
            raise CLIError(f"task {args.task!r} has no prompt version {given}", EXIT_NOT_FOUND)
        texts.append((f"v{found.version_number}", _recipe_text(found)))
    (a_name, a_text), (b_name, b_text) = texts
    diff = list(difflib.unified_diff(
        a_text.splitlines(keepends=True), b_text.splitlines(keepends=True),
        fromfile=f"{args.task} {a_name}", tofile=f"{args.task} {b_name}",
    ))
    if args.json:
        _emit_json({"from": a_name, "to": b_name, "same": not diff, "diff": "".join(diff)})
    elif not diff:
        _write(f"{a_name} and {b_name} have the same text and settings.")
    else:
        _write("".join(line if line.endswith("\n") else line + "\n" for line in diff))
    return EXIT_OK


def _prompts_activate(client: CTClient, args: argparse.Namespace) -> int:
    prompt = client.activate_prompt(args.task, _version_id(client, args.task, args.version))
    _emit(args, prompt, _prompt_detail)
    return EXIT_OK


def _feedback_log(client: CTClient, args: argparse.Namespace) -> int:
    inputs: dict[str, Any] | None = dict(args.inputs) if args.inputs is not None else None
    if args.input:
        inputs = {**(inputs or {}), **dict(args.input)}
    result = client.log_feedback(
        args.task,
        inputs=inputs,
        output=args.output,
        score=args.score,
        source=args.source,
        metadata=args.metadata,
    )
    _emit(args, result, _detail)
    return EXIT_OK


def _feedback_list(client: CTClient, args: argparse.Namespace) -> int:
    entries = list(client.iter_feedback(args.task)) if args.all else client.list_feedback(
        args.task, limit=args.limit
    )
    _emit(args, entries, _feedback_table)
    return EXIT_OK


class _Progress:
    """The live progress line of a job, on *stream*.

    On a terminal the line is rewritten in place and its elapsed timer ticks every *tick*
    seconds, also while the job stays on one step; elsewhere (a log, a pipe) it prints one
    plain line per change of status or step.
    """

    def __init__(
        self, stream: TextIO, *, tick: float = 0.2, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._stream = stream
        self._tty = bool(getattr(stream, "isatty", lambda: False)())
        self._tick = tick
        self._clock = clock
        self._start = clock()
        self._seen: tuple[str, str | None] | None = None
        self._job: Job | None = None
        self._open = False
        self._lock = threading.Lock()  # the ticker and the poller write the same line
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def __call__(self, job: Job) -> None:
        state = (job.status, job.progress_step)
        if state == self._seen:
            return
        self._seen = state
        with self._lock:
            self._job = job
            self._draw()
        if self._tty and self._ticker is None and not job.is_terminal:
            self._ticker = threading.Thread(target=self._run, name="kaizen-progress",
                                            daemon=True)
            self._ticker.start()

    def _draw(self) -> None:
        job = self._job
        if job is None:
            return
        elapsed = self._clock() - self._start
        step = f"  {job.progress_step}" if job.progress_step else ""
        line = f"job {job.id}  {job.status}{step}  [{elapsed:4.1f}s]"
        if self._tty:
            import shutil

            # a line longer than the terminal would wrap, and \r would only rewrite its end
            columns = shutil.get_terminal_size().columns - 1
            self._stream.write("\r\x1b[K" + _clip(line, max(columns, 20)))
            self._open = True
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def _run(self) -> None:
        while not self._stop.wait(self._tick):
            with self._lock:
                self._draw()

    def end(self) -> None:
        """Stop the timer and end the line (the last state stays on screen)."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        with self._lock:
            if self._open:
                self._stream.write("\n")
                self._stream.flush()
                self._open = False


def _wait(client: CTClient, job: Job, args: argparse.Namespace) -> Job:
    progress = _Progress(sys.stderr)
    progress(job)
    try:
        return client.wait_for_job(
            str(job.id),
            timeout=args.timeout,
            poll_interval=args.poll_interval,
            on_progress=progress,
        )
    except KeyboardInterrupt:
        progress.end()
        raise CLIError(
            f"interrupted; job {job.id} keeps running on the server "
            f"(follow it with: kaizen jobs watch {job.id})",
            130,
        ) from None
    finally:
        progress.end()


def _new_version(client: CTClient, job: Job) -> tuple[str, Any] | None:
    """The task name and the prompt version a job made, or None if they cannot be read."""
    try:
        task = client.get_task(str(job.task_id)).name
        versions = client.list_prompt_versions(task)
    except CTError:
        return None  # the line then names the version by id: less friendly, still true
    made = next((p for p in versions if p.id == job.prompt_version_id), None)
    return None if made is None else (task, made)


def _final_line(job: Job, client: CTClient | None = None) -> str:
    """What a finished job did, in words: the version it made and what to run next (only a
    candidate judged ``better`` is proposed for activation)."""
    from kaizen_sdk._job_report import next_step

    found = None
    if job.is_success and job.prompt_version_id is not None and client is not None:
        found = _new_version(client, job)
    task, version = found if found is not None else (None, None)
    return next_step(job, task, version)


def _fitted(line: str) -> str:
    """*line* wrapped to the terminal's width (whole when piped, for scripts)."""
    import textwrap

    width = terminal_width()
    if width is None:
        return line
    return textwrap.fill(line, max(40, width), break_long_words=False, break_on_hyphens=False)


def _report(job: Job) -> str:
    """The job's short report, fitted to the terminal (80 columns when piped)."""
    from kaizen_sdk._job_report import job_report

    return "\n".join(job_report(job, width=max(40, terminal_width() or 80)))


def _finish(client: CTClient, args: argparse.Namespace, job: Job, value: Any) -> int:
    """Print the final state of a waited-for job; a failed job exits with status 1."""
    if args.json:
        _emit_json(value)
    else:
        _write(_report(job))
        _write("")
        _write(_fitted(_final_line(job, client)))
    if job.is_success:
        return EXIT_OK
    raise CLIError(_final_line(job), EXIT_FAILURE)


def _optimize(client: CTClient, args: argparse.Namespace) -> int:
    import msgspec

    result = client.trigger_optimization(args.task)
    if not args.wait:
        _emit(args, result, _optimize_detail)
        return EXIT_OK
    if not args.json:
        # the job's status is the progress line's, redrawn in place while it changes: a
        # status here would stay on screen, stale, above it
        _write(_optimize_detail(result, status=False))
        _write("")
    sys.stdout.flush()
    job = _wait(client, result.job, args)
    return _finish(client, args, job, msgspec.structs.replace(result, job=job))


def _optimize_detail(result: Any, *, status: bool = True) -> str:
    cost = result.cost_estimate
    pairs: list[tuple[str, Any]] = [
        ("job", result.job.id),
        *([("status", result.job.status)] if status else []),
        ("estimated cost", f"${cost.estimated_cost_usd:.4f}"),
        ("estimated LLM calls", cost.estimated_llm_calls),
        ("train / val size", f"{cost.train_size} / {cost.val_size}"),
    ]
    if result.budget_warning:
        pairs.append(("budget warning", result.budget_warning))
    return format_fields(pairs)


def _jobs_get(client: CTClient, args: argparse.Namespace) -> int:
    job = client.get_job(args.job)
    if args.calls:
        calls = list(client.iter_job_calls(args.job))
        if args.json:
            _emit_json(calls)
            return EXIT_OK
        _write(_table(["#", "model", "purpose", "in", "out", "cost", "charged", "retries"],
                      [[i, c.model, c.purpose, c.input_tokens, c.output_tokens,
                        f"{c.cost_usd:.6f}", f"{c.charged_usd:.6f}", c.retries]
                       for i, c in enumerate(calls, start=1)]) if calls else "No LLM calls.")
        return EXIT_OK
    if args.json:
        _emit_json(job)
    else:
        _write(_report(job))
        if job.is_terminal:
            _write(_fitted(_final_line(job, client)))
    return EXIT_OK


def _jobs_list(client: CTClient, args: argparse.Namespace) -> int:
    jobs = list(client.iter_jobs(args.task)) if args.all else client.list_jobs(
        args.task, limit=args.limit
    )
    _emit(args, jobs, _jobs_table)
    return EXIT_OK


def _jobs_watch(client: CTClient, args: argparse.Namespace) -> int:
    job = _wait(client, client.get_job(args.job), args)
    return _finish(client, args, job, job)


def _traces_list(client: CTClient, args: argparse.Namespace) -> int:
    traces = list(client.iter_traces(args.task)) if args.all else client.list_traces(
        args.task, limit=args.limit
    )
    _emit(args, traces, _traces_table)
    return EXIT_OK


def _traces_get(client: CTClient, args: argparse.Namespace) -> int:
    _emit(args, client.get_trace(args.trace), _detail)
    return EXIT_OK


def _traces_score(client: CTClient, args: argparse.Namespace) -> int:
    _emit(args, client.score(args.trace, args.score, scored_by=args.scored_by), _detail)
    return EXIT_OK


# --- status: the first check -------------------------------------------------------------


def _add_status(sub: Any) -> None:
    parser = sub.add_parser(
        "status", help="check the server, the API key and each task's live version",
        description="Check that the CT server answers and accepts the API key, and show each "
        "task's active prompt version and running rollout.",
    )
    _connection_options(parser, leaf=True)
    parser.set_defaults(command=_cmd_status)


def _base_url(args: argparse.Namespace) -> str:
    return str(args.base_url or os.environ.get("KAIZEN_BASE_URL") or "http://localhost:8000")


def _task_line(client: CTClient, task: Any) -> dict[str, Any]:
    """A task's active version number and running rollout, as `kaizen status` shows them."""
    try:
        prompt = client.get_prompt(task.name)
    except CTNotFoundError:  # no prompt version yet
        return {"task": task.name, "active_version": None, "rollout": None}
    rollout = None
    if prompt.rollout is not None:
        rollout = {"candidate_version": prompt.rollout.candidate.version_number,
                   "share": prompt.rollout.share}
    return {"task": task.name, "active_version": prompt.version_number, "rollout": rollout}


def _cmd_status(args: argparse.Namespace) -> int:
    from kaizen_sdk.client import CTClient

    url = _base_url(args)
    api_key = args.api_key or os.environ.get("KAIZEN_API_KEY")
    # /health needs no key, so the server is checked first even without one
    with CTClient(api_key=api_key or "no-key-set", base_url=args.base_url or None) as client:
        health = client.health()
        server = f"{url}  {health.status}, version {health.version or 'unknown'}"
        if not args.json:  # printed at once: it stays on screen if the key check fails
            _write(f"{'server':<7}  {server}")
        if not api_key:
            raise CLIError(
                "no API key: pass --api-key or set the KAIZEN_API_KEY environment variable",
                EXIT_AUTH,
            )
        try:
            tasks = client.list_tasks()
        except CTAuthError as exc:
            raise CLIError(f"the server rejected the API key ({exc})", EXIT_AUTH) from None
        lines = [_task_line(client, t) for t in tasks]
        try:
            unpriced = [m.model for m in client.list_unpriced_models()]
        except (CTNotFoundError, CTAuthError):  # an older server, or a key that cannot read
            unpriced = None
    if args.json:
        _emit_json({"base_url": url, "server": health, "key_accepted": True, "tasks": lines,
                    "unpriced_models": unpriced})
        return EXIT_OK
    _write(f"{'API key':<7}  accepted\n{'tasks':<7}  {len(tasks)}")
    if lines:
        rows = [
            [ln["task"],
             "-" if ln["active_version"] is None else f"v{ln['active_version']}",
             "-" if ln["rollout"] is None else
             f"v{ln['rollout']['candidate_version']} at {ln['rollout']['share']:.0%}"]
            for ln in lines
        ]
        _write("")
        _write(_table(["task", "active", "rollout"], rows, keep=[0]))
    if unpriced:
        _write("")
        _write(_fitted("no price (traces show no cost; add them with kaizen serve --prices):"
                       f" {', '.join(unpriced)}"))
    return EXIT_OK


# --- shell completion ----------------------------------------------------------------------


def _add_completion(sub: Any) -> None:
    parser = sub.add_parser(
        "completion", help="print a shell completion script (bash, zsh or fish)",
        description="Print a completion script for kaizen's commands and options. Load it "
        "with, e.g., `source <(kaizen completion bash)` in ~/.bashrc, "
        "`source <(kaizen completion zsh)` in ~/.zshrc, or "
        "`kaizen completion fish > ~/.config/fish/completions/kaizen.fish`.",
    )
    parser.add_argument("shell", choices=("bash", "zsh", "fish"), help="the shell")
    parser.set_defaults(command=_cmd_completion)


def _completion_tree(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    """For each command path (``""``, ``"tasks"``, ``"tasks list"``...) the words after it."""
    tree: dict[str, list[str]] = {}

    def walk(node: argparse.ArgumentParser, path: str) -> None:
        words: list[str] = []
        for action in node._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    words.append(name)
                    walk(child, f"{path} {name}".strip())
            elif action.option_strings:
                if action.help != argparse.SUPPRESS:
                    words.extend(o for o in action.option_strings if o.startswith("--"))
            elif action.choices:
                words.extend(str(c) for c in action.choices)
        tree[path] = list(dict.fromkeys(words))

    walk(parser, "")
    return tree


def _bash_completion(tree: dict[str, list[str]]) -> str:
    paths = "|".join(f"'{p}'" for p in tree if p)
    cases = "\n".join(f"        '{p}') words='{' '.join(w)}' ;;" for p, w in tree.items())
    return f"""# kaizen completion for bash: `source <(kaizen completion bash)` in ~/.bashrc
_kaizen() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" path="" next words="" i
    for ((i = 1; i < COMP_CWORD; i++)); do
        next="${{path:+$path }}${{COMP_WORDS[i]}}"
        case "$next" in
            {paths}) path="$next" ;;
        esac
    done
    case "$path" in
{cases}
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
}}
complete -o default -F _kaizen kaizen
"""


def _fish_completion(tree: dict[str, list[str]]) -> str:
    paths = " ".join(f"'{p}'" for p in tree if p)
    lines = [
        "# kaizen completion for fish: kaizen completion fish > "
        "~/.config/fish/completions/kaizen.fish",
        f"set -g __kaizen_paths {paths}",
        "function __kaizen_path",
        "    set -l path ''",
        "    for word in (commandline -opc)[2..-1]",
        "        set -l next (string trim -- \"$path $word\")",
        "        if contains -- $next $__kaizen_paths",
        "            set path $next",
        "        end",
        "    end",
        "    echo $path",
        "end",
        "function __kaizen_at",
        "    set -l path (__kaizen_path)",
        "    test \"$path\" = \"$argv\"",
        "end",
        "complete -c kaizen -e",
    ]
    for path, words in tree.items():
        lines.append(f"complete -c kaizen -f -n '__kaizen_at {path}' -a '{' '.join(words)}'")
    return "\n".join(lines) + "\n"


def _cmd_completion(args: argparse.Namespace) -> int:
    tree = _completion_tree(build_parser())
    if args.shell == "fish":
        _write(_fish_completion(tree))
    elif args.shell == "zsh":  # zsh runs bash completion functions through bashcompinit
        _write("#compdef kaizen\n# kaizen completion for zsh: `source <(kaizen completion zsh)` "
               "in ~/.zshrc\nautoload -U +X compinit && compinit\n"
               "autoload -U +X bashcompinit && bashcompinit\n" + _bash_completion(tree))
    else:
        _write(_bash_completion(tree))
    return EXIT_OK


# --- declaring the API commands ----------------------------------------------------------


def _connection_options(parser: argparse.ArgumentParser, *, leaf: bool) -> None:
    """--api-key/--base-url/--json, accepted before or after the subcommand."""
    default: Any = argparse.SUPPRESS if leaf else None
    group = parser.add_argument_group("connection and output")
    group.add_argument(
        "--api-key", default=default, metavar="KEY",
        help="CT API key (default: $KAIZEN_API_KEY)",
    )
    group.add_argument(
        "--base-url", default=default, metavar="URL",
        help="CT server URL (default: $KAIZEN_BASE_URL, else http://localhost:8000)",
    )
    group.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS if leaf else False,
        help="print JSON instead of a table",
    )


def _leaf(sub: Any, name: str, fn: _ApiCommand, help_text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
    _connection_options(parser, leaf=True)
    parser.set_defaults(command=_api(fn))
    return parser


def _group(
    sub: Any, name: str, help_text: str, default: _Command | None = None, **defaults: Any
) -> Any:
    """A command with subcommands; with *default*, the group alone runs it (``kaizen tasks``).

    *defaults* are the argument values the default command reads (``limit=20``...).
    """
    parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text, description=help_text)
    if default is not None:
        _connection_options(parser, leaf=True)
        parser.set_defaults(command=default, **defaults)
    return parser.add_subparsers(
        title="commands", dest=f"{name}_command", metavar="COMMAND", required=default is None
    )


def _wait_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout", type=_positive_float, default=600.0, metavar="S",
        help="give up waiting after S seconds (default 600)",
    )
    parser.add_argument(
        "--poll-interval", type=_positive_float, default=1.0, metavar="S",
        help="seconds between status checks (default 1)",
    )


def _page_options(parser: argparse.ArgumentParser) -> None:
    """--limit N (one page, 1 to 1000) or --all (every page) for a list command."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--limit", type=_limit, default=20, metavar="N",
                       help=f"show the newest N, 1 to {_MAX_LIMIT} (default 20)")
    group.add_argument("--all", action="store_true",
                       help="show every one, following the server's pages")


_CONFIG_KEYS = ("rubric", "task_model")
"""Settings kept as keys of ``evaluator_config`` (fields of their own in an update)."""

_SETTING_HELP = {
    "description": "what the task does",
    "schema_json": "JSON schema of the task's inputs",
    "feedback_threshold": "new scored feedback entries that start an optimization job",
    "feedback_retention_limit": "most feedback entries kept for the task",
    "feedback_retention_days": "days feedback entries are kept for the task",
    "trace_retention_limit": "most traces kept for the task",
    "trace_retention_days": "days traces are kept for the task",
    "evaluator_config": "optimizer and judge options as a JSON object, merged key by key into "
                        "the task's (a key set to null is removed)",
    "rubric": "what the judge model scores answers against (evaluator_config rubric)",
    "task_model": "the model the prompt runs on (evaluator_config task_model; default: the "
                  "teacher model)",
    "teacher_model": "the model the dspy optimizer learns from",
    "judge_model": "the model that scores answers against the rubric",
    "module_type": "the DSPy module shape: predict or chain_of_thought",
    "cost_budget": "most US dollars one optimization job may spend (0: none)",
    "github_repo": "repository (OWNER/NAME) that gets a pull request per new version",
    "github_base_branch": "branch the pull requests target (default: the repository's)",
    "prompt_path": "file of the prompt in the repository",
    "prompt_format": "how the file holds the prompt: text or json",
}
_SETTING_METAVARS = {"teacher_model": "MODEL", "judge_model": "MODEL", "task_model": "MODEL",
                     "cost_budget": "USD", "evaluator_config": "JSON", "schema_json": "JSON",
                     "github_repo": "OWNER/NAME", "github_base_branch": "BRANCH",
                     "prompt_path": "PATH", "rubric": "TEXT", "module_type": "TYPE",
                     "prompt_format": "FORMAT", "feedback_threshold": "N",
                     "feedback_retention_limit": "N", "feedback_retention_days": "DAYS",
                     "trace_retention_limit": "N", "trace_retention_days": "DAYS"}


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _yes_no(text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "yes", "on", "1"):
        return True
    if value in ("false", "no", "off", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _task_settings() -> list[tuple[str, Callable[[str], Any], bool]]:
    """``(name, parser, nullable)`` of every field of the task update body, in order."""
    import typing

    import msgspec

    from kaizen_sdk import models

    settings: list[tuple[str, Callable[[str], Any], bool]] = []
    for field in msgspec.structs.fields(models.TaskUpdateRequest):
        kinds = tuple(  # Annotated[float, Meta(ge=0)] counts as float
            typing.get_args(k)[0] if typing.get_origin(k) is typing.Annotated else k
            for k in typing.get_args(field.type) or (field.type,)
        )
        parse: Callable[[str], Any] = str
        if bool in kinds:
            parse = _yes_no
        elif int in kinds:
            parse = _whole_number
        elif float in kinds:
            parse = _number
        elif any(typing.get_origin(k) is dict for k in kinds):
            parse = _json_object
        settings.append((field.name, parse, type(None) in kinds))
    return settings


def _setting_options(parser: argparse.ArgumentParser, *, update: bool) -> None:
    """An option per task setting that *parser* has not declared yet (and ``--unset``)."""
    nullable: list[str] = []
    for name, parse, can_clear in _task_settings():
        flag = f"--{name.replace('_', '-')}"
        if can_clear:
            nullable.append(name)
        flags = [flag, "--threshold"] if name == "feedback_threshold" and update else [flag]
        try:
            parser.add_argument(*flags, dest=name, type=parse, default=None,
                                metavar=_SETTING_METAVARS.get(name, "VALUE"),
                                help=_SETTING_HELP.get(name, f"the task's {name}"))
        except argparse.ArgumentError:
            continue  # declared already (tasks create's own options)
    if update:
        parser.add_argument("--unset", action="append", choices=nullable, metavar="SETTING",
                            help="clear a setting (repeatable): " + ", ".join(nullable))


def _given_settings(args: argparse.Namespace, skip: Sequence[str] = ()) -> dict[str, Any]:
    """The task settings given on the command line, by field name."""
    return {
        name: getattr(args, name)
        for name, _, _ in _task_settings()
        if name not in skip and getattr(args, name, None) is not None
    }


def _add_tasks(sub: Any) -> None:
    tasks = _group(sub, "tasks", "list, show, create and update tasks (alone: list)",
                   _api(_tasks_list))
    _leaf(tasks, "list", _tasks_list, "list every task")
    p = _leaf(tasks, "get", _tasks_get, "show one task")
    p.add_argument("task", help="task name or id")
    p = _leaf(tasks, "costs", _tasks_costs,
              "what a task's calls cost: total and per call, per prompt version")
    p.add_argument("task", help="task name or id")
    p.add_argument("--days", type=_positive_float, default=7.0, metavar="N",
                   help="the window: the last N days (default 7)")
    p = _leaf(tasks, "create", _tasks_create, "create a task")
    p.add_argument("name", help="unique task name, e.g. summarize_ticket")
    p.add_argument("--description")
    p.add_argument("--prompt-text", metavar="TEXT", help="the task's first prompt (version 1)")
    p.add_argument(
        "--feedback-threshold", type=_positive_int, default=50, metavar="N",
        help="feedback entries that start an optimization (default 50)",
    )
    p.add_argument("--schema-json", type=_json_object, metavar="JSON",
                   help="JSON schema of the task's inputs")
    p.add_argument("--teacher-model", metavar="MODEL")
    p.add_argument("--judge-model", metavar="MODEL")
    p.add_argument("--module-type", metavar="TYPE")
    p.add_argument("--cost-budget", type=float, metavar="USD")
    _setting_options(p, update=False)
    p = _leaf(tasks, "update", _tasks_update,
              "change a task's settings (only those given; --unset clears one)")
    p.add_argument("task", help="task name or id")
    _setting_options(p, update=True)


def _add_prompts(sub: Any) -> None:
    prompts = _group(sub, "prompts", "show, write, compare and switch prompt versions")
    p = _leaf(prompts, "get", _prompts_get,
              "show the active prompt of a task: its text or messages, and its settings")
    p.add_argument("task", help="task name or id")
    p.add_argument("--text", action="store_true", help="print only the prompt text")
    p.add_argument("--label", help="the version with this label (staging, ...), not the active")
    p = _leaf(prompts, "show", _prompts_show,
              "show one prompt version (the active one by default): its messages and settings")
    p.add_argument("task", help="task name or id")
    p.add_argument("version", nargs="?", help="version number (3 or v3) or id")
    p.add_argument("--text", action="store_true", help="print only the prompt text")
    p.add_argument("--label", help="the version with this label (staging, ...)")
    p = _leaf(prompts, "versions", _prompts_versions, "list a task's prompt versions")
    p.add_argument("task", help="task name or id")
    p = _leaf(prompts, "activate", _prompts_activate, "make a prompt version the active one")
    p.add_argument("task", help="task name or id")
    p.add_argument("version", help="version id, or version number (3 or v3)")
    p = _leaf(prompts, "create", _prompts_create, "add a hand-written prompt version")
    p.add_argument("task", help="task name or id")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--text", help="the prompt text")
    source.add_argument("--file", metavar="PATH", help="read the prompt text from a file")
    p.add_argument("--from", dest="from_version", metavar="VERSION",
                   help="start from this version (3, v3 or id): its text or messages and"
                        " settings, changed by the options given")
    p.add_argument("--model", help="the model setting of the new version")
    p.add_argument("--config", type=_json_object, metavar="JSON",
                   help="settings to set, e.g. '{\"temperature\": 0}'")
    p.add_argument("--activate", action="store_true", help="make it the active version")
    p = _leaf(prompts, "label", _prompts_label,
              "put a label (staging, eu, a name) on a version, moving it from the one that had it")
    p.add_argument("task", help="task name or id")
    p.add_argument("label", help="1 to 64 of a-z 0-9 . _ - (production moves by activation)")
    p.add_argument("version", help="version id, or version number (3 or v3)")
    p = _leaf(prompts, "unlabel", _prompts_unlabel, "take a label off the version that has it")
    p.add_argument("task", help="task name or id")
    p.add_argument("label", help="the label")
    p = _leaf(prompts, "diff", _prompts_diff, "show how two prompt versions differ")
    p.add_argument("task", help="task name or id")
    p.add_argument("v1", help="version number (3 or v3) or id")
    p.add_argument("v2", help="version number (3 or v3) or id")


def _add_feedback(sub: Any) -> None:
    feedback = _group(sub, "feedback", "log and list feedback (alone: list)", _api(_feedback_list),
                      task=None, limit=20, all=False)
    p = _leaf(feedback, "log", _feedback_log, "log one feedback entry")
    p.add_argument("task", help="task name or id")
    p.add_argument("--score", type=_score, help="quality score in [0, 1]")
    p.add_argument("--output", help="the LLM output being judged")
    p.add_argument("--input", type=_key_value, action="append", metavar="KEY=VALUE",
                   help="one input variable (repeatable)")
    p.add_argument("--inputs", type=_json_object, metavar="JSON",
                   help="all input variables as a JSON object")
    p.add_argument("--metadata", type=_json_object, metavar="JSON")
    p.add_argument("--source", default="cli", help="source label (default: cli)")
    p = _leaf(feedback, "list", _feedback_list, "list feedback, newest first")
    p.add_argument("--task", help="only this task (name or id)")
    _page_options(p)


def _add_optimize(sub: Any) -> None:
    p = _leaf(sub, "optimize", _optimize, "start a prompt-optimization job for a task")
    p.add_argument("task", help="task name or id")
    p.add_argument("--wait", action="store_true",
                   help="follow the job until it ends; exit 1 if it failed")
    _wait_options(p)


def _add_jobs(sub: Any) -> None:
    jobs = _group(sub, "jobs", "follow optimization jobs (alone: list)", _api(_jobs_list),
                  task=None, limit=20, all=False)
    p = _leaf(jobs, "get", _jobs_get, "show one job's report")
    p.add_argument("job", help="job id")
    p.add_argument("--calls", action="store_true",
                   help="list every LLM call of the job instead (model, purpose, tokens, cost)")
    p = _leaf(jobs, "watch", _jobs_watch, "follow a job until it ends; exit 1 if it failed")
    p.add_argument("job", help="job id")
    _wait_options(p)
    p = _leaf(jobs, "list", _jobs_list, "list jobs, newest first")
    p.add_argument("--task", help="only this task (name or id)")
    _page_options(p)


def _add_traces(sub: Any) -> None:
    traces = _group(sub, "traces", "list, show and score traces (alone: list)", _api(_traces_list),
                    task=None, limit=20, all=False)
    p = _leaf(traces, "list", _traces_list, "list traces, newest first")
    p.add_argument("--task", help="only this task (name or id)")
    _page_options(p)
    p = _leaf(traces, "get", _traces_get, "show one trace")
    p.add_argument("trace", help="trace id")
    p = _leaf(traces, "score", _traces_score, "score a trace in [0, 1]")
    p.add_argument("trace", help="trace id")
    p.add_argument("score", type=_score, help="quality score in [0, 1]")
    p.add_argument("--scored-by", default="cli", help="who scored it (default: cli)")


# --- rollouts ------------------------------------------------------------------------------


def _ramp(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected shares separated by commas, e.g. 0.05,0.2,0.5,1, got {text!r}"
        ) from None
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"every share must be in [0, 1], got {text!r}")
    return values


def _share(text: str) -> float:
    value = _ramp(text)
    if len(value) != 1:
        raise argparse.ArgumentTypeError(f"expected one share in [0, 1], got {text!r}")
    return value[0]


def _fmt_num(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def _rollout_parts(rollout: Any) -> list[str]:
    """The state and the live figures of a rollout, the parts of its ``--watch`` line."""
    a, c, d = rollout.active, rollout.candidate, rollout.difference
    parts = [
        f"rollout {rollout.state}",
        f"share {rollout.share:.0%}",
        f"active n={a.n} mean={_fmt_num(a.mean)}",
        f"candidate n={c.n} mean={_fmt_num(c.mean)}",
        f"diff {_fmt_num(d.estimate, '+.3f')} [{_fmt_num(d.lower, '+.3f')}, "
        f"{_fmt_num(d.upper, '+.3f')}]",
    ]
    if rollout.guards.breached:
        parts.append("guards breached: " + ", ".join(rollout.guards.breached))
    if rollout.recommendation:
        parts.append(f"recommends {rollout.recommendation}")
    return parts


def _fit_parts(parts: Sequence[str], width: int) -> list[str]:
    """Join *parts* two spaces apart into lines of at most *width* characters; a part longer
    than a line is cut (ending in an ellipsis)."""
    lines: list[str] = []
    for part in parts:
        part = _clip(part, width)
        if lines and len(lines[-1]) + _GAP + len(part) <= width:
            lines[-1] += " " * _GAP + part
        else:
            lines.append(part)
    return lines


class _LiveFrame:
    """A status of a few lines on *stream*, shown as a terminal user expects.

    On a terminal each `draw` replaces the previous frame: the cursor goes back up to its first
    line and the screen is cleared from there, and the lines are fitted to the terminal's width
    first (a wrapped line would leave rows that no redraw reaches). Elsewhere (a pipe, a log)
    each frame is one plain line, appended.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = bool(getattr(stream, "isatty", lambda: False)())
        self._height = 0  # lines of the frame on screen; the cursor is at the end of its last

    def draw(self, parts: Sequence[str]) -> None:
        """Show *parts* as the current frame."""
        if not self._tty:
            self._stream.write((" " * _GAP).join(parts) + "\n")
        else:
            import shutil

            width = max(shutil.get_terminal_size().columns - 1, 20)  # never the last column
            lines = _fit_parts(parts, width)
            up = f"\x1b[{self._height - 1}A" if self._height > 1 else ""
            self._stream.write("\r" + up + "\x1b[J" + "\n".join(lines))
            self._height = len(lines)
        self._stream.flush()

    def end(self) -> None:
        """End the frame's last line, so what follows starts below it (the frame stays)."""
        if self._height:
            self._stream.write("\n")
            self._stream.flush()
            self._height = 0


def _version_numbers(client: CTClient, task: str) -> dict[str, int]:
    """Version id -> number of a task's prompt versions ({} if they cannot be read)."""
    try:
        return {str(p.id): p.version_number for p in client.list_prompt_versions(task)}
    except CTError:
        return {}


def _rollout_detail(rollout: Any, numbers: dict[str, int] | None = None) -> str:
    """A rollout's figures and audit log; versions by number when *numbers* knows them."""
    a, c, g = rollout.active, rollout.candidate, rollout.guards

    def name(version_id: Any) -> str:
        number = (numbers or {}).get(str(version_id))
        return str(version_id) if number is None else f"v{number}"

    pairs: list[tuple[str, Any]] = [
        ("rollout", rollout.id),
        ("state", rollout.state),
        ("share", f"{rollout.share:.0%} (ramp {', '.join(f'{s:.0%}' for s in rollout.ramp)})"),
        ("active", f"{name(a.version_id)}  n={a.n} mean={_fmt_num(a.mean)} "
                   f"[{_fmt_num(a.lower)}, {_fmt_num(a.upper)}]"),
        ("candidate", f"{name(c.version_id)}  n={c.n} mean={_fmt_num(c.mean)} "
                      f"[{_fmt_num(c.lower)}, {_fmt_num(c.upper)}]"),
        ("difference", f"{_fmt_num(rollout.difference.estimate, '+.3f')} "
                       f"[{_fmt_num(rollout.difference.lower, '+.3f')}, "
                       f"{_fmt_num(rollout.difference.upper, '+.3f')}] "
                       f"p={rollout.difference.p_value:.3g}"),
        ("error rate", f"{_fmt_num(a.error_rate)} vs {_fmt_num(c.error_rate)} "
                       f"(margin {_fmt_num(g.error_margin)})"),
        ("p95 latency ms", f"{_fmt_num(a.p95_latency_ms, '.1f')} vs "
                           f"{_fmt_num(c.p95_latency_ms, '.1f')} "
                           f"(margin {_fmt_num(g.latency_margin, '.0%')})"),
        ("min samples", rollout.min_samples),
    ]
    cost_a, cost_c = getattr(a, "cost_per_call_usd", None), getattr(c, "cost_per_call_usd", None)
    if cost_a is not None or cost_c is not None:  # servers that price calls
        guard = getattr(g, "max_cost_ratio", None)
        ratio = getattr(g, "cost_ratio", None)
        pairs.insert(-1, ("cost/call usd", f"{_fmt_num(cost_a, '.6f')} vs "
                                           f"{_fmt_num(cost_c, '.6f')}"
                          + ("" if ratio is None else f" (x{ratio:.3g})")
                          + ("" if guard is None else f" (guard x{guard:g})")))
    if rollout.recommendation:
        pairs.append(("recommendation", rollout.recommendation))
    if rollout.reason:
        pairs.append(("reason", rollout.reason))
    lines = [format_fields(pairs), "", "audit log:"]
    for event in rollout.audit:
        at = event.at.strftime("%Y-%m-%d %H:%M:%S") if event.at else "-"
        share = "" if event.share is None else f" {event.share:.0%}"
        lines.append(f"  {at}  {event.event}{share}  {event.reason or ''}".rstrip())
    return "\n".join(lines)


def _rollout_start(client: CTClient, args: argparse.Namespace) -> int:
    version = _version_id(client, args.task, args.candidate)
    options: dict[str, Any] = {
        k: v
        for k, v in {
            "share": args.share, "ramp": args.ramp, "min_samples": args.min_samples,
            "error_margin": args.error_margin, "latency_margin": args.latency_margin,
            "max_duration": args.max_duration, "max_cost_ratio": args.max_cost_ratio,
        }.items()
        if v is not None
    }
    rollout = client.start_rollout(
        args.task, version, auto_promote=not args.no_auto_promote,
        auto_rollback=not args.no_auto_rollback, **options,
    )
    _emit(args, rollout, lambda r: _rollout_detail(r, _version_numbers(client, args.task)))
    return EXIT_OK


def _rollout_status(client: CTClient, args: argparse.Namespace) -> int:
    rollout = client.get_rollout(args.task)
    if not args.watch:
        _emit(args, rollout, lambda r: _rollout_detail(r, _version_numbers(client, args.task)))
        return EXIT_OK
    frame = _LiveFrame(sys.stderr)
    deadline = time.monotonic() + args.timeout
    seen = None
    while True:
        parts = _rollout_parts(rollout)
        if parts != seen:
            frame.draw(parts)
            seen = parts
        if not rollout.is_running:
            break
        if time.monotonic() >= deadline:
            frame.end()
            raise CLIError(
                f"rollout {rollout.id} still running after {args.timeout:g} s", EXIT_FAILURE
            )
        time.sleep(min(args.interval, max(0.0, deadline - time.monotonic())))
        rollout = client.get_rollout(args.task)
    frame.end()
    _emit(args, rollout, lambda r: _rollout_detail(r, _version_numbers(client, args.task)))
    return EXIT_OK


def _rollout_stop(client: CTClient, args: argparse.Namespace) -> int:
    rollout = client.stop_rollout(args.task, args.action)
    _emit(args, rollout, lambda r: _rollout_detail(r, _version_numbers(client, args.task)))
    return EXIT_OK


def _rollout_approve(client: CTClient, args: argparse.Namespace) -> int:
    rollout = client.approve_rollout(args.task)
    _emit(args, rollout, lambda r: _rollout_detail(r, _version_numbers(client, args.task)))
    return EXIT_OK


def _add_rollout(sub: Any) -> None:
    rollout = _group(sub, "rollout", "roll a candidate prompt out to a share of traffic")
    p = _leaf(rollout, "start", _rollout_start, "start a guarded rollout of a candidate")
    p.add_argument("task", help="task name or id")
    p.add_argument("candidate", help="candidate version id, or number (3 or v3)")
    split = p.add_mutually_exclusive_group()
    split.add_argument("--share", type=_share, metavar="S",
                       help="one step: serve the candidate to this share in [0, 1]")
    split.add_argument("--ramp", type=_ramp, metavar="S,S,...",
                       help="increasing shares (default 0.05,0.2,0.5,1)")
    p.add_argument("--min-samples", type=_positive_int, metavar="N",
                   help="scores per arm before any decision (default 100)")
    p.add_argument("--error-margin", type=float, metavar="X",
                   help="allowed rise of the error rate, absolute (default 0.02)")
    p.add_argument("--latency-margin", type=float, metavar="X",
                   help="allowed rise of p95 latency, relative (default 0.25)")
    p.add_argument("--max-duration", type=_positive_float, metavar="S",
                   help="seconds before an undecided rollout is rolled back (default 7 days)")
    p.add_argument("--max-cost-ratio", type=_positive_float, metavar="X",
                   help="cost guard: the candidate's cost per call may be at most X times"
                        " the active's (1 = not dearer); default none")
    p.add_argument("--no-auto-promote", action="store_true",
                   help="only recommend a promotion; promote with `kaizen rollout stop`")
    p.add_argument("--no-auto-rollback", action="store_true",
                   help="only recommend a rollback")
    p = _leaf(rollout, "status", _rollout_status, "show the task's rollout and its audit log")
    p.add_argument("task", help="task name or id")
    p.add_argument("--watch", action="store_true",
                   help="follow the live figures until the rollout is decided")
    p.add_argument("--interval", type=_positive_float, default=2.0, metavar="S",
                   help="seconds between checks with --watch (default 2)")
    p.add_argument("--timeout", type=_positive_float, default=3600.0, metavar="S",
                   help="give up watching after S seconds, exit 1 (default 3600)")
    p = _leaf(rollout, "stop", _rollout_stop, "end the running rollout")
    p.add_argument("task", help="task name or id")
    p.add_argument("action", choices=("promote", "rollback"),
                   help="promote the candidate or roll it back")
    p = _leaf(rollout, "approve", _rollout_approve,
              "approve the automatic rollout of an optimizer candidate that waits for it")
    p.add_argument("task", help="task name or id")


# --- keys and the audit log ------------------------------------------------------------


def _keys_table(keys: Sequence[Any]) -> str:
    if not keys:
        return "No keys (the server's own key is admin)."
    rows = [[k.name, k.scope, "revoked" if k.revoked_at else "live", k.created_by,
             k.created_at, k.revoked_at, k.id] for k in keys]
    return _table(["name", "scope", "state", "created by", "created", "revoked", "id"], rows,
                  keep=[0, 6], optional=[5, 3])


def _key_created(key: Any) -> str:
    return "\n".join([
        format_fields([("name", key.name), ("scope", key.scope), ("id", key.id)]),
        "",
        f"secret: {key.secret}",
        "",
        "Keep the secret now: the server stores only its hash and never shows it again.",
    ])


def _keys_create(client: CTClient, args: argparse.Namespace) -> int:
    key = client.create_key(args.name, args.scope)
    if args.json:
        _emit_json(key)
    else:
        _write(_key_created(key))
    return EXIT_OK


def _keys_list(client: CTClient, args: argparse.Namespace) -> int:
    _emit(args, client.list_keys(limit=_MAX_LIMIT), _keys_table)
    return EXIT_OK


def _keys_revoke(client: CTClient, args: argparse.Namespace) -> int:
    _emit(args, client.revoke_key(args.key), _detail)
    return EXIT_OK


def _audit_table(entries: Sequence[Any]) -> str:
    if not entries:
        return "No audit entries."
    rows = [[e.at, e.actor, e.action, e.detail, e.target, e.task_id] for e in entries]
    return _table(["at", "key", "action", "detail", "target", "task"], rows,
                  keep=[1, 2], optional=[5, 4])


def _audit(client: CTClient, args: argparse.Namespace) -> int:
    _emit(args, client.list_audit(args.task, limit=args.limit), _audit_table)
    return EXIT_OK


def _add_keys(sub: Any) -> None:
    keys = _group(sub, "keys", "create, list and revoke scoped API keys (admin; alone: list)",
                  _api(_keys_list))
    p = _leaf(keys, "create", _keys_create, "create a key; its secret is printed once")
    p.add_argument("name", help="the key's name, as the audit log shows it (e.g. web-app)")
    p.add_argument("--scope", required=True, choices=("ingest", "read", "admin"),
                   help="ingest: send traces, feedback and scores, read prompts (what an"
                   " application holds); read: read everything; admin: everything")
    _leaf(keys, "list", _keys_list, "list keys (never their secrets)")
    p = _leaf(keys, "revoke", _keys_revoke, "revoke a key: its requests get 401 from now on")
    p.add_argument("key", help="key id (from `kaizen keys list`)")


# --- online evaluators ---------------------------------------------------------------------


def _scale(text: str) -> list[float]:
    low, sep, high = text.partition("..")
    try:
        if not sep:
            raise ValueError
        return [float(low), float(high)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be LOW..HIGH, like 1..5, got {text!r}") from None


_EVALUATOR_OPTIONS: tuple[tuple[str, Any, str, str], ...] = (
    ("rubric", str, "TEXT", "the judge's rubric (llm_judge)"),
    ("judge_model", str, "MODEL", "the judge model, priced by the server (llm_judge)"),
    ("scale", _scale, "LOW..HIGH", "the judge's score scale, mapped to [0, 1] (llm_judge)"),
    ("pattern", str, "REGEX", "a regular expression the output must contain (regex)"),
    ("json_schema", _json_object, "JSON", "a JSON schema the output must meet (json_schema)"),
    ("min_length", int, "N", "fewest characters of the output (length)"),
    ("max_length", int, "N", "most characters of the output (length)"),
    ("sample_rate", float, "RATE", "share of traces evaluated, 0 to 1 (default 1)"),
    ("daily_budget_usd", float, "USD", "judge dollars per UTC day at most"),
    ("daily_calls", int, "N", "judge calls per UTC day at most"),
    ("watch", str, "all|rollout", "every trace, or only the arms of a running rollout"),
    ("pass_threshold", float, "SCORE", "a score at least this passes (agreement; default 0.5)"),
    ("min_kappa", float, "KAPPA", "below this Cohen's kappa with people, stop feeding the loop"),
)


def _evaluator_options(parser: argparse.ArgumentParser) -> None:
    for name, parse, metavar, help_text in _EVALUATOR_OPTIONS:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, type=parse, default=None,
                            metavar=metavar, help=help_text)


def _evaluator_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name, *_ in _EVALUATOR_OPTIONS
            if getattr(args, name, None) is not None}


def _evaluators_table(evaluators: Sequence[Any]) -> str:
    if not evaluators:
        return "No evaluators."
    rows = []
    for e in evaluators:
        today = e.today
        agree = e.agreement
        rows.append([
            e.name, e.kind, e.sample_rate, e.status,
            None if today is None else today.judged,
            None if today is None else f"${today.spent_usd:.4f}",
            None if agree is None or agree.kappa is None else round(agree.kappa, 3),
            e.id,
        ])
    return _table(["name", "kind", "sample", "status", "judged today", "spent today", "kappa",
                   "id"], rows, keep=[0], optional=[7, 6])


def _evaluator_detail(e: Any) -> str:
    unset = [name for name, *_ in _EVALUATOR_OPTIONS if getattr(e, name) is None]
    lines = [_detail(e, skip=("today", "days", "agreement", *unset))]
    for day in e.days:
        lines.append(f"{day.day}: {day.calls} judge calls, ${day.spent_usd:.4f}, {day.judged}"
                     f" judged, {day.unjudged} unjudged, {day.skipped_budget} over budget")
    agree = e.agreement
    if agree is not None:
        if agree.kappa is None:
            lines.append(f"agreement with people: {agree.pairs} pairs, {agree.min_pairs} needed")
        else:
            (ff, fp), (pf, pp) = agree.confusion or [[0, 0], [0, 0]]
            lines.append(
                f"agreement with people ({agree.pairs} pairs, pass >= {agree.threshold:g}):"
                f" accuracy {agree.accuracy:.3f}, Cohen's kappa {agree.kappa:.3f}\n"
                f"                 judge fail  judge pass\n"
                f"  human fail     {ff:>10}  {fp:>10}\n"
                f"  human pass     {pf:>10}  {pp:>10}")
    return "\n".join(lines)


def _evaluators_list(client: CTClient, args: argparse.Namespace) -> int:
    _emit(args, client.list_evaluators(args.task), _evaluators_table)
    return EXIT_OK


def _evaluators_show(client: CTClient, args: argparse.Namespace) -> int:
    _emit(args, client.get_evaluator(args.task, args.evaluator), _evaluator_detail)
    return EXIT_OK


def _evaluators_add(client: CTClient, args: argparse.Namespace) -> int:
    settings = _evaluator_settings(args)
    if args.disabled:
        settings["enabled"] = False
    made = client.create_evaluator(args.task, args.name, args.kind, **settings)
    _emit(args, made, _evaluator_detail)
    return EXIT_OK


def _evaluators_update(client: CTClient, args: argparse.Namespace) -> int:
    settings: dict[str, Any] = _evaluator_settings(args)
    for name in args.unset or ():
        settings[name] = None
    if args.enable is not None:
        settings["enabled"] = args.enable
    if args.rename is not None:
        settings["name"] = args.rename
    if not settings:
        raise CLIError("nothing to change: give at least one setting (see kaizen evaluators"
                       " update --help)", EXIT_USAGE)
    _emit(args, client.update_evaluator(args.task, args.evaluator, **settings),
          _evaluator_detail)
    return EXIT_OK


def _evaluators_remove(client: CTClient, args: argparse.Namespace) -> int:
    gone = client.remove_evaluator(args.task, args.evaluator)
    _emit(args, gone, lambda e: f"Removed evaluator {e.name} ({e.id}); its feedback stays.")
    return EXIT_OK


def _add_evaluators(sub: Any) -> None:
    group = _group(sub, "evaluators",
                   "online evaluators: LLM judges and code checks on sampled traces")
    p = _leaf(group, "list", _evaluators_list, "list a task's evaluators with today's books")
    p.add_argument("task", help="task name or id")
    p = _leaf(group, "show", _evaluators_show,
              "show an evaluator: settings, status, cost per day, agreement with people")
    p.add_argument("task", help="task name or id")
    p.add_argument("evaluator", help="evaluator name or id")
    p = _leaf(group, "add", _evaluators_add, "add an evaluator to a task")
    p.add_argument("task", help="task name or id")
    p.add_argument("name", help="the evaluator's name (feedback source evaluator:NAME)")
    p.add_argument("--kind", required=True, choices=("llm_judge", "exact_match",
                   "normalized_match", "regex", "json_schema", "length"),
                   help="an LLM judge or a code check")
    p.add_argument("--disabled", action="store_true", help="add it switched off")
    _evaluator_options(p)
    p = _leaf(group, "update", _evaluators_update, "change an evaluator's settings")
    p.add_argument("task", help="task name or id")
    p.add_argument("evaluator", help="evaluator name or id")
    p.add_argument("--rename", metavar="NAME", help="a new name")
    switch = p.add_mutually_exclusive_group()
    switch.add_argument("--enable", dest="enable", action="store_const", const=True,
                        default=None, help="switch it on")
    switch.add_argument("--disable", dest="enable", action="store_const", const=False,
                        help="switch it off (it keeps its books)")
    _evaluator_options(p)
    p.add_argument("--unset", action="append", metavar="SETTING",
                   choices=("rubric", "judge_model", "scale", "pattern", "json_schema",
                            "min_length", "max_length", "daily_budget_usd", "daily_calls",
                            "min_kappa"), help="clear a setting (repeatable)")
    p = _leaf(group, "remove", _evaluators_remove,
              "remove an evaluator (the feedback it stored stays)")
    p.add_argument("task", help="task name or id")
    p.add_argument("evaluator", help="evaluator name or id")


def _add_audit(sub: Any) -> None:
    p = _leaf(sub, "audit", _audit, "show the audit log: every state change and its key")
    p.add_argument("--task", help="only this task (name or id)")
    p.add_argument("--limit", type=_limit, default=20, metavar="N",
                   help=f"show the newest N, 1 to {_MAX_LIMIT} (default 20)")


# --- registry --------------------------------------------------------------------------

# --- spool ---------------------------------------------------------------------------------


def _add_spool(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    spool = _group(sub, "spool",
                   "show or drain the durable spool of undelivered records (alone: status)",
                   _cmd_spool_status, dir=None)
    for name, fn, text in (
        ("status", _cmd_spool_status, "show what the spool directory holds (no server needed)"),
        ("replay", _cmd_spool_replay, "send what the spool holds to the CT server now"),
    ):
        parser = spool.add_parser(name, help=text, description=text)
        parser.add_argument(
            "--dir", default=None, metavar="DIR",
            help="the spool directory (default: $KAIZEN_SPOOL_DIR)",
        )
        if name == "replay":
            _connection_options(parser, leaf=True)
        else:
            parser.add_argument("--json", action="store_true", help="print JSON")
        parser.set_defaults(command=fn)


def _spool_dir(args: argparse.Namespace) -> str:
    directory: str | None = args.dir or os.environ.get("KAIZEN_SPOOL_DIR")
    if not directory:
        raise CLIError("no spool directory: pass --dir or set KAIZEN_SPOOL_DIR", EXIT_USAGE)
    if not os.path.isdir(directory):
        raise CLIError(f"spool directory {directory!r} does not exist", EXIT_NOT_FOUND)
    return directory


def _cmd_spool_status(args: argparse.Namespace) -> int:
    import msgspec

    from kaizen_sdk._spool import Spool
    from kaizen_sdk.models import IngestRequest, decode

    directory = _spool_dir(args)
    spool = Spool(directory)
    names = spool.pending()
    traces = scores = unreadable = 0
    for name in names:
        try:
            with open(os.path.join(directory, name), "rb") as fh:
                batch = decode(fh.read(), IngestRequest)
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            unreadable += 1
            continue
        traces += len(batch.traces)
        scores += len(batch.scores)
    corrupt_dir = os.path.join(directory, "corrupt")
    corrupt = len(os.listdir(corrupt_dir)) if os.path.isdir(corrupt_dir) else 0
    row = {
        "directory": directory, "batches": len(names), "traces": traces, "scores": scores,
        "bytes": spool.size_bytes(), "unreadable": unreadable, "corrupt": corrupt,
        "oldest": names[0] if names else None,
    }
    if getattr(args, "json", False):
        print(msgspec.json.encode(row).decode())
    else:
        for key, value in row.items():
            print(f"{key:<11} {_cell(value)}")
    return EXIT_OK


def _cmd_spool_replay(args: argparse.Namespace) -> int:
    from kaizen_sdk import tracing
    from kaizen_sdk.client import CTClient

    directory = _spool_dir(args)
    api_key = args.api_key or os.environ.get("KAIZEN_API_KEY")
    if not api_key:
        raise CLIError(
            "no API key: pass --api-key or set the KAIZEN_API_KEY environment variable",
            EXIT_AUTH,
        )
    with CTClient(
        api_key=api_key, base_url=args.base_url or None, spool_dir=directory, enabled=True
    ) as client:
        delivery = tracing.pipeline_for(client).delivery
        if delivery is None or delivery.spool is None:
            raise CLIError(f"cannot use the spool directory {directory!r}")
        sent, left = delivery.drain_spool()
    print(f"replayed {sent} records from {directory}; {left} batches left")
    return EXIT_OK if left == 0 else EXIT_FAILURE


# --- command plugins: the kaizen.commands entry points -----------------------------------

COMMAND_GROUP = "kaizen.commands"
"""The entry-point group of ``kaizen`` subcommands other packages add: kaizen-server declares
``serve``, ``demo`` and ``eval`` there. Each entry point is an ``add(sub)`` function that
declares one subcommand on the ``kaizen`` subparsers, as the ``_add_<name>`` functions here."""

_AddCommand = Callable[[Any], None]


def command_plugins() -> dict[str, _AddCommand]:
    """The installed `COMMAND_GROUP` entry points, by name, loaded. One that cannot be loaded
    (a broken install) is left out with one line on stderr, so ``kaizen`` itself still runs."""
    from importlib.metadata import entry_points

    found: dict[str, _AddCommand] = {}
    for point in entry_points(group=COMMAND_GROUP):
        try:
            found.setdefault(point.name, point.load())
        except Exception as exc:
            sys.stderr.write(f"kaizen: the {point.name} command ({point.value}) cannot be "
                             f"loaded: {type(exc).__name__}: {exc}\n")
    return found


def leaf_command(sub: Any, name: str, fn: _ApiCommand, help_text: str) -> argparse.ArgumentParser:
    """Declare a subcommand *name* that talks to a CT server: the connection options, and *fn*
    called with a `CTClient` built from them (closed after); return its parser."""
    return _leaf(sub, name, fn, help_text)


def number(text: str) -> float:
    """An argument type: *text* as a float, or a usage error naming it."""
    return _number(text)


def version_id(client: CTClient, task: str, version: str) -> str:
    """The id of *task*'s prompt version given as an id or a number (``3`` or ``v3``)."""
    return _version_id(client, task, version)


def emit(args: argparse.Namespace, value: Any, render: Callable[[Any], str]) -> None:
    """Print *value* as JSON with ``--json``, else as ``render(value)``."""
    _emit(args, value, render)


# --- registry of the subcommands ----------------------------------------------------------

_SUBCOMMANDS: list[
    Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None] | str
] = [
    _add_status,
    "serve",
    _add_spool,
    "demo",
    _add_tasks,
    _add_prompts,
    _add_feedback,
    _add_optimize,
    "eval",
    _add_jobs,
    _add_traces,
    _add_rollout,
    _add_keys,
    _add_audit,
    _add_evaluators,
    "db",
    _add_completion,
]
"""One ``_add_<name>`` function per subcommand, in the order ``--help`` lists them; a name
stands for the `COMMAND_GROUP` entry point of that name (left out when none is installed)."""


def build_parser() -> argparse.ArgumentParser:
    """Return the ``kaizen`` argument parser with every subcommand registered."""
    parser = _Parser(
        prog="kaizen",
        description="Kaizen continuous tuning: a local CT server, and a client for any CT server.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _connection_options(parser, leaf=False)
    sub: Any = parser.add_subparsers(title="commands", metavar="COMMAND")
    plugins = command_plugins()
    for entry in _SUBCOMMANDS:
        add = plugins.pop(entry, None) if isinstance(entry, str) else entry
        if add is not None:
            add(sub)
    for add in plugins.values():  # commands of other packages, after the known ones
        add(sub)
    return parser


# --- entry point -------------------------------------------------------------------------


def _one_line(text: str, secret: str | None) -> str:
    """Flatten *text* to one line, masking the API key should it ever appear."""
    line = " ".join(str(text).split())
    if secret and len(secret) >= 8:  # a shorter "key" would mask ordinary words
        line = line.replace(secret, "***")
    return line


def _exit_status(exc: CTError) -> int:
    if isinstance(exc, CTAuthError):
        return EXIT_AUTH
    if isinstance(exc, CTNotFoundError):
        return EXIT_NOT_FOUND
    return EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kaizen`` command; return the process exit code.

    Usage errors, ``--help`` and ``--version`` end in ``SystemExit`` (status 2, 0, 0) as
    argparse does; every other failure is reported as one line on stderr and returned.
    """
    parser = build_parser()
    args = parser.parse_args(argv)  # --help, --version and usage errors raise SystemExit
    command: _Command | None = getattr(args, "command", None)
    if command is None:
        parser.print_help()
        return EXIT_USAGE
    secret = getattr(args, "api_key", None) or os.environ.get("KAIZEN_API_KEY")
    try:
        return command(args)
    except CLIError as exc:
        message, status = str(exc), exc.exit_code
    except CTConnectionError as exc:
        url = args.base_url or os.environ.get("KAIZEN_BASE_URL") or "http://localhost:8000"
        message = f"{exc} (is a CT server running at {url}? `kaizen serve` starts one)"
        status = EXIT_FAILURE
    except CTError as exc:
        message, status = str(exc), _exit_status(exc)
    except KeyboardInterrupt:
        message, status = "interrupted", 130
    except ImportError as exc:  # an optional extra is missing; the message names it
        message, status = str(exc), EXIT_FAILURE
    except Exception as exc:  # a bug: still one line, never a traceback
        message, status = f"unexpected {type(exc).__name__}: {exc}", EXIT_FAILURE
    sys.stdout.flush()
    sys.stderr.write(f"kaizen: error: {_one_line(message, secret)}\n")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
