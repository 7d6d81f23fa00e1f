"""The gateway's read model as the manifests deploy it.

Each replica owns its read model (one group-committing writer per process; two
replicas sharing a database could regress a booking or a checkpoint), so it is
SQLite on the pod's own emptyDir, configured in the ConfigMap, with no database
server, user or Secret. A new pod rebuilds it by replaying the streams and is
not ready (nor started, for the kubelet) until it has caught up: the startup
probe's budget must cover a replay of the largest read model the volume holds.
The figures are the measured ones of docs/kubernetes.md ("The gateway's read model").
"""

from __future__ import annotations

import re

import pytest

from tests.k8s.docs import DOC
from tests.k8s.localpod import emptydir_mounts, on_mount, sqlite_path
from tests.k8s.manifests import Manifests, Obj, SecretRef, only_container, quantity_bytes
from tests.k8s.pgsetup import SCRIPT

OVERLAYS = ("dev", "prod")
#: Read-model bytes per projected event (SQLite file after a replay of 300,000 events).
BYTES_PER_EVENT = 475
#: Replay rate the startup budget assumes: about half of what two cores replay (9,000-10,000
#: events/s measured, 10,000-15,000 on an idle machine), for the 1-CPU limit on a busy node.
BUDGET_EVENTS_PER_S = 5_000
#: JetStream keeps at most this share of its volume (no max_file_store in nats.conf).
JETSTREAM_SHARE = 0.75
#: What kustomize's generators append to a generated name.
HASH_SUFFIX = re.compile(r"-[a-z0-9]{10}$")


def gateway(overlay: Manifests) -> tuple[Obj, Obj]:
    deployment = overlay.get("Deployment", "gateway")
    return deployment, only_container(deployment)


def read_model_volume(overlay: Manifests) -> tuple[str, Obj]:
    """(mount path, volume) of the emptyDir holding GATEWAY_DATABASE_URL's file."""
    deployment, container = gateway(overlay)
    url = overlay.container_env(container)["GATEWAY_DATABASE_URL"]
    assert isinstance(url, str), "GATEWAY_DATABASE_URL names a file in the pod: ConfigMap, not Secret"
    path = sqlite_path(url)
    assert path is not None and path.startswith("/"), f"an absolute SQLite path, got {url}"
    mounts = emptydir_mounts(deployment, container)
    mount = on_mount(path, mounts)
    assert mount is not None, f"{path} is on no emptyDir: the root filesystem is read-only"
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    return mount, volumes[mounts[mount]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_read_model_is_sqlite_on_a_disk_emptydir_of_its_own(
    overlays: dict[str, Manifests], overlay: str
) -> None:
    mount, volume = read_model_volume(overlays[overlay])
    assert mount != "/tmp", "its own volume, not the 64Mi scratch space"
    empty_dir = volume["emptyDir"]
    assert "medium" not in empty_dir, "on the node's disk (a Memory medium counts against the memory limit)"
    assert "sizeLimit" in empty_dir, "a bounded volume (the kubelet evicts a pod that outgrows it)"
    _, container = gateway(overlays[overlay])
    limit = container["resources"].get("limits", {}).get("ephemeral-storage")
    if limit is not None:
        # The pod-level limit (sum of its containers') also counts its disk emptyDirs.
        deployment, _ = gateway(overlays[overlay])
        disks = sum(
            quantity_bytes(v["emptyDir"]["sizeLimit"])
            for v in deployment["spec"]["template"]["spec"]["volumes"]
            if "emptyDir" in v and "medium" not in v["emptyDir"]
        )
        assert quantity_bytes(limit) > disks, f"ephemeral-storage limit {limit} below its volumes"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_volume_holds_a_projection_of_everything_nats_can_store(
    overlays: dict[str, Manifests], overlay: str
) -> None:
    # The read model takes about as many bytes per event as JetStream's file store (about
    # 475 each, measured), so it outgrows its volume only once NATS is full.
    _, volume = read_model_volume(overlays[overlay])
    nats = overlays[overlay].get("StatefulSet", "nats")
    claim = next(c for c in nats["spec"]["volumeClaimTemplates"] if c["metadata"]["name"] == "data")
    store = quantity_bytes(claim["spec"]["resources"]["requests"]["storage"]) * JETSTREAM_SHARE
    assert quantity_bytes(volume["emptyDir"]["sizeLimit"]) >= store


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_startup_budget_covers_a_full_replay(overlays: dict[str, Manifests], overlay: str) -> None:
    deployment, container = gateway(overlays[overlay])
    _, volume = read_model_volume(overlays[overlay])
    events = quantity_bytes(volume["emptyDir"]["sizeLimit"]) / BYTES_PER_EVENT
    replay = events / BUDGET_EVENTS_PER_S
    startup = container["startupProbe"]
    # gRPC health answers SERVING only once every feed has caught up (gateway/api/grpc_api.py), and
    # so does /readyz (the probe when the gateway serves TLS, which the kubelet's gRPC probe lacks).
    assert "grpc" in startup or startup["httpGet"]["path"] == "/readyz", startup
    budget = startup.get("initialDelaySeconds", 0) + startup["periodSeconds"] * startup["failureThreshold"]
    assert budget >= replay, f"startup budget {budget}s < {replay:.0f}s to replay {events:,.0f} events"
    deadline = deployment["spec"].get("progressDeadlineSeconds", 600)
    assert deadline > budget, "a rollout waiting for a replay is not reported as failed"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_has_no_database_server(overlays: dict[str, Manifests], overlay: str) -> None:
    rendered = overlays[overlay]
    deployment, _ = gateway(rendered)
    secrets = {
        HASH_SUFFIX.sub("", v.name)
        for v in rendered.settings_env(deployment).values()
        if isinstance(v, SecretRef)
    }
    assert secrets == {"gateway-nats", "gateway-page-token"}, secrets
    postgres = only_container(rendered.get("StatefulSet", "postgres"))
    assert not [k for k in rendered.container_env(postgres) if k.startswith("GATEWAY_")]
    assert "gateway-db" not in {
        HASH_SUFFIX.sub("", s["metadata"]["name"]) for s in rendered.of_kind("Secret")
    }
    assert "gateway" not in re.findall(r"^create_owner (\w+)", SCRIPT.read_text(), re.MULTILINE)


def test_docs_state_the_figures_the_budget_uses() -> None:
    text = " ".join(DOC.read_text().split())
    for figure in (f"{BYTES_PER_EVENT} bytes per event", f"{BUDGET_EVENTS_PER_S:,} events/s"):
        assert figure in text, f"docs/kubernetes.md should state {figure!r}"
