"""Sticky arm assignment (`kaizen_sdk._rollout`) and `ct.context`, without a server."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import uuid

import pytest

import kaizen_sdk as ct
from kaizen_sdk._context import CallContext, current_context
from kaizen_sdk._rollout import assignment_key, bucket, choose_arm
from kaizen_sdk.models import Prompt, RolloutServing, decode

pytestmark = pytest.mark.unit

ACTIVE = Prompt(id=uuid.UUID(int=1), version_number=1, prompt_text="active")
CANDIDATE = Prompt(id=uuid.UUID(int=2), version_number=2, prompt_text="candidate",
                   status="candidate")


def split(share: float, salt: str = "salt-1") -> Prompt:
    serving = RolloutServing(id=uuid.UUID(int=9), candidate=CANDIDATE, share=share, salt=salt)
    return Prompt(id=ACTIVE.id, version_number=1, prompt_text="active", rollout=serving)


def test_bucket_is_fixed_per_salt_and_key() -> None:
    assert bucket("s", "user-1") == bucket("s", "user-1")
    assert bucket("s", "user-1") != bucket("t", "user-1")
    assert 0.0 <= bucket("s", "user-1") < 1.0
    # pinned: a change of hash would reshuffle every running rollout's users
    digest = hashlib.blake2b(b"key", digest_size=8, key=b"salt").digest()
    assert bucket("salt", "key") == int.from_bytes(digest, "big") / 2**64
    long_salt = "s" * 100
    digest = hashlib.blake2b(b"key", digest_size=8,
                             key=hashlib.blake2b(long_salt.encode()).digest()).digest()
    assert bucket(long_salt, "key") == int.from_bytes(digest, "big") / 2**64


def test_share_over_keys_and_stickiness() -> None:
    prompt = split(0.3)
    arms = [choose_arm(prompt, f"k{i}")[1] for i in range(20_000)]
    share = arms.count("candidate") / len(arms)
    assert 0.29 <= share <= 0.31
    assert arms == [choose_arm(prompt, f"k{i}")[1] for i in range(20_000)]


def test_shares_nest_as_the_ramp_grows() -> None:
    # a key in the candidate at 20 % stays in it at 50 %: ramping up never flips users back
    small, large = split(0.2), split(0.5)
    for i in range(2000):
        if choose_arm(small, i)[1] == "candidate":
            assert choose_arm(large, i)[1] == "candidate"


def test_edges_and_served_prompt() -> None:
    assert all(choose_arm(split(0.0), i) == (split(0.0), "active") for i in range(100))
    assert all(choose_arm(split(1.0), i) == (CANDIDATE, "candidate") for i in range(100))


def test_no_rollout_serves_the_prompt_itself_with_no_arm() -> None:
    assert choose_arm(ACTIVE, "user") == (ACTIVE, None)
    # a server that does not know rollouts: the field is absent
    prompt = decode(b'{"id": "00000000-0000-0000-0000-000000000001", "prompt_text": "x"}',
                    Prompt)
    assert choose_arm(prompt) == (prompt, None)


def test_no_key_is_random_at_the_share() -> None:
    import random

    random.seed(7)
    prompt = split(0.25)
    arms = [choose_arm(prompt)[1] for _ in range(8000)]
    assert 0.23 <= arms.count("candidate") / len(arms) <= 0.27


def test_assignment_key_prefers_the_named_argument_then_the_context() -> None:
    assert assignment_key("user", {"user": 42}) == "42"
    assert assignment_key(None, {}) is None
    with ct.context(user_id="u-1", session_id="s-1"):
        assert assignment_key(None, {}) == "u-1"
        assert assignment_key("session_id", {}) == "s-1"
        assert assignment_key("user", {"user": "arg"}) == "arg"
        assert assignment_key("user", {}) is None
    with ct.context(session_id="s-2"):
        assert assignment_key(None, {}) == "s-2"


def test_context_nests_and_restores() -> None:
    assert current_context() is None
    with ct.context(user_id="u", tags=["a"]) as outer:
        assert outer == CallContext(user_id="u", tags=("a",))
        with ct.context(session_id="s", tags=["b", "a"]):
            assert current_context() == CallContext(user_id="u", session_id="s",
                                                    tags=("a", "b"))
        assert current_context() == outer
    assert current_context() is None


def test_context_restores_after_an_exception() -> None:
    with pytest.raises(ValueError), ct.context(user_id="u"):
        raise ValueError("boom")
    assert current_context() is None


def test_context_checks_its_arguments() -> None:
    with pytest.raises(TypeError):
        ct.context(user_id=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ct.context(tags="one-string")


def test_context_is_per_thread() -> None:
    seen: list[CallContext | None] = []
    ready, done = threading.Event(), threading.Event()

    def other() -> None:
        ready.wait(5)
        seen.append(current_context())
        done.set()

    thread = threading.Thread(target=other)
    thread.start()
    with ct.context(user_id="main"):
        ready.set()
        assert done.wait(5)
    thread.join(5)
    assert seen == [None]


async def test_context_is_per_task_and_works_with_async_with() -> None:
    async def worker(user: str) -> str | None:
        async with ct.context(user_id=user):
            await asyncio.sleep(0)
            ctx = current_context()
            return None if ctx is None else ctx.user_id

    assert await asyncio.gather(*(worker(f"u{i}") for i in range(20))) == [
        f"u{i}" for i in range(20)
    ]
    assert current_context() is None
