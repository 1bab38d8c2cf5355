"""The ``kaizen`` commands of the server: ``serve``, ``db``, ``demo`` and ``eval``.

kaizen-server declares them in the ``kaizen.commands`` entry-point group (see
``server/pyproject.toml``); `kaizen_sdk.cli` adds them to ``kaizen`` when this package is
installed, so ``kaizen --help`` lists them only then. Each entry point is an ``add_<name>(sub)``
function that declares the command's arguments on the ``kaizen`` subparsers; what the command
needs of the server is imported only when it runs, so ``kaizen --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import sqlite3
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

from kaizen_sdk import __version__
from kaizen_sdk.cli import (
    DEFAULT_DB_PATH,
    EXIT_FAILURE,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    CLIError,
    emit,
    format_fields,
    leaf_command,
    number,
    version_id,
)

if TYPE_CHECKING:
    from kaizen_sdk.client import CTClient

__all__ = ["add_db", "add_demo", "add_eval", "add_serve"]


# --- serve -----------------------------------------------------------------------------


def _port(text: str) -> int:
    """A TCP port for ``--port``: 0 (a free one) to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(
            f"a TCP port is 0 to 65535 (0 for a free one), got {text}"
        )
    return value



def add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "serve",
        help="run the CT server (SQLite or PostgreSQL) until Ctrl-C",
        description="Run the whole CT API on a SQLite file or a PostgreSQL database.",
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to bind (default: %(default)s)")
    parser.add_argument("--port", type=_port, default=8000,
                        help="TCP port, 0 for a free one (default: %(default)s)")
    parser.add_argument("--db", default=None, metavar="PATH|URL",
                        help="SQLite database file, or a postgresql://user:password@host/name "
                             "URL (needs kaizen-server[postgres]) (default: "
                             f"$KAIZEN_DATABASE_URL, else {DEFAULT_DB_PATH})")
    parser.add_argument("--api-key", default=None, metavar="KEY",
                        help="key clients must send (default: $KAIZEN_API_KEY, else a fixed "
                             "development key that is printed)")
    parser.add_argument("--access-log", action="store_true",
                        help="print one line per request (Common Log Format) to stdout")
    parser.add_argument("--job-step-delay", type=float, default=0.0, metavar="SECONDS",
                        help=argparse.SUPPRESS)
    parser.add_argument("--optimizer", choices=("local", "dspy"), default=None,
                        help="optimizer of jobs: local (no LLM) or dspy (needs the optimize "
                             "extra and an LLM endpoint) (default: $KAIZEN_OPTIMIZER, else "
                             "local)")
    parser.add_argument("--llm-base-url", default=None, metavar="URL",
                        help="OpenAI-compatible endpoint of the dspy optimizer, e.g. "
                             "http://127.0.0.1:11434/v1 (default: $KAIZEN_LLM_BASE_URL; the "
                             "key is read from $KAIZEN_LLM_API_KEY)")
    parser.add_argument("--job-timeout", type=float, default=None, metavar="SECONDS",
                        help="wall-clock limit of one optimization job; past it the job ends "
                             "FAILURE (default: $KAIZEN_JOB_TIMEOUT, else 1800)")
    parser.add_argument("--job-budget-usd", type=float, default=None, metavar="USD",
                        help="LLM spend per job when the task sets no cost_budget; 0 allows "
                             "none (default: $KAIZEN_JOB_BUDGET_USD, else 1.00)")
    parser.add_argument("--daily-budget-usd", type=float, default=None, metavar="USD",
                        help="LLM spend per task per UTC day when the task sets none; 0 "
                             "allows none (default: $KAIZEN_DAILY_BUDGET_USD, else 5.00)")
    parser.add_argument("--max-jobs-per-day", type=int, default=None, metavar="N",
                        help="threshold jobs per task per UTC day (default: "
                             "$KAIZEN_MAX_JOBS_PER_DAY, else 6)")
    parser.add_argument("--cooldown-minutes", type=float, default=None, metavar="MIN",
                        help="minutes between a task's threshold jobs (default: "
                             "$KAIZEN_COOLDOWN_MINUTES, else 60)")
    parser.add_argument("--otlp-task-map", default=None, metavar="SPEC",
                        help="task of OTLP LLM spans without ct.task.name, e.g. "
                             "'span:chat gpt-4o=summarize,service:support-bot=support' "
                             "(KIND: span, agent, service) or @FILE.json "
                             "(default: $KAIZEN_OTLP_TASK_MAP)")
    parser.add_argument("--prices", default=None, metavar="FILE",
                        help="JSON file of custom LLM prices, {model: {input_per_mtok, "
                             "output_per_mtok, cached_input_per_mtok}} (default: "
                             "$KAIZEN_PRICES_FILE)")
    parser.add_argument("--no-migrate", dest="migrate", action="store_false",
                        help="refuse to start when the database needs schema steps (run "
                             "`kaizen db upgrade` yourself) instead of running them at start")
    parser.add_argument("--workers", type=_workers, default=1, metavar="N",
                        help="server processes sharing the port and the database; a dead "
                             "one is restarted (default: %(default)s)")
    parser.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker-args", default=None, help=argparse.SUPPRESS)
    parser.set_defaults(command=_cmd_serve)


