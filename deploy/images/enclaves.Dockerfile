# syntax=docker/dockerfile:1.7
#
# The Attester and Worker enclaves as Gramine Shielded Containers, built the way GSC builds
# one (Gramine's published image, the application, a signing stage whose key never reaches
# a layer), but with the manifest cleanroom renders from its own measured file list instead
# of GSC's scan of every file in the image: the enclave trusts exactly what
# `cleanroom measure IMAGE --list` prints, so a third party can reproduce MRENCLAVE.
#
#   DOCKER_BUILDKIT=1 docker build -f deploy/images/enclaves.Dockerfile \
#       --secret id=enclave-key,src=enclave-key.pem --target worker -t cleanroom/worker-sgx:VERSION .
#   (deploy/build-enclaves.sh builds both targets and extracts the signatures)
#
# enclave-key.pem is the release's RSA-3072 enclave signing key (exponent 3), e.g. from
# gramine-sgx-gen-private-key. Pin GRAMINE_IMAGE by digest for a reproducible build.

ARG GRAMINE_IMAGE=gramineproject/gramine:stable-noble

# -- the application: interpreter, cleanroom, runtimes, the EGETKEY helper, measured ----------
FROM ${GRAMINE_IMAGE} AS app

# Hash-based bytecode (py_compile honours SOURCE_DATE_EPOCH): the same sources give the same
# .pyc files in every build, so the same MRENCLAVE.
ENV SOURCE_DATE_EPOCH=0 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DEBIAN_FRONTEND=noninteractive

# cleanroom and its runtimes run on Python 3.11 (deadsnakes on Ubuntu 24.04); gcc and the
# headers build the EGETKEY helper; socat is the entrypoint's relay (outside the enclave);
# libseccomp is the run supervisor's (measured in the Worker image, as everything it loads).
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common gnupg \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
      python3.11 python3.11-venv python3.11-dev gcc libc6-dev socat libseccomp2 \
 && rm -rf /var/lib/apt/lists/*

# A venv with a copy of the interpreter (not a link): Gramine starts it by this path.
RUN python3.11 -m venv --copies /opt/cleanroom/venv
COPY pyproject.toml README.md /src/
COPY src /src/src
RUN /opt/cleanroom/venv/bin/pip install --no-compile /src \
 && rm -rf /src

ENV PATH=/opt/cleanroom/venv/bin:$PATH
RUN python -m cleanroom.tee.gramine.native \
 && cleanroom runtime install \
 && cleanroom measure --write \
 && install -D -m 0755 \
      "$(python -c 'import cleanroom.controller.launchers.gramine as g; print(g.entrypoint_script())')" \
      /opt/cleanroom/bin/enclave-entrypoint \
 && cleanroom gramine manifest worker --out /opt/cleanroom/gramine

# -- signing: the key is a BuildKit secret (a tmpfs for this one command), never a layer -------
FROM app AS signed
RUN --mount=type=secret,id=enclave-key,required=true \
    gramine-sgx-sign --date 0000-00-00 --key /run/secrets/enclave-key \
      --manifest /opt/cleanroom/gramine/worker.manifest \
      --output /opt/cleanroom/gramine/worker.manifest.sgx \
 && cleanroom gramine manifest attester --out /opt/cleanroom/gramine \
      --worker-sig /opt/cleanroom/gramine/worker.sig \
 && gramine-sgx-sign --date 0000-00-00 --key /run/secrets/enclave-key \
      --manifest /opt/cleanroom/gramine/attester.manifest \
      --output /opt/cleanroom/gramine/attester.manifest.sgx \
 && cleanroom gramine check /opt/cleanroom/gramine/worker.manifest.sgx --image worker --files \
 && cleanroom gramine check /opt/cleanroom/gramine/attester.manifest.sgx --image attester --files \
 && cleanroom measure --gramine /opt/cleanroom/gramine/worker.sig \
 && cleanroom measure --gramine /opt/cleanroom/gramine/attester.sig

# -- the images the Controller starts ----------------------------------------------------------
FROM app AS enclaves
# The signed manifests, SIGSTRUCTs and the Attester's configuration (a trusted file).
COPY --from=signed /opt/cleanroom/gramine/ /opt/cleanroom/gramine/
WORKDIR /
ENTRYPOINT ["/opt/cleanroom/bin/enclave-entrypoint"]

FROM enclaves AS attester
LABEL org.cleanroom.role="attester"
CMD ["attester"]

FROM enclaves AS worker
LABEL org.cleanroom.role="worker"
CMD ["worker"]
