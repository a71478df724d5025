"""The topics on the broker: read what exists, create what is missing, and the worker's
start-up check. The specs themselves (names, partitions, replication, configs) are
:mod:`streams.core.topics`; this module is their I/O.

Every call goes through one librdkafka AdminClient built by
:func:`streams.kafka.clients.librdkafka_config`, so it connects (security included) exactly
as the worker's other clients do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
    ResourceType,
)

from streams.config import Settings
from streams.core import topics as spec
from streams.core.topics import Finding, Problem, TopicSpec, TopicState
from streams.errors import ConvstreamError
from streams.kafka.clients import librdkafka_config
from streams.stages.wire import CHUNK_MAX_BYTES

_log = logging.getLogger(__name__)

ADMIN_TIMEOUT_SECONDS: Final = 15.0
#: How long the start-up waits for topics it created to be described by the broker.
VISIBLE_TIMEOUT_SECONDS: Final = 30.0
_NO_STATE: Final = TopicState("", 0, 0, {})
#: The topic configs read back: the ones the specs set.
_READ_CONFIGS: Final = (spec.MIN_INSYNC, spec.CLEANUP, spec.MAX_MESSAGE_BYTES)


class TopicAdminError(ConvstreamError):
    """The broker could not be asked about topics (unreachable, not authorized); the
    message says which call failed and why."""


def max_record_bytes(settings: Settings) -> int:
    """Largest record the worker produces: a maximal event plus its envelope or headers
    (the producers' ``message.max.bytes`` and the batch topic's ``max.message.bytes``)."""
    return max(settings.max_message_bytes, CHUNK_MAX_BYTES) * 2 + 65_536


def topic_specs(settings: Settings) -> tuple[TopicSpec, ...]:
    """Every topic of this app with its configuration (:func:`streams.core.topics.topic_specs`)."""
    return spec.topic_specs(settings, max_record_bytes(settings))


class Status(StrEnum):
    """A topic's line in ``convstream topics`` (besides the problems of :class:`Problem`)."""

    OK = "ok"
    CREATED = "created"
    CREATE_FAILED = "create failed"


@dataclass(frozen=True, slots=True)
class TopicReport:
    """One topic: what convstream wants, what the broker has (None: missing), what is
    wrong, and what ``convstream topics`` did about it."""

    spec: TopicSpec
    state: TopicState | None
    findings: list[Finding] = field(default_factory=list)
    action: Status | None = None
    """CREATED or CREATE_FAILED when ``convstream topics`` tried to create it."""
    error: str | None = None
    """Why the creation failed."""

    @property
    def ok(self) -> bool:
        return not self.findings and self.action is not Status.CREATE_FAILED

    @property
    def status(self) -> str:
        if self.action is not None:
            return str(self.action)
        if not self.findings:
            return str(Status.OK)
        return ", ".join(dict.fromkeys(str(f.problem) for f in self.findings))


_ADMIN_OVERRIDES: dict[str, Any] = {"log.connection.close": False}


