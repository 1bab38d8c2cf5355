"""The ``kaizen`` command line: ``kaizen serve`` runs the local CT server, ``kaizen demo`` the loop.

Each subcommand is one ``_cmd_<name>(args) -> int`` function plus one ``_add_<name>(sub)``
function that declares its arguments; `build_parser` registers them from `_SUBCOMMANDS`.
To add a subcommand, write both functions and append the pair there.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import sys
import threading
from collections.abc import Callable, Sequence
from types import FrameType

from kaizen_sdk._version import __version__

__all__ = ["DEFAULT_DB_PATH", "build_parser", "main"]

DEFAULT_DB_PATH = os.path.join(".kaizen", "local.db")
"""Database of ``kaizen serve`` when ``--db`` is not given (relative to the current folder)."""

_Command = Callable[[argparse.Namespace], int]


# --- serve -----------------------------------------------------------------------------


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "serve",
        help="run the local CT server (SQLite) until Ctrl-C",
        description="Run the whole CT API on a local SQLite database.",
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000,
                        help="TCP port, 0 for a free one (default: %(default)s)")
    parser.add_argument("--db", default=DEFAULT_DB_PATH, metavar="PATH",
                        help="SQLite database file (default: %(default)s)")
    parser.add_argument("--api-key", default=None, metavar="KEY",
                        help="key clients must send (default: $KAIZEN_API_KEY, else a fixed "
                             "development key that is printed)")
    parser.add_argument("--job-step-delay", type=float, default=0.0, metavar="SECONDS",
                        help=argparse.SUPPRESS)
    parser.set_defaults(command=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    from kaizen_sdk.local import LocalServer

    server = LocalServer(
        db_path=args.db, host=args.host, port=args.port, api_key=args.api_key,
        job_step_delay=args.job_step_delay,
    )
    try:
        server.start()
    except OSError as exc:
        print(f"kaizen serve: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    except sqlite3.Error as exc:
        print(f"kaizen serve: cannot open the database {args.db}: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = signal.signal(signal.SIGTERM, on_signal)
    print(f"Kaizen local CT server {__version__} listening on {server.base_url}", flush=True)
    print(f"Database: {os.path.abspath(args.db)}", flush=True)
    if server.uses_dev_key:
        print(f"API key (development): {server.api_key}", flush=True)
    elif args.api_key is not None:
        print("API key: the one given with --api-key", flush=True)
    else:
        print("API key: from KAIZEN_API_KEY", flush=True)
    print("Press Ctrl-C to stop.", flush=True)
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.stop()
    print("Stopped.", flush=True)
    return 0


# --- demo ------------------------------------------------------------------------------


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "demo",
        help="run the whole tuning loop offline in a few seconds",
        description="Run a decorated function, score it, optimize its prompt, and run it "
        "again on the new version, against an embedded local CT server (or the server in "
        "KAIZEN_BASE_URL).",
    )
    parser.set_defaults(command=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from kaizen_sdk import _demo

    return _demo.main()


# --- registry --------------------------------------------------------------------------

_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    _add_serve,
    _add_demo,
]
"""One ``_add_<name>`` function per subcommand, in the order ``--help`` lists them."""


def build_parser() -> argparse.ArgumentParser:
    """Return the ``kaizen`` argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="kaizen", description="Kaizen continuous-tuning SDK tools."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``kaizen`` command; return the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    command: _Command | None = getattr(args, "command", None)
    if command is None:
        parser.print_help()
        return 2
    return command(args)


if __name__ == "__main__":
    raise SystemExit(main())
