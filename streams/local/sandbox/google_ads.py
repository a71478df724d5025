"""A local Google Ads API over TLS and a local OAuth token endpoint, for tests with real parts.

The real ``GoogleAdsClient`` talks to :class:`FakeGoogleAds` through
``GOOGLE_ADS_ENDPOINT=localhost:<port>``; it trusts the self-signed certificate through gRPC's
``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH`` (read once per process, so one certificate serves the
whole test session: :func:`tls_certificate`). The server speaks the library's own protos
(``Request.deserialize`` / ``Response.serialize``) for the three upload RPCs and can be
scripted: per-row failures, UNAVAILABLE for a while, RESOURCE_EXHAUSTED with a retry delay,
a row limit (``TOO_MANY_CONVERSIONS_IN_REQUEST``), an account that may no longer upload
click conversions (``CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE`` on every row or for the
whole request, as Google answers new integrations since 2026-06-15), and stale access
tokens (UNAUTHENTICATED) issued by :class:`FakeTokenEndpoint`, which can also answer
``invalid_grant``. Per-row answers Google documents: a transient ``INTERNAL_ERROR`` on a row
for its first N answers (``Script.flaky_rows``), ``CLICK_NOT_FOUND`` on rows identified by
user identifiers only (enhanced conversions for leads, ``Script.unmatched_leads``). Every
upload call can be made slow (``Script.call_seconds``), and the fake counts the calls in
flight at once (:attr:`FakeGoogleAds.peak_in_flight`), so tests can see a client-side
concurrency cap hold.

Both run in threads of their own, so they keep answering while a test's event loop waits.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
import threading
import time
import urllib.parse
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.ads.googleads.v26.services.types import (
    conversion_adjustment_upload_service as adjust_types,
)
from google.ads.googleads.v26.services.types import conversion_upload_service as upload_types
from google.ads.googleads.v26.services.types import google_ads_service as search_types

from streams.local.sandbox.google_ads_protos import V, ads_error, failure, partial_failure_status

FAILURE_KEY = f"google.ads.googleads.{V}.errors.googleadsfailure-bin"
_UPLOAD_SERVICE = f"google.ads.googleads.{V}.services.ConversionUploadService"
_ADJUST_SERVICE = f"google.ads.googleads.{V}.services.ConversionAdjustmentUploadService"
_SEARCH_SERVICE = f"google.ads.googleads.{V}.services.GoogleAdsService"
#: Google refuses uploads to a conversion action younger than this (TOO_RECENT_CONVERSION_ACTION).
ACTION_MIN_AGE_SECONDS = 6 * 3600
NOT_ALLOWLISTED = "CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE"
_NOT_ALLOWLISTED_MESSAGE = "Customer is not allowlisted for accessing this feature."


@dataclass(frozen=True)
class Tls:
    """A self-signed certificate, its key, and the roots file a client trusts it through."""

    cert: bytes
    key: bytes
    roots_file: Path


def tls_certificate(directory: Path) -> tuple[bytes, bytes, Path]:
    """A self-signed certificate for localhost / 127.0.0.1 / ::1: (cert PEM, key PEM, cert path)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = directory / "fake-google-ads.pem"
    path.write_bytes(cert_pem)
    return cert_pem, key_pem, path


