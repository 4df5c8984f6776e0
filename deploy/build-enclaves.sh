#!/usr/bin/env bash
# Builds and signs the enclave images, the compute server's and the manager's, and writes
# the signed enclaves' SIGSTRUCTs to OUT_DIR (for `cleanroom gramine publish`).
#
#   deploy/build-enclaves.sh ENCLAVE_KEY.pem [OUT_DIR]
#
# Needs Docker with BuildKit. The key (RSA-3072, exponent 3) is passed as a build secret:
# it is never written to an image layer. Set GRAMINE_IMAGE to a digest-pinned base image
# for a reproducible build.
set -euo pipefail
cd "$(dirname "$0")/.."

key="${1:?usage: deploy/build-enclaves.sh ENCLAVE_KEY.pem [OUT_DIR]}"
out="${2:-dist/enclaves}"
version="$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')"
base=()
if [ -n "${GRAMINE_IMAGE:-}" ]; then
  base=(--build-arg "GRAMINE_IMAGE=${GRAMINE_IMAGE}")
fi

export DOCKER_BUILDKIT=1
for target in attester worker; do
  docker build -f deploy/images/enclaves.Dockerfile "${base[@]}" \
    --secret id=enclave-key,src="$key" \
    --target "$target" -t "cleanroom/${target}-sgx:${version}" .
done
docker build -f deploy/images/compute.Dockerfile "${base[@]}" -t "cleanroom/compute-sgx:${version}" .
docker build -f deploy/images/manager.Dockerfile -t "cleanroom/manager:${version}" .

mkdir -p "$out"
for image in attester worker; do
  for suffix in sig manifest.sgx; do
    docker run --rm --entrypoint cat "cleanroom/${image}-sgx:${version}" \
      "/opt/cleanroom/gramine/${image}.${suffix}" >"$out/${image}.${suffix}"
  done
done
echo "signed enclaves of cleanroom ${version} in ${out}:"
echo "  cleanroom measure --gramine ${out}/worker.sig"
echo "  cleanroom gramine publish --attester-sig ${out}/attester.sig --worker-sig ${out}/worker.sig --key RELEASE_KEY.pem --out ${out}/measurements.json"
