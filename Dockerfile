# syntax=docker/dockerfile:1
#
# api-metrics-exporter container image.
#
#   docker build -t api-metrics-exporter:0.1.0 .
#   docker run --rm -p 9687:9687 --read-only --tmpfs /tmp api-metrics-exporter:0.1.0
#   curl -s http://127.0.0.1:9687/metrics
#
# Stage 1 installs the project from the build context into a virtualenv;
# stage 2 is the same slim Python with only that virtualenv and the default
# config. Nothing is fetched at run time. The process runs as UID/GID 65532
# and writes nothing but the optional [state] dir (a VOLUME), so the root
# filesystem can be read-only. tests/test_dockerfile.py lints this file with
# hadolint (settings and any ignored rule in .hadolint.yaml), checks it and
# replays the build.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /src
# The context is filtered by .dockerignore down to the package sources.
COPY . .
RUN /opt/venv/bin/pip install --no-cache-dir .

FROM ${PYTHON_IMAGE} AS runtime
ARG VERSION=0.1.0
ARG SOURCE_URL=https://github.com/api-metrics-exporter/api-metrics-exporter
LABEL org.opencontainers.image.title="api-metrics-exporter" \
      org.opencontainers.image.description="Polls vendor metrics APIs on schedules and exposes them as Prometheus metrics." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE_URL}" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 65532 exporter \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin exporter \
 && install -d -o 65532 -g 65532 -m 0750 /var/lib/api-metrics-exporter
COPY --from=build /opt/venv /opt/venv
COPY exporter.toml /etc/api-metrics-exporter/exporter.toml
# Only used when the config sets [state] dir = "/var/lib/api-metrics-exporter".
VOLUME ["/var/lib/api-metrics-exporter"]
USER 65532:65532
EXPOSE 9687
# Docker only (Kubernetes uses the chart's probes); assumes the default listen port.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9687/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["api-metrics-exporter"]
CMD ["run", "--config", "/etc/api-metrics-exporter/exporter.toml"]
