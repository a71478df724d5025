# syntax=docker/dockerfile:1
# convstream worker image: `docker build -t convstream .` then `docker run convstream`
# (ENTRYPOINT convstream, CMD worker; `docker run convstream replay --dry-run ...` for a replay).
# Runs as uid 10001 with a read-only root filesystem: state goes to CONVSTREAM_DATA_DIR
# (/var/lib/convstream, a volume) and scratch files to /tmp (a volume in the Helm chart).
#
# Reproducible: every Python dependency is the exact version in requirements.lock, checked
# against its sha256 (pip --require-hashes), wheels only; convstream's own wheel is installed
# without resolving anything. The wheel leaves out the demo's sandbox servers
# (streams/local/sandbox), so `convstream demo` here says it needs the source checkout.
#
# Base image: pin it by digest. TODO (README "Base image"): no registry was reachable where
# this was written, so the tag below still lacks its @sha256 digest. To pin or update it:
#   docker buildx imagetools inspect python:3.11.11-slim-bookworm --format '{{json .Manifest.Digest}}'
# (or `crane digest python:3.11.11-slim-bookworm`), then set
#   ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm@sha256:<that digest>
# or pass it per build: --build-arg PYTHON_IMAGE=<your registry mirror's pinned reference>.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# --- build: the locked dependency wheels, and convstream's wheel ----------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY requirements.lock pyproject.toml README.md ./
COPY streams ./streams
COPY schemas ./schemas
RUN pip download --require-hashes --only-binary=:all: --dest /wheels -r requirements.lock \
    && pip wheel --no-deps --wheel-dir /wheels . \
    && cp requirements.lock /wheels/

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
    && /opt/convstream/bin/pip install --no-index --find-links /wheels \
       --require-hashes -r /wheels/requirements.lock \
    && /opt/convstream/bin/pip install --no-index --no-deps /wheels/convstream-*.whl \
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
