"""Schemathesis against the local server's own OpenAPI document: no 5xx, no schema violation.

The server gets its own instance (a fresh temporary database), so the records schemathesis
creates never show up in other tests. Each operation gets a few schema-valid cases (which
must be answered without a 5xx and as documented) and a few schema-violating ones (which must
be answered without a 5xx and as documented).

(``schemathesis.pytest.from_fixture`` reads a private pytest attribute that pytest 9 no
longer has, so the operations are walked here with plain hypothesis instead.)
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from kaizen_server import LocalServer

if TYPE_CHECKING:
    from schemathesis.checks import CheckFunction

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(120)]


EXPECTED = {
    "GET /api/v1/health",
    "POST /api/v1/tasks",
    "GET /api/v1/tasks",
    "GET /api/v1/tasks/{task_id}",
    "PATCH /api/v1/tasks/{task_id}",
    "POST /api/v1/feedback",
    "GET /api/v1/feedback",
    "GET /api/v1/prompts/{task_id}",
    "GET /api/v1/prompts/{task_id}/versions",
    "POST /api/v1/prompts/{task_id}/activate",
    "POST /api/v1/optimize/{task_id}",
    "GET /api/v1/jobs/{job_id}",
    "GET /api/v1/jobs",
    "POST /api/v1/traces",
    "GET /api/v1/traces",
    "GET /api/v1/traces/{trace_id}",
    "POST /api/v1/traces/{trace_id}/score",
    "POST /api/v1/ingest",
    "POST /api/v1/keys",
    "GET /api/v1/keys",
    "DELETE /api/v1/keys/{key_id}",
    "GET /api/v1/audit",
}
"""The operations of DESIGN.md section 3 (the OpenAPI document itself is not fuzzed)."""


EXCLUDED = ("positive_data_acceptance", "negative_data_rejection")
"""Checks left out (their names in ``schemathesis.checks``), on purpose:

- ``positive_data_acceptance``: JSON Schema counts ``3.0`` as an integer; the server's typed
  decoders (rightly strict) answer a schema-valid ``"feedback_threshold": 3.0`` with a 422.
- ``negative_data_rejection``: the server ignores unknown query parameters, and ingest
  validates item by item (a ``207`` listing the rejected items, DESIGN.md section 3).

What stays: no 5xx, documented status codes, content types, headers and response bodies."""


@pytest.fixture(scope="module")
def schema_server() -> Iterator[LocalServer]:
    """A local server of this module's own."""
    with LocalServer(api_key="schemathesis-key") as server:
        yield server


def test_every_operation_conforms_to_its_schema(schema_server: LocalServer) -> None:
    # imported here, not at collection, where it would cost every xdist worker ~0.2 s of CPU
    import schemathesis
    from schemathesis import GenerationMode

    excluded: list[CheckFunction] = [getattr(schemathesis.checks, name) for name in EXCLUDED]
    schema = schemathesis.openapi.from_url(f"{schema_server.base_url}/api/v1/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= EXPECTED
    headers = {"X-API-Key": schema_server.api_key}
    tested: list[str] = []
    for operation, mode in itertools.product(operations, GenerationMode):

        @given(case=operation.as_strategy(mode))
        @settings(
            max_examples=25,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            case.call_and_validate(headers=headers, excluded_checks=excluded, timeout=10)

        try:
            check()
        except Unsatisfiable:
            # Nothing to break in an operation without parameters or body (GET /health).
            assert mode is GenerationMode.NEGATIVE, operation.label
            continue
        tested.append(f"{operation.label} {mode.value}")
    negative = {t.rsplit(" ", 1)[0] for t in tested if t.endswith(" negative")}
    assert len(tested) - len(negative) == len(operations)
    assert negative >= {label for label in EXPECTED if label.startswith("POST")}
