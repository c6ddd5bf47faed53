# Tidal operator image.
#
#   docker build -t ghcr.io/tidal-dev/tidal-operator:0.1.0 .
#
# Two stages: the build stage installs the package and its dependencies into a virtual
# environment; the runtime stage copies only that environment, so no compiler, pip cache or
# source tree ships. Both stages use the same base image because the venv's interpreter is a
# symlink to the base image's python.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
# README.md* matches nothing until a README exists; pyproject.toml keeps the COPY non-empty.
COPY pyproject.toml README.md* ./
COPY operator ./operator
# A regular (non-editable) install: the venv must not point back at /src, which is not copied.
# pip compiles bytecode at install time, so nothing needs to be written at run time.
RUN /opt/venv/bin/pip install .

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="tidal-operator" \
      org.opencontainers.image.description="Kubernetes operator for hybrid GPU inference endpoints and vector collections" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric non-root user, matching runAsUser/runAsGroup 65532 in manifests/: the kubelet
# can only enforce runAsNonRoot against a numeric USER.
RUN groupadd --system --gid 65532 tidal \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin tidal
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 65532:65532
ENTRYPOINT ["tidal"]
CMD ["run"]