def _workers(text: str) -> int:
    """A number of server processes for ``--workers``: 1 to 64."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= 64:
        raise argparse.ArgumentTypeError(f"--workers is 1 to 64, got {text}")
    return value


# the key and the database (a URL may hold a password) reach children through their
# environment, never a command line that `ps` shows
_NOT_FOR_CHILDREN = ("command", "api_key", "db", "workers", "listen_fd", "worker_args")


def _serve_workers(args: argparse.Namespace) -> int:
    """``kaizen serve --workers N``: bind once, then run N children on the socket."""
    import json
    import socket

    from kaizen_server.http.addresses import is_loopback
    from kaizen_server.http.server import DEV_API_KEY
    from kaizen_server.http.workers import Supervisor, child_environment
    from kaizen_server.settings import KAIZEN_API_KEY, KAIZEN_DATABASE_URL
    from kaizen_server.storage import open_store
    from kaizen_server.storage.sqlite_schema import SchemaError

    database = _database(args)
    shown_db = _shown(database)
    key = args.api_key or os.environ.get(KAIZEN_API_KEY) or DEV_API_KEY
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    try:
        sock = socket.create_server((args.host, args.port), family=family, backlog=2048)
    except OSError as exc:
        print(f"kaizen serve: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    with sock:
        host, port = sock.getsockname()[:2]
        if not is_loopback(host) and key == DEV_API_KEY:
            print(f"kaizen serve: refusing to listen on {host}, which other machines can reach,"
                  f" with the public development key: set {KAIZEN_API_KEY} or pass --api-key.",
                  file=sys.stderr)
            return EXIT_USAGE
        try:  # the schema steps run once, here, before the children open the database
            open_store(database, migrate=args.migrate).close()
        except _database_errors(SchemaError, RuntimeError) as exc:
            print(f"kaizen serve: cannot open the database {shown_db}: {exc}", file=sys.stderr)
            return 1
        given = {k: v for k, v in vars(args).items() if k not in _NOT_FOR_CHILDREN}
        command = [sys.executable, "-m", "kaizen_sdk.cli", "serve", "--worker-args",
                   json.dumps(given, default=str)]
        supervisor = Supervisor(sock, args.workers, lambda fd: [*command, "--listen-fd",
                                                                str(fd)],
                                env={**child_environment(key), KAIZEN_DATABASE_URL: database},
                                say=lambda line: print(line, flush=True))
        previous = signal.signal(signal.SIGTERM, lambda signum, frame: supervisor.stop())
        shown = f"[{host}]" if ":" in host else host
        print(f"Kaizen local CT server {__version__} listening on http://{shown}:{port} with"
              f" {args.workers} worker processes", flush=True)
        print(f"Database: {shown_db}", flush=True)
        if key == DEV_API_KEY:
            print(f"API key (development): {key}", flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        try:
            status = supervisor.run()
        finally:
            signal.signal(signal.SIGTERM, previous)
    print("Stopped.", flush=True)
    return status


def _worker_args(args: argparse.Namespace) -> argparse.Namespace:
    """A child's arguments: its parent's (``--worker-args``) on the inherited socket."""
    import json

    given = json.loads(args.worker_args or "{}")
    return argparse.Namespace(**{**vars(args), **given, "workers": 1})


def _cmd_serve(args: argparse.Namespace) -> int:
    if args.listen_fd is None and args.workers > 1:
        return _serve_workers(args)
    child = args.listen_fd is not None
    if child:
        args = _worker_args(args)
    try:
        import socket

        from kaizen_server.http.server import LocalServer
        from kaizen_server.storage.sqlite_schema import SchemaError
    except ImportError as exc:
        print(f"kaizen serve: {exc}", file=sys.stderr)
        return EXIT_FAILURE

    try:
        from kaizen_server.domain.budget import BudgetDefaults

        budgets = BudgetDefaults.resolve(
            job_budget_usd=args.job_budget_usd, daily_budget_usd=args.daily_budget_usd,
            max_jobs_per_day=args.max_jobs_per_day, cooldown_minutes=args.cooldown_minutes,
        )
        database = _database(args)
        server = LocalServer(
            db_path=database, host=args.host, port=args.port, api_key=args.api_key,
            job_step_delay=args.job_step_delay, access_log=args.access_log,
            optimizer=args.optimizer, llm_base_url=args.llm_base_url, budgets=budgets,
            job_timeout=args.job_timeout, otlp_task_map=args.otlp_task_map,
            prices_file=args.prices, migrate=args.migrate,
            listen_socket=None if not child else socket.socket(fileno=args.listen_fd),
        )
    except ValueError as exc:
        print(f"kaizen serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.access_log:
        _log_access_to_stdout()
    try:
        server.start()
    except PermissionError as exc:  # a non-loopback address with the development key
        print(f"kaizen serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"kaizen serve: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    except _database_errors() as exc:
        print(f"kaizen serve: cannot open the database {_shown(database)}: {exc}",
              file=sys.stderr)
        return 1
    except SchemaError as exc:  # newer than this server, or outdated with --no-migrate
        print(f"kaizen serve: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_signal)
    if child:  # the parent printed the rest
        print(f"worker pid {os.getpid()} ready", flush=True)
        return _run_until_stopped(server, stop, previous)
    host, port = server.bound_address
    shown = f"[{host}]" if ":" in host else host
    where = f"http://{shown}:{port}"
    if where != server.base_url:  # a wildcard address: every interface
        where += f" (every interface; from this machine {server.base_url})"
    print(f"Kaizen local CT server {__version__} listening on {where}", flush=True)
    print(f"Database: {_shown(database)}", flush=True)
    print(f"Optimizer: {server.optimizer}", flush=True)
    if server.uses_dev_key:
        print(f"API key (development): {server.api_key}", flush=True)
    elif args.api_key is not None:
        print("API key: the one given with --api-key", flush=True)
    else:
        print("API key: from KAIZEN_API_KEY", flush=True)
    print(f"Web UI: {server.base_url}/ui/ (sign in with a read or admin key)", flush=True)
    print("Press Ctrl-C to stop.", flush=True)
    status = _run_until_stopped(server, stop, previous)
    print("Stopped.", flush=True)
    return status


def _run_until_stopped(server: Any, stop: threading.Event, previous: Any) -> int:
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.stop()
    return 0


def _database(args: argparse.Namespace) -> str:
    """The database of ``--db``, else ``KAIZEN_DATABASE_URL``, else the default file."""
    from kaizen_server.settings import KAIZEN_DATABASE_URL

    return str(args.db or os.environ.get(KAIZEN_DATABASE_URL) or DEFAULT_DB_PATH)


def _shown(database: str) -> str:
    """*database* as printed: a file's absolute path, a URL without its password."""
    from kaizen_server.storage import describe_database, is_postgres_url

    return describe_database(database) if is_postgres_url(database) else os.path.abspath(
        database)


