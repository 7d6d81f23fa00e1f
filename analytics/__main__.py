"""``python -m analytics``: runs the analytics service."""

from analytics.build import build
from analytics.settings import AnalyticsSettings
from choreo.service import run_main

if __name__ == "__main__":
    run_main(AnalyticsSettings, build)
