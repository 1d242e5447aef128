"""API keys: their recognisable form, and the keyed hash that is all the store keeps of them.

A key reads `qrk_<key id>_<secret><checksum>`: the prefix and the checksum (6 base62 characters of a
CRC-32 over everything before it) let secret scanners recognise a leaked key without asking us, and
let a mistyped key be refused without a database look-up; the key id (16 hex digits) is not secret
and names the key in listings and the audit trail; the secret is 32 random bytes (256 bits), base62.
The store keeps only HMAC-SHA256(hash secret, secret), compared in constant time: a copy of the
database alone does not let anyone test guesses, and the hash secret lives in its own owner-only file.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import zlib

PREFIX = "qrk"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_SECRET_CHARS, _CHECKSUM_CHARS = 43, 6  # 62**43 > 2**256


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        digits.append(_ALPHABET[digit])
    return "".join(reversed(digits))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), _CHECKSUM_CHARS)


def new_api_key() -> str:
    """A fresh API key, `qrk_<key id>_<secret><checksum>`."""
    body = f"{PREFIX}_{secrets.token_hex(8)}_{_base62(secrets.randbits(256), _SECRET_CHARS)}"
    return body + _checksum(body)


def split_api_key(api_key: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key whose checksum holds; None otherwise."""
    parts = api_key.split("_")
    if len(parts) != 3 or parts[0] != PREFIX or len(parts[1]) != 16:
        return None
    secret, checksum = parts[2][:-_CHECKSUM_CHARS], parts[2][-_CHECKSUM_CHARS:]
    if len(secret) != _SECRET_CHARS or not hmac.compare_digest(_checksum(api_key[:-_CHECKSUM_CHARS]), checksum):
        return None
    return parts[1], secret


def key_id_of(api_key: str) -> str:
    """The non-secret id of a key, or "" for something that is not one (safe to log)."""
    split = split_api_key(api_key)
    return split[0] if split else ""


def keyed_hash(hash_secret: bytes, secret: str) -> str:
    return hmac.new(hash_secret, secret.encode(), hashlib.sha256).hexdigest()


def matches(hash_secret: bytes, secret: str, stored: str) -> bool:
    return hmac.compare_digest(keyed_hash(hash_secret, secret), stored)