class FakeTokenEndpoint:
    """``POST /token`` (refresh_token grant) -> ``{"access_token", "expires_in"}``.

    ``invalid_grant = True`` answers 400 ``invalid_grant`` like Google does for a revoked
    refresh token; :meth:`expire_all` makes every issued token stale for :class:`FakeGoogleAds`.
    """

    def __init__(self) -> None:
        self.invalid_grant = False
        self.issue_stale = False
        """Issue tokens the API refuses (an account whose access was withdrawn)."""
        self.requests = 0
        self.refresh_tokens: list[str] = []
        self.grant_types: list[str] = []
        self._valid: set[str] = set()
        self.revoked: set[str] = set()
        """Refresh tokens revoked (:meth:`revoke`): their grants answer ``invalid_grant``."""
        self._issued_for: dict[str, str] = {}
        self._lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                status, body = endpoint._answer(form)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/token"

    def _answer(self, form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests += 1
            self.refresh_tokens.extend(form.get("refresh_token", []))
            self.grant_types.extend(form.get("grant_type", []))
            refresh = (form.get("refresh_token") or [""])[0]
            if self.invalid_grant or refresh in self.revoked:
                return 400, {
                    "error": "invalid_grant",
                    "error_description": "Token has been expired or revoked.",
                }
            token = f"access-{self.requests}"
            if not self.issue_stale:
                self._valid.add(token)
                self._issued_for[token] = refresh
            return 200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer"}

    def is_valid(self, token: str) -> bool:
        with self._lock:
            return token in self._valid

    def revoke(self, refresh_token: str) -> None:
        """Revoke one grant (one advertiser's): its refresh token gets ``invalid_grant`` and
        the access tokens issued for it stop working; other grants are untouched."""
        with self._lock:
            self.revoked.add(refresh_token)
            self._valid -= {t for t, r in self._issued_for.items() if r == refresh_token}

    def refresh_token_of(self, access_token: str) -> str | None:
        """The refresh token an access token was issued for (which grant a request used)."""
        with self._lock:
            return self._issued_for.get(access_token)

    def expire_all(self) -> None:
        with self._lock:
            self._valid.clear()

    def __enter__(self) -> FakeTokenEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Recorded:
    """One request the fake received: RPC name, raw protobuf request, metadata."""

    method: str
    request: Any
    metadata: dict[str, str]
    too_recent: set[str] = field(default_factory=set)
    """Row keys (gclid or order_id) of an upload the fake answered TOO_RECENT_*: written,
    not accepted (Google did not take them; the pipeline parks and sends them again)."""


@dataclass
class Script:
    """What the fake answers; tests change it between (or during) writes."""

    row_failures: dict[str, str] = field(default_factory=dict)
    """Row key (gclid, caller_id or order_id) -> error code for that row."""
    too_recent_until: dict[str, float] = field(default_factory=dict)
    """Row key (gclid or order_id) -> time.time() until which its click upload answers
    TOO_RECENT_EVENT (Google: wait 6 hours after the click); uploaded after that."""
    too_recent_customers: dict[str, float] = field(default_factory=dict)
    """Customer id -> time.time() until which every click upload to it answers
    TOO_RECENT_CONVERSION_ACTION (a conversion action created less than 6 hours ago)."""
    unavailable_until: float = 0.0
    """time.monotonic() until which every call answers UNAVAILABLE."""
    unavailable_calls: int = 0
    """The next N calls answer UNAVAILABLE (an outage that does not depend on timing)."""
    resource_exhausted: int = 0
    """The next N calls answer RESOURCE_EXHAUSTED with a QuotaError and retry delay."""
    retry_delay_seconds: int = 1
    permission_denied: bool = False
    """Every call answers PERMISSION_DENIED / USER_PERMISSION_DENIED."""
    max_rows: int = 2000
    """More rows than this: INVALID_ARGUMENT / TOO_MANY_CONVERSIONS_IN_REQUEST."""
    not_allowlisted: Literal["rows", "request"] | None = None
    """UploadClickConversions of a customer not allowlisted for the Google Ads API upload:
    ``"rows"`` fails every row with CUSTOMER_NOT_ALLOWLISTED_FOR_THIS_FEATURE at its index
    (partial failure, validate-only probes included); ``"request"`` refuses the whole call
    (PERMISSION_DENIED with that error, naming no row). Single rows: ``row_failures``."""
    flaky_rows: dict[str, int] = field(default_factory=dict)
    """Row key -> how many more answers fail that row with a per-row INTERNAL_ERROR
    (InternalError, "retry the request") before it is accepted."""
    unmatched_leads: bool = False
    """Click rows without gclid, gbraid or wbraid (enhanced conversions for leads: matched
    by user identifiers) answer CLICK_NOT_FOUND, as Google does when the email or phone
    matches no click ("you can safely ignore this warning")."""
    call_seconds: float = 0.0
    """Each upload call takes this long to answer (server-side latency)."""
    customers: dict[str, FakeCustomer] = field(default_factory=dict)
    """Accounts GoogleAdsService.Search can read. Uploads to a customer listed here are
    checked against its conversion actions (unknown: NO_CONVERSION_ACTION_FOUND; younger
    than six hours: TOO_RECENT_CONVERSION_ACTION); other customers take any action."""


@dataclass
class FakeConversionAction:
    """A conversion action of a :class:`FakeCustomer`."""

    id: int
    name: str
    type: str = "UPLOAD_CLICKS"
    status: str = "ENABLED"
    created_at: float = 0.0
    """time.time() of its creation; 0 is long ago."""


@dataclass
class FakeCustomer:
    """What ``SELECT ... FROM customer`` (and the other resources) answer for one account."""

    customer_id: str
    descriptive_name: str = "Fake customer"
    auto_tagging_enabled: bool = True
    accepted_customer_data_terms: bool = True
    enhanced_conversions_for_leads: bool = True
    conversion_customer: str | None = None
    """Customer id that owns conversion tracking (cross-account); None: the customer itself."""
    login_customer_ids: frozenset[str] | None = None
    """Login customer ids (managers) allowed to read it; None: any, or none."""
    actions: list[FakeConversionAction] = field(default_factory=list)
    client_summaries: list[Any] = field(default_factory=list)
    """Raw ``OfflineConversionUploadClientSummary`` messages."""
    action_summaries: list[Any] = field(default_factory=list)
    """Raw ``OfflineConversionUploadConversionActionSummary`` messages."""


class FakeGoogleAds:
    """The three upload RPCs and GoogleAdsService Search / SearchStream over TLS; records
    every request, answers as :attr:`script` says."""

    def __init__(self, cert_pem: bytes, key_pem: bytes, tokens: FakeTokenEndpoint) -> None:
        self.script = Script()
        self.received: list[Recorded] = []
        self.rejected_calls: list[str] = []
        self._tokens = tokens
        self._lock = threading.Lock()
        self.in_flight = 0
        self.peak_in_flight = 0
        """The most upload calls the fake was answering at once."""
        # Enough threads that the server never caps concurrency itself: a client-side
        # limit must be the client's.
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
        self._server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    _UPLOAD_SERVICE,
                    {
                        "UploadClickConversions": _handler(
                            self._counted(self._click),
                            upload_types.UploadClickConversionsRequest,
                            upload_types.UploadClickConversionsResponse,
                        ),
                        "UploadCallConversions": _handler(
                            self._counted(self._call),
                            upload_types.UploadCallConversionsRequest,
                            upload_types.UploadCallConversionsResponse,
                        ),
                    },
                ),
                grpc.method_handlers_generic_handler(
                    _SEARCH_SERVICE,
                    {
                        "Search": _handler(
                            self._search,
                            search_types.SearchGoogleAdsRequest,
                            search_types.SearchGoogleAdsResponse,
                        ),
                        "SearchStream": grpc.unary_stream_rpc_method_handler(
                            self._search_stream,
                            request_deserializer=search_types.SearchGoogleAdsStreamRequest.deserialize,
                            response_serializer=search_types.SearchGoogleAdsStreamResponse.serialize,
                        ),
                    },
                ),
                grpc.method_handlers_generic_handler(
                    _ADJUST_SERVICE,
                    {
                        "UploadConversionAdjustments": _handler(
                            self._counted(self._adjust),
                            adjust_types.UploadConversionAdjustmentsRequest,
                            adjust_types.UploadConversionAdjustmentsResponse,
                        ),
                    },
                ),
            )
        )
        credentials = grpc.ssl_server_credentials([(key_pem, cert_pem)])
        self.port = self._server.add_secure_port("localhost:0", credentials)

    @property
    def endpoint(self) -> str:
        return f"localhost:{self.port}"

    def __enter__(self) -> FakeGoogleAds:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop(grace=None)

    def requests_of(self, method: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.received if r.method == method]

    # --- the RPCs -----------------------------------------------------------------------

    def _counted(self, fn: Any) -> Any:
        """``fn`` counted in :attr:`in_flight` / :attr:`peak_in_flight` while it runs, after
        ``Script.call_seconds`` of simulated server latency."""

        def handler(request: Any, context: grpc.ServicerContext) -> Any:
            with self._lock:
                self.in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            try:
                if self.script.call_seconds:
                    time.sleep(self.script.call_seconds)  # the server's latency, not a wait
                return fn(request, context)
            finally:
                with self._lock:
                    self.in_flight -= 1

        return handler

    def _row_problem(self, key: str) -> str | None:
        """A scripted per-row error of the row keyed ``key``: a fixed one, or a transient
        INTERNAL_ERROR while its count lasts."""
        with self._lock:
            left = self.script.flaky_rows.get(key, 0)
            if left > 0:
                self.script.flaky_rows[key] = left - 1
                return "INTERNAL_ERROR"
        return self.script.row_failures.get(key)

    def _gate(self, method: str, context: grpc.ServicerContext) -> dict[str, str]:
        """Checks every call goes through before it is recorded: token, outage, quota."""
        metadata = {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
        script = self.script
        with self._lock:
            down = script.unavailable_calls > 0
            if down:
                script.unavailable_calls -= 1
        if down or time.monotonic() < script.unavailable_until:
            self._note(f"{method}:UNAVAILABLE")
            context.abort(grpc.StatusCode.UNAVAILABLE, "the service is currently unavailable")
        token = metadata.get("authorization", "").removeprefix("Bearer ")
        if not self._tokens.is_valid(token):
            self._note(f"{method}:UNAUTHENTICATED")
            detail = failure(_auth_error("OAUTH_TOKEN_EXPIRED"))
            context.set_trailing_metadata(((FAILURE_KEY, detail.SerializeToString()),))
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "Request had invalid authentication")
        if script.permission_denied:
            self._note(f"{method}:PERMISSION_DENIED")
            detail = failure(ads_error("USER_PERMISSION_DENIED"))
            context.set_trailing_metadata(((FAILURE_KEY, detail.SerializeToString()),))
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "The caller does not have permission")
        if not metadata.get("developer-token"):
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "developer token missing")
        with self._lock:
            exhausted = script.resource_exhausted > 0
            if exhausted:
                script.resource_exhausted -= 1
        if exhausted:
            self._note(f"{method}:RESOURCE_EXHAUSTED")
            detail = failure(
                ads_error("RESOURCE_EXHAUSTED", retry_seconds=script.retry_delay_seconds)
            )
            context.set_trailing_metadata(((FAILURE_KEY, detail.SerializeToString()),))
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "quota exhausted")
        return metadata

    def _note(self, what: str) -> None:
        with self._lock:
            self.rejected_calls.append(what)

    def _record(self, method: str, request: Any, metadata: dict[str, str]) -> Recorded:
        recorded = Recorded(method, request, metadata)
        with self._lock:
            self.received.append(recorded)
        return recorded

    def _too_many(self, rows: int, field_name: str, context: grpc.ServicerContext) -> None:
        if rows > self.script.max_rows:
            code = (
                "TOO_MANY_ADJUSTMENTS_IN_REQUEST"
                if field_name == "conversion_adjustments"
                else "TOO_MANY_CONVERSIONS_IN_REQUEST"
            )
            self._note(f"{code}:{rows}")
            detail = failure(ads_error(code, field=field_name))
            context.set_trailing_metadata(((FAILURE_KEY, detail.SerializeToString()),))
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "too many rows in the request")

    def _click(self, request: Any, context: grpc.ServicerContext) -> Any:
        metadata = self._gate("UploadClickConversions", context)
        pb = type(request).pb(request)
        self._too_many(len(pb.conversions), "conversions", context)
        recorded = self._record("UploadClickConversions", pb, metadata)
        if self.script.not_allowlisted == "request":
            self._note(f"UploadClickConversions:{NOT_ALLOWLISTED}")
            detail = failure(ads_error(NOT_ALLOWLISTED, message=_NOT_ALLOWLISTED_MESSAGE))
            context.set_trailing_metadata(((FAILURE_KEY, detail.SerializeToString()),))
            context.abort(grpc.StatusCode.PERMISSION_DENIED, _NOT_ALLOWLISTED_MESSAGE)
        response = upload_types.UploadClickConversionsResponse.pb()(job_id=pb.job_id or 4242)
        errors = []
        for index, row in enumerate(pb.conversions):
            result = response.results.add()
            if self.script.not_allowlisted == "rows":
                errors.append(ads_error(NOT_ALLOWLISTED, index, message=_NOT_ALLOWLISTED_MESSAGE))
                continue
            key = row.gclid or row.order_id
            code = self._row_problem(key)
            if code is None and self.script.unmatched_leads:
                lead = not (row.gclid or row.gbraid or row.wbraid) and row.user_identifiers
                code = "CLICK_NOT_FOUND" if lead else None
            if time.time() < self.script.too_recent_until.get(key, 0.0):
                code = code or "TOO_RECENT_EVENT"
            if time.time() < self.script.too_recent_customers.get(pb.customer_id, 0.0):
                code = code or "TOO_RECENT_CONVERSION_ACTION"
            code = code or self._action_problem(pb.customer_id, row.conversion_action, "click")
            if code and code.startswith("TOO_RECENT"):
                recorded.too_recent.add(key)
            if code:
                errors.append(ads_error(code, index))
            elif not pb.validate_only:
                result.gclid = row.gclid
                result.conversion_action = row.conversion_action
                result.conversion_date_time = row.conversion_date_time
        if pb.validate_only:
            del response.results[:]
        if errors:
            response.partial_failure_error.CopyFrom(partial_failure_status(*errors))
        return upload_types.UploadClickConversionsResponse.wrap(response)

    def _call(self, request: Any, context: grpc.ServicerContext) -> Any:
        metadata = self._gate("UploadCallConversions", context)
        pb = type(request).pb(request)
        self._too_many(len(pb.conversions), "conversions", context)
        self._record("UploadCallConversions", pb, metadata)
        response = upload_types.UploadCallConversionsResponse.pb()()
        errors = []
        for index, row in enumerate(pb.conversions):
            result = response.results.add()
            code = self._row_problem(row.caller_id)
            code = code or self._action_problem(pb.customer_id, row.conversion_action, "call")
            if code:
                errors.append(ads_error(code, index))
            elif not pb.validate_only:
                result.caller_id = row.caller_id
                result.conversion_action = row.conversion_action
        if errors:
            response.partial_failure_error.CopyFrom(partial_failure_status(*errors))
        return upload_types.UploadCallConversionsResponse.wrap(response)

    def _adjust(self, request: Any, context: grpc.ServicerContext) -> Any:
        metadata = self._gate("UploadConversionAdjustments", context)
        pb = type(request).pb(request)
        self._too_many(len(pb.conversion_adjustments), "conversion_adjustments", context)
        self._record("UploadConversionAdjustments", pb, metadata)
        response = adjust_types.UploadConversionAdjustmentsResponse.pb()(job_id=pb.job_id or 4343)
        errors = []
        for index, row in enumerate(pb.conversion_adjustments):
            result = response.results.add()
            code = self._row_problem(row.order_id or row.gclid_date_time_pair.gclid)
            if code:
                errors.append(ads_error(code, index, field="conversion_adjustments"))
            elif not pb.validate_only:
                result.order_id = row.order_id
                result.adjustment_type = row.adjustment_type
        if errors:
            response.partial_failure_error.CopyFrom(partial_failure_status(*errors))
        return adjust_types.UploadConversionAdjustmentsResponse.wrap(response)

    def _action_problem(self, customer_id: str, action_name: str, kind: str) -> str | None:
        customer = self.script.customers.get(customer_id)
        if customer is None:
            return None
        for action in customer.actions:
            if action_name == f"customers/{customer_id}/conversionActions/{action.id}":
                if action.status != "ENABLED":
                    return "NO_CONVERSION_ACTION_FOUND"
                if action.type != ("UPLOAD_CALLS" if kind == "call" else "UPLOAD_CLICKS"):
                    return "INVALID_CONVERSION_ACTION_TYPE"
                if time.time() - action.created_at < ACTION_MIN_AGE_SECONDS:
                    return "TOO_RECENT_CONVERSION_ACTION"
                return None
        return "NO_CONVERSION_ACTION_FOUND"

    # --- GoogleAdsService.Search / SearchStream (GAQL) ----------------------------------

    def _search(self, request: Any, context: grpc.ServicerContext) -> Any:
        rows = self._query("Search", request, context)
        pb = search_types.SearchGoogleAdsResponse.pb()(total_results_count=len(rows))
        pb.results.extend(rows)
        return search_types.SearchGoogleAdsResponse.wrap(pb)

    def _search_stream(self, request: Any, context: grpc.ServicerContext) -> Any:
        rows = self._query("SearchStream", request, context)
        pb = search_types.SearchGoogleAdsStreamResponse.pb()()
        pb.results.extend(rows)
        yield search_types.SearchGoogleAdsStreamResponse.wrap(pb)

    def _query(self, method: str, request: Any, context: grpc.ServicerContext) -> list[Any]:
        metadata = self._gate(method, context)
        pb = type(request).pb(request)
        self._record(method, pb, metadata)
        customer = self.script.customers.get(pb.customer_id)
        login = metadata.get("login-customer-id")
        allowed = customer is not None and (
            customer.login_customer_ids is None or login in customer.login_customer_ids
        )
        if customer is None or not allowed:
            self._note(f"{method}:PERMISSION_DENIED:{pb.customer_id}")
            detail = failure(ads_error("USER_PERMISSION_DENIED"))
            context.set_trailing_metadata(((FAILURE_KEY, detail.SerializeToString()),))
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                "User doesn't have permission to access customer. Note: If you're accessing a "
                "client customer, the manager's customer id must be set in the "
                "'login-customer-id' header.",
            )
        assert customer is not None
        resource, conditions = parse_gaql(pb.query)
        rows = resource_rows(customer, resource)
        if rows is None:
            detail = failure(ads_error("BAD_RESOURCE_TYPE_IN_FROM_CLAUSE", message=resource))
            context.set_trailing_metadata(((FAILURE_KEY, detail.SerializeToString()),))
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unsupported resource {resource}")
        assert rows is not None
        return [row for row in rows if all(matches(row, *c) for c in conditions)]


