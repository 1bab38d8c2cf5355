"""How much a ``kill -9`` loses: a child process calls a decorated function at a known pace,
is killed with SIGKILL, and the records that reached the spool (server down) or the server
(server up) are counted against the calls the child made.

Run: ``python -m benchmarks.kill9_loss [--burst 30000] [--rate 1000] [--seconds 3]
[--sdk DIR]``: a burst of calls as fast as the caller can, then calls at a steady rate.
``--sdk`` imports ``kaizen_sdk`` from another checkout (to compare with an earlier release).
The child writes ``index time`` after each call, so each missing record's age at the kill
is known; the figures are the share of calls lost and the age of the oldest lost call.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec

__all__ = [
    "CHILD",
    "Outcome",
    "dead_url",
    "hung_server",
    "kill_child",
    "main",
    "spooled_inputs",
    "stored_inputs",
    "unavailable_server",
]

ROOT = Path(__file__).resolve().parents[1]
TASK = "kill9"
WHAT = {"503": "answers 503", "hung": "never answers"}

CHILD = textwrap.dedent("""
    import sys, time
    import kaizen_sdk as ct

    burst, rate, log_path = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
    client = ct.CTClient()

    @client.task({task!r}, default_prompt="Echo {{{{ x }}}}")
    def echo(x: int) -> int:
        return x

    log = open(log_path, "w", buffering=1)
    for i in range(burst):  # as fast as the caller can
        echo(i)
        log.write(f"{{i}} {{time.time()}}\\n")
    start = time.time()
    i = burst
    while True:  # then at a known pace, until killed
        pause = start + (i - burst) / rate - time.time()
        if pause > 0:
            time.sleep(pause)
        echo(i)
        log.write(f"{{i}} {{time.time()}}\\n")  # after the call: its record exists
        i += 1
""")


class Outcome(msgspec.Struct, kw_only=True):
    """One killed child: the calls it made (index -> wall time) and when it was killed."""

    made: dict[int, float]
    killed_at: float

    def lost(self, kept: set[int]) -> list[int]:
        """Indexes of calls made but not in *kept*."""
        return sorted(set(self.made) - kept)

    def summary(self, kept: set[int]) -> str:
        lost = self.lost(kept)
        oldest = max((self.killed_at - self.made[i] for i in lost), default=0.0)
        share = 100.0 * len(lost) / max(1, len(self.made))
        return (f"{len(self.made)} calls, {len(self.made) - len(lost)} kept, {len(lost)} lost "
                f"({share:.1f} %), oldest lost call {oldest:.2f} s before the kill")


def dead_url() -> str:
    """A loopback URL where nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def hung_server() -> Iterator[str]:
    """A loopback URL whose server accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1024)  # the kernel completes the handshakes; nobody reads
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


@contextlib.contextmanager
def unavailable_server() -> Iterator[str]:
    """A loopback URL whose server answers every request with 503 (a proxy whose upstream
    is down)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            body = b'{"title": "Service Unavailable"}'
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def kill_child(
    env: dict[str, str], *, burst: int, rate: float, seconds: float, workdir: Path,
    sdk: Path = ROOT, task: str = TASK, timeout: float = 60.0,
) -> Outcome:
    """Run the child until it has made *burst* calls at once and ``rate * seconds`` more at
    *rate* a second, SIGKILL it, and return the calls it made."""
    log = workdir / "calls.log"
    log.unlink(missing_ok=True)
    full = {k: v for k, v in os.environ.items() if not k.startswith("KAIZEN_")}
    full.update(env)
    full["PYTHONPATH"] = os.pathsep.join([str(sdk), full.get("PYTHONPATH", "")])
    want = burst + int(rate * seconds)
    with subprocess.Popen(
        [sys.executable, "-c", CHILD.format(task=task), str(burst), str(rate), str(log)],
        env=full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        cwd=workdir,  # not a checkout: ``-c`` puts the working directory first on the path
    ) as proc:
        try:
            deadline = time.monotonic() + timeout
            while _lines(log) < want:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise RuntimeError(f"the child stopped early or is too slow:\n{err}")
                time.sleep(0.05)
            killed_at = time.time()
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    made: dict[int, float] = {}
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:  # the last line may be cut by the kill
            made[int(parts[0])] = float(parts[1])
    return Outcome(made=made, killed_at=killed_at)