class TopicAdmin:
    """Describes and creates topics through one AdminClient."""

    def __init__(self, settings: Settings, timeout: float = ADMIN_TIMEOUT_SECONDS) -> None:
        self._timeout = timeout
        self._bootstrap = settings.bootstrap_servers
        self._admin = AdminClient(
            librdkafka_config(settings.kafka, client="topics", **_ADMIN_OVERRIDES)
        )

    def describe(self, names: Iterable[str]) -> dict[str, TopicState | None]:
        """Partitions, replicas and the spec'd configs of each topic; None for a missing one.

        Raises :class:`TopicAdminError` when the broker cannot be asked (unreachable, not
        authorized to describe a topic or its configs).
        """
        names = list(dict.fromkeys(names))
        shapes: dict[str, tuple[int, int]] = {}
        futures = self._admin.describe_topics(TopicCollection(names), request_timeout=self._timeout)
        for name, future in futures.items():
            try:
                description = future.result(self._timeout)
            except (KafkaException, TimeoutError) as exc:
                if _code(exc) == KafkaError.UNKNOWN_TOPIC_OR_PART:
                    continue
                raise TopicAdminError(
                    f"could not describe topic {name} on {self._bootstrap}: {self._reason(exc)}"
                ) from exc
            partitions = description.partitions
            replicas = min((len(p.replicas) for p in partitions), default=0)
            shapes[name] = (len(partitions), replicas)
        configs = self._configs(sorted(shapes))
        return {
            name: (
                TopicState(name, shapes[name][0], shapes[name][1], configs.get(name, {}))
                if name in shapes
                else None
            )
            for name in names
        }

    def _configs(self, names: Sequence[str]) -> dict[str, dict[str, str]]:
        if not names:
            return {}
        resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
        found: dict[str, dict[str, str]] = {}
        futures = self._admin.describe_configs(resources, request_timeout=self._timeout)
        for resource, future in futures.items():
            try:
                entries = future.result(self._timeout)
            except (KafkaException, TimeoutError) as exc:
                raise TopicAdminError(
                    f"could not read the configuration of topic {resource.name} on "
                    f"{self._bootstrap}: {self._reason(exc)}"
                ) from exc
            found[resource.name] = {
                key: entry.value
                for key, entry in entries.items()
                if key in _READ_CONFIGS and entry.value is not None
            }
        return found

    def create(self, specs: Sequence[TopicSpec]) -> dict[str, str | None]:
        """Create ``specs``; per topic None (created, or created meanwhile by someone
        else) or the broker's reason for refusing."""
        if not specs:
            return {}
        new = [
            NewTopic(
                s.name,
                num_partitions=s.partitions,
                replication_factor=s.replication_factor,
                config=dict(s.config),
            )
            for s in specs
        ]
        outcome: dict[str, str | None] = {}
        futures = self._admin.create_topics(new, request_timeout=self._timeout)
        for name, future in futures.items():
            try:
                future.result(self._timeout)
                outcome[name] = None
            except (KafkaException, TimeoutError) as exc:
                exists = _code(exc) == KafkaError.TOPIC_ALREADY_EXISTS
                outcome[name] = None if exists else self._reason(exc)
        return outcome

    def _reason(self, exc: Exception) -> str:
        if isinstance(exc, TimeoutError):
            return f"no answer within {self._timeout:g} s (is the broker reachable?)"
        return _reason(exc)


def inspect_topics(admin: TopicAdmin, specs: Sequence[TopicSpec]) -> list[TopicReport]:
    """Each spec'd topic judged against the broker's (:func:`streams.core.topics.judge`)."""
    states = admin.describe(s.name for s in specs)
    return [TopicReport(s, states[s.name], spec.judge(s, states[s.name])) for s in specs]


def create_missing(admin: TopicAdmin, reports: Sequence[TopicReport]) -> list[TopicReport]:
    """Create every missing topic of ``reports``; the reports with what happened (a
    created topic is described again, so its line shows what the broker made of it)."""
    missing = [r.spec for r in reports if r.state is None]
    if not missing:
        return list(reports)
    errors = admin.create(missing)
    created = [name for name, error in errors.items() if error is None]
    states = admin.describe(created) if created else {}
    done: list[TopicReport] = []
    for report in reports:
        name = report.spec.name
        if name not in errors:
            done.append(report)
        elif errors[name] is not None:
            done.append(
                TopicReport(report.spec, None, report.findings, Status.CREATE_FAILED, errors[name])
            )
        else:
            state = states.get(name)
            findings = spec.judge(report.spec, state) if state is not None else []
            done.append(TopicReport(report.spec, state, findings, Status.CREATED))
    return done


