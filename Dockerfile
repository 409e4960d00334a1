# bmex-wf BIDS App image.
#
# CPU image (default):
#   docker build -t bmex-wf .
# GPU image (CUDA base and CUDA torch wheels):
#   docker build -t bmex-wf:cuda \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu124 .
# Behind a proxy with its own CA: put the bundle in the build context and pass
#   --build-arg PIP_CERT=certs/ca.pem [--build-arg PIP_INDEX_URL=https://mirror/simple]
# Local wheels (e.g. torch) in the build context: --build-arg PIP_FIND_LINKS=wheels
#
# Run (model files mounted read-only at $BMEX_MODELS_DIR):
#   docker run --rm -v /data/bids:/data:ro -v /data/out:/out -v /data/models:/models:ro \
#     bmex-wf /data /out participant --participant-label 01

ARG BASE_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------- build stage
FROM ${BASE_IMAGE} AS builder
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_INDEX_URL=
ARG PIP_CERT=
ARG PIP_FIND_LINKS=
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY . /src
RUN set -eu; \
    if [ -n "${PIP_CERT}" ]; then export PIP_CERT="/src/${PIP_CERT}"; else unset PIP_CERT; fi; \
    if [ -n "${PIP_INDEX_URL}" ]; then export PIP_INDEX_URL; else unset PIP_INDEX_URL; fi; \
    if [ -n "${PIP_FIND_LINKS}" ]; then export PIP_FIND_LINKS="/src/${PIP_FIND_LINKS}"; else unset PIP_FIND_LINKS; fi; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/pip install --upgrade pip; \
    /opt/venv/bin/pip install --extra-index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"; \
    /opt/venv/bin/pip install /src; \
    /opt/venv/bin/bmex-wf --version; \
    /opt/venv/bin/python -c "import bmex_wf.cli.participant, bmex_wf.bids.inputs, bmex_wf.workflows.participant"

# ---------------------------------------------------------------- runtime stage
FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 --shell /bin/bash bmex \
 && mkdir -p /models /work \
 && chown bmex:bmex /models /work
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    BMEX_MODELS_DIR=/models \
    NIPYPE_NO_ET=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    HOME=/home/bmex \
    BMEX_CONTAINER_IMAGE=bmex-wf
USER bmex
WORKDIR /work
ENTRYPOINT ["bmex-wf"]
CMD ["--help"]
