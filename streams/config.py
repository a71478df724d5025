"""All settings, read from the environment once.

The CLI calls :meth:`Settings.from_env` at start-up and passes the result down; no other
module reads ``os.environ``. Every variable has a default that works for the local demo.
An invalid value raises :class:`ConfigError` naming the variable and the accepted range, so
a typo fails the start-up instead of an upload hours later.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import phonenumbers

from streams.errors import ConvstreamError

T = TypeVar("T")


class ConfigError(ConvstreamError, ValueError):
    """A setting is missing or invalid; the message names the variable and how to fix it."""


class DedupeStore(StrEnum):
    """Where the dedupe table keeps its state between restarts (the changelog is the
    source of truth either way; RocksDB just avoids replaying it all at start-up)."""

    ROCKSDB = "rocksdb"
    MEMORY = "memory"


class GmailDots(StrEnum):
    """Which e-mail local parts are canonicalized before hashing (``CONVSTREAM_EMAIL_DOTS``).

    Google's own normalization (its reference formatter and Data Manager's formatting
    guide) removes the dots and any ``+suffix`` for gmail.com and googlemail.com only,
    because only those providers are known to ignore them; doing it elsewhere would hash
    a different mailbox. ``GMAIL_ONLY`` is that rule; ``ALL_DOMAINS`` also removes dots (not
    the ``+suffix``) elsewhere; ``OFF`` leaves every local part as typed.
    """

    OFF = "off"
    GMAIL_ONLY = "gmail-only"
    ALL_DOMAINS = "all-domains"


@dataclass(frozen=True, slots=True)
class NormalizeOptions:
    """How PII is normalized before hashing (see :mod:`streams.core.normalize`)."""

    default_phone_region: str = "US"
    email_dots: GmailDots = GmailDots.GMAIL_ONLY


#: job_id is an int32 on the wire; Google accepts [0, 2^31).
_MAX_JOB_ID = 2**31 - 1
_GOOGLE_ADS_VERSION = re.compile(r"v[0-9]{1,3}")

#: The Google Ads API version used when ``GOOGLE_ADS_API_VERSION`` is unset: the one the tests
#: run against (tests/unit/sinks/google_ads, tests/integration). Not "the newest the library
#: ships": a google-ads release that adds a version must not change the wire format of a
#: running deployment before anyone has tested it. pyproject pins google-ads to a major that
#: ships it; raise both together.
DEFAULT_GOOGLE_ADS_API_VERSION = "v26"


@dataclass(frozen=True, slots=True)
class GoogleAdsSettings:
    """Google Ads credentials and switches: the google-ads library's own ``GOOGLE_ADS_*``
    variables plus ``GOOGLE_ADS_TOKEN_URI``, ``GOOGLE_ADS_API_VERSION`` and
    ``GOOGLE_ADS_JOB_ID``. Present only when ``GOOGLE_ADS_DEVELOPER_TOKEN`` is set.

    Secrets are kept out of ``repr`` so a logged Settings never leaks them. Whether the
    credentials are complete (an OAuth refresh-token trio or a service-account key file) is
    checked by the sink's ``setup()``, which names the missing variable.
    """

    developer_token: str = field(repr=False)
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)
    json_key_file_path: Path | None = None
    impersonated_email: str | None = None
    login_customer_id: str | None = None
    endpoint: str | None = None
    token_uri: str | None = None
    api_version: str = DEFAULT_GOOGLE_ADS_API_VERSION
    """The tested version unless ``GOOGLE_ADS_API_VERSION`` names another shipped one."""
    job_id: int | None = None
    """None: one stable id per worker per UTC day (see ``daily_job_id``)."""
    request_timeout_seconds: float = 120.0
    action_name_ttl_seconds: float = 3600.0
    """How long a customer's conversion action names stay cached
    (``CONVSTREAM_GOOGLE_ACTION_NAME_TTL_SECONDS``)."""
    max_requests_per_second: float = 10.0
    """``CONVSTREAM_GOOGLE_ADS_MAX_RPS``: Google Ads API calls (uploads and searches) the
    worker starts per second, over all accounts of the developer token."""
    max_concurrent_requests: int = 10
    """``CONVSTREAM_GOOGLE_ADS_MAX_CONCURRENT_REQUESTS``: Google Ads API calls in flight at
    once, over all accounts of the developer token."""


GOOGLE_ADS_MAX_RPS = "CONVSTREAM_GOOGLE_ADS_MAX_RPS"
GOOGLE_ADS_MAX_CONCURRENT_REQUESTS = "CONVSTREAM_GOOGLE_ADS_MAX_CONCURRENT_REQUESTS"


class GoogleUploadApi(StrEnum):
    """Which Google API carries the ``google_ads`` events (``CONVSTREAM_GOOGLE_ADS_UPLOAD_API``).

    Since 2026-06-15 Google lets only existing users upload click conversions through the
    Google Ads API; new integrations must use the Data Manager API (``IngestEvents``).
    """

    DATA_MANAGER = "data_manager"
    GOOGLE_ADS_API = "google_ads_api"


GOOGLE_ADS_UPLOAD_API = "CONVSTREAM_GOOGLE_ADS_UPLOAD_API"
GOOGLE_APPLICATION_CREDENTIALS = "GOOGLE_APPLICATION_CREDENTIALS"
DATA_MANAGER_ENDPOINT = "GOOGLE_DATA_MANAGER_ENDPOINT"
DATA_MANAGER_IMPERSONATE = "GOOGLE_DATA_MANAGER_IMPERSONATE_SERVICE_ACCOUNT"
DATA_MANAGER_LOGIN_ACCOUNT = "GOOGLE_DATA_MANAGER_LOGIN_ACCOUNT"
DEFAULT_DATA_MANAGER_ENDPOINT = "datamanager.googleapis.com"


@dataclass(frozen=True, slots=True)
class DataManagerSettings:
    """The Data Manager API block: present when ``GOOGLE_APPLICATION_CREDENTIALS`` is set.

    No developer token: the Data Manager API authenticates with Google Cloud credentials
    (a service-account key or an authorized-user file, scope ``datamanager``). The file is
    read by the sink's ``setup()``, which names the variable when it is not usable.
    """

    credentials_file: Path
    """GOOGLE_APPLICATION_CREDENTIALS: service-account key or authorized-user JSON file."""
    endpoint: str = DEFAULT_DATA_MANAGER_ENDPOINT
    """GOOGLE_DATA_MANAGER_ENDPOINT: ``host[:port]`` of the gRPC service; TLS roots for a
    private one come from gRPC's ``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH``."""
    impersonate_service_account: str | None = None
    """GOOGLE_DATA_MANAGER_IMPERSONATE_SERVICE_ACCOUNT: act as this service account (the
    file's principal needs ``roles/iam.serviceAccountTokenCreator`` on it)."""
    login_account: str | None = None
    """GOOGLE_DATA_MANAGER_LOGIN_ACCOUNT: the manager account used when an event has no
    ``login_customer_id`` (as GOOGLE_ADS_LOGIN_CUSTOMER_ID is for the Google Ads API)."""
    request_timeout_seconds: float = 120.0
    encryption_kek_uri: str | None = None
    """GOOGLE_DATA_MANAGER_ENCRYPTION_KEK_URI: Cloud KMS key that wraps the user-data
    encryption key; with ``encryption_wip_provider`` it turns encryption on (off by default)."""
    encryption_wip_provider: str | None = None
    """GOOGLE_DATA_MANAGER_ENCRYPTION_WIP_PROVIDER: the Workload Identity pool provider
    Google uses to unwrap that key."""


CREDENTIALS_FILE = "CONVSTREAM_CREDENTIALS_FILE"
CREDENTIALS_POLL_SECONDS = "CONVSTREAM_CREDENTIALS_POLL_SECONDS"


