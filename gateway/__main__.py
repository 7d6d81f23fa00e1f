"""``python -m gateway``: runs the gateway."""

from choreo.service import run_main
from gateway.build import build
from gateway.settings import GatewaySettings

if __name__ == "__main__":
    run_main(GatewaySettings, build)