def check_at_startup(settings: Settings, admin: TopicAdmin | None = None) -> list[TopicReport]:
    """The worker's start-up check: log an ERROR for every existing topic that falls short
    of its spec (too few replicas, min.insync.replicas below the setting, an internal
    topic with the wrong partitions or cleanup policy), and for a missing input or output
    topic. The worker goes on either way (README, "Topics"): replication is the cluster's
    to fix, and a refusal would turn a durability risk into an outage.

    A missing internal topic is normal on the first start: the worker creates it here, from
    the same spec Faust would use, and waits until the broker describes it
    (:func:`create_internal_topics`). When the broker cannot be asked, one WARNING says so
    and nothing is checked. Returns the reports (for tests).
    """
    try:
        admin = admin or TopicAdmin(settings)
        reports = inspect_topics(admin, topic_specs(settings))
        create_internal_topics(admin, reports)
    except (TopicAdminError, KafkaException) as exc:
        _log.warning("topic check skipped: %s", exc)
        return []
    for report in reports:
        topic = report.spec
        for finding in report.findings:
            if finding.problem is Problem.MISSING:
                if topic.internal:
                    continue
                _log.error(
                    "topic=%s role=%s does not exist: create it with `convstream topics` "
                    "(or let the broker auto-create it, with the broker's defaults)",
                    topic.name,
                    topic.role,
                )
                continue
            _log.error(
                "topic=%s role=%s problem=%s: %s; fix the topic (the worker goes on)",
                topic.name,
                topic.role,
                finding.problem.name.lower(),
                finding.detail,
            )
    return reports


def create_internal_topics(
    admin: TopicAdmin,
    reports: Sequence[TopicReport],
    timeout: float = VISIBLE_TIMEOUT_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Create the missing internal topics (batches, dedupe changelog, Faust's leader topic)
    and wait until the broker describes every one with its partitions.

    Why not leave it to Faust: Faust creates them at start-up and joins the group right
    after, and a broker whose metadata does not list a new topic yet makes the group's
    leader assign without it ("Ignoring missing topic"). The worker then owns no batch
    partition until the consumer's next metadata refresh, minutes later, and answers
    nothing but bad input meanwhile: seen on Apache Kafka under load (a SIGKILL test and a
    two-worker soak stalled on a fresh topic). After ``timeout`` the worker goes on with a
    WARNING; Faust's shorter metadata refresh (``streams.shell.app``) is the fallback.
    """
    missing = [r for r in reports if r.spec.internal and r.state is None]
    if not missing:
        return
    for report in missing:
        topic = report.spec
        _log.info(
            "topic=%s role=%s does not exist yet: creating it (partitions=%d "
            "replication_factor=%d %s)",
            topic.name,
            topic.role,
            topic.partitions,
            topic.replication_factor,
            _configs_text(topic),
        )
    for name, error in admin.create([r.spec for r in missing]).items():
        if error is not None:
            _log.error("topic=%s could not be created: %s (Faust will try again)", name, error)
    want = {r.spec.name: r.spec.partitions for r in missing}
    started = clock()
    while True:
        states = admin.describe(want)
        waiting = [n for n, p in want.items() if (states.get(n) or _NO_STATE).partitions < p]
        if not waiting:
            _log.info("internal topics visible after %.1f s", clock() - started)
            return
        if clock() - started >= timeout:
            _log.warning(
                "topics %s not described by the broker after %.0f s; going on",
                ", ".join(waiting),
                timeout,
            )
            return
        sleep(0.2)


def _configs_text(topic: TopicSpec) -> str:
    return " ".join(f"{key}={value}" for key, value in sorted(topic.config.items()))


def _code(exc: Exception) -> Any:
    error = exc.args[0] if exc.args else None
    return error.code() if isinstance(error, KafkaError) else None


def _reason(exc: Exception) -> str:
    error = exc.args[0] if exc.args else None
    if isinstance(error, KafkaError):
        return f"{error.name()}: {error.str()}"
    return str(exc)
