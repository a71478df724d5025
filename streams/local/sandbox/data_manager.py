"""A local Data Manager API (``IngestionService``) over TLS, for tests with real parts and
for ``convstream demo``.

The real ``IngestionServiceAsyncClient`` talks to :class:`FakeDataManager` through
``GOOGLE_DATA_MANAGER_ENDPOINT=localhost:<port>``, trusting the self-signed certificate of
:func:`streams.local.sandbox.google_ads.tls_certificate` through gRPC's
``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH``; access tokens come from the same local
:class:`~streams.local.sandbox.google_ads.FakeTokenEndpoint` as the Google Ads sandbox's.
The server speaks the library's own proto-plus messages (``Request.deserialize`` /
``Response.serialize``) for ``IngestEvents`` and ``RetrieveRequestStatus``, with the
service and method names of the library's transport.

It answers as Google documents: fast-fail (one invalid event refuses the whole request,
INVALID_ARGUMENT with ``google.rpc.BadRequest`` field violations ``events[i]...``),
``validate_only`` (checked, not ingested), a ``request_id`` per accepted request, and a
status per destination for it. :class:`Script` makes it misbehave on purpose: invalid
events (by gclid or transaction id), a violation that names no event, UNAUTHENTICATED
(stale tokens), PERMISSION_DENIED for an operating account, RESOURCE_EXHAUSTED with a
``google.rpc.RetryInfo`` delay, UNAVAILABLE, and a per-event INTERNAL_ERROR violation for
the first N requests carrying an event (``Script.flaky_events``).
"""

from __future__ import annotations

import threading
import uuid
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import grpc
from google.ads.datamanager_v1 import types as dm
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from streams.local.sandbox.google_ads import FakeTokenEndpoint

SERVICE: Final = "google.ads.datamanager.v1.IngestionService"
_ERROR_DOMAIN: Final = "datamanager.googleapis.com"


@dataclass
class Recorded:
    """One IngestEvents request the fake received: raw protobuf, metadata, its answer."""

    request: Any
    metadata: dict[str, str]
    request_id: str
    """Empty when the request was refused or only validated."""
    outcome: str
    """``ingested``, ``validated``, or the gRPC status it was refused with."""


@dataclass
class Invalid:
    """How the fake refuses one event: the field under ``events[i]`` and Google's reason."""

    field: str = "ad_identifiers.gclid"
    reason: str = "INVALID_FORMAT"
    description: str = "The value is not valid."


@dataclass
class Script:
    """What the fake answers; tests change it between (or during) writes."""

    invalid: dict[str, Invalid] = field(default_factory=dict)
    """gclid or transaction_id -> how an event carrying it is refused (with its index)."""
    invalid_without_index: set[str] = field(default_factory=set)
    """gclids or transaction ids whose event makes the request fail with a violation that
    names no event (the caller must bisect)."""
    invalid_actions: dict[str, str] = field(default_factory=dict)
    """Conversion action id -> the reason a destination naming it is refused
    (``INVALID_CONVERSION_ACTION_ID``, ``CONVERSION_ACTION_TOO_RECENTLY_CREATED`` ...)."""
    denied_accounts: set[str] = field(default_factory=set)
    """Operating accounts the caller has no access to: PERMISSION_DENIED."""
    resource_exhausted: int = 0
    """The next N calls answer RESOURCE_EXHAUSTED with RetryInfo."""
    retry_delay_seconds: int = 7
    quota_limit: str = "IngestionMutateRequestsPerMinutePerProject"
    """The ``ErrorInfo.metadata.quota_limit`` of that RESOURCE_EXHAUSTED (Google names the
    limit there; ``...PerDayPerProject`` is the day's quota)."""
    unavailable_calls: int = 0
    """The next N calls answer UNAVAILABLE."""
    processing_polls: int = 0
    """RetrieveRequestStatus answers PROCESSING this many times per request first."""
    failed_records: dict[str, int] = field(default_factory=dict)
    """request_id -> events Google later failed to process (PARTIAL_SUCCESS / FAILED)."""
    failed_reason: str = "PROCESSING_ERROR_REASON_EVENT_TOO_OLD"
    """The ``ProcessingErrorReason`` those later failures are reported with (e.g.
    ``PROCESSING_ERROR_REASON_CLICK_NOT_FOUND``, ``PROCESSING_ERROR_REASON_INTERNAL_ERROR``:
    Data Manager reports them as counts per request, naming no event)."""
    flaky_events: dict[str, int] = field(default_factory=dict)
    """gclid or transaction_id -> how many more requests refuse that event with a field
    violation of reason INTERNAL_ERROR ("An internal error has occurred": Google's
    transient ErrorReason) before it is accepted."""
    failed_events: set[str] = field(default_factory=set)
    """gclids or transaction ids of events Google accepts and later fails to process: their
    destination reports PARTIAL_SUCCESS (FAILED when all its events are such). Scripted
    before the upload, unlike ``failed_records``, whose request ids exist only after it."""


