"""Process lifecycle: exit right after calls, fork and multiprocessing children, many threads."""

from __future__ import annotations

import asyncio
import gc
import threading
import uuid
import weakref
from typing import Any

import pytest

from kaizen_sdk import CTClient, current_trace_id, tracing

from .conftest import API_KEY, CTServer, run_python, wait_for

pytestmark = [pytest.mark.e2e]

# Exit delivers within KAIZEN_SHUTDOWN_TIMEOUT (default 5 s); on a loaded machine the server
# may need longer for thousands of records, and the bound is not what these tests are about.
_ENV = {"KAIZEN_SHUTDOWN_TIMEOUT": "60"}

_PRELUDE = """
    import json, os, sys
    from kaizen_sdk import CTClient

    client = CTClient()

    def traced(task):
        @client.task(task, default_prompt="p")
        def echo(x, prompt=None):
            return x
        return echo
"""


@pytest.mark.timeout(60)
def test_exit_right_after_1000_calls_delivers_all_1000(ct_server: CTServer) -> None:
    task = f"exit-{uuid.uuid4().hex[:8]}"
    code = _PRELUDE + f"""
    echo = traced({task!r})
    for i in range(1000):
        echo(i)
    # the interpreter exits here: no flush(), no close()
    """
    run_python(code, env=_ENV | {"KAIZEN_BASE_URL": ct_server.url})
    assert len(ct_server.trace_ids(task)) == 1000
    assert ct_server.feedback_count(task) == 1000


@pytest.mark.timeout(90)
def test_os_fork_child_and_parent_each_deliver_their_own(ct_server: CTServer) -> None:
    parent_task, child_task = (f"fork-{w}-{uuid.uuid4().hex[:8]}" for w in ("parent", "child"))
    code = _PRELUDE + f"""
    parent = traced({parent_task!r})
    child = traced({child_task!r})
    for i in range(50):
        parent(i)                      # queued in the parent before the fork
    pid = os.fork()
    if pid == 0:
        for i in range(200):
            child(i)
        sys.exit(0)                    # a normal exit of the child: atexit delivers
    for i in range(50, 100):
        parent(i)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, status
    """
    run_python(code, env=_ENV | {"KAIZEN_BASE_URL": ct_server.url})
    assert len(ct_server.trace_ids(parent_task)) == 100
    assert len(ct_server.trace_ids(child_task)) == 200


@pytest.mark.timeout(90)
def test_multiprocessing_fork_children_deliver_theirs(ct_server: CTServer) -> None:
    base = uuid.uuid4().hex[:8]
    tasks = {w: f"mp-{w}-{base}" for w in ("parent", "process", "pool", "late")}
    code = _PRELUDE + f"""
    import multiprocessing

    tasks = {tasks!r}
    parent = traced(tasks["parent"])
    in_process = traced(tasks["process"])
    in_pool = traced(tasks["pool"])

    def work(n):
        for i in range(n):
            in_process(i)

    def pooled(i):
        return in_pool(i)

    def late(n):
        # the first traced call of this client happens inside the child
        child_client = CTClient()
        @child_client.task(tasks["late"], default_prompt="p")
        def echo(x, prompt=None):
            return x
        for i in range(n):
            echo(i)

    if __name__ == "__main__":
        for i in range(30):
            parent(i)                  # the parent's pipeline exists before the children
        ctx = multiprocessing.get_context("fork")
        procs = [ctx.Process(target=work, args=(150,)), ctx.Process(target=late, args=(70,))]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert [p.exitcode for p in procs] == [0, 0], [p.exitcode for p in procs]
        with ctx.Pool(2) as pool:
            assert pool.map(pooled, range(120)) == list(range(120))
            pool.close()
            pool.join()                # workers leave normally: each delivers its share
    """
    run_python(code, env=_ENV | {"KAIZEN_BASE_URL": ct_server.url})
    counts = {w: len(ct_server.trace_ids(t)) for w, t in tasks.items()}
    assert counts == {"parent": 30, "process": 150, "pool": 120, "late": 70}


