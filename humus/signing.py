"""Tamper-evident batches: each gateway signs what it publishes with its own Ed25519 key.

Threat model (docs/deploy.md, "Signed batches"): the broker's ACL already
keeps one gateway from publishing under another's topics, but it lives on
the broker; a signature travels with the data. A batch signed on the
gateway and verified by ingest against the gateway's registered public key
proves, to an auditor, that the stored observations are the ones that
gateway produced: a compromised broker, a leaked broker password, or a
replay of a batch under another gateway's name (the site and gateway are
inside the signed bytes) cannot forge them. It does not protect against a
compromised gateway (it holds its key) or prove that the probe was honest.

Format: the signature is the last key of the batch object,

    {"schema":"humus/v1",...,"observations":[...],"ed25519":"<base64 of 64 bytes>"}

and covers the batch exactly as it would be without that key: the payload
with ``,"ed25519":"..."`` cut out (RFC 8032 Ed25519, through the `cryptography`
package). The spool signs when it forms a batch, so a re-sent batch carries
the same bytes and the same signature.

Keys: the gateway keeps a PEM (PKCS#8) private key, 0600
(``[gateway] signing_key``); the centre keeps ``"<site>/<gateway>" =
"ed25519:<base64 of 32 bytes>"`` lines in a TOML file (``[ingest]
gateway_keys``). `humus gateway add` makes both.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import Callable

PREFIX = b',"ed25519":"'
"""The batch key that holds the signature (no ':' in it or its value: the decoder's duplicate-key check
counts colons to stay fast)."""
SCHEME = "ed25519:"
SIG_B64_LEN = 88          # base64 of 64 bytes


class SignatureError(ValueError):
    """A batch whose signature is missing, malformed or does not verify; the message says which."""


def split_signed(payload: bytes) -> tuple[bytes, bytes] | None:
    """(the unsigned batch bytes, the 64-byte signature), or None when the payload carries no signature."""
    i = payload.rfind(PREFIX)
    if i < 0:
        return None
    tail = payload[i + len(PREFIX):]
    if len(tail) != SIG_B64_LEN + 2 or not tail.endswith(b'"}'):
        raise SignatureError("the ed25519 key is not the last key of the batch or not 64 bytes of base64")
    try:
        sig = base64.b64decode(tail[:-2], validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("the signature is not base64") from None
    return payload[:i] + b"}", sig


def signer_from_file(path: str | Path) -> Callable[[bytes], bytes]:
    """A function that signs bytes with the Ed25519 key in `path` (PEM, PKCS#8, unencrypted)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")
    return key.sign


def sign_payload(unsigned: bytes, sign: Callable[[bytes], bytes]) -> bytes:
    """The batch with its signature appended as the last key (`unsigned` ends with '}')."""
    if not unsigned.endswith(b"}"):
        raise ValueError("a batch payload ends with '}'")
    return unsigned[:-1] + PREFIX + base64.b64encode(sign(unsigned)) + b'"}'


def new_key_pair() -> tuple[bytes, str]:
    """(the private key as PEM, the public key as 'ed25519:<base64>') for `humus gateway add`."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return pem, SCHEME + base64.b64encode(raw).decode()


class Verifier:
    """Registered public keys of gateways; `check` verifies one payload (ingest's network thread)."""

    def __init__(self, keys: dict[tuple[str, str], str]) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        self._keys = {gw: Ed25519PublicKey.from_public_bytes(parse_public_key(text))
                      for gw, text in keys.items() if text}

    def __contains__(self, gateway: tuple[str, str]) -> bool:
        return gateway in self._keys

    def check(self, site: str, gateway: str, payload: bytes) -> bool:
        """True: signed and verified; False: unsigned from a gateway without a registered key.

        SignatureError: a registered gateway's batch unsigned or with a bad signature, or a malformed one.
        """
        from cryptography.exceptions import InvalidSignature

        key = self._keys.get((site, gateway))
        if key is None:
            return False
        parts = split_signed(payload)
        if parts is None:
            raise SignatureError(f"gateway {site}/{gateway} has a registered key and this batch is not signed")
        try:
            key.verify(parts[1], parts[0])
        except InvalidSignature:
            raise SignatureError(f"the signature does not verify with the key registered for {site}/{gateway} "
                                 "(altered on the way, or signed by another gateway's key)") from None
        return True


def parse_public_key(text: str) -> bytes:
    if not isinstance(text, str) or not text.startswith(SCHEME):
        raise ValueError(f"expected 'ed25519:<base64 of 32 bytes>', got {str(text)[:60]!r}")
    try:
        raw = base64.b64decode(text[len(SCHEME):], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{text[:60]!r} is not base64") from None
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, this one {len(raw)}")
    return raw


def load_registry(path: str | Path) -> dict[tuple[str, str], str]:
    """The gateway registry: TOML lines ``"site/gateway" = "ed25519:<base64>"`` (a signing gateway) or
    ``= ""`` (a registered gateway that does not sign). ValueError names the file and the bad line."""
    import tomllib

    from humus.records import ID_PATTERN

    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise ValueError(f"{path}: cannot read the gateway registry ({e.strerror})") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"{path}: not TOML ({e})") from None
    out = {}
    for name, text in doc.items():
        parts = name.split("/")
        if len(parts) != 2 or not all(ID_PATTERN.fullmatch(p) for p in parts):
            raise ValueError(f"{path}: key {name!r} is not 'site/gateway'")
        if text != "":
            try:
                parse_public_key(text)
            except ValueError as e:
                raise ValueError(f"{path}: {name}: {e}") from None
        out[(parts[0], parts[1])] = text
    return out


def registry_line(site: str, gateway: str, public_key: str) -> str:
    return f'"{site}/{gateway}" = "{public_key}"\n'
