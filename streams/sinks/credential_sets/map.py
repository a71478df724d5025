"""The credentials map (``CONVSTREAM_CREDENTIALS_FILE``): which credential set serves which
account, and where each set's secrets are.

Why a map: an agency uploads for many advertisers, each of whom grants access separately
(their own OAuth grant or service account, their own Yandex login). One credential set per
destination made one advertiser's revoked grant everyone's outage.

Format (TOML; README, "Several advertisers")::

    [sets.acme]
    google_customer_ids = ["123-456-7890"]        # events whose customer_id is one of these
    google_login_customer_ids = ["111-222-3333"]  # or whose login_customer_id (manager) is
    google_credentials_file = "/secrets/acme/google.json"   # service-account key or
                                                  # authorized-user file (OAuth client +
                                                  # refresh token)
    google_developer_token_file = "/secrets/acme/developer-token"  # Google Ads API only
    google_login_customer_id = "1112223333"       # manager used when an event names none
    google_upload_api = "data_manager"            # optional: or "google_ads_api"
    yandex_counters = ["44147844"]
    yandex_token_file = "/secrets/acme/yandex-token"
    yandex_login = "acme-metrica"                 # optional: the login the token belongs to

Secrets are referenced by file path only: an inline secret (``yandex_token = "..."``) is
refused with an error naming the file, the entry and the field, and so is any unknown
field. A set named ``default`` serves accounts no set lists; without one, the credentials
of the usual environment variables (GOOGLE_ADS_*, GOOGLE_APPLICATION_CREDENTIALS,
YANDEX_METRICA_OAUTH_TOKEN) form the ``default`` set. An account no set serves gets
DESTINATION_NOT_CONFIGURED (retryable: replay once the map lists it).

Selection: Google by ``customer_id`` first, then by ``login_customer_id`` (manager); Yandex
by ``counter_id``; then ``default``. An account listed by two sets is a start-up error.

Nothing here holds a secret value: :class:`CredentialSet` carries paths, and
:func:`read_secrets` reads them into a :class:`SetSecrets` whose ``repr`` shows only which
secrets are present.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from streams.config import (
    ConfigError,
    CredentialsMapSettings,
    DataManagerSettings,
    GoogleAdsSettings,
    GoogleUploadApi,
    Settings,
)

DEFAULT_SET: Final = "default"
_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
"""Set names become metric labels: short, lower-case, no secrets (the operator's names)."""
_DIGITS: Final = re.compile(r"[0-9]{1,20}")

_LIST_FIELDS: Final = ("google_customer_ids", "google_login_customer_ids", "yandex_counters")
_FILE_FIELDS: Final = (
    "google_credentials_file",
    "google_developer_token_file",
    "yandex_token_file",
)
_TEXT_FIELDS: Final = ("google_login_customer_id", "google_upload_api", "yandex_login")
_KNOWN: Final = frozenset((*_LIST_FIELDS, *_FILE_FIELDS, *_TEXT_FIELDS))
_SECRET_WORDS: Final = ("token", "secret", "password", "private_key", "key", "credential")


@dataclass(frozen=True, slots=True)
class CredentialSet:
    """One advertiser's (or one manager account's) credentials: paths, never values.

    ``name`` is the map's entry name: the bounded metric label and what logs and the doctor
    call the set. ``from_environment``: the ``default`` set the usual variables make.
    """

    name: str
    google_customer_ids: frozenset[str] = frozenset()
    google_login_customer_ids: frozenset[str] = frozenset()
    yandex_counters: frozenset[str] = frozenset()
    google_credentials_file: Path | None = None
    google_developer_token_file: Path | None = None
    google_login_customer_id: str | None = None
    google_upload_api: GoogleUploadApi | None = None
    yandex_token_file: Path | None = None
    yandex_login: str | None = None
    """Budget key of the Yandex daily request budget (counted per login); defaults to the
    set name. Not a secret."""
    from_environment: bool = False

    @property
    def secret_files(self) -> tuple[Path, ...]:
        """The files whose content is this set's secrets (watched for rotation)."""
        files = (
            self.google_credentials_file,
            self.google_developer_token_file,
            self.yandex_token_file,
        )
        return tuple(f for f in files if f is not None)

    @property
    def serves_google(self) -> bool:
        return self.google_credentials_file is not None

    @property
    def yandex_budget_key(self) -> str:
        """What the Yandex daily request budget is counted by (Metrica counts per login):
        ``yandex_login``, else the set name. Never the token."""
        return self.yandex_login or self.name

    @property
    def serves_yandex(self) -> bool:
        return self.yandex_token_file is not None


@dataclass(frozen=True, slots=True)
class CredentialMap:
    """The parsed map: sets by name and the account -> set indexes."""

    file: Path
    sets: Mapping[str, CredentialSet]
    by_customer: Mapping[str, str] = field(default_factory=dict)
    by_login: Mapping[str, str] = field(default_factory=dict)
    by_counter: Mapping[str, str] = field(default_factory=dict)

    def select(self, destination: str, body: Mapping[str, Any]) -> str | None:
        """The name of the set that serves this event (its ``body``, after validation), or
        None when none does (the event gets DESTINATION_NOT_CONFIGURED)."""
        if destination == "google_ads":
            customer = _digits(body.get("customer_id"))
            name = self.by_customer.get(customer) if customer else None
            login = _digits(body.get("login_customer_id"))
            if name is None and login:
                name = self.by_login.get(login)
            return name or self._default(lambda s: s.serves_google)
        if destination == "yandex_metrica":
            counter = _digits(body.get("counter_id"))
            name = self.by_counter.get(counter) if counter else None
            return name or self._default(lambda s: s.serves_yandex)
        return None

    def _default(self, serves: Any) -> str | None:
        default = self.sets.get(DEFAULT_SET)
        return DEFAULT_SET if default is not None and serves(default) else None

    def accounts(self, name: str) -> CredentialSet:
        return self.sets[name]


@dataclass(frozen=True, slots=True)
class SetSecrets:
    """The secret values of one set, read from its files. ``repr`` names which are present,
    never a value (a logged SetSecrets leaks nothing)."""

    google_credentials: dict[str, Any] | None = field(default=None, repr=False)
    google_developer_token: str | None = field(default=None, repr=False)
    yandex_token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        present = [
            name
            for name, value in (
                ("google_credentials", self.google_credentials),
                ("google_developer_token", self.google_developer_token),
                ("yandex_token", self.yandex_token),
            )
            if value
        ]
        return f"SetSecrets(present={present})"

    @property
    def values(self) -> tuple[str, ...]:
        """Every secret string (for a :class:`~streams.core.secrets.SecretScrubber`)."""
        google = self.google_credentials or {}
        found = (
            self.google_developer_token,
            self.yandex_token,
            google.get("refresh_token"),
            google.get("client_secret"),
            google.get("private_key"),
        )
        return tuple(str(v) for v in found if v)


def load_map(file: Path, settings: Settings) -> CredentialMap:
    """Parse and check the map; ConfigError names the file, the entry and the field.

    Called at start-up (an error stops the worker, exit 2) and by the watcher when the file
    changed (an error keeps the previous map and is logged). Secret files must exist and be
    readable here; their content is checked by :func:`read_secrets`.
    """
    try:
        document = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{file}: cannot be read ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{file}: not valid TOML ({exc})") from None
    unknown = sorted(set(document) - {"sets"})
    if unknown:
        raise ConfigError(f"{file}: unknown top-level key {unknown[0]!r}; expected [sets.<name>]")
    entries = document.get("sets", {})
    if not isinstance(entries, dict):
        raise ConfigError(f"{file}: 'sets' must be a table of [sets.<name>] entries")
    sets: dict[str, CredentialSet] = {}
    for name, entry in entries.items():
        sets[name] = _parse_set(file, name, entry)
    if DEFAULT_SET not in sets:
        environment = environment_set(settings)
        if environment is not None:
            sets[DEFAULT_SET] = environment
    return _indexed(file, sets)


def environment_set(settings: Settings) -> CredentialSet | None:
    """The ``default`` set the usual variables make (their values stay in ``settings``);
    None when they configure no destination."""
    google = settings.google_api is not None
    yandex = bool(settings.yandex_oauth_token)
    if not google and not yandex:
        return None
    marker = Path("<environment>")
    return CredentialSet(
        DEFAULT_SET,
        google_credentials_file=marker if google else None,
        yandex_token_file=marker if yandex else None,
        from_environment=True,
    )


def _parse_set(file: Path, name: str, entry: Any) -> CredentialSet:
    where = f"{file}: [sets.{name}]"
    if not _NAME.fullmatch(name):
        raise ConfigError(
            f"{where}: the set name must be 1-63 lower-case letters, digits, '-' or '_' "
            "(it becomes a metric label)"
        )
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a table")
    for key in entry:
        if key in _KNOWN:
            continue
        if not key.endswith("_file") and any(word in key for word in _SECRET_WORDS):
            # Never quote the value: it may be the secret itself.
            raise ConfigError(
                f"{where} {key}: inline secrets are refused; put the secret in a file (a "
                "mounted Secret) and give its path in the matching *_file field"
            )
        raise ConfigError(f"{where} {key}: unknown field; expected one of {sorted(_KNOWN)}")
    lists = {key: _account_list(where, key, entry.get(key, [])) for key in _LIST_FIELDS}
    files = {key: _secret_file(where, key, entry.get(key)) for key in _FILE_FIELDS}
    login = entry.get("google_login_customer_id")
    if login is not None:
        login = _account(where, "google_login_customer_id", login)
    api = entry.get("google_upload_api")
    if api is not None:
        try:
            api = GoogleUploadApi(str(api))
        except ValueError:
            raise ConfigError(
                f"{where} google_upload_api: must be 'data_manager' or 'google_ads_api'"
            ) from None
        if api is GoogleUploadApi.GOOGLE_ADS_API and files["google_developer_token_file"] is None:
            raise ConfigError(
                f"{where} google_developer_token_file: required with "
                "google_upload_api = 'google_ads_api'"
            )
    yandex_login = entry.get("yandex_login")
    if yandex_login is not None and not (isinstance(yandex_login, str) and yandex_login.strip()):
        raise ConfigError(f"{where} yandex_login: must be a non-empty string")
    result = CredentialSet(
        name,
        google_customer_ids=lists["google_customer_ids"],
        google_login_customer_ids=lists["google_login_customer_ids"],
        yandex_counters=lists["yandex_counters"],
        google_credentials_file=files["google_credentials_file"],
        google_developer_token_file=files["google_developer_token_file"],
        google_login_customer_id=login,
        google_upload_api=api,
        yandex_token_file=files["yandex_token_file"],
        yandex_login=yandex_login,
    )
    if (result.google_customer_ids or result.google_login_customer_ids) and not (
        result.serves_google
    ):
        raise ConfigError(
            f"{where} google_credentials_file: required for a set that lists Google accounts"
        )
    if result.google_developer_token_file is not None and not result.serves_google:
        raise ConfigError(
            f"{where} google_credentials_file: required with google_developer_token_file "
            "(the Google Ads API needs an OAuth grant or a service account too)"
        )
    if result.yandex_counters and not result.serves_yandex:
        raise ConfigError(f"{where} yandex_token_file: required for a set that lists counters")
    if not result.serves_google and not result.serves_yandex:
        raise ConfigError(
            f"{where}: names no credentials (google_credentials_file, "
            "google_developer_token_file or yandex_token_file)"
        )
    return result


def _indexed(file: Path, sets: dict[str, CredentialSet]) -> CredentialMap:
    indexes: dict[str, dict[str, str]] = {key: {} for key in _LIST_FIELDS}
    for name, cset in sets.items():
        for key in _LIST_FIELDS:
            for account in getattr(cset, key):
                other = indexes[key].setdefault(account, name)
                if other != name:
                    raise ConfigError(
                        f"{file}: [sets.{name}] {key}: account {account} is also listed by "
                        f"[sets.{other}]; an account has one credential set"
                    )
    return CredentialMap(
        file,
        sets,
        by_customer=indexes["google_customer_ids"],
        by_login=indexes["google_login_customer_ids"],
        by_counter=indexes["yandex_counters"],
    )


def _account_list(where: str, key: str, value: Any) -> frozenset[str]:
    if not isinstance(value, list):
        raise ConfigError(f"{where} {key}: must be a list of account ids")
    return frozenset(_account(where, key, item) for item in value)


def _account(where: str, key: str, value: Any) -> str:
    text = str(value).replace("-", "").strip() if isinstance(value, str | int) else ""
    if not _DIGITS.fullmatch(text):
        raise ConfigError(f"{where} {key}: {value!r} is not an account id (digits, dashes allowed)")
    return text


def _secret_file(where: str, key: str, value: Any) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where} {key}: must be the path of a file")
    path = Path(value)
    if not path.is_absolute():
        raise ConfigError(f"{where} {key}: give an absolute path (mounted secrets are)")
    if not path.is_file():
        raise ConfigError(f"{where} {key}: {value} does not exist or is not a file")
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise ConfigError(f"{where} {key}: {value} cannot be read ({exc.strerror})") from None
    return path