@pytest.mark.timeout(90)
def test_multiprocessing_imported_after_the_first_call_still_delivers_the_childs(
    ct_server: CTServer,
) -> None:
    # The pipeline is built before multiprocessing is imported (it then defers its exit hook
    # for multiprocessing children to the fork): the child's records must still arrive.
    base = uuid.uuid4().hex[:8]
    tasks = {w: f"mp-late-{w}-{base}" for w in ("parent", "child")}
    code = _PRELUDE + f"""
    tasks = {tasks!r}
    parent = traced(tasks["parent"])
    child = traced(tasks["child"])

    def work(n):
        for i in range(n):
            child(i)

    if __name__ == "__main__":
        for i in range(20):
            parent(i)
        assert "multiprocessing" not in sys.modules
        import multiprocessing
        proc = multiprocessing.get_context("fork").Process(target=work, args=(80,))
        proc.start()
        proc.join(60)
        assert proc.exitcode == 0, proc.exitcode
    """
    run_python(code, env=_ENV | {"KAIZEN_BASE_URL": ct_server.url})
    counts = {w: len(ct_server.trace_ids(t)) for w, t in tasks.items()}
    assert counts == {"parent": 20, "child": 80}


@pytest.mark.timeout(120)
def test_16_threads_times_1000_calls_deliver_exactly_16000(ct_server: CTServer) -> None:
    task = f"threads-{uuid.uuid4().hex[:8]}"
    # The queue bound is not under test here: make it hold every record.
    client = CTClient(api_key=API_KEY, base_url=ct_server.url, max_queue_size=20_000)

    @client.task(task, default_prompt="p")
    def echo(x: int, prompt: Any = None) -> str | None:
        return current_trace_id()

    mismatches: list[tuple[str | None, str]] = []
    ids: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(16)

    def worker() -> None:
        start.wait(30)
        mine = []
        for i in range(1000):
            seen, run = echo.call(i)
            if seen != run.trace_id:  # each thread sees only its own current trace
                mismatches.append((seen, run.trace_id))
            mine.append(run.trace_id)
        with lock:
            ids.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(100)
    assert not any(t.is_alive() for t in threads)
    client.flush()  # waits for everything (close() alone is bounded by the shutdown timeout)
    client.close()

    assert mismatches == []
    assert len(ids) == len(set(ids)) == 16_000
    stats = client.stats()
    assert (stats.queued, stats.sent, stats.dropped) == (16_000, 16_000, 0)
    assert sorted(ct_server.trace_ids(task)) == sorted(ids)
    assert ct_server.feedback_count(task) == 16_000


@pytest.mark.timeout(60)
async def test_asyncio_tasks_never_see_each_others_trace(ct_server: CTServer) -> None:
    task = f"asyncio-{uuid.uuid4().hex[:8]}"
    client = CTClient(api_key=API_KEY, base_url=ct_server.url)

    @client.task(task, default_prompt="p")
    async def echo(x: int, prompt: Any = None) -> tuple[str | None, str | None]:
        before = current_trace_id()
        await asyncio.sleep(0)  # let every other task run in between
        return before, current_trace_id()

    async def one(i: int) -> tuple[str | None, str | None, str]:
        (before, after), run = await echo.call(i)
        return before, after, run.trace_id

    results = await asyncio.gather(*(one(i) for i in range(500)))
    assert current_trace_id() is None
    await asyncio.to_thread(client.flush)
    await asyncio.to_thread(client.close)
    assert all(before == after == mine for before, after, mine in results)
    ids = [mine for _, _, mine in results]
    assert len(set(ids)) == 500
    assert sorted(ct_server.trace_ids(task)) == sorted(ids)


@pytest.mark.timeout(60)
def test_closed_clients_are_freed(ct_server: CTServer) -> None:
    # An application that makes a short-lived client per request must not pile them up
    # (exit hooks, multiprocessing finalizers and the spool may not keep them alive).
    refs = []
    for i in range(20):
        client = CTClient(api_key=API_KEY, base_url=ct_server.url)

        @client.task(f"freed-{i}", default_prompt="p")
        def echo(x: int, prompt: Any = None) -> int:
            return x

        echo(i)
        client.close()
        refs.append(weakref.ref(tracing.pipeline_for(client)))
        del client, echo

    def all_freed() -> bool:
        gc.collect()  # (a background thread may hold the last one for a moment)
        return all(r() is None for r in refs)

    assert wait_for(all_freed, timeout=20)
