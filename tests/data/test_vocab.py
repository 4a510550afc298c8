"""Raw item ids to internal ids: text sent for an integer catalogue matches whole numbers only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shopformer.data.vocab import encode_items

CATALOGUE = pd.Index(np.array([1, 2, 3, 1234567890123456789], dtype=np.int64))


@pytest.mark.parametrize(
    ("asked", "expected"),
    [
        (["2", " 3 ", "2.0"], [2, 3, 2]),
        (["1234567890123456789", "x"], [4, 0]),  # exact: not rounded through a float
        (["1.5", "inf", "-inf", "nan", "1e30", "x", ""], [0] * 7),  # no crash, nothing matched
        ([True, "1"], [0, 1]),
    ],
)
def test_text_ids_for_an_integer_catalogue_match_whole_numbers_only(asked, expected):
    assert encode_items(asked, CATALOGUE).tolist() == expected
