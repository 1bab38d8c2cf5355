"""The durable spool: atomic appends, oldest-first replay, shared directories, bad files."""

from __future__ import annotations

import logging
import multiprocessing
import os
import uuid
from pathlib import Path
from typing import Any

import pytest

from kaizen_sdk import _spool
from kaizen_sdk._spool import Spool
from kaizen_sdk.models import IngestRequest, TraceRequest, encode

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]


def _batch(*ids: uuid.UUID) -> bytes:
    return encode(IngestRequest(traces=[TraceRequest(task_id="t", id=i) for i in ids]))


def _ids(batch: IngestRequest) -> list[uuid.UUID]:
    return [t.id for t in batch.traces if t.id is not None]


def test_append_is_atomic_and_names_sort_oldest_first(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    payloads = [_batch(uuid.uuid4()) for _ in range(300)]
    for data in payloads:
        assert spool.append(data, records=1) is True

    names = spool.pending()
    assert len(names) == 300
    assert [(tmp_path / n).read_bytes() for n in names] == payloads
    assert sorted(os.listdir(tmp_path)) == names  # no temporary files left behind
    assert spool.appended_batches == 300
    assert spool.size_bytes() == sum(len(p) for p in payloads)


def test_replay_sends_oldest_first_and_deletes_what_was_delivered(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    sent_ids = [uuid.uuid4() for _ in range(10)]
    for i in sent_ids:
        spool.append(_batch(i), records=1)

    seen: list[uuid.UUID] = []

    def send(batch: IngestRequest) -> bool:
        seen.extend(_ids(batch))
        return True

    result = spool.replay(send)
    assert (result.batches, result.records, result.corrupt, result.failed) == (10, 10, 0, False)
    assert seen == sent_ids
    assert spool.pending() == []
    assert spool.replayed_batches == 10


def test_replay_stops_at_the_first_failure_and_keeps_the_rest_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    ids = [uuid.uuid4() for _ in range(5)]
    for i in ids:
        spool.append(_batch(i), records=1)
    calls: list[uuid.UUID] = []

    def send(batch: IngestRequest) -> bool:
        calls.extend(_ids(batch))
        return len(calls) <= 2  # the third batch fails

    result = spool.replay(send)
    assert (result.batches, result.failed) == (2, True)
    assert calls == ids[:3]
    remaining = spool.pending()
    assert len(remaining) == 3

    def raising(batch: IngestRequest) -> bool:
        raise RuntimeError("server exploded")

    assert spool.replay(raising).failed is True  # an exception is a failure, not a crash
    assert len(spool.pending()) == 3

    later: list[uuid.UUID] = []
    assert spool.replay(lambda b: later.extend(_ids(b)) is None).batches == 3
    assert later == ids[2:]


def test_max_batches_and_should_stop_limit_a_pass(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for _ in range(6):
        spool.append(_batch(uuid.uuid4()), records=1)
    assert spool.replay(lambda b: True, max_batches=2).batches == 2
    assert len(spool.pending()) == 4
    assert spool.replay(lambda b: True, should_stop=lambda: True).batches == 0
    assert len(spool.pending()) == 4


def test_corrupt_file_is_set_aside_logged_and_not_fatal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path)
    good_first, good_last = uuid.uuid4(), uuid.uuid4()
    spool.append(_batch(good_first), records=1)
    bad_names = []
    for junk in (b"{not json", b"", b'{"traces": [{"task_id": 5}]}', b"\xff\xfe\x00"):
        spool.append(junk)
        bad_names.append(spool.pending()[-1])
    spool.append(_batch(good_last), records=1)

    seen: list[uuid.UUID] = []
    with caplog.at_level(logging.WARNING, logger="kaizen_sdk"):
        result = spool.replay(lambda b: seen.extend(_ids(b)) is None)

    assert (result.batches, result.corrupt, result.failed) == (2, 4, False)
    assert seen == [good_first, good_last]
    assert spool.pending() == []
    assert sorted(os.listdir(tmp_path / "corrupt")) == sorted(bad_names)
    assert spool.corrupt_files == 4
    corrupt_logs = [r for r in caplog.records if "corrupt" in r.getMessage()]
    assert len(corrupt_logs) == 4


def test_total_size_is_bounded_and_drops_are_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    one = _batch(uuid.uuid4())
    spool = Spool(tmp_path, max_bytes=len(one) * 3)
    with caplog.at_level(logging.WARNING, logger="kaizen_sdk"):
        results = [spool.append(_batch(uuid.uuid4()), records=1) for _ in range(10)]
    assert results == [True] * 3 + [False] * 7
    assert (spool.appended_batches, spool.dropped_batches, spool.dropped_records) == (3, 7, 7)
    assert len(spool.pending()) == 3
    assert len([r for r in caplog.records if "full" in r.getMessage()]) == 1  # once a minute

    assert spool.replay(lambda b: True).batches == 3  # room again once replayed
    assert spool.append(_batch(uuid.uuid4()), records=1) is True


def test_a_claim_held_elsewhere_is_skipped(tmp_path: Path) -> None:
    first = Spool(tmp_path)
    ids = [uuid.uuid4() for _ in range(3)]
    for i in ids:
        first.append(_batch(i), records=1)
    other = Spool(tmp_path)  # its own file handles: flock conflicts exactly as across processes

    held = first.claim()
    assert held is not None
    seen: list[uuid.UUID] = []
    assert other.replay(lambda b: seen.extend(_ids(b)) is None).batches == 2
    assert seen == ids[1:]
    held.release()
    assert other.replay(lambda b: seen.extend(_ids(b)) is None).batches == 1
    assert seen == ids[1:] + ids[:1]
    assert other.pending() == []


def test_rename_claims_where_flock_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_spool, "fcntl", None)
    spool = Spool(tmp_path)
    ids = [uuid.uuid4() for _ in range(3)]
    for i in ids:
        spool.append(_batch(i), records=1)

    held = spool.claim()
    assert held is not None
    assert len(spool.pending()) == 2  # the claimed file is invisible to others
    held.release()
    assert len(spool.pending()) == 3

    seen: list[uuid.UUID] = []
    assert spool.replay(lambda b: seen.extend(_ids(b)) is None).batches == 3
    assert seen == ids
    assert os.listdir(tmp_path) == []


def test_stale_claims_and_partial_writes_are_recovered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _batch(uuid.uuid4())
    (tmp_path / "00000000000000000001-1-00000000-aaaaaaaa.batch.claimed").write_bytes(data)
    (tmp_path / "00000000000000000002-1-00000000-bbbbbbbb.batch.part").write_bytes(b"{")
    for name in os.listdir(tmp_path):
        os.utime(tmp_path / name, (1.0, 1.0))  # an hour and more ago
    spool = Spool(tmp_path)
    assert os.listdir(tmp_path) == ["00000000000000000001-1-00000000-aaaaaaaa.batch"]
    assert spool.replay(lambda b: True).batches == 1


def test_unwritable_directory_drops_without_raising(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    os.rmdir(tmp_path / "spool")
    (tmp_path / "spool").write_text("a file where the directory was")
    assert spool.append(_batch(uuid.uuid4()), records=4) is False
    assert (spool.dropped_batches, spool.dropped_records) == (1, 4)
    assert spool.pending() == []
    assert spool.replay(lambda b: True).batches == 0


# --- two processes sharing one directory -------------------------------------------------


def _replayer(directory: str, out: str, me: Any, other: Any, barrier: Any) -> None:
    spool = Spool(directory)
    sent: list[str] = []
    barrier.wait(timeout=30)

    def send(batch: IngestRequest) -> bool:
        sent.extend(str(i) for i in _ids(batch))
        if len(sent) == 1:
            # Hold our first claim until the other process has delivered one of its own,
            # so both really replay at the same time.
            me.set()
            other.wait(timeout=30)
        return True

    spool.replay(send)
    me.set()
    Path(out).write_text("\n".join(sent))


def test_two_processes_replay_each_file_exactly_once(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool = Spool(spool_dir)
    expected = {uuid.uuid4() for _ in range(400)}
    for i in expected:
        spool.append(_batch(i), records=1)

    ctx = multiprocessing.get_context("spawn")
    events = [ctx.Event(), ctx.Event()]
    barrier = ctx.Barrier(2)
    outs = [tmp_path / "a.txt", tmp_path / "b.txt"]
    procs = [
        ctx.Process(
            target=_replayer,
            args=(str(spool_dir), str(outs[n]), events[n], events[1 - n], barrier),
        )
        for n in range(2)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=50)
    assert [p.exitcode for p in procs] == [0, 0]

    got = [[uuid.UUID(line) for line in o.read_text().splitlines()] for o in outs]
    assert len(got[0]) > 0 and len(got[1]) > 0
    assert len(got[0]) + len(got[1]) == 400
    assert set(got[0]) | set(got[1]) == expected
    assert set(got[0]) & set(got[1]) == set()
    assert spool.pending() == []


def test_a_forked_child_can_append_even_if_a_parent_thread_held_the_lock(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool._lock.acquire()  # as if another thread of the parent was appending at fork time
    try:
        ctx = multiprocessing.get_context("fork")
        child = ctx.Process(target=_append_one, args=(spool,))
        child.start()
        child.join(30)
        assert child.exitcode == 0
    finally:
        spool._lock.release()
    assert len(spool.pending()) == 1


def _append_one(spool: Spool) -> None:
    assert spool.append(_batch(uuid.uuid4()), records=1) is True


def test_a_delivered_file_that_cannot_be_deleted_is_never_sent_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path)
    ids = [uuid.uuid4() for _ in range(3)]
    for i in ids:
        spool.append(_batch(i), records=1)
    real_unlink = os.unlink

    def read_only(path: Any, *args: Any, **kwargs: Any) -> None:
        if str(path).startswith(str(tmp_path)):
            raise PermissionError(30, "Read-only file system", str(path))
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(_spool.os, "unlink", read_only)
    seen: list[uuid.UUID] = []

    def send(batch: IngestRequest) -> bool:
        seen.extend(_ids(batch))
        return True

    with caplog.at_level(logging.WARNING, logger="kaizen_sdk.spool"):
        for _ in range(5):  # every later pass finds nothing left to send
            spool.replay(send)
    assert seen == ids
    assert spool.replayed_batches == 3
    assert spool.pending() == [] and spool.is_empty()
    assert len(list(tmp_path.glob("*.batch"))) == 3  # still on the read-only disk
    warnings = [r for r in caplog.records if "Could not delete" in r.getMessage()]
    assert len(warnings) == 1  # rate-limited: once a minute


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_entries_that_are_not_regular_files_are_skipped_and_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path / "spool")
    good = uuid.uuid4()
    spool.append(_batch(good), records=1)
    folder = tmp_path / "spool"
    os.mkfifo(folder / "00000000000000000001-fifo.batch")  # opening it would block
    elsewhere = tmp_path / "elsewhere.batch"
    elsewhere.write_bytes(_batch(uuid.uuid4()))
    (folder / "00000000000000000002-link.batch").symlink_to(elsewhere)
    (folder / "00000000000000000003-dir.batch").mkdir()
    seen: list[uuid.UUID] = []

    def send(batch: IngestRequest) -> bool:
        seen.extend(_ids(batch))
        return True

    with caplog.at_level(logging.WARNING, logger="kaizen_sdk.spool"):
        result = spool.replay(send)
        spool.replay(send)
    assert (result.batches, result.failed) == (1, False)
    assert seen == [good]
    skipped = [r.getMessage() for r in caplog.records if "not a regular file" in r.getMessage()]
    assert len(skipped) == 3
    assert elsewhere.exists()  # a symlink's target is never touched
