import pytest

from booking.domain import BookingStatus, on_payment


def test_pending_moves_to_confirmed_on_success() -> None:
    assert on_payment(BookingStatus.PENDING, succeeded=True) is BookingStatus.CONFIRMED


def test_pending_moves_to_cancelled_on_failure() -> None:
    assert on_payment(BookingStatus.PENDING, succeeded=False) is BookingStatus.CANCELLED


@pytest.mark.parametrize("terminal", [BookingStatus.CONFIRMED, BookingStatus.CANCELLED])
@pytest.mark.parametrize("succeeded", [True, False])
def test_terminal_states_never_change(terminal: BookingStatus, succeeded: bool) -> None:
    assert on_payment(terminal, succeeded) is None


def test_only_pending_is_not_terminal() -> None:
    assert [s for s in BookingStatus if not s.terminal] == [BookingStatus.PENDING]
