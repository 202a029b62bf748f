# The operator image: `rollout-operator` (kopf).
# Build from the repository root:  docker build -f docker/operator.Dockerfile -t kuberollout/operator:0.1.0 .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Every dependency, pinned (scripts/lock_images.py); --no-deps so nothing unpinned slips in.
COPY docker/requirements-operator.txt /tmp/requirements.txt
RUN pip install --no-deps -r /tmp/requirements.txt
COPY pyproject.toml README.md /src/
COPY rollout_runtime /src/rollout_runtime
COPY operator /src/operator
RUN pip install --no-deps /src

FROM ${PYTHON_IMAGE}
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin operator
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
USER 10001:10001
ENTRYPOINT ["rollout-operator"]
