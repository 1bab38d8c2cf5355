"""Fixtures of the fault suite: a fault-injecting proxy in front of the local CT server."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from ._proxy import FaultProxy

if TYPE_CHECKING:
    from kaizen_sdk.local import LocalServer


@pytest.fixture
def proxy(local_server: LocalServer) -> Iterator[FaultProxy]:
    """A fresh fault proxy on loopback that forwards to the session's local server."""
    with FaultProxy(local_server.base_url) as fault_proxy:
        yield fault_proxy