@dataclass(frozen=True, slots=True)
class CredentialsMapSettings:
    """``CONVSTREAM_CREDENTIALS_FILE``: credential sets per advertiser (README, "Several
    advertisers"; parsed by :mod:`streams.sinks.credential_sets`). Present only when the
    variable is set. The templates carry what every set shares (endpoints, API version,
    timeouts) from the usual variables, so a set's map entry names only its accounts and
    its secret files."""

    file: Path
    poll_seconds: float = 5.0
    """CONVSTREAM_CREDENTIALS_POLL_SECONDS: how often the map and the secret files it names
    are checked for changes (Kubernetes swaps a mounted secret's symlink in place)."""
    google_upload_api: GoogleUploadApi | None = None
    """CONVSTREAM_GOOGLE_ADS_UPLOAD_API as set (None: unset); a set's own choice wins."""
    google_ads: GoogleAdsSettings = field(default_factory=lambda: GoogleAdsSettings(""))
    data_manager: DataManagerSettings = field(default_factory=lambda: DataManagerSettings(Path()))


DATA_MANAGER_REQUESTS_PER_MINUTE = "CONVSTREAM_DATA_MANAGER_REQUESTS_PER_MINUTE"
DATA_MANAGER_REQUESTS_PER_DAY = "CONVSTREAM_DATA_MANAGER_REQUESTS_PER_DAY"
DATA_MANAGER_STATUS_REQUESTS_PER_MINUTE = "CONVSTREAM_DATA_MANAGER_STATUS_REQUESTS_PER_MINUTE"
DATA_MANAGER_STATUS_REQUESTS_PER_DAY = "CONVSTREAM_DATA_MANAGER_STATUS_REQUESTS_PER_DAY"
DATA_MANAGER_QUOTA_MAX_WAIT = "CONVSTREAM_DATA_MANAGER_QUOTA_MAX_WAIT_SECONDS"
DATA_MANAGER_STATUS_FIRST_POLL = "CONVSTREAM_DATA_MANAGER_STATUS_FIRST_POLL_SECONDS"
DATA_MANAGER_STATUS_MAX_INTERVAL = "CONVSTREAM_DATA_MANAGER_STATUS_MAX_INTERVAL_SECONDS"
DATA_MANAGER_STATUS_MAX_AGE = "CONVSTREAM_DATA_MANAGER_STATUS_MAX_AGE_SECONDS"
DATA_MANAGER_STATUS_MAX_TRACKED = "CONVSTREAM_DATA_MANAGER_STATUS_MAX_TRACKED"


@dataclass(frozen=True, slots=True)
class QuotaBudget:
    """Requests allowed per minute and per (Pacific) day for one kind of Data Manager
    request. Defaults: Google's per-project limits (300 per minute, 100,000 per day, for
    IngestEvents and RetrieveRequestStatus alike; docs/data-manager-quota-and-status.md)."""

    per_minute: int = 300
    per_day: int = 100_000

    def __post_init__(self) -> None:
        if self.per_minute < 1 or self.per_day < 1:
            raise ValueError("a quota budget needs at least 1 request per minute and per day")


@dataclass(frozen=True, slots=True)
class QuotaSettings:
    """The Data Manager request limiter of a worker (``streams.sinks.data_manager.quota``):
    ``CONVSTREAM_DATA_MANAGER_REQUESTS_PER_MINUTE`` / ``..._PER_DAY`` (IngestEvents),
    ``CONVSTREAM_DATA_MANAGER_STATUS_REQUESTS_PER_MINUTE`` / ``..._PER_DAY``
    (RetrieveRequestStatus), ``CONVSTREAM_DATA_MANAGER_QUOTA_MAX_WAIT_SECONDS`` (the longest
    a request waits for budget before its batch is retried later instead). The budgets are
    per worker: replicas sharing a Cloud project divide the project's quota among them."""

    mutate: QuotaBudget = field(default_factory=QuotaBudget)
    read: QuotaBudget = field(default_factory=QuotaBudget)
    max_wait_seconds: float = 60.0


@dataclass(frozen=True, slots=True)
class RequestStatusSettings:
    """How accepted Data Manager requests are followed with RetrieveRequestStatus
    (``streams.sinks.data_manager.request_status``):
    ``CONVSTREAM_DATA_MANAGER_STATUS_FIRST_POLL_SECONDS`` (1800: Google's "wait for 30
    minutes"), ``..._STATUS_MAX_INTERVAL_SECONDS`` (14400: the backoff's cap),
    ``..._STATUS_MAX_AGE_SECONDS`` (172800: give up after 2 days), ``..._STATUS_MAX_TRACKED``
    (20000 requests followed at once; 0 turns status tracking off)."""

    first_poll_seconds: float = 1800.0
    max_interval_seconds: float = 4 * 3600.0
    max_age_seconds: float = 2 * 86_400.0
    max_tracked: int = 20_000


class SecurityProtocol(StrEnum):
    """How Kafka clients talk to the brokers (librdkafka's and Kafka's names)."""

    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"

    @property
    def uses_tls(self) -> bool:
        return self in (SecurityProtocol.SSL, SecurityProtocol.SASL_SSL)

    @property
    def uses_sasl(self) -> bool:
        return self in (SecurityProtocol.SASL_PLAINTEXT, SecurityProtocol.SASL_SSL)


class SaslMechanism(StrEnum):
    """The SASL mechanisms both client stacks (librdkafka and aiokafka) support alike."""

    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


# The variables' names (contract), used in every message about them. (S105: names, not
# passwords.)
KAFKA_SECURITY_PROTOCOL = "CONVSTREAM_KAFKA_SECURITY_PROTOCOL"
KAFKA_SASL_MECHANISM = "CONVSTREAM_KAFKA_SASL_MECHANISM"
KAFKA_SASL_USERNAME = "CONVSTREAM_KAFKA_SASL_USERNAME"
KAFKA_SASL_PASSWORD = "CONVSTREAM_KAFKA_SASL_PASSWORD"  # noqa: S105
KAFKA_SASL_PASSWORD_FILE = "CONVSTREAM_KAFKA_SASL_PASSWORD_FILE"  # noqa: S105
KAFKA_SSL_CA_FILE = "CONVSTREAM_KAFKA_SSL_CA_FILE"
KAFKA_SSL_CERT_FILE = "CONVSTREAM_KAFKA_SSL_CERT_FILE"
KAFKA_SSL_KEY_FILE = "CONVSTREAM_KAFKA_SSL_KEY_FILE"
KAFKA_SSL_KEY_PASSWORD = "CONVSTREAM_KAFKA_SSL_KEY_PASSWORD"  # noqa: S105
KAFKA_SSL_CHECK_HOSTNAME = "CONVSTREAM_KAFKA_SSL_CHECK_HOSTNAME"


