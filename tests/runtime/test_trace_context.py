"""W3C `traceparent` parsing for processes that do not trace (`runtime.trace_context`)."""

from __future__ import annotations

import pytest

from gearshift.runtime.trace_context import light_span, parse_traceparent

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
VALID = f"00-{TRACE}-00f067aa0ba902b7-01"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (VALID, (int(TRACE, 16), 1)),
        (VALID[:-2] + "00", (int(TRACE, 16), 0)),
        (VALID[:-2] + "03", (int(TRACE, 16), 1)),  # unknown flag bits: only "sampled" kept
        ("cc" + VALID[2:] + "-future-field", (int(TRACE, 16), 1)),  # a later version
        (VALID.upper(), None),
        (VALID + "-extra", None),  # version 00 has exactly four fields
        ("ff" + VALID[2:], None),
        (f"00-{'0' * 32}-00f067aa0ba902b7-01", None),
        (f"00-{TRACE}-{'0' * 16}-01", None),
        (VALID.replace("-", "_"), None),
        (VALID[:-1], None),
        ("", None),
        (None, None),
    ],
)
def test_parse(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_traceparent(header) == expected


def test_light_span_continues_or_mints() -> None:
    continued = light_span(VALID)
    ctx = continued.get_span_context()
    assert ctx.trace_id == int(TRACE, 16) and ctx.trace_flags.sampled
    assert not continued.is_recording()
    # The next hop's parent is this span, not the caller's.
    assert continued.traceparent.startswith(f"00-{TRACE}-")
    assert continued.traceparent.endswith("-01")
    assert parse_traceparent(continued.traceparent) == (int(TRACE, 16), 1)
    assert continued.traceparent[36:52] != "00f067aa0ba902b7"
    minted = {light_span(None).get_span_context().trace_id for _ in range(100)}
    assert len(minted) == 100 and 0 not in minted
    assert light_span(VALID.upper()).get_span_context().trace_id != int(TRACE, 16)
