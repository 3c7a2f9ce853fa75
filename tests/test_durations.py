"""The one duration grammar (medsr.durations) shared by every front end."""

from __future__ import annotations

import pytest

from medsr.durations import parse_duration
from medsr.errors import InvalidParameterError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        (90, 90),
        ("500ms", 0.5),
        ("60 sec", 60),
        ("2m", 120),
        ("10 MIN", 600),
        ("1h", 3600),
        ("1d", 86400),
        ("1m30s", 90),
        ("1h 30m", 5400),
        (".5", 0.5),
    ],
)
def test_one_grammar(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "-1s", "0", "0s", "10x", "1 2", "1d2"])
def test_bad_durations_are_one_clear_error(text):
    with pytest.raises(InvalidParameterError, match=r"duration|more than 0"):
        parse_duration(text)


def test_every_front_end_uses_it():
    from medsr.cli import _parse_duration
    from medsr.pacs.bridge import parse_interval
    from medsr.service.cli import parse_duration as serve_duration

    assert _parse_duration("1m30s") == parse_interval("1m30s") == serve_duration("1m30s") == 90
    with pytest.raises(InvalidParameterError):
        parse_interval("5d")  # a polling interval in days is a typo
    assert serve_duration("1d") == 86400