class FakeDataManager:
    """``IngestEvents`` and ``RetrieveRequestStatus`` over TLS; records every request and
    answers as :attr:`script` says."""

    def __init__(self, cert_pem: bytes, key_pem: bytes, tokens: FakeTokenEndpoint) -> None:
        self.script = Script()
        self.received: list[Recorded] = []
        self.status_polls: list[str] = []
        self._tokens = tokens
        self._lock = threading.Lock()
        self._polls: dict[str, int] = {}
        self._requests: dict[str, Any] = {}
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self._server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    SERVICE,
                    {
                        "IngestEvents": _handler(
                            self._ingest, dm.IngestEventsRequest, dm.IngestEventsResponse
                        ),
                        "RetrieveRequestStatus": _handler(
                            self._status,
                            dm.RetrieveRequestStatusRequest,
                            dm.RetrieveRequestStatusResponse,
                        ),
                    },
                ),
            )
        )
        credentials = grpc.ssl_server_credentials([(key_pem, cert_pem)])
        self.port = self._server.add_secure_port("127.0.0.1:0", credentials)

    @property
    def endpoint(self) -> str:
        return f"localhost:{self.port}"

    @property
    def ingested(self) -> list[Any]:
        """Every event ingested (not validated only), raw protobuf, in arrival order."""
        with self._lock:
            return [e for r in self.received if r.outcome == "ingested" for e in r.request.events]

    def __enter__(self) -> FakeDataManager:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop(grace=None)

    # --- IngestEvents ----------------------------------------------------------------

    def _ingest(self, request: Any, context: grpc.ServicerContext) -> Any:
        pb = type(request).pb(request)
        metadata = {key: value for key, value in context.invocation_metadata()}
        refusal = self._gate(context) or self._check(pb)
        if refusal is not None:
            self._record(pb, metadata, "", refusal[0])
            context.abort_with_status(rpc_status.to_status(refusal[1]))
        if pb.validate_only:
            self._record(pb, metadata, "", "validated")
            return dm.IngestEventsResponse.wrap(dm.IngestEventsResponse.pb()())
        request_id = str(uuid.uuid4())
        with self._lock:
            self._requests[request_id] = pb
        self._record(pb, metadata, request_id, "ingested")
        return dm.IngestEventsResponse.wrap(dm.IngestEventsResponse.pb()(request_id=request_id))

    def _gate(self, context: grpc.ServicerContext) -> tuple[str, Any] | None:
        """Authentication, outages and quota: refusals that are not about the events."""
        metadata = dict(context.invocation_metadata())
        token = str(metadata.get("authorization", "")).removeprefix("Bearer ")
        if not self._tokens.is_valid(token) and not _self_signed_jwt(token):
            return "UNAUTHENTICATED", _status(
                code_pb2.UNAUTHENTICATED,
                "Request had invalid authentication credentials.",
                _error_info("ACCESS_TOKEN_EXPIRED"),
            )
        with self._lock:
            if self.script.unavailable_calls > 0:
                self.script.unavailable_calls -= 1
                return "UNAVAILABLE", _status(code_pb2.UNAVAILABLE, "The service is unavailable.")
            if self.script.resource_exhausted > 0:
                self.script.resource_exhausted -= 1
                retry = error_details_pb2.RetryInfo()
                retry.retry_delay.seconds = self.script.retry_delay_seconds
                info = _error_info("RESOURCE_EXHAUSTED")
                info.metadata["quota_limit"] = self.script.quota_limit
                return "RESOURCE_EXHAUSTED", _status(
                    code_pb2.RESOURCE_EXHAUSTED,
                    f"Quota exceeded for quota metric {self.script.quota_limit}.",
                    info,
                    retry,
                )
        return None

    def _check(self, pb: Any) -> tuple[str, Any] | None:
        """Access to the destinations, then every event: fast-fail, as Google does."""
        for destination in pb.destinations:
            account = destination.operating_account.account_id
            if account in self.script.denied_accounts:
                return "PERMISSION_DENIED", _status(
                    code_pb2.PERMISSION_DENIED,
                    "The caller does not have permission to access the operating account.",
                    _error_info("PERMISSION_DENIED"),
                )
        for index, destination in enumerate(pb.destinations):
            reason = self.script.invalid_actions.get(destination.product_destination_id)
            if reason:
                return "INVALID_ARGUMENT", _bad_request(
                    [(f"destinations[{index}].product_destination_id", reason, "Not valid.")],
                    reason,
                )
        if not pb.destinations or not pb.events:
            return "INVALID_ARGUMENT", _bad_request(
                [
                    (
                        "destinations" if not pb.destinations else "events",
                        "REQUIRED_FIELD_MISSING",
                        "Required field is missing.",
                    )
                ]
            )
        if len(pb.events) > 2000:
            return "INVALID_ARGUMENT", _bad_request(
                [("events", "TOO_MANY_EVENTS", "Too many events in the request.")]
            )
        violations = []
        unattributed = False
        for index, event in enumerate(pb.events):
            keys = [k for k in (event.ad_identifiers.gclid, event.transaction_id) if k]
            problem = next((self.script.invalid[k] for k in keys if k in self.script.invalid), None)
            if problem is not None:
                violations.append(
                    (f"events[{index}].{problem.field}", problem.reason, problem.description)
                )
            flaky = next((k for k in keys if self.script.flaky_events.get(k, 0) > 0), None)
            if flaky is not None:
                self.script.flaky_events[flaky] -= 1
                violations.append(
                    (f"events[{index}]", "INTERNAL_ERROR", "An internal error has occurred.")
                )
            if any(k in self.script.invalid_without_index for k in keys):
                unattributed = True
            if not event.HasField("event_timestamp"):
                violations.append(
                    (
                        f"events[{index}].event_timestamp",
                        "REQUIRED_FIELD_MISSING",
                        "Required field is missing.",
                    )
                )
        if unattributed:
            return "INVALID_ARGUMENT", _bad_request(
                [("", "INVALID_EVENT", "An event in the request is not valid.")]
            )
        if violations:
            return "INVALID_ARGUMENT", _bad_request(violations)
        return None

    def _record(self, pb: Any, metadata: dict[str, str], request_id: str, outcome: str) -> None:
        with self._lock:
            self.received.append(Recorded(pb, metadata, request_id, outcome))

    # --- RetrieveRequestStatus --------------------------------------------------------

    def _status(self, request: Any, context: grpc.ServicerContext) -> Any:
        refusal = self._gate(context)
        if refusal is not None:
            context.abort_with_status(rpc_status.to_status(refusal[1]))
        request_id = type(request).pb(request).request_id
        with self._lock:
            self.status_polls.append(request_id)
            ingested = self._requests.get(request_id)
            polls = self._polls[request_id] = self._polls.get(request_id, 0) + 1
        if ingested is None:
            context.abort_with_status(
                rpc_status.to_status(
                    _bad_request([("request_id", "INVALID_REQUEST_ID", "Unknown request id.")])
                )
            )
            raise AssertionError("abort_with_status returns only by raising")
        status_type = dm.RequestStatusPerDestination
        answer = dm.RetrieveRequestStatusResponse.pb()()
        failed = self.script.failed_records.get(request_id, 0)
        for destination in ingested.destinations:
            events = [
                e for e in ingested.events if destination.reference in e.destination_references
            ]
            count = len(events)
            scripted = sum(
                1
                for e in events
                if {e.ad_identifiers.gclid, e.transaction_id} & self.script.failed_events
            )
            entry = answer.request_status_per_destination.add()
            entry.destination.CopyFrom(destination)
            if polls <= self.script.processing_polls:
                entry.request_status = status_type.RequestStatus.PROCESSING
                continue
            failures = min(failed + scripted, count)
            entry.request_status = (
                status_type.RequestStatus.SUCCESS
                if not failures
                else status_type.RequestStatus.FAILED
                if failures == count
                else status_type.RequestStatus.PARTIAL_SUCCESS
            )
            entry.events_ingestion_status.record_count = count
            if failures:
                error = entry.error_info.error_counts.add(record_count=failures)
                error.reason = getattr(dm.ProcessingErrorReason, self.script.failed_reason)
        return dm.RetrieveRequestStatusResponse.wrap(answer)