@dataclass(frozen=True, slots=True)
class KafkaConnection:
    """How every Kafka client of convstream reaches the cluster: the bootstrap list and
    the security settings (``CONVSTREAM_BROKER`` and ``CONVSTREAM_KAFKA_*``).

    Built once from the environment (:attr:`Settings.kafka`) and turned into client
    configurations in one place only, :mod:`streams.kafka.clients`, so that the worker,
    its readers and producers, ``send``, ``replay``, ``demo`` and ``doctor`` connect alike.

    A contradictory or incomplete combination raises :class:`ConfigError` naming the
    variable (``__post_init__``); that the files exist and can be read is checked when the
    settings are read from the environment. The passwords are kept out of ``repr`` and out
    of every message.
    """

    bootstrap_servers: str
    """``host:port[,host:port...]``."""
    security_protocol: SecurityProtocol = SecurityProtocol.PLAINTEXT
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    sasl_password_variable: str = KAFKA_SASL_PASSWORD
    """Where the password came from (``..._PASSWORD`` or ``..._PASSWORD_FILE``): the
    variable an authentication failure tells the operator to check."""
    ssl_ca_file: Path | None = None
    """None with TLS: the system's CA store."""
    ssl_cert_file: Path | None = None
    ssl_key_file: Path | None = None
    ssl_key_password: str | None = field(default=None, repr=False)
    ssl_check_hostname: bool = True

    def __post_init__(self) -> None:
        protocol = self.security_protocol
        if protocol.uses_sasl:
            missing = [
                name
                for name, value in (
                    (KAFKA_SASL_MECHANISM, self.sasl_mechanism),
                    (KAFKA_SASL_USERNAME, self.sasl_username),
                    (f"{KAFKA_SASL_PASSWORD} or {KAFKA_SASL_PASSWORD_FILE}", self.sasl_password),
                )
                if not value
            ]
            if missing:
                raise ConfigError(
                    f"{KAFKA_SECURITY_PROTOCOL}={protocol} needs SASL credentials: set "
                    f"{', '.join(missing)} (mechanism one of {_choices(SaslMechanism)})"
                )
        else:
            given = [
                name
                for name, value in (
                    (KAFKA_SASL_MECHANISM, self.sasl_mechanism),
                    (KAFKA_SASL_USERNAME, self.sasl_username),
                    (self.sasl_password_variable, self.sasl_password),
                )
                if value
            ]
            if given:
                raise ConfigError(
                    f"{given[0]} is set but {KAFKA_SECURITY_PROTOCOL}={protocol} does not use "
                    "SASL: set the protocol to SASL_SSL (or SASL_PLAINTEXT), or unset "
                    f"{', '.join(given)}"
                )
        if not protocol.uses_tls:
            given = [
                name
                for name, value in (
                    (KAFKA_SSL_CA_FILE, self.ssl_ca_file),
                    (KAFKA_SSL_CERT_FILE, self.ssl_cert_file),
                    (KAFKA_SSL_KEY_FILE, self.ssl_key_file),
                    (KAFKA_SSL_KEY_PASSWORD, self.ssl_key_password),
                )
                if value
            ]
            if given:
                raise ConfigError(
                    f"{given[0]} is set but {KAFKA_SECURITY_PROTOCOL}={protocol} does not use "
                    f"TLS: set the protocol to SSL or SASL_SSL, or unset {', '.join(given)}"
                )
        if (self.ssl_cert_file is None) != (self.ssl_key_file is None):
            have, lack = (
                (KAFKA_SSL_CERT_FILE, KAFKA_SSL_KEY_FILE)
                if self.ssl_key_file is None
                else (KAFKA_SSL_KEY_FILE, KAFKA_SSL_CERT_FILE)
            )
            raise ConfigError(
                f"{have} is set without {lack}: a client certificate (mTLS) needs both the "
                "certificate and its private key; set both or neither"
            )
        if self.ssl_key_password and self.ssl_key_file is None:
            raise ConfigError(
                f"{KAFKA_SSL_KEY_PASSWORD} is set without {KAFKA_SSL_KEY_FILE}: it decrypts "
                "the client key; set the key file or unset the password"
            )

    @property
    def secured(self) -> bool:
        """Whether anything beyond PLAINTEXT is configured."""
        return self.security_protocol is not SecurityProtocol.PLAINTEXT


def _kafka_connection(read: _Reader, bootstrap: str) -> KafkaConnection:
    """The ``CONVSTREAM_KAFKA_*`` block: read, files checked, combination checked."""
    protocol_text = read.text(KAFKA_SECURITY_PROTOCOL, SecurityProtocol.PLAINTEXT.value)
    protocol = _upper_choice(KAFKA_SECURITY_PROTOCOL, protocol_text, SecurityProtocol)
    mechanism_text = read.text(KAFKA_SASL_MECHANISM, "")
    mechanism = (
        _upper_choice(KAFKA_SASL_MECHANISM, mechanism_text, SaslMechanism)
        if mechanism_text
        else None
    )
    password = read.password(KAFKA_SASL_PASSWORD)
    password_file = read.path(KAFKA_SASL_PASSWORD_FILE)
    password_variable = KAFKA_SASL_PASSWORD
    if password is not None and password_file is not None:
        raise ConfigError(
            f"{KAFKA_SASL_PASSWORD} and {KAFKA_SASL_PASSWORD_FILE} are both set: set only one "
            "(the file suits a mounted secret)"
        )
    if password_file is not None:
        password = _password_from_file(password_file)
        password_variable = KAFKA_SASL_PASSWORD_FILE
    return KafkaConnection(
        bootstrap_servers=bootstrap,
        security_protocol=protocol,
        sasl_mechanism=mechanism,
        sasl_username=read.text(KAFKA_SASL_USERNAME, "") or None,
        sasl_password=password,
        sasl_password_variable=password_variable,
        ssl_ca_file=_readable_file(read, KAFKA_SSL_CA_FILE),
        ssl_cert_file=_readable_file(read, KAFKA_SSL_CERT_FILE),
        ssl_key_file=_readable_file(read, KAFKA_SSL_KEY_FILE),
        ssl_key_password=read.password(KAFKA_SSL_KEY_PASSWORD),
        ssl_check_hostname=read.flag(KAFKA_SSL_CHECK_HOSTNAME, True),
    )


def _upper_choice(name: str, value: str, kind: type[StrEnum]) -> Any:
    try:
        return kind(value.upper())
    except ValueError:
        raise ConfigError(
            f"{name}={value!r} is invalid: expected one of {_choices(kind)}"
        ) from None


def _choices(kind: type[StrEnum]) -> str:
    return ", ".join(member.value for member in kind)


def _readable_file(read: _Reader, name: str) -> Path | None:
    """``name``'s path, after checking it is a file this process can read."""
    path = read.path(name)
    if path is None:
        return None
    _check_readable(name, path)
    return path


def _check_readable(name: str, path: Path, what: str = "a PEM file") -> None:
    if not path.exists():
        raise ConfigError(f"{name}={str(path)!r} is invalid: no such file; give the path of {what}")
    if not path.is_file():
        raise ConfigError(f"{name}={str(path)!r} is invalid: not a file; give the path of {what}")
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise ConfigError(
            f"{name}={str(path)!r} is invalid: cannot be read ({exc.strerror}); check its "
            "permissions for the user convstream runs as"
        ) from None


def _password_from_file(path: Path) -> str:
    """The file's content without its trailing line break (as ``echo secret > file`` or a
    mounted Kubernetes secret leaves it)."""
    _check_readable(KAFKA_SASL_PASSWORD_FILE, path, "a file holding the password")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise ConfigError(
            f"{KAFKA_SASL_PASSWORD_FILE}={str(path)!r} is invalid: not a UTF-8 text file"
        ) from None
    password = text.rstrip("\r\n")
    if not password:
        raise ConfigError(
            f"{KAFKA_SASL_PASSWORD_FILE}={str(path)!r} is invalid: the file is empty; "
            "it must hold the SASL password"
        )
    return password


YANDEX_DEFAULT_BATCH_WINDOW_SECONDS = 300.0
"""Yandex's micro-batch window when neither CONVSTREAM_BATCH_WINDOW_SECONDS_YANDEX_METRICA nor
CONVSTREAM_BATCH_WINDOW_SECONDS is set: one upload per counter per 5 minutes is at most 288
a day, so 500 counters' busy ones fit Metrica's 5,000 requests a day per login together with
the status reads (bench/bench_yandex_budget.py)."""


