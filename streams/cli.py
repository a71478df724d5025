"""The ``convstream`` command line.

Each subcommand builds :class:`~streams.config.Settings` from the environment once, then calls
one function in the module that owns the work. Heavy imports happen inside the handlers so
``convstream --help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from streams.config import ConfigError, Settings

EPILOG = """\
Settings come from CONVSTREAM_* environment variables (see README, "Configuration").
Exit codes: 0 success, 1 the command ran and found problems, 2 usage or configuration error.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand (also used by tests to check ``--help``)."""
    parser = argparse.ArgumentParser(
        prog="convstream",
        description=(
            "Dedupe, micro-batch and upload offline conversions from Kafka "
            "to Google Ads and Yandex Metrica."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    validate = commands.add_parser(
        "validate",
        help="check a JSONL file of events offline",
        description=(
            "Parse and validate every line of FILE against the event schemas and the cross-field "
            "rules, exactly as the worker would. Prints one line per invalid event "
            "(line number, stage, JSON path, reason) and a summary."
        ),
        epilog="Exit status: 0 if every event is valid, 1 if any is not, 2 if FILE is unreadable.",
    )
    validate.add_argument(
        "file", type=Path, metavar="FILE.jsonl", help="one JSON event per line; - reads stdin"
    )
    validate.add_argument(
        "--quiet", action="store_true", help="print only the summary, not each invalid event"
    )
    validate.set_defaults(handler=_run_validate)

    send = commands.add_parser(
        "send",
        help="produce events from a JSONL file to Kafka",
        description=(
            "Produce every non-blank line of FILE, byte for byte, to the input topic "
            "(invalid lines too: the worker is the one that judges them). Waits for the broker's "
            "delivery report of every message."
        ),
        epilog=(
            "Exit status: 0 if every message was delivered, 1 if any failed, 2 on usage errors "
            "and when the cluster refused the credentials or certificates."
        ),
    )
    send.add_argument(
        "file", type=Path, metavar="FILE.jsonl", help="one JSON event per line; - reads stdin"
    )
    send.add_argument(
        "--topic", help="topic to produce to (default: CONVSTREAM_INPUT_TOPIC, 'conversions')"
    )
    send.add_argument(
        "--broker",
        help="bootstrap host:port (default: from CONVSTREAM_BROKER, localhost:9092); the "
        "CONVSTREAM_KAFKA_* security settings apply to it too",
    )
    send.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to wait for delivery reports before counting a message failed (default 30)",
    )
    send.add_argument("--no-progress", action="store_true", help="do not draw a progress bar")
    send.set_defaults(handler=_run_send)

    broker = commands.add_parser(
        "broker",
        help="run the embedded Kafka-protocol broker (tansu) in the foreground",
        description=(
            "Start the tansu broker bundled with the dev extra (memory storage: everything is "
            "lost on exit) and print its address. For development and the demo, not production. "
            "Stop it with Ctrl-C."
        ),
    )
    broker.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    broker.add_argument(
        "--port",
        type=int,
        default=9092,
        help="port to listen on; 0 picks a free one (default 9092)",
    )
    broker.add_argument(
        "--create-topics",
        action="store_true",
        help="create the input, results and dead-letter topics (4 partitions) once it is up",
    )
    broker.set_defaults(handler=_run_broker)

    worker = commands.add_parser(
        "worker",
        help="run the stream worker (Faust): dedupe, batch, upload, publish results",
        description=(
            "Consume CONVSTREAM_INPUT_TOPIC, dedupe, micro-batch per account, upload, and "
            "publish one result per message to CONVSTREAM_RESULTS_TOPIC (dead letters to "
            "CONVSTREAM_DLQ_TOPIC, Yandex upload statuses to CONVSTREAM_UPLOAD_STATUS_TOPIC). "
            "Metrics on :CONVSTREAM_METRICS_PORT/metrics. All settings "
            "come from the environment (see README). SIGTERM or Ctrl-C stops it gracefully."
        ),
    )
    worker.set_defaults(handler=_run_worker)

    replay = commands.add_parser(
        "replay",
        help="replay dead letters back to the input topic",
        description=(
            "Read CONVSTREAM_DLQ_TOPIC with its own consumer group and produce the selected "
            "dead letters to the input topic, key and value unchanged, with "
            "convstream.replay_count + 1. Stops at the end of the dead letters as they were at "
            "start. Resumable: offsets are committed only after the broker acknowledged the "
            "copies, so rerunning the same command continues where the last run stopped. "
            "Filters combine with AND; a repeated filter matches any of its values."
        ),
        epilog=(
            "Exit status: 0 done, 1 the broker was unreachable or refused a record, 2 usage "
            "error, missing topic or refused credentials/certificates, 130 interrupted "
            "(Ctrl-C / SIGTERM; acknowledged records are committed)."
        ),
    )
    replay.add_argument(
        "--error-code",
        action="append",
        default=[],
        metavar="CODE",
        help="only dead letters with this convstream.error.code (repeatable)",
    )
    replay.add_argument(
        "--stage",
        action="append",
        default=[],
        choices=["parse", "validate", "upload"],
        help="only dead letters that failed at this stage (repeatable)",
    )
    replay.add_argument(
        "--destination",
        action="append",
        default=[],
        choices=["google_ads", "yandex_metrica"],
        help="only events for this destination (read from the event; repeatable)",
    )
    replay.add_argument(
        "--since", metavar="TIME", help="only dead letters that failed at or after TIME (ISO 8601)"
    )
    replay.add_argument(
        "--until", metavar="TIME", help="only dead letters that failed before TIME (ISO 8601)"
    )
    replay.add_argument(
        "--max-replays",
        type=_positive_int,
        metavar="N",
        help="skip (and report) dead letters already replayed N times or more",
    )
    replay.add_argument(
        "--limit", type=_positive_int, metavar="N", help="stop after replaying N records"
    )
    replay.add_argument(
        "--rate", type=_positive_float, metavar="EVENTS_PER_S", help="produce at most this fast"
    )
    replay.add_argument(
        "--dry-run",
        action="store_true",
        help="list and count what would be replayed; produce nothing, commit nothing",
    )
    replay.add_argument(
        "--to", metavar="TOPIC", help="topic to replay to (default: CONVSTREAM_INPUT_TOPIC)"
    )
    replay.add_argument(
        "--group",
        help="consumer group that remembers progress (default: <CONVSTREAM_APP_ID>-replay)",
    )
    replay.add_argument(
        "--timeout",
        type=_positive_float,
        default=30.0,
        help="seconds to wait for the broker's acknowledgements (default 30)",
    )
    replay.add_argument("--no-progress", action="store_true", help="do not draw a progress bar")
    replay.set_defaults(handler=_run_replay)

    doctor = commands.add_parser(
        "doctor",
        help="check accounts before the first upload (preflight) and show Google's diagnostics",
        description=(
            "Check every configured account and print a table with a fix for each failure. "
            "Google Ads: credentials (token refresh), the customer reachable with its login "
            "customer id, customer data terms, enhanced conversions for leads, cross-account "
            "conversion tracking, auto-tagging, and every named conversion action (exists, "
            "ENABLED, UPLOAD_CLICKS / UPLOAD_CALLS, older than 6 hours). Yandex Metrica: the "
            "token can read the counter, every target is a goal of it. Accounts come from the "
            "accounts file (TOML; see README) and the options below. Nothing is changed or "
            "uploaded."
        ),
        epilog="Exit status: 0 if no check failed, 1 if any did, 2 on usage errors.",
    )
    doctor.add_argument(
        "--accounts",
        type=Path,
        metavar="FILE.toml",
        help="accounts file (default: CONVSTREAM_ACCOUNTS_FILE)",
    )
    doctor.add_argument(
        "--google-customer-id",
        action="append",
        default=[],
        metavar="ID",
        help="a Google Ads customer to check (repeatable; dashes allowed)",
    )
    doctor.add_argument(
        "--login-customer-id",
        metavar="ID",
        help="manager account for the --google-customer-id customers "
        "(default: GOOGLE_ADS_LOGIN_CUSTOMER_ID)",
    )
    doctor.add_argument(
        "--click-conversion-action",
        action="append",
        default=[],
        metavar="ID_OR_NAME",
        help="a click conversion action the --google-customer-id customers use (repeatable)",
    )
    doctor.add_argument(
        "--call-conversion-action",
        action="append",
        default=[],
        metavar="ID_OR_NAME",
        help="a call conversion action the --google-customer-id customers use (repeatable)",
    )
    doctor.add_argument(
        "--yandex-counter-id",
        action="append",
        default=[],
        metavar="ID",
        help="a Yandex Metrica counter to check (repeatable)",
    )
    doctor.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="GOAL",
        help="a goal identifier the --yandex-counter-id counters use (repeatable)",
    )
    doctor.add_argument(
        "--diagnostics",
        action="store_true",
        help="also show Google's offline data diagnostics of each Google Ads customer",
    )
    doctor.add_argument("--json", action="store_true", help="print JSON instead of tables")
    doctor.set_defaults(handler=_run_doctor)

    topics = commands.add_parser(
        "topics",
        help="create every topic convstream uses, with its configuration, or check them",
        description=(
            "Create each missing topic: the input, results, dead-letter and upload-status "
            "topics and the worker's internal ones (<app_id>-batches, the dedupe changelog, "
            "Faust's leader topic), with their partitions, replication factor "
            "(CONVSTREAM_TOPIC_REPLICATION_FACTOR), min.insync.replicas "
            "(CONVSTREAM_TOPIC_MIN_INSYNC_REPLICAS) and cleanup policy; check the existing "
            "ones (never changed). Prints one table. For operators who pre-create topics."
        ),
        epilog=(
            "Exit status: 0 every topic exists as specified, 1 anything missing or off (or "
            "the broker refused or could not be reached), 2 configuration error."
        ),
    )
    topics.add_argument(
        "--check", action="store_true", help="only check: create nothing, exit 1 if anything is off"
    )
    topics.set_defaults(handler=_run_topics)

    demo = commands.add_parser(
        "demo",
        help="run the demo: embedded broker, bundled sample events, a summary",
        description=(
            "Start the embedded broker, validate and send the bundled sample events, and print a "
            "summary. Nothing leaves this machine."
        ),
    )
    demo.add_argument(
        "--google-ads-api",
        action="store_true",
        help=(
            "upload Google events through the Google Ads API (the pre-Data Manager path) "
            "instead of the Data Manager API"
        ),
    )
    demo.set_defaults(handler=_run_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``convstream`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"convstream: configuration error: {exc}", file=sys.stderr)
        return 2
    handler = args.handler
    try:
        return int(handler(args, settings))
    except KeyboardInterrupt:
        print("convstream: interrupted", file=sys.stderr)
        return 130


def _run_validate(args: argparse.Namespace, settings: Settings) -> int:
    from streams.commands.validate import run_validate

    return run_validate(args.file, settings, quiet=args.quiet)


def _run_send(args: argparse.Namespace, settings: Settings) -> int:
    import dataclasses

    from streams.commands.send import run_send
    from streams.config import bootstrap_servers

    connection = settings.kafka
    if args.broker:  # another cluster, reached with the same security settings
        connection = dataclasses.replace(
            connection, bootstrap_servers=bootstrap_servers(args.broker)
        )
    return run_send(
        args.file,
        connection=connection,
        topic=args.topic or settings.input_topic,
        timeout=args.timeout,
        progress=not args.no_progress,
    )


def _run_broker(args: argparse.Namespace, settings: Settings) -> int:
    from streams.local.broker import run_broker

    topics = [
        settings.input_topic,
        settings.results_topic,
        settings.dlq_topic,
        settings.upload_status_topic,
    ]
    return run_broker(args.host, args.port, topics if args.create_topics else [])


def _run_worker(args: argparse.Namespace, settings: Settings) -> int:
    from streams.shell.worker import run_worker

    return run_worker(settings)


def _run_replay(args: argparse.Namespace, settings: Settings) -> int:
    from streams.replay.filters import FilterError, ReplayFilter
    from streams.replay.report import run_replay
    from streams.replay.runner import ReplayOptions

    try:
        selection = ReplayFilter.from_args(
            error_codes=args.error_code,
            stages=args.stage,
            destinations=args.destination,
            since=args.since,
            until=args.until,
            max_replays=args.max_replays,
        )
    except FilterError as exc:
        print(f"convstream replay: {exc}", file=sys.stderr)
        return 2
    options = ReplayOptions(
        connection=settings.kafka,
        dlq_topic=settings.dlq_topic,
        target_topic=args.to or settings.input_topic,
        group=args.group or f"{settings.app_id}-replay",
        selection=selection,
        limit=args.limit,
        rate=args.rate,
        dry_run=args.dry_run,
        timeout=args.timeout,
    )
    return run_replay(options, progress=not args.no_progress)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
    return value


def _run_doctor(args: argparse.Namespace, settings: Settings) -> int:
    from streams.doctor.run import DoctorRequest, run_doctor

    request = DoctorRequest(
        accounts_file=args.accounts,
        google_customer_ids=tuple(args.google_customer_id),
        login_customer_id=args.login_customer_id,
        click_actions=tuple(args.click_conversion_action),
        call_actions=tuple(args.call_conversion_action),
        yandex_counter_ids=tuple(args.yandex_counter_id),
        targets=tuple(args.target),
        diagnostics=args.diagnostics,
        json=args.json,
    )
    return run_doctor(settings, request)


def _run_topics(args: argparse.Namespace, settings: Settings) -> int:
    from streams.commands.topics import run_topics

    return run_topics(settings, check_only=args.check)


def _run_demo(args: argparse.Namespace, settings: Settings) -> int:
    from streams.commands.demo import run_demo

    return run_demo(settings, google_ads_api=args.google_ads_api)


if __name__ == "__main__":
    sys.exit(main())
