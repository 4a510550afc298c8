"""User errors become one line and exit code 2; anything else keeps its traceback."""

from __future__ import annotations

import pytest
from hydra.errors import InstantiationException

from shopformer.errors import (
    USAGE_EXIT_CODE,
    ConfigError,
    DataError,
    RequestError,
    exit_on_user_error,
    one_line,
)


def test_a_user_error_is_one_line_on_stderr_and_exit_code_2(capsys):
    with pytest.raises(SystemExit) as exit_info, exit_on_user_error("shopformer-x"):
        raise DataError("events.csv: column 'timestamp'\n  cannot parse '2024-13-01'")
    assert exit_info.value.code == USAGE_EXIT_CODE == 2
    assert capsys.readouterr().err == (
        "shopformer-x: error: events.csv: column 'timestamp' cannot parse '2024-13-01'\n"
    )


def test_the_user_error_inside_a_hydra_instantiation_error_is_what_is_said(capsys):
    try:
        raise ConfigError("schedule.decay_start must be in [0, 1), got 1.5")
    except ConfigError as inner:
        wrapped = InstantiationException("Error in call to target 'LRSchedule': ConfigError(...)")
        wrapped.__cause__ = inner
    with pytest.raises(SystemExit), exit_on_user_error():
        raise wrapped
    assert capsys.readouterr().err == "error: schedule.decay_start must be in [0, 1), got 1.5\n"


def test_a_hydra_error_without_a_user_error_inside_keeps_its_own_message(capsys):
    with pytest.raises(SystemExit), exit_on_user_error():
        raise InstantiationException("Error in call to target 'JourneyModule': unexpected keyword 'ks'")
    assert "unexpected keyword 'ks'" in capsys.readouterr().err


def test_other_exceptions_are_not_swallowed():
    with pytest.raises(ZeroDivisionError), exit_on_user_error():
        _ = 1 / 0


def test_request_errors_name_their_field_and_move_under_a_prefix():
    error = RequestError("session.items", "empty")
    assert str(error) == "session.items: empty"
    assert error.within("sessions", 3).loc == ("sessions", 3, "session", "items")
    assert one_line(ValueError()) == "ValueError"