@dataclass(frozen=True, slots=True)
class Settings:
    """The worker's and the CLI's configuration (contract names: README.md, "Configuration")."""

    kafka: KafkaConnection = KafkaConnection("localhost:9092")
    """CONVSTREAM_BROKER and the CONVSTREAM_KAFKA_* security settings: what every Kafka
    client needs to connect (see :mod:`streams.kafka.clients`)."""
    app_id: str = "convstream"
    input_topic: str = "conversions"
    results_topic: str = "conversions.results"
    dlq_topic: str = "conversions.dlq"
    upload_status_topic: str = "conversions.upload_status"
    """Yandex upload-status records: kept off the results topic, which carries exactly one
    record per input message (``schemas/result.schema.json``) and is counted that way by its
    consumers."""
    batch_max_size: int = 2000
    batch_window_seconds: float = 10.0
    dedupe_ttl_days: float = 90.0
    retry_max_seconds: float = 3600.0
    delayed_retry_seconds: float = 21_600.0
    """CONVSTREAM_DELAYED_RETRY_SECONDS: how long an event the destination calls too recent
    (Google's ``TOO_RECENT_*``, Data Manager's ``CONVERSION_ACTION_TOO_RECENTLY_CREATED``,
    Yandex's upload window not open yet) waits parked in ``<app_id>-delayed`` before it is
    written again. Google documents waiting 6 hours after a click, call or new conversion
    action (21,600 s)."""
    metrics_port: int = 9108
    metrics_address: str = "0.0.0.0"  # noqa: S104 (scraped from other pods)
    """CONVSTREAM_METRICS_ADDRESS: the address /metrics, /ready and /healthz bind to
    (``127.0.0.1`` keeps them on the host, ``::`` serves IPv6)."""
    metrics_accounts: frozenset[str] = frozenset()
    """CONVSTREAM_METRICS_ACCOUNTS: the accounts (Yandex counters, Google customer ids) that
    get a metric label of their own; every other account is counted as ``other``. Empty:
    the first CONVSTREAM_METRICS_MAX_ACCOUNTS accounts seen get one."""
    metrics_max_accounts: int = 100
    """CONVSTREAM_METRICS_MAX_ACCOUNTS: how many distinct account labels a metric family may
    hold before the rest go to ``other`` (accounts come from event data: unbounded)."""
    allow_insecure_endpoints: bool = False
    """CONVSTREAM_ALLOW_INSECURE_ENDPOINTS: accept ``http://`` API and OAuth token
    endpoints. Development only (the local sandboxes serve plain HTTP); in production a
    plain-HTTP endpoint would carry the OAuth token and the conversions in clear text."""
    data_dir: Path = Path("data")
    dry_run: bool = False
    max_message_bytes: int = 1024 * 1024
    normalize: NormalizeOptions = NormalizeOptions()
    batch_partitions: int = 8
    """Partitions of the internal batch topic and the dedupe table's changelog; fixed once
    the app has run (Kafka cannot re-partition a changelog)."""
    topic_replication_factor: int = 3
    """Replicas of every topic convstream creates (CONVSTREAM_TOPIC_REPLICATION_FACTOR). 3
    for production: a broker may be lost without losing what stage 1 already committed.
    One-node brokers (the embedded demo broker, test brokers) need 1, set explicitly."""
    topic_min_insync_replicas: int = 2
    """min.insync.replicas of every topic convstream creates
    (CONVSTREAM_TOPIC_MIN_INSYNC_REPLICAS): with ``acks=all`` a write is acknowledged only
    once this many replicas have it. At most the replication factor."""
    session_timeout_seconds: float = 30.0
    dedupe_sweep_seconds: float = 3600.0
    """How often each partition's expired dedupe keys are deleted (tombstoned)."""
    dedupe_store: DedupeStore = DedupeStore.ROCKSDB
    max_open_events: int = 50_000
    """Events the batch stage holds (admitted, results not yet delivered) before it stops
    reading, so a backlog waits in Kafka rather than in memory. Batches fill to
    ``batch_max_size`` only while accounts x batch size fits; beyond, they flush by window."""
    max_unsettled_events: int = 100_000
    """Events the batch stage holds from admission until their settlement comes back, before
    this worker's input reader pauses. Under a backlog the settlements return behind every
    chunk forwarded before them; without this bound stage 1 forwarded the whole backlog and
    memory grew with it (bench/RESULTS.md, "Memory under a backlog")."""
    producer_batch_bytes: int = 16384
    """Producer batch size of the dedupe changelog (and Faust's own producer). 1 makes every
    record its own batch: needed on the embedded tansu broker when a test checks table
    recovery (docs/kafka-brokers.md, "Faust's table recovery needs one changelog record per
    batch")."""
    recording_sink: frozenset[str] = frozenset()
    """Destinations served by the in-process recording sink (demo and tests)."""
    recording_sink_log: Path | None = None
    accounts_file: Path | None = None
    """CONVSTREAM_ACCOUNTS_FILE: the accounts ``convstream doctor`` checks (TOML, see
    :mod:`streams.doctor.accounts`). The worker does not need it: accounts come with events."""
    google_ads: GoogleAdsSettings | None = None
    """Google Ads credentials; None when GOOGLE_ADS_DEVELOPER_TOKEN is not set."""
    data_manager: DataManagerSettings | None = None
    """Data Manager API credentials; None when GOOGLE_APPLICATION_CREDENTIALS is not set."""
    data_manager_quota: QuotaSettings = QuotaSettings()
    """The Data Manager request budget per Google Cloud project (CONVSTREAM_DATA_MANAGER_
    REQUESTS_* and ..._QUOTA_MAX_WAIT_SECONDS); read even without credentials, so a typo
    fails the start-up."""
    data_manager_status: RequestStatusSettings = RequestStatusSettings()
    """How Data Manager request statuses are polled (CONVSTREAM_DATA_MANAGER_STATUS_*)."""
    google_upload_api: GoogleUploadApi | None = None
    """The API google_ads events are uploaded through (see :func:`_google_upload_api`); None
    when neither API has credentials (the destination is then not configured)."""
    google_diagnostics_interval_seconds: float = 3600.0
    """How often the offline data diagnostics of every Google Ads customer the worker
    uploaded to are polled (exported as convstream_google_diagnostics_*); 0 disables.
    Google refreshes them a few times a day, so polling more than once a minute is refused."""
    fault_kill_at: str | None = None
    """Fault injection for crash tests: ``point:n`` SIGKILLs the worker at the n-th pass
    of ``point`` (see :mod:`streams.ops.faults`). Never set in production."""
    yandex_oauth_token: str | None = field(default=None, repr=False)
    """YANDEX_METRICA_OAUTH_TOKEN; None leaves yandex_metrica unconfigured. Never printed:
    excluded from ``repr`` and never quoted in an error message."""
    yandex_api_url: str = "https://api-metrika.yandex.net"
    yandex_max_file_bytes: int = 1_000_000_000
    """Largest CSV file per upload; bigger batches are split (Metrica's limit is 1 GB)."""
    yandex_status_poll_seconds: float = 1800.0
    """How often the status tracker lists the uploads of each counter with uploads still
    open (one request per counter per pass). 30 minutes: Metrica takes up to 2 hours to
    process a file, and every pass is counted against the 5,000 requests a day per login
    (a counter with an upload open all day costs 48 a day, where 60 s cost 1,440)."""
    yandex_request_timeout_seconds: float = 300.0
    credentials: CredentialsMapSettings | None = None
    """CONVSTREAM_CREDENTIALS_FILE and its companions; None: one credential set, from the
    variables above (the map's ``default`` set when a map is given)."""

    batch_window_seconds_google_ads: float | None = None
    """CONVSTREAM_BATCH_WINDOW_SECONDS_GOOGLE_ADS; None: :attr:`batch_window_seconds`."""
    batch_window_seconds_yandex_metrica: float | None = None
    """CONVSTREAM_BATCH_WINDOW_SECONDS_YANDEX_METRICA; None: :attr:`batch_window_seconds`.
    From the environment, unset means CONVSTREAM_BATCH_WINDOW_SECONDS when that is set, else
    :data:`YANDEX_DEFAULT_BATCH_WINDOW_SECONDS` (Metrica allows 5,000 requests a day per
    login: a 10 s window would spend them on a few busy counters before noon)."""
    yandex_daily_request_budget: int = 5000
    """CONVSTREAM_YANDEX_DAILY_REQUEST_BUDGET: Management API requests this worker makes per
    day per OAuth token (uploads and status reads together); Metrica's quota is 5,000 per
    login. Several replicas sharing a token each need their share."""
    yandex_quota_reset_utc_offset_hours: float = 0.0
    """CONVSTREAM_YANDEX_QUOTA_RESET_UTC_OFFSET_HOURS: the time zone whose midnight starts
    Metrica's quota day. Metrica's quota page says 00:00 GMT (0); Yandex Audience's says
    Moscow midnight (3)."""

    def batch_window_for(self, destination: str) -> float:
        """The micro-batch window of ``destination`` (the batch stage's flush scheduler)."""
        chosen = {
            "google_ads": self.batch_window_seconds_google_ads,
            "yandex_metrica": self.batch_window_seconds_yandex_metrica,
        }.get(destination)
        return self.batch_window_seconds if chosen is None else chosen

    stall_seconds: float = 300.0
    """CONVSTREAM_STALL_SECONDS: a partition whose committed offset has not moved for this
    long while it has unanswered work (output not yet delivered; uploads in progress do not
    count) turns ``/healthz`` unhealthy, so Kubernetes restarts the worker
    (:mod:`streams.core.stall`)."""

    @property
    def google_api(self) -> GoogleUploadApi | None:
        """The API google_ads events go through: :attr:`google_upload_api`, or for settings
        built in code without it, the same rule :meth:`from_env` applies."""
        if self.google_upload_api is not None:
            return self.google_upload_api
        if self.data_manager is not None:
            return GoogleUploadApi.DATA_MANAGER
        if self.google_ads is not None:
            return GoogleUploadApi.GOOGLE_ADS_API
        return None

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret value configured (tokens, client secrets, passwords): what a
        :class:`~streams.core.secrets.SecretScrubber` removes from remote error text."""
        google = self.google_ads
        kafka = self.kafka
        values = (
            self.yandex_oauth_token,
            google.developer_token if google else None,
            google.client_secret if google else None,
            google.refresh_token if google else None,
            kafka.sasl_password,
            kafka.ssl_key_password,
        )
        return tuple(v for v in values if v)

    @property
    def bootstrap_servers(self) -> str:
        """The broker list in the ``host:port,host:port`` form Kafka clients take."""
        return self.kafka.bootstrap_servers

    @property
    def broker(self) -> str:
        """The broker list as Faust's URL: ``kafka://a:9092;kafka://b:9092``."""
        return ";".join(f"kafka://{host}" for host in self.bootstrap_servers.split(","))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``env`` (default: the process environment).

        Called once, by the CLI. Raises :class:`ConfigError` on the first invalid value.
        """
        env = os.environ if env is None else env
        read = _Reader(env)
        defaults = cls()
        broker = read.text("CONVSTREAM_BROKER", defaults.broker, check=_check_broker)
        insecure = read.flag(ALLOW_INSECURE_ENDPOINTS, defaults.allow_insecure_endpoints)
        google_ads = _google_ads(read, insecure)
        data_manager = _data_manager(read, insecure)
        credentials = _credentials_map(read, insecure)
        yandex_api_url = read.text(
            "YANDEX_METRICA_API_URL", defaults.yandex_api_url, check=_check_http_url
        )
        require_https("YANDEX_METRICA_API_URL", yandex_api_url, insecure)
        settings = cls(
            kafka=_kafka_connection(read, bootstrap_servers(broker)),
            app_id=read.text("CONVSTREAM_APP_ID", defaults.app_id),
            input_topic=read.text("CONVSTREAM_INPUT_TOPIC", defaults.input_topic, _check_topic),
            results_topic=read.text(
                "CONVSTREAM_RESULTS_TOPIC", defaults.results_topic, _check_topic
            ),
            dlq_topic=read.text("CONVSTREAM_DLQ_TOPIC", defaults.dlq_topic, _check_topic),
            upload_status_topic=read.text(
                "CONVSTREAM_UPLOAD_STATUS_TOPIC", defaults.upload_status_topic, _check_topic
            ),
            batch_max_size=read.number(
                "CONVSTREAM_BATCH_MAX_SIZE", defaults.batch_max_size, int, 1, 1_000_000
            ),
            batch_window_seconds=read.number(
                "CONVSTREAM_BATCH_WINDOW_SECONDS",
                defaults.batch_window_seconds,
                float,
                0.01,
                86_400,
            ),
            dedupe_ttl_days=read.number(
                "CONVSTREAM_DEDUPE_TTL_DAYS", defaults.dedupe_ttl_days, float, 1e-5, 3650
            ),
            dedupe_sweep_seconds=read.number(
                "CONVSTREAM_DEDUPE_SWEEP_SECONDS", defaults.dedupe_sweep_seconds, float, 0.1, 86_400
            ),
            retry_max_seconds=read.number(
                "CONVSTREAM_RETRY_MAX_SECONDS", defaults.retry_max_seconds, float, 0, 7 * 86_400
            ),
            delayed_retry_seconds=read.number(
                "CONVSTREAM_DELAYED_RETRY_SECONDS",
                defaults.delayed_retry_seconds,
                float,
                0.1,
                7 * 86_400,
            ),
            metrics_port=read.number(
                "CONVSTREAM_METRICS_PORT", defaults.metrics_port, int, 0, 65_535
            ),
            metrics_address=read.text(
                "CONVSTREAM_METRICS_ADDRESS", defaults.metrics_address, check=_check_address
            ),
            metrics_accounts=read.accounts("CONVSTREAM_METRICS_ACCOUNTS"),
            metrics_max_accounts=read.number(
                "CONVSTREAM_METRICS_MAX_ACCOUNTS", defaults.metrics_max_accounts, int, 0, 100_000
            ),
            allow_insecure_endpoints=insecure,
            data_dir=Path(read.text("CONVSTREAM_DATA_DIR", str(defaults.data_dir))),
            dry_run=read.flag("CONVSTREAM_DRY_RUN", defaults.dry_run),
            max_message_bytes=read.number(
                "CONVSTREAM_MAX_MESSAGE_BYTES", defaults.max_message_bytes, int, 1024, 64 << 20
            ),
            normalize=NormalizeOptions(
                default_phone_region=read.text(
                    "CONVSTREAM_DEFAULT_PHONE_REGION",
                    defaults.normalize.default_phone_region,
                    check=_check_region,
                ).upper(),
                email_dots=read.choice(
                    "CONVSTREAM_EMAIL_DOTS", defaults.normalize.email_dots, GmailDots
                ),
            ),
            batch_partitions=read.number(
                "CONVSTREAM_BATCH_PARTITIONS", defaults.batch_partitions, int, 1, 1024
            ),
            topic_replication_factor=read.number(
                _REPLICATION_FACTOR, defaults.topic_replication_factor, int, 1, _MAX_REPLICAS
            ),
            topic_min_insync_replicas=read.number(
                _MIN_INSYNC_REPLICAS, defaults.topic_min_insync_replicas, int, 1, _MAX_REPLICAS
            ),
            session_timeout_seconds=read.number(
                "CONVSTREAM_SESSION_TIMEOUT_SECONDS",
                defaults.session_timeout_seconds,
                float,
                1,
                600,
            ),
            dedupe_store=read.choice("CONVSTREAM_DEDUPE_STORE", defaults.dedupe_store, DedupeStore),
            max_open_events=read.number(
                "CONVSTREAM_MAX_OPEN_EVENTS", defaults.max_open_events, int, 1, 10_000_000
            ),
            max_unsettled_events=read.number(
                "CONVSTREAM_MAX_UNSETTLED_EVENTS",
                defaults.max_unsettled_events,
                int,
                1,
                100_000_000,
            ),
            producer_batch_bytes=read.number(
                "CONVSTREAM_PRODUCER_BATCH_BYTES", defaults.producer_batch_bytes, int, 1, 16 << 20
            ),
            recording_sink=read.names(
                "CONVSTREAM_RECORDING_SINK", ("google_ads", "yandex_metrica")
            ),
            recording_sink_log=read.path("CONVSTREAM_RECORDING_SINK_LOG"),
            accounts_file=read.path("CONVSTREAM_ACCOUNTS_FILE"),
            fault_kill_at=read.text("CONVSTREAM_FAULT_KILL_AT", "", check=_check_fault) or None,
            yandex_oauth_token=read.secret("YANDEX_METRICA_OAUTH_TOKEN", check=_check_token),
            yandex_api_url=read.text(
                "YANDEX_METRICA_API_URL", defaults.yandex_api_url, check=_check_http_url
            ).rstrip("/"),
            yandex_max_file_bytes=read.number(
                "CONVSTREAM_YANDEX_MAX_FILE_BYTES",
                defaults.yandex_max_file_bytes,
                int,
                1024,
                1_000_000_000,
            ),
            yandex_status_poll_seconds=read.number(
                "CONVSTREAM_YANDEX_STATUS_POLL_SECONDS",
                defaults.yandex_status_poll_seconds,
                float,
                0.01,
                86_400,
            ),
            yandex_request_timeout_seconds=read.number(
                "CONVSTREAM_YANDEX_TIMEOUT_SECONDS",
                defaults.yandex_request_timeout_seconds,
                float,
                1,
                3600,
            ),
            batch_window_seconds_google_ads=read.number(
                "CONVSTREAM_BATCH_WINDOW_SECONDS_GOOGLE_ADS", None, float, 0.01, 86_400
            ),
            batch_window_seconds_yandex_metrica=read.number(
                "CONVSTREAM_BATCH_WINDOW_SECONDS_YANDEX_METRICA",
                None
                if read.is_set("CONVSTREAM_BATCH_WINDOW_SECONDS")
                else (YANDEX_DEFAULT_BATCH_WINDOW_SECONDS),
                float,
                0.01,
                86_400,
            ),
            yandex_daily_request_budget=read.number(
                "CONVSTREAM_YANDEX_DAILY_REQUEST_BUDGET",
                defaults.yandex_daily_request_budget,
                int,
                1,
                1_000_000,
            ),
            yandex_quota_reset_utc_offset_hours=read.number(
                "CONVSTREAM_YANDEX_QUOTA_RESET_UTC_OFFSET_HOURS",
                defaults.yandex_quota_reset_utc_offset_hours,
                float,
                -12,
                14,
            ),
            stall_seconds=read.number(
                "CONVSTREAM_STALL_SECONDS", defaults.stall_seconds, float, 1, 86_400
            ),
            google_ads=google_ads,
            data_manager=data_manager,
            data_manager_quota=_data_manager_quota(read),
            data_manager_status=_data_manager_status(read),
            google_upload_api=_google_upload_api(
                read, google_ads, data_manager, mapped=credentials is not None
            ),
            credentials=credentials,
            google_diagnostics_interval_seconds=_google_diagnostics_interval(
                read, defaults.google_diagnostics_interval_seconds
            ),
        )
        _check_distinct_topics(settings)
        _check_topic_durability(settings)
        return settings


def _google_ads(read: _Reader, insecure: bool, template: bool = False) -> GoogleAdsSettings | None:
    """The Google Ads block, or None without a developer token (the destination is then
    not configured and its events get DESTINATION_NOT_CONFIGURED). ``template``: the block
    even without one (what the credentials map's sets share)."""
    developer_token = read.text("GOOGLE_ADS_DEVELOPER_TOKEN", "")
    if not developer_token and not template:
        return None
    login = read.text("GOOGLE_ADS_LOGIN_CUSTOMER_ID", "", check=_check_customer_id)
    job_id = read.text("GOOGLE_ADS_JOB_ID", "", check=_check_job_id)
    token_uri = read.text("GOOGLE_ADS_TOKEN_URI", "", check=_check_url)
    require_https("GOOGLE_ADS_TOKEN_URI", token_uri, insecure)
    key_file = read.path("GOOGLE_ADS_JSON_KEY_FILE_PATH")
    _require_https_token_uri("GOOGLE_ADS_JSON_KEY_FILE_PATH", key_file, insecure)
    return GoogleAdsSettings(
        developer_token=developer_token,
        client_id=read.text("GOOGLE_ADS_CLIENT_ID", "") or None,
        client_secret=read.text("GOOGLE_ADS_CLIENT_SECRET", "") or None,
        refresh_token=read.text("GOOGLE_ADS_REFRESH_TOKEN", "") or None,
        json_key_file_path=key_file,
        impersonated_email=read.text("GOOGLE_ADS_IMPERSONATED_EMAIL", "") or None,
        login_customer_id=login.replace("-", "") or None,
        endpoint=read.text("GOOGLE_ADS_ENDPOINT", "") or None,
        token_uri=token_uri or None,
        api_version=read.text(
            "GOOGLE_ADS_API_VERSION", DEFAULT_GOOGLE_ADS_API_VERSION, check=_check_api_version
        ),
        job_id=int(job_id) if job_id else None,
        request_timeout_seconds=read.number(
            "GOOGLE_ADS_REQUEST_TIMEOUT_SECONDS", 120.0, float, 1, 3600
        ),
        action_name_ttl_seconds=read.number(
            "CONVSTREAM_GOOGLE_ACTION_NAME_TTL_SECONDS", 3600.0, float, 1, 86400 * 7
        ),
        max_requests_per_second=read.number(GOOGLE_ADS_MAX_RPS, 10.0, float, 0.1, 10_000),
        max_concurrent_requests=read.number(GOOGLE_ADS_MAX_CONCURRENT_REQUESTS, 10, int, 1, 1000),
    )


def _data_manager(
    read: _Reader, insecure: bool, template: bool = False
) -> DataManagerSettings | None:
    """The Data Manager block, or None without ``GOOGLE_APPLICATION_CREDENTIALS``;
    ``template``: the block even without it (what the credentials map's sets share)."""
    credentials = read.path(GOOGLE_APPLICATION_CREDENTIALS)
    if credentials is None:
        if not template:
            return None
        credentials = Path()
    else:
        _check_readable(
            GOOGLE_APPLICATION_CREDENTIALS,
            credentials,
            "a service-account key or authorized-user file",
        )
        _require_https_token_uri(GOOGLE_APPLICATION_CREDENTIALS, credentials, insecure)
    login = read.text(DATA_MANAGER_LOGIN_ACCOUNT, "", check=_check_customer_id)
    return DataManagerSettings(
        credentials_file=credentials,
        endpoint=read.text(
            DATA_MANAGER_ENDPOINT, DEFAULT_DATA_MANAGER_ENDPOINT, check=_check_grpc_endpoint
        ),
        impersonate_service_account=read.text(DATA_MANAGER_IMPERSONATE, "", check=_check_email)
        or None,
        login_account=login.replace("-", "") or None,
        request_timeout_seconds=read.number(
            "GOOGLE_DATA_MANAGER_REQUEST_TIMEOUT_SECONDS", 120.0, float, 1, 3600
        ),
        **_data_manager_encryption(read),
    )


def _credentials_map(read: _Reader, insecure: bool) -> CredentialsMapSettings | None:
    """CONVSTREAM_CREDENTIALS_FILE and what its sets share; None when it is unset. The map
    itself is parsed and checked by the worker and the doctor (it names secret files that
    must be read, and re-read when they change), not here."""
    path = read.path(CREDENTIALS_FILE)
    if path is None:
        return None
    _check_readable(CREDENTIALS_FILE, path, "a TOML credentials map")
    google_ads = _google_ads(read, insecure, template=True)
    data_manager = _data_manager(read, insecure, template=True)
    assert google_ads is not None
    assert data_manager is not None
    return CredentialsMapSettings(
        file=path,
        poll_seconds=read.number(CREDENTIALS_POLL_SECONDS, 5.0, float, 0.1, 3600),
        google_upload_api=read.choice(GOOGLE_ADS_UPLOAD_API, None, GoogleUploadApi),
        google_ads=google_ads,
        data_manager=data_manager,
    )


def _data_manager_quota(read: _Reader) -> QuotaSettings:
    """The request limiter's budgets; defaults are Google's per-project limits."""
    default = QuotaSettings()
    per_minute, per_day = default.mutate.per_minute, default.mutate.per_day
    return QuotaSettings(
        mutate=QuotaBudget(
            read.number(DATA_MANAGER_REQUESTS_PER_MINUTE, per_minute, int, 1, 1_000_000),
            read.number(DATA_MANAGER_REQUESTS_PER_DAY, per_day, int, 1, 1_000_000_000),
        ),
        read=QuotaBudget(
            read.number(DATA_MANAGER_STATUS_REQUESTS_PER_MINUTE, per_minute, int, 1, 1_000_000),
            read.number(DATA_MANAGER_STATUS_REQUESTS_PER_DAY, per_day, int, 1, 1_000_000_000),
        ),
        max_wait_seconds=read.number(
            DATA_MANAGER_QUOTA_MAX_WAIT, default.max_wait_seconds, float, 0, 3600
        ),
    )


def _data_manager_status(read: _Reader) -> RequestStatusSettings:
    """The request-status schedule. The first poll may be short (tests, the local sandbox);
    the backoff and the age limit stay at least a minute, so a typo cannot make a worker
    poll Google in a loop."""
    default = RequestStatusSettings()
    return RequestStatusSettings(
        first_poll_seconds=read.number(
            DATA_MANAGER_STATUS_FIRST_POLL, default.first_poll_seconds, float, 0, 86_400
        ),
        max_interval_seconds=read.number(
            DATA_MANAGER_STATUS_MAX_INTERVAL, default.max_interval_seconds, float, 60, 86_400
        ),
        max_age_seconds=read.number(
            DATA_MANAGER_STATUS_MAX_AGE, default.max_age_seconds, float, 60, 30 * 86_400
        ),
        max_tracked=read.number(
            DATA_MANAGER_STATUS_MAX_TRACKED, default.max_tracked, int, 0, 1_000_000
        ),
    )


_KEK_URI = "GOOGLE_DATA_MANAGER_ENCRYPTION_KEK_URI"
_WIP_PROVIDER = "GOOGLE_DATA_MANAGER_ENCRYPTION_WIP_PROVIDER"


def _data_manager_encryption(read: _Reader) -> dict[str, str | None]:
    """Both encryption variables or neither: one without the other cannot work."""
    kek = read.text(_KEK_URI, "", check=_check_kek_uri) or None
    wip = read.text(_WIP_PROVIDER, "", check=_check_wip_provider) or None
    if (kek is None) != (wip is None):
        have, lack = (_KEK_URI, _WIP_PROVIDER) if wip is None else (_WIP_PROVIDER, _KEK_URI)
        raise ConfigError(
            f"{have} is set without {lack}: encrypting user data needs the KMS key and the "
            "Workload Identity pool provider Google unwraps it with; set both or neither"
        )
    return {"encryption_kek_uri": kek, "encryption_wip_provider": wip}


def _check_kek_uri(value: str) -> str | None:
    if not re.fullmatch(
        r"(gcp-kms://)?projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+", value
    ):
        return (
            "expected projects/PROJECT/locations/LOCATION/keyRings/RING/cryptoKeys/KEY "
            "(gcp-kms:// prefix allowed)"
        )
    return None


def _check_wip_provider(value: str) -> str | None:
    if not re.fullmatch(
        r"projects/[^/]+/locations/global/workloadIdentityPools/[^/]+/providers/[^/]+", value
    ):
        return (
            "expected projects/PROJECT_NUMBER/locations/global/workloadIdentityPools/POOL/"
            "providers/PROVIDER"
        )
    return None


def _google_upload_api(
    read: _Reader,
    google_ads: GoogleAdsSettings | None,
    data_manager: DataManagerSettings | None,
    *,
    mapped: bool = False,
) -> GoogleUploadApi | None:
    """``CONVSTREAM_GOOGLE_ADS_UPLOAD_API``, or when unset: ``data_manager`` if its credentials
    are configured, else ``google_ads_api`` if a developer token is set (so a deployment
    configured before the Data Manager API existed keeps its path), else None."""
    chosen = read.choice(GOOGLE_ADS_UPLOAD_API, None, GoogleUploadApi)
    if mapped:
        # The credentials map's sets bring their own credentials; the variables' set (the
        # map's default) may have none.
        if chosen is GoogleUploadApi.DATA_MANAGER and data_manager is None:
            return None if google_ads is None else GoogleUploadApi.GOOGLE_ADS_API
        if chosen is GoogleUploadApi.GOOGLE_ADS_API and google_ads is None:
            return None if data_manager is None else GoogleUploadApi.DATA_MANAGER
    if chosen is GoogleUploadApi.DATA_MANAGER and data_manager is None:
        raise ConfigError(
            f"{GOOGLE_ADS_UPLOAD_API}=data_manager needs {GOOGLE_APPLICATION_CREDENTIALS}: set it "
            "to a service-account key or authorized-user file with the datamanager scope"
        )
    if chosen is GoogleUploadApi.GOOGLE_ADS_API and google_ads is None:
        raise ConfigError(
            f"{GOOGLE_ADS_UPLOAD_API}=google_ads_api needs GOOGLE_ADS_DEVELOPER_TOKEN (and the "
            "GOOGLE_ADS_* credentials); or set it to data_manager"
        )
    if chosen is not None:
        return chosen
    if data_manager is not None:
        return GoogleUploadApi.DATA_MANAGER
    if google_ads is not None:
        return GoogleUploadApi.GOOGLE_ADS_API
    return None


def _check_grpc_endpoint(value: str) -> str | None:
    host, _, port = value.rpartition(":") if ":" in value else (value, "", "")
    if "://" in value or not host or (port and not (port.isascii() and port.isdigit())):
        return "expected host or host:port of a gRPC endpoint, e.g. datamanager.googleapis.com"
    return None


def _check_email(value: str) -> str | None:
    if "@" not in value or " " in value:
        return "expected a service account e-mail, e.g. uploader@project.iam.gserviceaccount.com"
    return None


_GOOGLE_DIAGNOSTICS_INTERVAL = "CONVSTREAM_GOOGLE_DIAGNOSTICS_INTERVAL_SECONDS"
_MIN_GOOGLE_DIAGNOSTICS_INTERVAL = 60.0


def _google_diagnostics_interval(read: _Reader, default: float) -> float:
    """0 (off) or at least a minute: each poll is two searches per customer, and the
    summaries change a few times a day at most."""
    seconds = read.number(_GOOGLE_DIAGNOSTICS_INTERVAL, default, float, 0, 7 * 86_400)
    if 0 < seconds < _MIN_GOOGLE_DIAGNOSTICS_INTERVAL:
        raise ConfigError(
            f"{_GOOGLE_DIAGNOSTICS_INTERVAL}={seconds:g} is invalid: expected 0 (off) or a "
            f"number from {_MIN_GOOGLE_DIAGNOSTICS_INTERVAL:g} to {7 * 86_400:g}"
        )
    return seconds


_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


def _check_topic(value: str) -> str | None:
    """Kafka's own rule for topic names, checked at start-up instead of at the first
    produce, where it would fail a batch mid-stream."""
    if not _TOPIC_NAME.fullmatch(value) or value in (".", ".."):
        return "expected a Kafka topic name: 1-249 characters from a-z A-Z 0-9 . _ -"
    return None


def _check_distinct_topics(settings: Settings) -> None:
    """Each output topic has its own consumers and record shape: sharing one would, e.g.,
    put upload-status records among the one-result-per-message results."""
    named = {
        "CONVSTREAM_INPUT_TOPIC": settings.input_topic,
        "CONVSTREAM_RESULTS_TOPIC": settings.results_topic,
        "CONVSTREAM_DLQ_TOPIC": settings.dlq_topic,
        "CONVSTREAM_UPLOAD_STATUS_TOPIC": settings.upload_status_topic,
    }
    seen: dict[str, str] = {}
    for name, topic in named.items():
        if topic in seen:
            raise ConfigError(
                f"{name}={topic!r} is invalid: {seen[topic]} names the same topic; "
                "every topic setting needs a topic of its own"
            )
        seen[topic] = name


_REPLICATION_FACTOR = "CONVSTREAM_TOPIC_REPLICATION_FACTOR"
_MIN_INSYNC_REPLICAS = "CONVSTREAM_TOPIC_MIN_INSYNC_REPLICAS"
_MAX_REPLICAS = 32_767
"""Kafka's replication factor is an int16."""


def _check_topic_durability(settings: Settings) -> None:
    """A topic whose min.insync.replicas exceeds its replicas refuses every acks=all write."""
    if settings.topic_min_insync_replicas > settings.topic_replication_factor:
        raise ConfigError(
            f"{_MIN_INSYNC_REPLICAS}={settings.topic_min_insync_replicas} is invalid: expected "
            f"at most {_REPLICATION_FACTOR}={settings.topic_replication_factor} (a topic with "
            "fewer replicas than min.insync.replicas refuses every write); on a one-node "
            "broker set both to 1"
        )


def _check_customer_id(value: str) -> str | None:
    digits = value.replace("-", "")
    if not (digits.isascii() and digits.isdigit()) or len(digits) != 10:
        return "expected a 10-digit Google Ads customer id, dashes allowed (123-456-7890)"
    return None


def _check_job_id(value: str) -> str | None:
    if not (value.isascii() and value.isdigit()) or int(value) > _MAX_JOB_ID:
        return f"expected an integer from 0 to {_MAX_JOB_ID}"
    return None


def _check_url(value: str) -> str | None:
    if not value.startswith(("https://", "http://")):
        return "expected an http(s):// URL of an OAuth 2.0 token endpoint"
    return None


ALLOW_INSECURE_ENDPOINTS = "CONVSTREAM_ALLOW_INSECURE_ENDPOINTS"


def require_https(name: str, url: str, insecure: bool) -> None:
    """Refuse a plain-HTTP API or OAuth token endpoint unless the development switch is on.

    Why: the OAuth token (or the refresh token and client secret sent to a token
    endpoint) and the conversions would cross the network in clear text. The local
    sandboxes serve http://, so ``convstream demo`` and the tests set the switch.
    """
    if insecure or not url.lower().startswith("http://"):
        return
    raise ConfigError(
        f"{name}={url!r} is refused: a plain http:// endpoint would carry credentials in "
        f"clear text. Use https://, or set {ALLOW_INSECURE_ENDPOINTS}=true for local "
        "development only (the sandboxes of `convstream demo` and the tests)"
    )


def _require_https_token_uri(name: str, path: Path | None, insecure: bool) -> None:
    """The ``token_uri`` a credentials file names (service-account key, authorized-user
    file): google-auth sends the refresh token or the signed assertion there. An unreadable
    or malformed file is left to the sink, which reports it with its own context."""
    if path is None or insecure:
        return
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    token_uri = document.get("token_uri") if isinstance(document, dict) else None
    if isinstance(token_uri, str):
        require_https(f"the token_uri of {name}", token_uri, insecure)


def _check_address(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return "expected an IP address to bind to, e.g. 0.0.0.0, 127.0.0.1 or ::"
    return None


def _check_api_version(value: str) -> str | None:
    if not _GOOGLE_ADS_VERSION.fullmatch(value):
        return "expected a Google Ads API version such as v26"
    return None


def bootstrap_servers(broker_url: str) -> str:
    """``kafka://a:9092;kafka://b:9092`` (Faust's form) -> ``a:9092,b:9092``."""
    hosts = []
    for part in broker_url.replace(";", ",").split(","):
        part = part.strip()
        if "://" in part:
            part = part.split("://", 1)[1]
        if part:
            hosts.append(part)
    return ",".join(hosts)


def _check_broker(value: str) -> str | None:
    for host in bootstrap_servers(value).split(","):
        name, sep, port = host.rpartition(":")
        if not sep or not name or not (port.isascii() and port.isdigit()):
            return "expected kafka://host:port, several separated by ';' or ','"
    return None


def _check_fault(value: str) -> str | None:
    point, sep, count = value.rpartition(":")
    if not sep or not point or not (count.isascii() and count.isdigit()):
        return "expected point:n, e.g. after_upload:2"
    return None


def _check_token(value: str) -> str | None:
    if not all(33 <= ord(char) <= 126 for char in value):
        return "expected a single word of printable ASCII (the OAuth token, no spaces)"
    return None


def _check_http_url(value: str) -> str | None:
    scheme, sep, rest = value.partition("://")
    if scheme not in ("http", "https") or not sep or not rest.split("/")[0]:
        return "expected an http:// or https:// URL, e.g. https://api-metrika.yandex.net"
    return None


def _check_region(value: str) -> str | None:
    if value.upper() not in phonenumbers.SUPPORTED_REGIONS:
        return "expected a two-letter ISO 3166 region that libphonenumber knows, e.g. US, GB, DE"
    return None


class _Reader:
    """Reads typed values from an environment mapping, raising ConfigError with context."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def is_set(self, name: str) -> bool:
        """Whether ``name`` has a (non-blank) value."""
        return self._raw(name) is not None

    def _raw(self, name: str) -> str | None:
        value = self._env.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def text(
        self, name: str, default: str, check: Callable[[str], str | None] | None = None
    ) -> str:
        value = self._raw(name)
        if value is None:
            return default
        problem = check(value) if check else None
        if problem:
            raise ConfigError(f"{name}={value!r} is invalid: {problem}")
        return value

    def number(self, name: str, default: T, kind: Callable[[str], T], low: float, high: float) -> T:
        value = self._raw(name)
        if value is None:
            return default
        try:
            parsed = kind(value)
        except ValueError:
            parsed = None
        if parsed is None or not (low <= parsed <= high):  # type: ignore[operator]
            kind_name = "an integer" if kind is int else "a number"
            raise ConfigError(
                f"{name}={value!r} is invalid: expected {kind_name} from {low:g} to {high:g}"
            )
        return parsed

    def names(self, name: str, allowed: tuple[str, ...]) -> frozenset[str]:
        value = self._raw(name)
        if value is None:
            return frozenset()
        chosen = frozenset(part.strip() for part in value.split(",") if part.strip())
        unknown = sorted(chosen - set(allowed))
        if unknown:
            raise ConfigError(
                f"{name}={value!r} is invalid: expected a comma-separated list of "
                f"{', '.join(allowed)}"
            )
        return chosen

    def secret(self, name: str, check: Callable[[str], str | None]) -> str | None:
        """Like :meth:`text` without a default, and the error never quotes the value."""
        value = self._raw(name)
        if value is None:
            return None
        problem = check(value)
        if problem:
            raise ConfigError(f"{name} is invalid: {problem}")
        return value

    def password(self, name: str) -> str | None:
        """A secret taken as it is (spaces are a password's own), None when unset or empty;
        nothing here can fail, so nothing ever quotes it."""
        value = self._env.get(name)
        return value if value else None

    def accounts(self, name: str) -> frozenset[str]:
        """A comma-separated list of account ids (dashes dropped: Google's customer ids
        are labelled as digits)."""
        value = self._raw(name)
        if value is None:
            return frozenset()
        chosen = frozenset(p.strip().replace("-", "") for p in value.split(",") if p.strip())
        if not all(part.isascii() and part.isdigit() for part in chosen):
            raise ConfigError(
                f"{name}={value!r} is invalid: expected a comma-separated list of account "
                "ids (Yandex counter ids, Google customer ids), e.g. 44147844,1234567890"
            )
        return chosen

    def path(self, name: str) -> Path | None:
        value = self._raw(name)
        return None if value is None else Path(value)

    def flag(self, name: str, default: bool) -> bool:
        value = self._raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{name}={value!r} is invalid: expected true or false")

    def choice(self, name: str, default: T, kind: Callable[[str], T]) -> T:
        value = self._raw(name)
        if value is None:
            return default
        try:
            return kind(value.lower())
        except ValueError:
            allowed = ", ".join(str(member) for member in kind)  # type: ignore[attr-defined]
            raise ConfigError(f"{name}={value!r} is invalid: expected one of {allowed}") from None
