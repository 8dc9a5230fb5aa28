"""One duration grammar for template TTLs, launch requests and culler rules."""

import pytest

from kdash_hub.durations import format_duration, parse_duration


@pytest.mark.parametrize("text, seconds", [
    (None, None), ("", None), (0, None), ("0", None), ("never", None), ("none", None),
    ("off", None), (90, 90), (3600, 3600), ("90", 90), ("90s", 90), ("30m", 1800),
    ("90m", 5400), ("1h", 3600), ("8h", 28800), ("2d", 172800), ("1w", 604800),
    ("2w", 1209600), ("8h30m", 30600), ("1d 12h", 129600), ("1.5h", 5400), (0.5, 1),
])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["-1", "-5m", -1, -5, "soon", "abc", "5x", "1h-5m", "h",
                                 True, "8 hours"])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_format_duration():
    assert [format_duration(s) for s in (None, 0, 45, 125, 3600, 5400, 30600, 90061)] == [
        "never", "0s", "45s", "2m5s", "1h", "1h30m", "8h30m", "1d1h"]
    assert format_duration(3 * 86400 + 3600 + 5) == "3d1h"
    assert format_duration(None, none="-") == "-"
