"""Property-based fuzzing of the whole HTTP API from its own OpenAPI document.

Schemathesis generates valid and invalid requests for every operation, sends them to a
production replica, and checks each answer: never a 5xx, a documented status code and
content type, a body matching the documented schema.
"""

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from schemathesis import Case, GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.openapi import from_url

from tests.reliability.conftest import Cluster

EXAMPLES = 50
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_operation_answers_generated_requests_as_documented(
    cluster: Cluster, mode: GenerationMode, report: Any
) -> None:
    schema = from_url(f"{cluster.url(0)}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    if mode is GenerationMode.NEGATIVE:
        # Invalid input needs something to be invalid: a parameter or a body.
        operations = [op for op in operations if op.query or op.body]
    calls = 0
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,  # the same cases on every run, so a failure reproduces
            database=None,
        )
        def check(case: Case) -> None:
            nonlocal calls
            calls += 1
            case.call_and_validate(base_url=cluster.url(0), checks=CHECKS, timeout=30)

        check()
    report(
        f"fuzz ({mode.value} data): {calls} generated requests over {len(operations)} "
        "operations: no 5xx, every answer as documented"
    )
