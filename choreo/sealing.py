"""Payment tokens sealed to the payment service's key: only payment can read them.

``BookingCreated`` is a broadcast fact: every consumer of the BOOKING stream (the
gateway's projection, replay tools, an operator's ``nats`` CLI, a future service)
receives it, and JetStream keeps it as long as the stream's history. The payment
token in it is a credential (it lets its holder charge the customer), so it
travels *sealed*: the booking service encrypts it to the payment service's
X25519 public key with libsodium's sealed box (PyNaCl ``SealedBox``: an
ephemeral key pair per token, X25519 + XSalsa20-Poly1305), and only the holder
of the private key, the payment service, can open it. Booking keeps no copy:
its database holds the sealed fact in the outbox until it is published, and a
salted fingerprint of the request (``booking.domain``), never the token.

Why sealed rather than kept out of the fact: the fact stays complete (payment
charges from the fact alone, a redelivery or a replay finds the token where it
always was, and no second channel or token store has to be kept consistent with
the stream), and the broadcast carries ciphertext that is useless to everyone
else. The cost is key management: payment's private key is a secret
(``PAYMENT_TOKEN_PRIVATE_KEY``), booking's public key is configuration
(``BOOKING_PAYMENT_TOKEN_PUBLIC_KEY``); ``python -m payment.keys`` makes a pair.

Each token is sealed for one booking: the box holds ``booking id length (2 bytes,
big-endian) | booking id | token``, and the opener is told which booking the fact
is for and refuses a token sealed for another. Without it, anyone allowed to
publish a ``BookingCreated`` could copy another customer's sealed token into a
booking of their own, and payment would charge that customer's card for it.

Sealed payload: ``version (1 byte) | key id (8 bytes) | sealed box``. The key id
is the first 8 bytes of the SHA-256 of the recipient's public key. It is chosen
over trial decryption because it says which key a fact needs: after a rotation
(``PAYMENT_TOKEN_PRIVATE_KEY=new,old``: the current key first, older ones after
it, so facts sealed before the rotation still open) the opener picks the right
key at once, and a fact sealed to a key payment no longer has is reported by its
key id instead of as "does not decrypt". The key id reveals nothing but which
public key was used.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path

from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox

#: First byte of every sealed token (the layout above).
VERSION = 1
KEY_ID_BYTES = 8
_HEADER_BYTES = 1 + KEY_ID_BYTES


class SealingError(ValueError):
    """A sealed token that cannot be opened (wrong key, altered, or not a sealed token)."""


def key_id(public_key: PublicKey) -> bytes:
    """The 8-byte id of a public key carried in each token sealed to it."""
    return hashlib.sha256(bytes(public_key)).digest()[:KEY_ID_BYTES]


def _decode_key(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not base64") from None
    if len(raw) != PublicKey.SIZE:
        raise ValueError(f"{what} must be {PublicKey.SIZE} bytes (base64), not {len(raw)}")
    return raw


def parse_public_key(text: str) -> PublicKey:
    """A base64 X25519 public key; ``ValueError`` when it is not one."""
    return PublicKey(_decode_key(text, "the public key"))


def parse_private_keys(text: str) -> list[PrivateKey]:
    """Comma-separated base64 X25519 private keys, current first; ``ValueError`` when one is not."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ValueError("at least one private key is required")
    return [PrivateKey(_decode_key(p, f"private key #{i}")) for i, p in enumerate(parts, 1)]


def encode_key(key: PublicKey | PrivateKey) -> str:
    return base64.b64encode(bytes(key)).decode()


class TokenSealer:
    """Seals payment tokens to one public key (the booking service's side)."""

    def __init__(self, public_key: PublicKey) -> None:
        self._box = SealedBox(public_key)
        self._header = bytes([VERSION]) + key_id(public_key)

    def seal(self, token: str, *, bound_to: str) -> bytes:
        """``token`` sealed for one fact's subject, ``bound_to`` (a booking id; see the module doc)."""
        bound = bound_to.encode()
        return self._header + self._box.encrypt(len(bound).to_bytes(2, "big") + bound + token.encode())


class TokenOpener:
    """Opens tokens sealed to any of its private keys (the payment service's side)."""

    def __init__(self, private_keys: list[PrivateKey], *, keys_from: str = "its private keys") -> None:
        """``keys_from`` names where the keys come from (a setting) in the refusal of a foreign key."""
        if not private_keys:
            raise ValueError("at least one private key is required")
        self._boxes = {key_id(k.public_key): SealedBox(k) for k in private_keys}
        self._keys_from = keys_from

    def open(self, sealed: bytes, *, bound_to: str) -> str:
        """The token sealed for ``bound_to``; ``SealingError`` (never the token or key material)
        when it does not open, or was sealed for another booking."""
        if len(sealed) <= _HEADER_BYTES or sealed[0] != VERSION:
            raise SealingError(f"not a sealed token (version {sealed[:1].hex() or 'missing'})")
        kid = sealed[1:_HEADER_BYTES]
        box = self._boxes.get(kid)
        if box is None:
            raise SealingError(f"sealed to key {kid.hex()}, which is not among {self._keys_from}")
        try:
            content = box.decrypt(sealed[_HEADER_BYTES:])
        except CryptoError:
            raise SealingError(f"sealed to key {kid.hex()} but does not open with it (altered?)") from None
        size = int.from_bytes(content[:2], "big")
        if content[2 : 2 + size] != bound_to.encode() or len(content) < 2 + size:
            raise SealingError(f"sealed for another booking than {bound_to!r} (copied from another fact?)")
        try:
            return content[2 + size :].decode()
        except UnicodeDecodeError:
            raise SealingError("the sealed token is not text") from None


def generate_keypair() -> tuple[str, str]:
    """A new key pair, base64: (private, public)."""
    key = PrivateKey.generate()
    return encode_key(key), encode_key(key.public_key)


def load_or_create_keypair(path: Path) -> tuple[str, str]:
    """The key pair whose private key is stored in ``path``, made (mode 0600) on first use.

    For ``choreo up`` and the test stacks: one pair per data directory, kept across
    restarts so facts sealed by an earlier run still open.
    """
    if not path.exists():
        private, _ = generate_keypair()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(private + "\n")
    private = path.read_text().strip()
    [key] = parse_private_keys(private)
    return private, encode_key(key.public_key)
