"""BanditFeedback: what it accepts, and the one-line errors for what it does not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shopformer.errors import ConfigError, DataError
from shopformer.offpolicy.feedback import BanditFeedback


def frame(**overrides: object) -> pd.DataFrame:
    columns = dict(
        slate_id=[7, 7, 8, 8],
        position=[0, 1, 0, 1],
        reward=[1.0, 0.0, 0.0, 1.0],
        pscore=[0.5, 0.25, 0.5, 0.2],
        target_pscore=[0.25, 0.5, 1.0, 0.1],
    )
    return pd.DataFrame(columns | overrides)


def test_a_valid_frame_becomes_read_only_arrays():
    fb = BanditFeedback.from_frame(frame(item=["x", "y", "x", "z"], q_hat=[0.1, 0.2, 0.3, 0.4]))
    assert (fb.n_rows, fb.n_slates) == (4, 2)
    assert fb.slate_index.tolist() == [0, 0, 1, 1]
    assert fb.position.dtype == np.int64
    assert fb.importance_weight.tolist() == [0.5, 2.0, 2.0, 0.5]
    assert fb.item.tolist() == ["x", "y", "x", "z"] and fb.dm_value is None
    with pytest.raises(ValueError, match="read-only"):
        fb.reward[0] = 5.0


def test_a_propensity_of_zero_names_the_column_the_count_and_the_value():
    with pytest.raises(
        DataError, match=r"column 'pscore' has 2 of 4 rows outside \(0, 1\].*e\.g\. 0\.0 at row 1"
    ):
        BanditFeedback.from_frame(frame(pscore=[0.5, 0.0, 0.0, 0.2]))


def test_a_missing_propensity_column_is_named():
    with pytest.raises(DataError, match="logs.parquet: missing column 'pscore'"):
        BanditFeedback.from_frame(frame().drop(columns="pscore"), source="logs.parquet")


def test_a_nan_target_propensity_names_the_column_and_count():
    with pytest.raises(
        DataError, match=r"column 'target_pscore' has 1 of 4 rows missing or not finite.*row 2"
    ):
        BanditFeedback.from_frame(frame(target_pscore=[0.25, 0.5, np.nan, 0.1]))


def test_missing_logging_propensities_are_an_error_too():
    with pytest.raises(DataError, match=r"column 'pscore' has 3 of 4 rows missing"):
        BanditFeedback.from_frame(frame(pscore=[None, None, None, 0.2]))


@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        ("target_pscore", [0.25, 1.5, 1.0, 0.1], r"'target_pscore' has 1 of 4 rows outside \[0, 1\]"),
        ("pscore", [0.5, "high", 0.5, 0.2], r"'pscore' is not numeric: 1 of 4 rows, e\.g\. 'high'"),
        ("position", [0, 1.5, 0, 1], r"'position' has 1 of 4 rows not a 0-based integer"),
        ("reward", [1.0, np.inf, 0.0, 1.0], r"'reward' has 1 of 4 rows missing or not finite"),
        ("slate_id", [7, None, 8, 8], r"'slate_id' has 1 of 4 rows missing"),
    ],
)
def test_bad_values_name_the_column(column, values, message):
    with pytest.raises(DataError, match=message):
        BanditFeedback.from_frame(frame(**{column: values}))


def test_renamed_columns_are_read_and_named_in_messages():
    df = frame().rename(columns={"pscore": "propensity"})
    fb = BanditFeedback.from_frame(df, columns={"pscore": "propensity"})
    assert fb.pscore.tolist() == [0.5, 0.25, 0.5, 0.2]
    df.loc[0, "propensity"] = 0.0
    with pytest.raises(DataError, match="column 'propensity'"):
        BanditFeedback.from_frame(df, columns={"pscore": "propensity"})
    with pytest.raises(ConfigError, match="unknown field 'propensity'"):
        BanditFeedback.from_frame(df, columns={"propensity": "pscore"})


def test_a_repeated_slate_position_is_refused():
    with pytest.raises(
        DataError, match="1 rows repeat a .slate_id, position. pair, e.g. slate_id 7 position 0"
    ):
        BanditFeedback.from_frame(frame(position=[0, 0, 0, 1]))


def test_a_slate_propensity_must_be_one_value_per_slate():
    good = frame(slate_pscore=[0.1, 0.1, 0.05, 0.05], target_slate_pscore=[0.2, 0.2, 0.0, 0.0])
    assert BanditFeedback.from_frame(good).slate_pscore.tolist() == [0.1, 0.1, 0.05, 0.05]
    with pytest.raises(DataError, match="'slate_pscore' must be one value per slate.*slate_id 8"):
        BanditFeedback.from_frame(frame(slate_pscore=[0.1, 0.1, 0.05, 0.06]))


def test_direct_construction_is_validated_too():
    with pytest.raises(DataError, match="column 'target_pscore' has 3 rows but 'reward' has 4"):
        BanditFeedback(
            reward=[1.0, 0.0, 0.0, 1.0],
            position=[0, 1, 0, 1],
            pscore=[0.5, 0.5, 0.5, 0.5],
            slate_id=[1, 1, 2, 2],
            target_pscore=[0.5, 0.5, 0.5],
        )
    with pytest.raises(DataError, match="feedback: column 'unsupported_mass' has 1 of 4 rows outside"):
        BanditFeedback.from_frame(frame(unsupported_mass=[0.0, 0.1, -0.2, 0.0]))
    with pytest.raises(DataError, match="feedback: no rows"):
        BanditFeedback.from_frame(frame().iloc[:0])
