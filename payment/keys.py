"""``python -m payment.keys``: a key pair for sealing payment tokens (``choreo.sealing``).

Prints the two settings, ready for a Secret or an env file::

    PAYMENT_TOKEN_PRIVATE_KEY=...          # the payment service's secret
    BOOKING_PAYMENT_TOKEN_PUBLIC_KEY=...   # the booking service's configuration

``--public`` prints the public key of the first private key read from standard
input instead (to configure booking again from the secret it pairs with).

Rotation: generate a new pair; give payment ``PAYMENT_TOKEN_PRIVATE_KEY=NEW,OLD``
(current first) and restart it; then give booking the new public key. Once every
``BookingCreated`` sealed to the old key is handled (and the stream's history no
longer needs replaying through payment), drop OLD.
"""

from __future__ import annotations

import argparse
import sys

from booking.settings import PUBLIC_KEY_ENV
from choreo.sealing import encode_key, generate_keypair, parse_private_keys
from payment.settings import PRIVATE_KEY_ENV


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m payment.keys", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--public", action="store_true", help="print the public key of the private key(s) on standard input"
    )
    args = parser.parse_args(argv)
    if args.public:
        try:
            keys = parse_private_keys(sys.stdin.read())
        except ValueError as exc:
            print(f"not a private key: {exc}", file=sys.stderr)
            return 2
        print(f"{PUBLIC_KEY_ENV}={encode_key(keys[0].public_key)}")
        return 0
    private, public = generate_keypair()
    print(f"{PRIVATE_KEY_ENV}={private}")
    print(f"{PUBLIC_KEY_ENV}={public}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
