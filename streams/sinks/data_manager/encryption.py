"""Optional encryption of user data (off by default), with ``google-ads-datamanager-util``.

Data Manager can take hashed user identifiers encrypted with a data encryption key (DEK)
that the advertiser wraps with a key encryption key (KEK) in Google Cloud KMS; Google
unwraps it through a Workload Identity pool provider. Turned on by
``GOOGLE_DATA_MANAGER_ENCRYPTION_KEK_URI`` and ``GOOGLE_DATA_MANAGER_ENCRYPTION_WIP_PROVIDER``.

The library's ``Encrypter`` makes one DEK per worker (wrapped once by KMS, at start-up) and
encrypts as its ``Formatter`` does: the SHA-256 digest, base64 encoded, encrypted
(XChaCha20-Poly1305), and the ciphertext hex encoded (the request's ``encoding: HEX``). The
core already hashed the identifiers (hex), so only the last steps run here. Region and
postal code are not hashed, and not encrypted either.
"""

from __future__ import annotations

import base64
from typing import Any, Final

_ENCRYPTED_FIELDS: Final = ("email_address", "phone_number")
_ENCRYPTED_ADDRESS_FIELDS: Final = ("given_name", "family_name")
_XCHACHA20_POLY1305: Final = 1  # GcpWrappedKeyInfo.KeyType


class UserDataEncryption:
    """Encrypts the hashed user identifiers of a request and describes the key in it."""

    def __init__(self, encrypter: Any, kek_uri: str, wip_provider: str) -> None:
        """``encrypter``: a ``google.ads.datamanager_util.encrypt.Encrypter``."""
        self._encrypter = encrypter
        self._kek_uri = kek_uri
        self._wip_provider = wip_provider

    @classmethod
    def for_gcp_kms(
        cls, kek_uri: str, wip_provider: str, credentials_path: str
    ) -> UserDataEncryption:
        """A new DEK wrapped by the KMS key ``kek_uri`` (one KMS call; at start-up)."""
        from google.ads.datamanager_util.encrypt import Encrypter

        uri = kek_uri if kek_uri.startswith("gcp-kms://") else f"gcp-kms://{kek_uri}"
        return cls(Encrypter.create_for_gcp_kms(uri, credentials_path), uri, wip_provider)

    def encrypt_hash(self, hex_digest: str) -> str:
        """One hashed identifier (hex SHA-256) as Data Manager takes it encrypted."""
        inner = base64.standard_b64encode(bytes.fromhex(hex_digest)).decode("ascii")
        return bytes(self._encrypter.encrypt(inner)).hex()

    def apply(self, request: Any) -> None:
        """Encrypt every hashed identifier of a raw ``IngestEventsRequest`` in place and set
        its ``encryption_info``."""
        for event in request.events:
            for identifier in event.user_data.user_identifiers:
                for name in _ENCRYPTED_FIELDS:
                    value = getattr(identifier, name)
                    if value:
                        setattr(identifier, name, self.encrypt_hash(value))
                if identifier.HasField("address"):
                    for name in _ENCRYPTED_ADDRESS_FIELDS:
                        value = getattr(identifier.address, name)
                        if value:
                            setattr(identifier.address, name, self.encrypt_hash(value))
        info = request.encryption_info.gcp_wrapped_key_info
        info.key_type = _XCHACHA20_POLY1305
        info.kek_uri = self._kek_uri
        info.wip_provider = self._wip_provider
        info.encrypted_dek = base64.standard_b64encode(
            bytes(self._encrypter.encrypted_dek_bytes)
        ).decode("ascii")
