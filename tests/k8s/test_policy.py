"""Policy: checkov (offline) on the rendered overlays and on the Dockerfile.

Every check checkov has for Kubernetes and Dockerfiles must pass, except the
few skipped below (the reasons are in docs/kubernetes.md, "checkov: skipped
checks"). So that the test cannot pass by checking nothing, the core hardening
checks must also appear among the passed ones.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.k8s import tools
from tests.k8s.manifests import REPO, Manifests

#: Skipped in every overlay; why: docs/kubernetes.md.
SKIPPED = ["CKV_K8S_43"]
SKIPPED_BY_OVERLAY = {"dev": [*SKIPPED, "CKV_K8S_15"], "prod": SKIPPED}
#: Skipped for one resource only, by its ``checkov.io/skip`` annotation (why: docs/kubernetes.md).
#: The services read their credentials as files; NATS and PostgreSQL's first-start script cannot.
SKIPPED_FOR = {("CKV_K8S_35", "nats"), ("CKV_K8S_35", "postgres")}

#: The hardening the issue asks for, as checkov names it; each must have run and passed.
REQUIRED_KUBERNETES = {
    "CKV_K8S_8": "liveness probe",
    "CKV_K8S_9": "readiness probe",
    "CKV_K8S_10": "CPU requests",
    "CKV_K8S_11": "CPU limits",
    "CKV_K8S_12": "memory requests",
    "CKV_K8S_13": "memory limits",
    "CKV_K8S_14": "fixed image tag",
    "CKV_K8S_20": "no privilege escalation",
    "CKV_K8S_21": "not the default namespace",
    "CKV_K8S_22": "read-only root filesystem",
    "CKV_K8S_23": "no root containers",
    "CKV_K8S_28": "no NET_RAW",
    "CKV_K8S_29": "pod security context",
    "CKV_K8S_30": "container security context",
    "CKV_K8S_31": "seccomp profile",
    "CKV_K8S_35": "Secrets as files, not environment variables (the services)",
    "CKV_K8S_37": "capabilities dropped",
    "CKV_K8S_38": "no service account token",
    "CKV_K8S_40": "high uid",
    "CKV2_K8S_6": "every pod has a NetworkPolicy",
}
REQUIRED_DOCKERFILE = {
    "CKV_DOCKER_3": "a non-root USER",
    "CKV_DOCKER_7": "base image not `latest`",
    "CKV_DOCKER_8": "the last USER is not root",
}


def run_checkov(target: Path, framework: str, skipped: list[str]) -> list[dict[str, Any]]:
    command = [tools.checkov(), "--skip-download", "--compact", "-o", "json"]
    command += ["--framework", framework, "-f", str(target)]
    if skipped:
        command += ["--skip-check", ",".join(skipped)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if not result.stdout.strip().startswith(("{", "[")):
        raise AssertionError(f"checkov did not report (exit {result.returncode}):\n{result.stderr[-3000:]}")
    report = json.loads(result.stdout)
    return report if isinstance(report, list) else [report]


def annotated_skips(reports: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """(check id, resource name) -> the reason its annotation gives, for each per-resource skip."""
    skips = {}
    for report in reports:
        for c in report.get("results", {}).get("skipped_checks", []):
            reason = (c.get("check_result") or {}).get("suppress_comment") or ""
            skips[(c["check_id"], c["resource"].rsplit(".", 1)[-1])] = reason
    return skips


def outcome(reports: list[dict[str, Any]]) -> tuple[set[str], list[str]]:
    """IDs of passed checks, and a line per failure."""
    passed: set[str] = set()
    failures: list[str] = []
    for report in reports:
        results = report.get("results", {})
        passed |= {c["check_id"] for c in results.get("passed_checks", [])}
        failures += [
            f"{c['check_id']} {c['check_name']}: {c['resource']}" for c in results.get("failed_checks", [])
        ]
    return passed, failures


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_checkov_passes_on_the_rendered_overlay(
    overlays: dict[str, Manifests], overlay: str, tmp_path: Path
) -> None:
    rendered = tmp_path / f"{overlay}.yaml"
    rendered.write_text(yaml.safe_dump_all(overlays[overlay].objects, sort_keys=False))
    reports = run_checkov(rendered, "kubernetes", SKIPPED_BY_OVERLAY[overlay])
    passed, failures = outcome(reports)
    assert not failures, "\n".join(failures)
    skips = annotated_skips(reports)
    # Global skips come back without a resource reason; per-resource ones carry their annotation's.
    annotated = {key: reason for key, reason in skips.items() if key[0] not in SKIPPED_BY_OVERLAY[overlay]}
    assert set(annotated) == SKIPPED_FOR, annotated
    assert all(annotated.values()), f"a checkov.io/skip annotation must say why: {annotated}"
    not_run = {k: v for k, v in REQUIRED_KUBERNETES.items() if k not in passed}
    assert not not_run, f"required checks did not pass (did checkov see the workloads?): {not_run}"


def test_checkov_passes_on_the_dockerfile() -> None:
    passed, failures = outcome(run_checkov(REPO / "Dockerfile", "dockerfile", []))
    assert not failures, "\n".join(failures)
    assert set(REQUIRED_DOCKERFILE) <= passed


def test_checkov_catches_a_weakened_pod(overlays: dict[str, Manifests], tmp_path: Path) -> None:
    deployment = json.loads(json.dumps(overlays["dev"].get("Deployment", "booking")))
    # Root uid, no seccomp profile.
    deployment["spec"]["template"]["spec"]["securityContext"] = {"runAsUser": 0}
    rendered = tmp_path / "broken.yaml"
    rendered.write_text(yaml.safe_dump(deployment))
    _, failures = outcome(run_checkov(rendered, "kubernetes", SKIPPED_BY_OVERLAY["dev"]))
    assert {f.split()[0] for f in failures} >= {"CKV_K8S_40", "CKV_K8S_31"}, failures


def test_skipped_checks_are_documented() -> None:
    doc = (REPO / "docs" / "kubernetes.md").read_text()
    for check in {c for skipped in SKIPPED_BY_OVERLAY.values() for c in skipped} | {
        c for c, _ in SKIPPED_FOR
    }:
        assert f"| {check} " in doc, f"{check} is skipped but docs/kubernetes.md does not say why"