_FROM = re.compile(
    r"\bFROM\s+(\w+)(?:\s+WHERE\s+(.+?))?(?:\s+ORDER BY.*|\s+LIMIT.*)?$", re.I | re.S
)
_CONDITION = re.compile(r"^\s*([\w.]+)\s*(!=|=)\s*'?([^']*?)'?\s*$")


def parse_gaql(query: str) -> tuple[str, list[tuple[str, str, str]]]:
    """(resource, [(field path, operator, literal)]) of a GAQL query; the fake understands
    ``FROM`` and ``WHERE`` conditions ``field = value`` / ``field != value`` joined by AND."""
    found = _FROM.search(query.strip())
    if found is None:
        raise ValueError(f"no FROM clause in {query!r}")
    conditions = []
    for text in re.split(r"\s+AND\s+", found.group(2) or "", flags=re.I):
        if text.strip():
            condition = _CONDITION.match(text)
            if condition is None:
                raise ValueError(f"the fake does not understand the condition {text!r}")
            conditions.append((condition.group(1), condition.group(2), condition.group(3)))
    return found.group(1), conditions


def matches(row: Any, path: str, operator: str, literal: str) -> bool:
    """Whether a GoogleAdsRow's field (enums by name) satisfies one WHERE condition."""
    message = row
    *parents, name = path.split(".")
    for part in parents:
        message = getattr(message, part)
    if name not in message.DESCRIPTOR.fields_by_name:
        name += "_"  # the generated protos rename fields like ``type`` to ``type_``
    value = getattr(message, name)
    enum = message.DESCRIPTOR.fields_by_name[name].enum_type
    text = enum.values_by_number[value].name if enum is not None else str(value)
    return (text == literal) if operator == "=" else (text != literal)


