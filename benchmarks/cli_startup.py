"""Start-up of the ``kaizen`` command: each run a fresh process, median of several.

Times ``kaizen --help`` (no client), ``kaizen tasks list`` and ``kaizen status`` (both talk
to a local CT server started here, in its own thread, on a temporary database), and, for
scale, a bare ``python -c pass``. Two figures per command: wall time, and the CPU time of
the child process (user + system), which the neighbours on a shared machine disturb less.
Runs of the commands alternate. Run it with ``python -m benchmarks.cli_startup [RUNS]``.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

__all__ = ["measure", "main"]

_COMMANDS: dict[str, list[str]] = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "kaizen --help": [sys.executable, "-m", "kaizen_sdk.cli", "--help"],
    "kaizen tasks list": [sys.executable, "-m", "kaizen_sdk.cli", "tasks", "list"],
    "kaizen status": [sys.executable, "-m", "kaizen_sdk.cli", "status"],
}


def _once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, timeout=60, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} exited {proc.returncode}: {proc.stderr.decode()[:200]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall * 1000.0, cpu * 1000.0


def measure(runs: int = 9) -> dict[str, tuple[float, float]]:
    """Median (wall ms, CPU ms) of each command over *runs* fresh processes."""
    from kaizen_server import LocalServer

    with tempfile.TemporaryDirectory() as tmp, LocalServer(
        db_path=os.path.join(tmp, "ct.db")
    ) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KAIZEN_")}
        env.update(KAIZEN_API_KEY=server.api_key, KAIZEN_BASE_URL=server.base_url)
        for name in ("summarize_ticket", "classify_email"):
            subprocess.run(
                [sys.executable, "-m", "kaizen_sdk.cli", "tasks", "create", name,
                 "--prompt-text", "Summarize: {{ ticket }}"],
                env=env, capture_output=True, timeout=60, check=True,
            )
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in _COMMANDS}
        for _ in range(runs):
            for name, argv in _COMMANDS.items():
                samples[name].append(_once(argv, env))
    return {
        name: (statistics.median(w for w, _ in got), statistics.median(c for _, c in got))
        for name, got in samples.items()
    }


def main() -> None:
    """Print the medians as a small table."""
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 9
    print(f"median of {runs} fresh processes, load average {os.getloadavg()[0]:.2f}")
    for name, (wall, cpu) in measure(runs).items():
        print(f"{name:<20} wall {wall:6.1f} ms   cpu {cpu:6.1f} ms")


if __name__ == "__main__":
    main()
