# One image definition for every choreo service; the service is chosen by the command.
#
#   docker build --build-arg SERVICE=booking -t choreo/booking:0.1.0 .
#   docker build --build-arg SERVICE=payment -t choreo/payment:0.1.0 .
#   docker build --build-arg SERVICE=notification -t choreo/notification:0.1.0 .
#   docker build --build-arg SERVICE=analytics -t choreo/analytics:0.1.0 .
#   docker build --build-arg SERVICE=gateway -t choreo/gateway:0.1.0 .
#
# The images share every layer but the last; each service is tagged (and so rolled)
# on its own. SERVICE only sets the default command: Kubernetes sets `python -m <service>`
# explicitly. The runtime stage has no compiler, no pip cache and no source tree.

# Both stages use the same base, so the venv built in one runs in the other (same paths,
# same libc and Python). Bump both together.
FROM python:3.11-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, from the lock alone, so a code change does not reinstall them. Every
# file pip fetches must match a sha256 of requirements.lock (scripts/lock.sh regenerates it
# from pyproject.toml; tests/test_lock.py keeps the two in step), and no dependency outside
# the lock can come in: pip refuses an unhashed requirement in this mode.
COPY requirements.lock requirements-build.lock ./
RUN pip install --require-hashes --requirement requirements.lock
COPY . .
# The project's own wheel, built without build isolation (which would fetch an unpinned
# setuptools) by the hash-locked backend of requirements-build.lock, in a venv of its own
# that the runtime stage never sees. --no-deps: the dependencies are already there; a
# missing one would fail the import check below.
RUN python -m venv /opt/build \
    && /opt/build/bin/pip install --require-hashes --requirement requirements-build.lock \
    && /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /tmp/dist . \
    && pip install --no-deps /tmp/dist/choreo-*.whl \
    && python -m compileall -q /opt/venv/lib \
    && python -c "import choreo, choreoctl, booking, payment, notification, analytics, inventory, gateway"

FROM python:3.11-slim-bookworm AS runtime
ARG SERVICE=gateway
LABEL org.opencontainers.image.title="choreo-${SERVICE}" \
      org.opencontainers.image.description="choreo ${SERVICE} service" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric uid/gid, so Kubernetes can check runAsNonRoot without reading /etc/passwd.
RUN groupadd --system --gid 10001 choreo \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin choreo \
    && mkdir -p /app/var /data \
    && chown 10001:10001 /app/var /data
COPY --from=builder /opt/venv /opt/venv
# The root filesystem is read-only in Kubernetes: no bytecode writes, HOME and TMPDIR on /tmp
# (an emptyDir there). ./var is only for `docker run` with the default SQLite databases.
# /data is where the gateway's read model lives in Kubernetes (an emptyDir); owned by the
# service user here so that a Docker named volume mounted there starts writable too.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    CHOREO_SERVICE=${SERVICE}
WORKDIR /app
USER 10001:10001
# gateway: gRPC 50051, HTTP 8080; health of booking 8081, payment 8082, notification 8083,
# analytics 8084, inventory 8085.
EXPOSE 50051 8080 8081 8082 8083 8084 8085
# Kubernetes probes the services itself (see k8s/); an image-level check would need a
# service-specific port, so the image defines none.
HEALTHCHECK NONE
# `exec` replaces the shell, so the service itself is PID 1 and receives SIGTERM.
CMD ["/bin/sh", "-c", "exec python -m \"$CHOREO_SERVICE\""]