def resource_rows(customer: FakeCustomer, resource: str) -> list[Any] | None:
    """Every row of ``resource`` for one customer (None: a resource the fake does not serve)."""
    row_type = search_types.GoogleAdsRow.pb()
    if resource == "customer":
        row = row_type()
        row.customer.resource_name = f"customers/{customer.customer_id}"
        row.customer.id = int(customer.customer_id)
        row.customer.descriptive_name = customer.descriptive_name
        row.customer.auto_tagging_enabled = customer.auto_tagging_enabled
        setting = row.customer.conversion_tracking_setting
        setting.accepted_customer_data_terms = customer.accepted_customer_data_terms
        owner = customer.conversion_customer or customer.customer_id
        setting.google_ads_conversion_customer = f"customers/{owner}"
        setting.conversion_tracking_status = _enum_number(
            setting,
            "conversion_tracking_status",
            "CONVERSION_TRACKING_MANAGED_BY_SELF"
            if owner == customer.customer_id
            else "CONVERSION_TRACKING_MANAGED_BY_ANOTHER_MANAGER",
        )
        setting.effective_enablement_setting = _enum_number(
            setting,
            "effective_enablement_setting",
            "ON" if customer.enhanced_conversions_for_leads else "OFF",
        )
        return [row]
    if resource == "conversion_action":
        rows = []
        for action in customer.actions:
            row = row_type()
            message = row.conversion_action
            message.resource_name = (
                f"customers/{customer.customer_id}/conversionActions/{action.id}"
            )
            message.id = action.id
            message.name = action.name
            message.status = _enum_number(message, "status", action.status)
            message.type_ = _enum_number(message, "type_", action.type)
            rows.append(row)
        return rows
    summaries = {
        "offline_conversion_upload_client_summary": customer.client_summaries,
        "offline_conversion_upload_conversion_action_summary": customer.action_summaries,
    }
    if resource in summaries:
        rows = []
        for summary in summaries[resource]:
            row = row_type()
            getattr(row, resource).CopyFrom(summary)
            rows.append(row)
        return rows
    return None


