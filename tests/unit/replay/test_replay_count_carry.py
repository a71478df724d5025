"""A replayed message that fails again dead-letters with the replay count it came in with,
so ``convstream replay --max-replays`` can stop a loop across replays."""

from __future__ import annotations

from streams.core.headers import replay_count
from streams.core.model import SourcePosition
from streams.core.outcomes import ErrorInfo, Received, Resolution, output_records


def test_a_dead_letter_carries_the_inputreplay_count() -> None:
    received = Received(
        SourcePosition("in", 0, 5),
        b"k",
        1.0,
        2.0,
        replay_count=replay_count([("convstream.replay_count", b"4")]),
    )
    resolution = Resolution(
        received=received,
        status="rejected",
        error=ErrorInfo("upload", "X", "m", retryable=False),
        dead_letter_value=b"{}",
    )
    _, dead_letter = output_records(resolution, 3.0)
    assert dict(dead_letter.headers)["convstream.replay_count"] == b"4"
