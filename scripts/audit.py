"""pip-audit over requirements.lock, offline-safe: the CI step of `.ci/run`.

Audits exactly what the image installs (the hash-locked requirements.lock, nothing
resolved or installed) against the advisory service (PyPI's, or any pip-audit option given
after the arguments below, e.g. ``--vulnerability-service osv``).

Exit status:
    0   no known vulnerability; or the advisory service could not be reached, in which case a
        WARNING says that nothing was audited (CI without network must not fail on it);
    1   a known vulnerability in a locked package (each printed with its fix versions);
    2   pip-audit failed for another reason (its output is printed).

A vulnerability that cannot be fixed by an upgrade may be allowed with pip-audit's own
``--ignore-vuln ID`` in `.ci/run`, with the reason beside it (docs/kubernetes.md, "Supply chain").

    python scripts/audit.py [--lock requirements.lock] [pip-audit options...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

#: Errors that mean "the advisory service did not answer", as pip-audit reports them (its
#: own ServiceError for an HTTP error status, requests' and urllib3's for the network).
UNREACHABLE = (
    "ConnectionError",
    "ConnectTimeout",
    "ReadTimeout",
    "ProxyError",
    "SSLError",
    "NameResolutionError",
    "NewConnectionError",
    "Max retries exceeded",
    "ServiceError",
    "Could not connect",
)


@dataclass
class Outcome:
    """What one audit found."""

    #: ``name version: ID (aliases) fixed in ...`` per known vulnerability.
    vulnerabilities: list[str] = field(default_factory=list)
    #: Packages the service had nothing for (``name: reason``).
    skipped: list[str] = field(default_factory=list)
    audited: int = 0


def read_report(report: dict[str, Any]) -> Outcome:
    """The vulnerabilities and skipped packages of pip-audit's JSON report."""
    outcome = Outcome()
    for dep in report.get("dependencies", []):
        if "skip_reason" in dep:
            outcome.skipped.append(f"{dep['name']}: {dep['skip_reason']}")
            continue
        outcome.audited += 1
        for vuln in dep.get("vulns", []):
            aliases = ", ".join(vuln.get("aliases", []))
            fixes = ", ".join(vuln.get("fix_versions", [])) or "no fixed release"
            outcome.vulnerabilities.append(
                f"{dep['name']} {dep['version']}: {vuln['id']}"
                + (f" ({aliases})" if aliases else "")
                + f", fixed in {fixes}"
            )
    return outcome


def warn(message: str) -> None:
    print(f"WARNING: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lock", type=Path, default=REPO / "requirements.lock")
    args, extra = parser.parse_known_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        report_path = Path(scratch) / "report.json"
        command = [sys.executable, "-m", "pip_audit", "--requirement", str(args.lock)]
        # Hash-locked and complete: read as it is, without pip resolving or installing anything.
        command += ["--require-hashes", "--disable-pip", "--progress-spinner", "off"]
        command += ["--format", "json", "--output", str(report_path), *extra]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        report = json.loads(report_path.read_text()) if report_path.exists() else None
    if report is None:
        output = result.stdout + result.stderr
        if any(marker in output for marker in UNREACHABLE):
            last = output.strip().splitlines()[-1] if output.strip() else ""
            warn(f"the advisory service could not be reached; {args.lock.name} was NOT audited ({last})")
            return 0
        print(output, file=sys.stderr)
        print(f"pip-audit failed (exit {result.returncode}) without a report", file=sys.stderr)
        return 2
    outcome = read_report(report)
    if outcome.vulnerabilities:
        print(f"known vulnerabilities in {args.lock.name}:", file=sys.stderr)
        for line in outcome.vulnerabilities:
            print(f"  {line}", file=sys.stderr)
        print(
            "raise the floor in pyproject.toml and run scripts/lock.sh --upgrade-package NAME",
            file=sys.stderr,
        )
        return 1
    if outcome.skipped and not outcome.audited:
        # Every lookup came back empty: the service (or a mirror standing in for it) does not
        # serve advisories here. Nothing was checked, which must not read as a pass.
        first = outcome.skipped[0]
        warn(f"the advisory service answered no lookup; {args.lock.name} was NOT audited ({first})")
        return 0
    if outcome.skipped:
        warn("not audited: " + "; ".join(outcome.skipped))
    print(f"pip-audit: no known vulnerabilities in the {outcome.audited} packages of {args.lock.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
