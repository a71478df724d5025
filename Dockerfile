# syntax=docker/dockerfile:1
# convstream worker image: `docker build -t convstream .` then `docker run convstream`
# (ENTRYPOINT convstream, CMD worker; `docker run convstream replay --dry-run ...` for a replay).
# Runs as uid 10001 with a read-only root filesystem: state goes to CONVSTREAM_DATA_DIR
# (/var/lib/convstream, a volume) and scratch files to /tmp (a volume in the Helm chart).
# Pin the base by digest in your registry mirror (python:3.11.11-slim-bookworm@sha256:...).

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# --- build: wheels for convstream and every dependency --------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY schemas ./schemas
RUN pip wheel --wheel-dir /wheels .

# --- runtime: the wheels installed into a virtualenv, nothing else ---------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/convstream/bin:$PATH \
    HOME=/tmp \
    CONVSTREAM_DATA_DIR=/var/lib/convstream \
    CONVSTREAM_METRICS_PORT=9108
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/convstream \
    && /opt/convstream/bin/pip install --no-index --find-links /wheels convstream \
    && groupadd --system --gid 10001 convstream \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin convstream \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/convstream
USER 10001:10001
WORKDIR /var/lib/convstream
VOLUME ["/var/lib/convstream"]
EXPOSE 9108
ENTRYPOINT ["convstream"]
CMD ["worker"]
