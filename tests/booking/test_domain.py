from sqlalchemy.dialects import sqlite

from booking.domain import SETTLES_FROM, BookingStatus, on_payment
from booking.handlers import SETTLE


def test_success_confirms() -> None:
    assert on_payment(succeeded=True) is BookingStatus.CONFIRMED


def test_failure_cancels() -> None:
    assert on_payment(succeeded=False) is BookingStatus.CANCELLED


def test_only_pending_is_not_terminal() -> None:
    assert SETTLES_FROM is BookingStatus.PENDING
    assert [s for s in BookingStatus if not s.terminal] == [SETTLES_FROM]
    assert all(on_payment(succeeded).terminal for succeeded in (True, False))


def test_the_settling_update_is_guarded_by_the_domain() -> None:
    # Terminal states never change because the UPDATE only matches SETTLES_FROM.
    compiled = SETTLE.compile(dialect=sqlite.dialect())
    assert "bookings.status = ?" in str(compiled)
    assert SETTLES_FROM.value in compiled.params.values()


def test_the_email_counts_in_the_fingerprint_only_when_given() -> None:
    from booking.domain import request_fingerprint, same_request

    plain = request_fingerprint(100, "EUR", "tok_visa", salt="b1")
    with_email = request_fingerprint(100, "EUR", "tok_visa", salt="b1", email="a@example.com")
    assert plain != with_email
    assert same_request(with_email, "b1", 100, "EUR", "tok_visa", "a@example.com")
    assert not same_request(with_email, "b1", 100, "EUR", "tok_visa", "b@example.com")
    assert not same_request(with_email, "b1", 100, "EUR", "tok_visa")
    # A booking stored before emails existed still matches a retry without one.
    assert same_request(plain, "b1", 100, "EUR", "tok_visa")
