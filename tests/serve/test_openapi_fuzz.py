"""Schemathesis against our own OpenAPI spec: generated requests (valid and not) never get a 5xx,
and every answer conforms to the spec (status code, content type, headers, body schema).

Each operation's Hypothesis strategy is driven here by ``@given`` (schemathesis's lazy pytest
fixture loader does not run under pytest 9); ``call_and_validate`` runs schemathesis's checks.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from shopformer.serve.app import create_app

FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)


@pytest.fixture(scope="module")
def api_schema(scored_journey):
    # A bundle with journey.onnx: every endpoint has a model behind it (journey ones included).
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(scored_journey[2], admin_token=""))


def fuzz(schema, mode: GenerationMode, examples: int) -> list[str]:
    """Run ``examples`` generated cases per operation; one line per operation that failed a check."""
    failures, operations = [], [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 9  # every route of the app is in the spec

    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not _takes_input(operation):
            continue  # nothing to make invalid (GET /health etc.): positive mode covers them

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(FUZZ, max_examples=examples)
        def check(case) -> None:
            # Not positive_data_acceptance: JSON Schema cannot say "one event type per item" or
            # "timestamps needed by this model", so some schema-valid bodies are rightly 422.
            case.call_and_validate(excluded_checks=[positive_data_acceptance])

        try:
            check()
        except Exception as exc:  # the check failures of one operation, reported together below
            failures.append(f"{operation.label}: {str(exc).strip()[:2000]}")
    return failures


def _takes_input(operation) -> bool:
    definition = operation.definition.raw
    return bool(definition.get("requestBody") or definition.get("parameters"))


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_requests_get_no_5xx_and_answers_follow_the_spec(api_schema, mode):
    assert fuzz(api_schema, mode, examples=8) == []


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_many_generated_requests_get_no_5xx_and_answers_follow_the_spec(api_schema, mode):
    assert fuzz(api_schema, mode, examples=150) == []
