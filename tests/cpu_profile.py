"""Where the test suite's CPU goes: an opt-in pytest plugin, a runner and a report.

``make test`` must stay under 3 minutes on an idle 2-core machine; the suite is CPU-bound, and
on a shared machine wall time is noise, so this measures CPU. Nothing loads it unless asked::

    export PYTHONPATH=.:server:tests
    python tests/cpu_profile.py run /tmp/prof -- python -m pytest -n 2 -p cpu_profile
    python tests/cpu_profile.py report /tmp/prof

The plugin (``-p cpu_profile``) writes, per xdist worker, each test's CPU from setup to
teardown: the worker's own (``time.process_time``), its waited-for subprocesses
(``RUSAGE_CHILDREN``), and the worker's private PostgreSQL server (its processes and the
backends they reaped), so a session fixture's cost lands on the first test that uses it.
``run`` starts the command as a child subreaper, so orphaned descendants (``pg_ctl`` detaches
the PostgreSQL servers) are reaped by it and counted in the total it prints.
"""

from __future__ import annotations

import collections
import ctypes
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["main", "pytest_collection_finish", "pytest_runtest_protocol", "pytest_sessionfinish"]

_OUT_ENV = "KAIZEN_CPU_PROFILE_DIR"
_TICK = os.sysconf("SC_CLK_TCK")
_clusters: list[Any] = []
_rows: list[dict[str, Any]] = []


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(parent pid, own CPU ticks, reaped children's CPU ticks) of *pid*."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = data[data.rindex(")") + 2:].split()
    return int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[13]) + int(rest[14])


def _postgres_cpu() -> dict[int, float]:
    """CPU seconds so far of each running cluster's server processes, by cluster."""
    seconds = {}
    for cluster in _clusters:
        try:
            postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        own = _stat(postmaster)
        if own is None:
            continue
        ticks = own[1] + own[2]
        for entry in os.listdir("/proc"):
            if entry.isdigit() and (child := _stat(int(entry))) and child[0] == postmaster:
                ticks += child[1]
        seconds[id(cluster)] = ticks / _TICK
    return seconds


def _cpu() -> tuple[float, float, dict[int, float]]:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time(), children.ru_utime + children.ru_stime, _postgres_cpu()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Remember each PostgreSQL cluster this worker starts (tests/pg_cluster.py)."""
    try:
        import pg_cluster
    except ImportError:
        return
    start = pg_cluster.Cluster.start
    if getattr(start, "cpu_profile", False):
        return

    def remembered(self: Any) -> Any:
        _clusters.append(self)
        return start(self)

    remembered.cpu_profile = True  # type: ignore[attr-defined]
    pg_cluster.Cluster.start = remembered  # type: ignore[method-assign]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """Record one test's CPU, setup to teardown."""
    before, began = _cpu(), time.monotonic()
    try:
        return (yield)
    finally:
        after = _cpu()
        _rows.append({"id": item.nodeid, "self": after[0] - before[0],
                      "children": after[1] - before[1],
                      # a cluster started or stopped meanwhile counts from/to zero
                      "pg": sum(after[2].get(k, 0.0) - before[2].get(k, 0.0)
                                for k in after[2]),
                      "wall": time.monotonic() - began})


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Write this process's rows and totals (collection included) to the profile directory."""
    out = Path(os.environ.get(_OUT_ENV, "cpu-profile"))
    out.mkdir(parents=True, exist_ok=True)
    own, children, _ = _cpu()
    name = f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-{os.getpid()}.json"
    (out / name).write_text(json.dumps({"rows": _rows, "self": own, "children": children}))


def _run(out: str, command: list[str]) -> int:
    if ctypes.CDLL(None).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        raise SystemExit("cpu_profile: cannot become a subreaper (Linux only)")
    began = time.monotonic()
    code = subprocess.call(command, env={**os.environ, _OUT_ENV: out})
    wall = time.monotonic() - began
    while True:  # orphaned descendants that were re-parented here
        try:
            os.wait()
        except ChildProcessError:
            break
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"cpu_profile: exit {code}, wall {wall:.1f} s, CPU {used.ru_utime + used.ru_stime:.1f} s"
          f" (user {used.ru_utime:.1f} s, system {used.ru_stime:.1f} s)", file=sys.stderr)
    return code


def _report(out: str, top: int) -> None:
    rows: list[dict[str, Any]] = []
    own = children = 0.0
    for path in Path(out).glob("*.json"):
        data = json.loads(path.read_text())
        if data["rows"]:
            rows += data["rows"]
            own += data["self"]
            children += data["children"]
    for row in rows:
        row["cpu"] = row["self"] + row["children"] + row["pg"]
    in_tests = sum(row["self"] for row in rows)
    print(f"{len(rows)} tests; workers {own:.1f} s ({own - in_tests:.1f} s outside tests:"
          f" collection), their subprocesses {children:.1f} s,"
          f" PostgreSQL in tests {sum(row['pg'] for row in rows):.1f} s")
    print("   CPU s  worker  subproc      pg    wall  test")
    for row in sorted(rows, key=lambda r: -r["cpu"])[:top]:
        print(f"{row['cpu']:8.1f}{row['self']:8.1f}{row['children']:9.1f}{row['pg']:8.1f}"
              f"{row['wall']:8.1f}  {row['id']}")
    files: collections.Counter[str] = collections.Counter()
    for row in rows:
        files[row["id"].split("::")[0]] += row["cpu"]
    print("   CPU s  file")
    for file, cpu in files.most_common(top):
        print(f"{cpu:8.1f}  {file}")


def main(argv: list[str]) -> int:
    """``run DIR -- COMMAND...`` or ``report DIR [TOP]``."""
    if len(argv) >= 4 and argv[0] == "run" and argv[2] == "--":
        return _run(argv[1], argv[3:])
    if len(argv) in (2, 3) and argv[0] == "report":
        _report(argv[1], int(argv[2]) if len(argv) == 3 else 20)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
