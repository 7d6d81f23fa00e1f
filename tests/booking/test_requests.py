import pytest

from booking.requests import MAX_AMOUNT_CENTS, validate_booking_request

GOOD = {"user_id": "u-1", "amount_cents": 1500, "currency": "EUR", "payment_token": "tok_visa"}


def test_valid_request_passes() -> None:
    assert validate_booking_request(**GOOD) is None
    assert validate_booking_request(**GOOD, idempotency_key="k-123") is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"user_id": ""}, "user_id"),
        ({"user_id": "x" * 129}, "user_id"),
        ({"user_id": "has space"}, "user_id"),
        ({"amount_cents": 0}, "amount_cents"),
        ({"amount_cents": -5}, "amount_cents"),
        ({"amount_cents": MAX_AMOUNT_CENTS + 1}, "amount_cents"),
        ({"currency": "EU"}, "currency"),
        ({"currency": "EURO"}, "currency"),
        ({"currency": "eur"}, "currency"),
        ({"currency": "E1R"}, "currency"),
        ({"payment_token": ""}, "payment_token"),
        ({"payment_token": "visa"}, "payment_token"),
        ({"payment_token": "tok_"}, "payment_token"),
        ({"payment_token": "tok_bad-chars"}, "payment_token"),
        ({"payment_token": "tok_" + "a" * 200}, "payment_token"),
    ],
)
def test_each_bad_field_is_named(change: dict[str, object], field: str) -> None:
    error = validate_booking_request(**{**GOOD, **change})  # type: ignore[arg-type]
    assert error is not None
    assert error.field == field
    assert field in str(error)


def test_over_long_idempotency_key_is_refused() -> None:
    error = validate_booking_request(**GOOD, idempotency_key="k" * 129)
    assert error is not None and error.field == "idempotency_key"


@pytest.mark.parametrize(
    "email",
    ["ada@example.com", "a.b+tag@mail.example.co.uk", "o'brien@x-y.example.org", "x@d.io", ""],
)
def test_valid_emails_pass(email: str) -> None:
    assert validate_booking_request(**GOOD, email=email) is None


@pytest.mark.parametrize(
    "email",
    [
        "no-at-sign",
        "two@@example.com",
        "a@b@example.com",
        "trailing.@example.com",
        ".leading@example.com",
        "do..ts@example.com",
        "user@localhost",
        "user@-bad.example.com",
        "user@example.c",
        "user@example.com\r\nBcc: victim@example.com",
        "user@example.com\n",
        "Ada <ada@example.com>",
        "spa ce@example.com",
        '"quoted"@example.com',
        "ünï@example.com",
        "user@[127.0.0.1]",
        "x" * 65 + "@example.com",
        "u@" + "d" * 250 + ".com",
    ],
)
def test_malformed_email_is_refused_naming_the_field(email: str) -> None:
    error = validate_booking_request(**GOOD, email=email)
    assert error is not None
    assert error.field == "email"
    assert "email" in str(error)


@pytest.mark.parametrize(
    ("resource_id", "quantity"),
    [("", 0), ("room-12", 0), ("room-12", 1), ("a", 1000), ("Hall_A:seat.7-b", 3), ("r" * 64, 2)],
)
def test_valid_resources_and_quantities_pass(resource_id: str, quantity: int) -> None:
    assert validate_booking_request(**GOOD, resource_id=resource_id, quantity=quantity) is None


@pytest.mark.parametrize(
    ("resource_id", "quantity", "field"),
    [
        ("r" * 65, 0, "resource_id"),
        ("room 12", 0, "resource_id"),
        ("room/12", 1, "resource_id"),
        ("room>", 1, "resource_id"),
        ("ünï", 1, "resource_id"),
        ("room-12", -1, "quantity"),
        ("room-12", 1001, "quantity"),
        ("", 1, "quantity"),
        ("", -1, "quantity"),
        ("", 2000, "quantity"),
    ],
)
def test_a_bad_resource_or_quantity_is_refused_naming_the_field(
    resource_id: str, quantity: int, field: str
) -> None:
    error = validate_booking_request(**GOOD, resource_id=resource_id, quantity=quantity)
    assert error is not None
    assert error.field == field
    assert field in str(error)