def _self_signed_jwt(token: str) -> bool:
    """A service account's self-signed JWT for the datamanager scope: google-auth sends one
    instead of an OAuth access token when the client asks for it (the generated clients do).
    The sandbox reads its claims without checking the signature: it trusts any key."""
    import base64
    import json

    parts = token.split(".")
    if len(parts) != 3:
        return False
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return False
    scopes = str(claims.get("scope", "")) + str(claims.get("aud", ""))
    return isinstance(claims, dict) and bool(claims.get("iss")) and "datamanager" in scopes


def _handler(fn: Any, request_type: Any, response_type: Any) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(
        fn,
        request_deserializer=request_type.deserialize,
        response_serializer=response_type.serialize,
    )


def _error_info(reason: str) -> error_details_pb2.ErrorInfo:
    return error_details_pb2.ErrorInfo(reason=reason, domain=_ERROR_DOMAIN)


def _status(code: int, message: str, *details: Any) -> status_pb2.Status:
    status = status_pb2.Status(code=code, message=message)
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    return status


def _bad_request(
    violations: list[tuple[str, str, str]], reason: str = "INVALID_ARGUMENT"
) -> status_pb2.Status:
    """INVALID_ARGUMENT as Data Manager sends it: ErrorInfo plus BadRequest violations."""
    bad = error_details_pb2.BadRequest()
    for path, reason, description in violations:
        bad.field_violations.add(field=path, reason=reason, description=description)
    return _status(
        code_pb2.INVALID_ARGUMENT,
        "Request contains an invalid argument.",
        _error_info(reason),
        bad,
    )


def authorized_user_file(directory: Path, token_uri: str) -> Path:
    """An authorized-user credentials file whose ``token_uri`` is ``token_uri`` (the local
    token endpoint): what ``GOOGLE_APPLICATION_CREDENTIALS`` points at in tests and the demo."""
    import json

    path = directory / "data-manager-credentials.json"
    path.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "sandbox-client.apps.googleusercontent.com",
                "client_secret": "sandbox-secret",
                "refresh_token": "sandbox-refresh-token",
                "token_uri": token_uri,
            }
        )
    )
    return path


def worker_env(fake: FakeDataManager, credentials: Path, roots: Path) -> dict[str, str]:
    """The environment that points `convstream worker`'s Data Manager sink at the fake."""
    return {
        "CONVSTREAM_GOOGLE_ADS_UPLOAD_API": "data_manager",
        "GOOGLE_APPLICATION_CREDENTIALS": str(credentials),
        "GOOGLE_DATA_MANAGER_ENDPOINT": fake.endpoint,
        # The credentials file's token_uri is the plain-HTTP fake token endpoint.
        "CONVSTREAM_ALLOW_INSECURE_ENDPOINTS": "true",
        "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": str(roots),
    }