def read_secrets(file: Path, cset: CredentialSet, *, allow_insecure: bool = False) -> SetSecrets:
    """Read a map set's secret files; ConfigError names the file, the entry and the field
    (never a value). Token files lose their trailing line break (``echo token > file``).
    A credentials file's ``token_uri`` must be ``https://`` unless ``allow_insecure``
    (CONVSTREAM_ALLOW_INSECURE_ENDPOINTS): the refresh token would cross in clear text."""
    where = f"{file}: [sets.{cset.name}]"
    google: dict[str, Any] | None = None
    if cset.google_credentials_file is not None:
        raw = _read(where, "google_credentials_file", cset.google_credentials_file)
        try:
            google = json.loads(raw)
        except ValueError:
            google = None
        kind = google.get("type") if isinstance(google, dict) else None
        if kind not in ("service_account", "authorized_user"):
            raise ConfigError(
                f"{where} google_credentials_file: not a service-account key or "
                "authorized-user JSON file"
            )
        assert isinstance(google, dict)
        token_uri = str(google.get("token_uri") or "")
        if token_uri.startswith("http://") and not allow_insecure:
            raise ConfigError(
                f"{where} google_credentials_file: its token_uri is plain http://; give an "
                "https:// one (CONVSTREAM_ALLOW_INSECURE_ENDPOINTS is for development only)"
            )
    developer = None
    if cset.google_developer_token_file is not None:
        developer = _token(where, "google_developer_token_file", cset.google_developer_token_file)
    yandex = None
    if cset.yandex_token_file is not None:
        yandex = _token(where, "yandex_token_file", cset.yandex_token_file)
    return SetSecrets(google, developer, yandex)


