"""Serving errors belong to the one hierarchy of user errors (imports: tests/test_layout.py)."""

from __future__ import annotations

import pytest

from shopformer.errors import ConfigError, DataError, RequestError, UserError
from shopformer.serve.batch_scoring import InputError
from shopformer.serve.bundle import BundleError
from shopformer.serve.cli import UsageError
from shopformer.serve.index import IndexConfigError
from shopformer.serve.journey import NoJourneyModel
from shopformer.serve.rules import FilterError


@pytest.mark.parametrize(
    ("error", "base"),
    [
        (BundleError, UserError),
        (IndexConfigError, ConfigError),
        (InputError, DataError),
        (UsageError, ConfigError),
        (FilterError, RequestError),
        (NoJourneyModel, RequestError),
    ],
)
def test_serving_errors_are_user_errors(error, base):
    assert issubclass(error, base) and issubclass(error, UserError)
