# hitl: one image for the worker (default command) and the review API
# (`hitl serve --host 0.0.0.0 --port 8000`, as docker-compose.yml runs it).
#
#   docker build -t hitl .
#
# Written for both BuildKit and the classic builder (no RUN --mount, no
# COPY --chmod), since Debian's docker-compose 1.29 builds with the latter.

# Python minor and Debian release pinned; patch releases come with rebuilds.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Only what the package is built from (.dockerignore keeps the rest, .env
# included, out of the build context).
COPY pyproject.toml README.md ./
COPY hitl ./hitl
COPY workflows ./workflows
COPY activities ./activities
COPY worker ./worker
# A regular (non-editable) install: the runtime stage needs no source tree.
RUN pip install ".[postgres,api]"

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HITL_DATA_DIR=/var/lib/hitl
RUN groupadd --system --gid 10001 hitl \
    && useradd --system --uid 10001 --gid hitl --home-dir /var/lib/hitl \
        --no-create-home --shell /usr/sbin/nologin hitl \
    && mkdir -p /var/lib/hitl \
    && chown hitl:hitl /var/lib/hitl
COPY --from=build /opt/venv /opt/venv
WORKDIR /var/lib/hitl
# Numeric, so runtimes that enforce "run as non-root" can verify it.
USER 10001:10001
EXPOSE 8000
CMD ["python", "-m", "worker"]