def _read(where: str, key: str, path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{where} {key}: {path} cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where} {key}: {path} is not UTF-8 text") from None


def _token(where: str, key: str, path: Path) -> str:
    token = _read(where, key, path).strip()
    if not token or any(c.isspace() for c in token):
        raise ConfigError(f"{where} {key}: {path} must hold one token (empty, or has spaces)")
    return token


def fingerprint(cset: CredentialSet) -> str:
    """A digest of what the set's clients are built from (its entry but the account lists)
    and its secret files' content: changes when that part of the map entry or any secret
    changes (also when Kubernetes swapped the symlink behind a mounted
    secret). Unreadable files count as their error, so a file that comes back is noticed."""
    # The account lists only steer selection: a set that gains an account keeps its clients.
    clients = replace(
        cset,
        google_customer_ids=frozenset(),
        google_login_customer_ids=frozenset(),
        yandex_counters=frozenset(),
    )
    digest = hashlib.sha256(repr(clients).encode())
    for path in cset.secret_files:
        if cset.from_environment:
            continue
        try:
            digest.update(path.read_bytes())
        except OSError as exc:
            digest.update(f"error:{exc.errno}".encode())
        digest.update(b"\0")
    return digest.hexdigest()


def set_settings(
    settings: Settings, config: CredentialsMapSettings, cset: CredentialSet, secrets: SetSecrets
) -> Settings:
    """The worker's settings as this set sees them: its own Google and Yandex credentials,
    everything else shared. The sinks are then built exactly as for one credential set.

    Google: an authorized-user file gives the Google Ads API its OAuth client and refresh
    token (and its ``token_uri``), a service-account key is used as the key file; the Data
    Manager API reads the same file. The API is the set's ``google_upload_api``, else
    CONVSTREAM_GOOGLE_ADS_UPLOAD_API, else ``data_manager`` when the set has a credentials
    file (with the Google Ads API as fallback when it has a developer token too)."""
    if cset.from_environment:
        return settings
    google_ads: GoogleAdsSettings | None = None
    data_manager: DataManagerSettings | None = None
    api: GoogleUploadApi | None = None
    credentials = secrets.google_credentials
    if secrets.google_developer_token:
        template = config.google_ads
        oauth: dict[str, Any] = {}
        if credentials and credentials.get("type") == "authorized_user":
            oauth = {
                "client_id": credentials.get("client_id"),
                "client_secret": credentials.get("client_secret"),
                "refresh_token": credentials.get("refresh_token"),
                "token_uri": credentials.get("token_uri") or template.token_uri,
                "json_key_file_path": None,
            }
        elif credentials:
            oauth = {
                "client_id": None,
                "client_secret": None,
                "refresh_token": None,
                "json_key_file_path": cset.google_credentials_file,
            }
        google_ads = replace(
            template,
            developer_token=secrets.google_developer_token,
            login_customer_id=cset.google_login_customer_id or template.login_customer_id,
            **oauth,
        )
    if cset.google_credentials_file is not None:
        data_manager = replace(
            config.data_manager,
            credentials_file=cset.google_credentials_file,
            login_account=cset.google_login_customer_id or config.data_manager.login_account,
        )
    wanted = cset.google_upload_api or config.google_upload_api
    if wanted is GoogleUploadApi.GOOGLE_ADS_API and google_ads is not None:
        api = wanted
    elif data_manager is not None and wanted is not GoogleUploadApi.GOOGLE_ADS_API:
        api = GoogleUploadApi.DATA_MANAGER
    elif google_ads is not None:
        api = GoogleUploadApi.GOOGLE_ADS_API
    return replace(
        settings,
        google_ads=google_ads,
        data_manager=data_manager,
        google_upload_api=api,
        yandex_oauth_token=secrets.yandex_token,
        recording_sink=frozenset(),
    )


def _digits(value: Any) -> str:
    return str(value).replace("-", "").strip() if value is not None else ""
