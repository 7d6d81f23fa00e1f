"""``python -m notification``: runs the notification service."""

from choreo.service import run_main
from notification.build import build
from notification.settings import NotificationSettings

if __name__ == "__main__":
    run_main(NotificationSettings, build)
