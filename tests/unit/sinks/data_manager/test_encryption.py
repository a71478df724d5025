"""Optional user-data encryption: what Google decrypts is the library's own inner form
(the SHA-256 digest, base64), and the request says which key wrapped the DEK."""

from __future__ import annotations

import base64
import hashlib

import tink
import tink.aead
from google.ads.datamanager_util.encrypt import Encrypter
from google.ads.datamanager_util.format import Encoding, Formatter

from streams.sinks.data_manager.encryption import UserDataEncryption
from streams.sinks.data_manager.events import build_request, map_event
from tests.support.event_factory import click
from tests.support.google_ads_events import event_of

KEK = "gcp-kms://projects/p/locations/global/keyRings/r/cryptoKeys/k"
WIP = "projects/1/locations/global/workloadIdentityPools/pool/providers/provider"


def _local_encryption() -> tuple[UserDataEncryption, tink.aead.Aead]:
    """The library's Encrypter with a local DEK instead of a KMS-wrapped one."""
    tink.aead.register()
    handle = tink.new_keyset_handle(tink.aead.aead_key_templates.XCHACHA20_POLY1305)
    aead = handle.primitive(tink.aead.Aead)
    return UserDataEncryption(Encrypter(aead, b"wrapped-dek"), KEK, WIP), aead


def test_an_encrypted_hash_decrypts_to_the_formatters_inner_form() -> None:
    encryption, aead = _local_encryption()
    digest = hashlib.sha256(b"test@gmail.com").hexdigest()
    encrypted = encryption.encrypt_hash(digest)
    inner = aead.decrypt(bytes.fromhex(encrypted), b"").decode()
    formatter = Formatter()
    assert inner == formatter.base64_encode(bytes.fromhex(digest))
    assert inner == formatter.process_email_address("test@gmail.com", Encoding.BASE64)


def test_a_request_carries_encrypted_identifiers_and_the_key_info() -> None:
    encryption, aead = _local_encryption()
    event = event_of(click(1, user_identifiers=[{"email": "a@b.com"}, {"phone": "+16505550100"}]))
    built = build_request([(0, map_event(event))], encryption=encryption)
    pb = built.pb
    info = pb.encryption_info.gcp_wrapped_key_info
    assert (info.kek_uri, info.wip_provider) == (KEK, WIP)
    assert base64.standard_b64decode(info.encrypted_dek) == b"wrapped-dek"
    email = pb.events[0].user_data.user_identifiers[0].email_address
    inner = aead.decrypt(bytes.fromhex(email), b"").decode()
    assert base64.standard_b64decode(inner).hex() == hashlib.sha256(b"a@b.com").hexdigest()