def _enum_number(message: Any, field_name: str, name: str) -> int:
    return int(message.DESCRIPTOR.fields_by_name[field_name].enum_type.values_by_name[name].number)


def _handler(fn: Any, request_type: Any, response_type: Any) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(
        fn,
        request_deserializer=request_type.deserialize,
        response_serializer=response_type.serialize,
    )


def _auth_error(code: str) -> Any:
    return ads_error(code)


def service_account_key(directory: Path, token_uri: str) -> Path:
    """A service-account JSON key file (fresh RSA key) whose token_uri is ``token_uri``."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    path = directory / "service-account.json"
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "convstream-test",
                "private_key_id": "k1",
                "private_key": pem,
                "client_email": "uploader@convstream-test.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": token_uri,
            }
        )
    )
    return path


def worker_env(fake: FakeGoogleAds, tokens: FakeTokenEndpoint, roots: Path) -> dict[str, str]:
    """The environment that points `convstream worker`'s real Google Ads sink at the fakes."""
    return {
        "GOOGLE_ADS_DEVELOPER_TOKEN": "dev-token",
        "GOOGLE_ADS_CLIENT_ID": "client-id",
        "GOOGLE_ADS_CLIENT_SECRET": "client-secret",
        "GOOGLE_ADS_REFRESH_TOKEN": "refresh-token-1",
        "GOOGLE_ADS_ENDPOINT": fake.endpoint,
        "GOOGLE_ADS_TOKEN_URI": tokens.url,
        # The fake token endpoint is plain HTTP (README "Security": development only).
        "CONVSTREAM_ALLOW_INSECURE_ENDPOINTS": "true",
        "GOOGLE_ADS_LOGIN_CUSTOMER_ID": "111-222-3333",
        "GOOGLE_ADS_JOB_ID": "5",
        "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": str(roots),
    }