def _lines(path: Path) -> int:
    try:
        with path.open("rb") as fh:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 16), b""))
    except FileNotFoundError:
        return 0


def spooled_inputs(folder: Path) -> set[int]:
    """The ``x`` of every feedback entry in the spool files of *folder*."""
    from kaizen_sdk.models import IngestRequest

    found: set[int] = set()
    for path in folder.glob("*.batch"):
        batch = msgspec.json.decode(path.read_bytes(), type=IngestRequest)
        found.update(int(fb.inputs["x"]) for fb in batch.feedback if fb.inputs)
    return found


def stored_inputs(db: Path, task: str = TASK) -> set[int]:
    """The ``x`` of every feedback entry the server stored for *task*."""
    conn = sqlite3.connect(db, timeout=30)
    try:
        rows = conn.execute(
            "SELECT json_extract(f.inputs, '$.x') FROM feedback f JOIN tasks k"
            " ON f.task_id = k.id WHERE k.name = ?", (task,),
        ).fetchall()
    finally:
        conn.close()
    return {int(r[0]) for r in rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--burst", type=int, default=0, help="calls made at once first")
    parser.add_argument("--rate", type=float, default=1000.0, help="calls a second after it")
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds of those")
    parser.add_argument("--sdk", type=Path, default=ROOT, help="checkout to import")
    args = parser.parse_args(argv)
    from kaizen_server import LocalServer

    with tempfile.TemporaryDirectory(prefix="kill9-") as tmp:
        work = Path(tmp)
        spool = work / "spool"
        down = kill_child(
            {"KAIZEN_API_KEY": "k", "KAIZEN_BASE_URL": dead_url(),
             "KAIZEN_SPOOL_DIR": str(spool)},
            burst=args.burst, rate=args.rate, seconds=args.seconds, workdir=work,
            sdk=args.sdk,
        )
        print("server down (refused), spool:", down.summary(spooled_inputs(spool)))
        for name, server_cm in (("503", unavailable_server()), ("hung", hung_server())):
            folder = work / f"spool-{name}"
            with server_cm as url:
                out = kill_child(
                    {"KAIZEN_API_KEY": "k", "KAIZEN_BASE_URL": url,
                     "KAIZEN_SPOOL_DIR": str(folder)},
                    burst=args.burst, rate=args.rate, seconds=args.seconds, workdir=work,
                    sdk=args.sdk,
                )
            print(f"server {WHAT[name]}, spool:", out.summary(spooled_inputs(folder)))
        db = work / "ct.db"
        with LocalServer(db_path=db, api_key="k") as server:
            up = kill_child(
                {"KAIZEN_API_KEY": "k", "KAIZEN_BASE_URL": server.base_url},
                burst=args.burst, rate=args.rate, seconds=args.seconds, workdir=work,
                sdk=args.sdk,
            )
            time.sleep(1.0)  # requests already sent finish on the server's side
            print("server up, no spool:", up.summary(stored_inputs(db)))
            task = f"{TASK}-spool"
            folder = work / "spool-up"
            up = kill_child(
                {"KAIZEN_API_KEY": "k", "KAIZEN_BASE_URL": server.base_url,
                 "KAIZEN_SPOOL_DIR": str(folder)},
                burst=args.burst, rate=args.rate, seconds=args.seconds, workdir=work,
                sdk=args.sdk, task=task,
            )
            time.sleep(1.0)
            kept = stored_inputs(db, task) | spooled_inputs(folder)
            print("server up, spool:   ", up.summary(kept))


if __name__ == "__main__":
    main()
