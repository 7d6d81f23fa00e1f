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


def test_the_effective_quantity_is_one_for_zero_and_none_without_a_resource() -> None:
    from booking.domain import effective_quantity

    assert effective_quantity("room", 0) == 1
    assert effective_quantity("room", 7) == 7
    assert effective_quantity("", 0) == 0


def test_a_fingerprint_without_a_resource_is_the_one_it_always_was() -> None:
    import hashlib

    from booking.domain import request_fingerprint, same_request

    old = hashlib.sha256(b"b-1|1200|USD|tok_visa").hexdigest()[:32]
    assert request_fingerprint(1200, "USD", "tok_visa", salt="b-1") == old
    with_resource = request_fingerprint(1200, "USD", "tok_visa", salt="b-1", resource_id="room", quantity=2)
    assert with_resource != old
    # A request's 0 and 1 units are the same request; another resource or quantity is not.
    zero = request_fingerprint(1200, "USD", "tok_visa", salt="b-1", resource_id="room", quantity=0)
    assert zero == request_fingerprint(1200, "USD", "tok_visa", salt="b-1", resource_id="room", quantity=1)
    assert same_request(with_resource, "b-1", 1200, "USD", "tok_visa", "", "room", 2)
    assert not same_request(with_resource, "b-1", 1200, "USD", "tok_visa", "", "room", 3)
    assert not same_request(with_resource, "b-1", 1200, "USD", "tok_visa", "", "hall", 2)
    assert not same_request(with_resource, "b-1", 1200, "USD", "tok_visa")


def test_a_user_cancels_pending_or_confirmed_and_cancelled_is_terminal() -> None:
    from booking.domain import USER_CANCELS_FROM

    assert set(USER_CANCELS_FROM) == {BookingStatus.PENDING, BookingStatus.CONFIRMED}
    assert BookingStatus.CANCELLED.terminal and BookingStatus.CANCELLED not in USER_CANCELS_FROM