def _database_errors(*more: type[Exception]) -> tuple[type[Exception], ...]:
    """What opening a database raises when it cannot be used (driver errors included), and
    *more*."""
    from kaizen_server.storage.errors import DatabaseUnreachable

    errors: list[type[Exception]] = [sqlite3.Error, DatabaseUnreachable, *more]
    try:
        import psycopg
    except ImportError:
        pass
    else:
        errors.append(psycopg.Error)
    return tuple(errors)


def _log_access_to_stdout() -> None:
    import logging

    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access = logging.getLogger("kaizen_server.access")
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    access.propagate = False


# --- db --------------------------------------------------------------------------------


def add_db(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "db",
        help="the server's database: schema status, upgrade, copy and sizes",
        description="Show or apply the schema steps of a server's SQLite or PostgreSQL database "
        "(`kaizen serve` applies them at start unless given --no-migrate).",
    )
    db = parser.add_subparsers(title="commands", dest="db_command", metavar="COMMAND",
                               required=True)
    for name, fn, text in (
        ("status", _cmd_db_status,
         "show the database's schema version, this server's, and the steps pending"),
        ("upgrade", _cmd_db_upgrade,
         "apply the pending schema steps (in one transaction; back the file up first)"),
        ("stats", _cmd_db_stats,
         "show rows and bytes per table and the file's size (read-only)"),
    ):
        p = db.add_parser(name, help=text, description=text)
        p.add_argument("--db", default=None, metavar="PATH|URL",
                       help="SQLite database file or postgresql:// URL (default: "
                            f"$KAIZEN_DATABASE_URL, else {DEFAULT_DB_PATH})")
        p.add_argument("--json", action="store_true", help="print JSON")
        p.set_defaults(command=fn)
    text = ("copy every row of one database into another (SQLite file or postgresql:// URL, "
            "either way); resumable: run it again to finish an interrupted copy")
    p = db.add_parser("copy", help=text, description=text + ". Stop the source's server first.")
    p.add_argument("source", metavar="SOURCE", help="the database to copy (path or URL)")
    p.add_argument("target", metavar="TARGET",
                   help="where to copy it (path or URL; created and migrated when needed)")
    p.add_argument("--batch", type=int, default=2000, metavar="ROWS",
                   help="rows per transaction (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(command=_cmd_db_copy)


def _db_report(path: str, status: Any, ran: list[str] | None = None) -> dict[str, Any]:
    report: dict[str, Any] = {
        "database": _shown(path),
        "current_version": status.current,
        "target_version": status.target,
        "pending": [step.filename for step in status.pending],
    }
    if ran is not None:
        report["ran"] = ran
    return report


def _render_db(report: dict[str, Any]) -> str:
    current = report["current_version"]
    lines = [f"Database: {report['database']}",
             f"Schema version: {'none (no schema yet)' if current is None else current}"
             f" (this kaizen-server writes {report['target_version']})"]
    if "ran" in report:
        lines.append("Steps run: " + (", ".join(report["ran"]) or "none (already up to date)"))
    elif report["pending"]:
        lines.append("Pending steps: " + ", ".join(report["pending"]))
        lines.append(f"Run `kaizen db upgrade --db {report['database']}` to apply them"
                     " (back the file up first).")
    else:
        lines.append("Up to date.")
    return "\n".join(lines)


def _cmd_db_status(args: argparse.Namespace) -> int:
    from kaizen_server.storage import is_postgres_url, sqlite_schema

    database = _database(args)
    try:
        if is_postgres_url(database):
            from kaizen_server.storage import postgres

            status = postgres.read_status(database)
        else:
            status = sqlite_schema.read_status(database)
    except _database_errors(sqlite_schema.SchemaError) as exc:
        raise CLIError(f"cannot read the database {_shown(database)}: {exc}",
                       EXIT_FAILURE) from None
    emit(args, _db_report(database, status), _render_db)
    return EXIT_OK


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    from kaizen_server.storage import is_postgres_url, sqlite_schema

    path = _database(args)
    if is_postgres_url(path):
        from kaizen_server.storage import postgres

        try:
            done, now = postgres.upgrade(path)
        except _database_errors(sqlite_schema.SchemaError) as exc:
            raise CLIError(f"cannot upgrade the database {_shown(path)}: {exc}",
                           EXIT_FAILURE) from None
        emit(args, _db_report(path, now, [step.filename for step in done]), _render_db)
        return EXIT_OK
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                ran = sqlite_schema.upgrade(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            status = sqlite_schema.status(conn)
        finally:
            conn.close()
    except (sqlite3.Error, sqlite_schema.SchemaError) as exc:
        raise CLIError(f"cannot upgrade the database {path}: {exc}", EXIT_FAILURE) from None
    emit(args, _db_report(path, status, [step.filename for step in ran]), _render_db)
    return EXIT_OK


def _cmd_db_copy(args: argparse.Namespace) -> int:
    from kaizen_server.storage import copy, sqlite_schema

    if args.batch < 1:
        raise CLIError("--batch must be at least 1", EXIT_USAGE)
    last: dict[str, int] = {}

    def progress(table: copy.TableCopy) -> None:
        if not args.json and table.copied - last.get(table.table, 0) >= 10 * args.batch:
            last[table.table] = table.copied
            print(f"  {table.table}: {table.copied:,} of {table.source:,} rows copied",
                  file=sys.stderr, flush=True)

    try:
        tables = copy.copy_database(args.source, args.target, batch=args.batch,
                                    progress=progress)
    except _database_errors(sqlite_schema.SchemaError, copy.CopyError) as exc:
        raise CLIError(f"cannot copy {_shown(args.source)} to {_shown(args.target)}: {exc}",
                       EXIT_FAILURE) from None
    report = {"source": _shown(args.source), "target": _shown(args.target),
              "tables": {t.table: {"source": t.source, "copied": t.copied, "target": t.target}
                         for t in tables}}
    emit(args, report, _render_copy)
    return EXIT_OK


def _render_copy(report: dict[str, Any]) -> str:
    lines = [f"Copied {report['source']} to {report['target']}:"]
    for table, n in report["tables"].items():
        lines.append(f"  {table}: {n['copied']:,} rows copied, {n['target']:,} in the target"
                     f" ({n['source']:,} in the source)")
    return "\n".join(lines)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"  # pragma: no cover


def _render_stats(report: dict[str, Any]) -> str:
    lines = [f"Database: {report['database']}",
             f"File: {_size(report['file_bytes'])} (write-ahead log {_size(report['wal_bytes'])})",
             "", f"{'TABLE':<20} {'ROWS':>12} {'TABLE BYTES':>12} {'INDEX BYTES':>12}"]
    for t in report["tables"]:
        lines.append(f"{t['name']:<20} {t['rows']:>12,} {_size(t['table_bytes']):>12}"
                     f" {_size(t['index_bytes']):>12}")
    return "\n".join(lines)


def _cmd_db_stats(args: argparse.Namespace) -> int:
    import dataclasses

    from kaizen_server.storage import is_postgres_url
    from kaizen_server.storage.sqlite_stats import database_stats

    database = _database(args)
    try:
        if is_postgres_url(database):
            from kaizen_server.storage import postgres_stats

            stats = postgres_stats.database_stats(database)
        else:
            stats = database_stats(database)
    except _database_errors(OSError) as exc:
        raise CLIError(f"cannot read the database {_shown(database)}: {exc}",
                       EXIT_FAILURE) from None
    report = {"database": stats.path, "file_bytes": stats.file_bytes,
              "wal_bytes": stats.wal_bytes,
              "tables": [dataclasses.asdict(t) for t in stats.tables]}
    emit(args, report, _render_stats)
    return EXIT_OK


# --- demo ------------------------------------------------------------------------------


def add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "demo",
        help="run the whole tuning loop offline in a few seconds",
        description="Run a decorated function, score it, optimize its prompt, and run it "
        "again on the new version, against an embedded local CT server (or the server in "
        "KAIZEN_BASE_URL).",
    )
    parser.add_argument("--serve", action="store_true",
                        help="keep the embedded server up afterwards, to look at what the demo "
                        "did in the web UI (until Ctrl-C)")
    parser.set_defaults(command=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from kaizen_server import demo

    return demo.main(serve=args.serve)


# --- eval: judged comparison of two prompt versions, for CI ------------------------------


def add_eval(sub: Any) -> None:
    p = leaf_command(sub, "eval", _eval,
              "judge a prompt version against another on the task's held-out feedback")
    p.add_argument("task", help="task name or id")
    p.add_argument("version", help="version id, or version number (3 or v3)")
    p.add_argument("--against", default="active", metavar="VERSION",
                   help="the version to compare with (default: the active one)")
    p.add_argument("--fail-under", type=float, default=None, metavar="X",
                   help="exit 1 when VERSION's judged mean is below X (0 to 1)")
    llm = p.add_argument_group(
        "LLM endpoint", "kaizen eval calls the LLM from this machine: give it the endpoint here "
        "(the server's own settings are not sent to clients)")
    llm.add_argument("--llm-base-url", default=None, metavar="URL",
                     help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:11434/v1 "
                          "(default: $KAIZEN_LLM_BASE_URL)")
    llm.add_argument("--llm-api-key-env", default="KAIZEN_LLM_API_KEY", metavar="VAR",
                     help="environment variable holding the endpoint's key (default: "
                          "KAIZEN_LLM_API_KEY); the key itself is never an option, so it stays "
                          "out of shell history and process lists")
    llm.add_argument("--budget", type=number, default=None, metavar="USD",
                     help="stop once the LLM calls cost this much (default: the task's "
                          "cost_budget, else no limit)")


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _eval_text(client: CTClient, task: str, version: str) -> tuple[str, int]:
    if version == "active":
        prompt = client.get_prompt(task)
        return prompt.prompt_text, prompt.version_number
    wanted = version_id(client, task, version)
    for prompt in client.list_prompt_versions(task):
        if str(prompt.id) == wanted:
            return prompt.prompt_text, prompt.version_number
    raise CLIError(f"task {task!r} has no prompt version {version!r}", EXIT_NOT_FOUND)


def _eval(client: CTClient, args: argparse.Namespace) -> int:
    from kaizen_server.domain.task_settings import fill_task
    from kaizen_server.evaluate import judge as evaluate
    from kaizen_server.llm.client import BudgetExceeded, LLMClient, LLMError
    from kaizen_server.llm.pricing import PriceTable
    from kaizen_server.optimize import fewshot as optimizer

    if args.fail_under is not None and not 0 <= args.fail_under <= 1:
        raise CLIError("--fail-under must be between 0 and 1", EXIT_USAGE)
    if args.budget is not None and args.budget < 0:
        raise CLIError("--budget must be 0 or more (US dollars)", EXIT_USAGE)
    key_var = args.llm_api_key_env
    if not _ENV_NAME.fullmatch(key_var):  # never echo it: it may be a key pasted by mistake
        raise CLIError("--llm-api-key-env takes the name of an environment variable (letters, "
                       "digits and _), not the key itself", EXIT_USAGE)
    if key_var != "KAIZEN_LLM_API_KEY" and not os.environ.get(key_var):
        raise CLIError(f"--llm-api-key-env: the environment variable {key_var} is not set",
                       EXIT_USAGE)
    base_url = args.llm_base_url or os.environ.get("KAIZEN_LLM_BASE_URL") or ""
    if not base_url:
        raise CLIError("no LLM endpoint: pass --llm-base-url URL or set KAIZEN_LLM_BASE_URL "
                       "(kaizen eval calls the LLM from this machine; the key is read from "
                       f"${key_var}, see --llm-api-key-env)", EXIT_USAGE)
    task = client.get_task(args.task)
    update = f"kaizen tasks update {shlex.quote(task.name)}"
    if not task.judge_model:
        raise CLIError(f"task {task.name!r} has no judge_model: set one with "
                       f"`{update} --judge-model MODEL`", EXIT_USAGE)
    config = task.evaluator_config or {}
    task_model = str(config.get("task_model") or task.teacher_model or "")
    if not task_model:
        raise CLIError(f"task {task.name!r} has no model to run the prompts on: set one with "
                       f"`{update} --task-model MODEL` (or --teacher-model)", EXIT_USAGE)
    candidate, cand_number = _eval_text(client, args.task, args.version)
    active, act_number = _eval_text(client, args.task, args.against)
    # The same held-out split the optimizer used: hash order of all scored feedback ids.
    examples = [
        optimizer.Example(id=str(f.id), inputs=f.inputs, output=f.output, score=f.score,
                          correction=f.correction, comment=f.comment)
        for f in client.iter_feedback(args.task) if f.score is not None
    ]
    _, samples = optimizer.split_train_val(examples)
    if not samples:
        raise CLIError(f"task {task.name!r} has too little scored feedback to hold any out")
    budget = task.cost_budget if args.budget is None else args.budget
    try:
        llm = LLMClient(
            base_url, os.environ.get(key_var) or None, prices=PriceTable(), budget_usd=budget,
            endpoint_hint="--llm-base-url (or KAIZEN_LLM_BASE_URL)",
            key_hint=f"the key in ${key_var} (--llm-api-key-env)",
        )
        try:
            result = evaluate.compare(
                llm, task_model=task_model, judge_model=task.judge_model,
                rubric=str(config.get("rubric", evaluate.DEFAULT_RUBRIC)),
                candidate=candidate, active=active, samples=samples,
            )
        finally:
            llm.close()
    except BudgetExceeded:
        raise CLIError(f"kaizen eval stopped at its budget: spent ${llm.spent_usd:.4f} of "
                       f"${budget:.4f} after {len(llm.calls)} LLM calls; pass a larger "
                       "--budget USD") from None
    except (LLMError, ValueError) as exc:
        raise CLIError(fill_task(str(exc), task.name)) from None
    report = {**result.as_dict(), "version": cand_number, "against": act_number,
              "llm_calls": len(llm.calls), "spent_usd": round(llm.spent_usd, 6)}
    emit(args, report, lambda r: format_fields([
        (f"v{cand_number} judged mean", r["candidate_judged_mean"]),
        (f"v{act_number} judged mean", r["active_judged_mean"]),
        ("paired difference", r["paired_diff"]),
        ("95 % interval", r["paired_diff_ci95"]),
        ("held-out samples", r["sample_size"]),
        ("LLM calls", r["llm_calls"]),
        ("spent (USD)", r["spent_usd"]),
    ]))
    if args.fail_under is not None and result.candidate_mean < args.fail_under:
        raise CLIError(f"v{cand_number} judged mean {result.candidate_mean:.4f} is under "
                       f"--fail-under {args.fail_under}")
    return EXIT_OK
