# syntax=docker/dockerfile:1.7
#
# The compute server: the untrusted Controller, on Gramine's published image. With the
# Docker Engine's socket it starts the signed enclave images as containers
# (--launcher docker); on a host without an engine, the enclaves image itself runs the
# Controller with --launcher direct (see docs/deploy-sgx.md).
#
#   docker build -f deploy/images/compute.Dockerfile -t cleanroom/compute-sgx:VERSION .

ARG GRAMINE_IMAGE=gramineproject/gramine:stable-noble
FROM ${GRAMINE_IMAGE}

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DEBIAN_FRONTEND=noninteractive

RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common gnupg \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
 && rm -rf /var/lib/apt/lists/*

RUN python3.11 -m venv /opt/cleanroom/venv
COPY pyproject.toml README.md /src/
COPY src /src/src
RUN /opt/cleanroom/venv/bin/pip install /src && rm -rf /src
ENV PATH=/opt/cleanroom/venv/bin:$PATH

# The data directory must have the same path inside and on the host: the Controller hands
# its room directories to the Docker Engine as bind mounts by that path.
VOLUME ["/var/lib/cleanroom/compute"]
EXPOSE 8081
ENTRYPOINT ["cleanroom", "server", "compute", "--tee", "gramine", "--launcher", "docker", \
            "--host", "0.0.0.0", "--data-dir", "/var/lib/cleanroom/compute"]
