"""The replay summary prints dead-letter header values as typed, never as console markup."""

from __future__ import annotations

import io

from rich.console import Console

from streams.config import KafkaConnection
from streams.replay.report import print_summary
from streams.replay.runner import ListedRecord, ReplayOptions, ReplayReport

MARKUP_ID = "[bold red]x[/]"
LINK_ID = "[link=https://evil.example/]click me[/link]"
LONE_CLOSE = "order-[/]"


def _options() -> ReplayOptions:
    return ReplayOptions(
        connection=KafkaConnection("127.0.0.1:1"),
        dlq_topic="conversions-dlq",
        target_topic="conversions",
        group="convstream-replay",
    )


def _render(report: ReplayReport) -> str:
    out = io.StringIO()
    console = Console(file=out, width=400, force_terminal=True, color_system="truecolor")
    print_summary(console, _options(), report)
    return out.getvalue()


def test_ids_and_codes_from_dead_letter_headers_print_literally() -> None:
    report = ReplayReport(dry_run=True)
    for offset, (event_id, code) in enumerate(
        [(MARKUP_ID, "INVALID_EVENT"), (LINK_ID, "[italic]CODE[/italic]"), (LONE_CLOSE, "[/]")]
    ):
        report.listed.append(ListedRecord(0, offset, event_id, code, "[/]", "[b]2026[/b]", 0))
        report.by_code[code].replayed += 1
    text = _render(report)
    for literal in (MARKUP_ID, LINK_ID, LONE_CLOSE, "[italic]CODE[/italic]", "[b]2026[/b]"):
        assert literal in text
    assert "\x1b]8;" not in text  # no terminal hyperlink


def test_ids_skipped_by_max_replays_print_literally() -> None:
    report = ReplayReport(max_replay_ids=[MARKUP_ID, LINK_ID, LONE_CLOSE])
    report.by_code["INVALID_EVENT"].max_replays += 3
    text = _render(report)
    assert f"skipped by max-replays: {MARKUP_ID}, {LINK_ID}, {LONE_CLOSE}" in text
    assert "\x1b]8;" not in text


def test_cut_dead_letters_are_counted_and_explained() -> None:
    report = ReplayReport(cut_ids=[MARKUP_ID, "dlq:0:7"])
    report.by_code["INVALID_JSON"].cut += 2
    text = _render(report)
    assert "refused: cut" in text
    assert f"refused, value cut to fit the dead-letter topic: {MARKUP_ID}, dlq:0:7" in text
    assert "convstream.original_sha256" in text
