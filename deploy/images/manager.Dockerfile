# syntax=docker/dockerfile:1.7
#
# The management server (outside the TEE model: it can deny service, never read data).
#
#   docker build -f deploy/images/manager.Dockerfile -t cleanroom/manager:VERSION .

FROM python:3.11-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY pyproject.toml README.md /src/
COPY src /src/src
RUN pip install /src && rm -rf /src \
 && useradd --system --home-dir /var/lib/cleanroom --create-home cleanroom

USER cleanroom
VOLUME ["/var/lib/cleanroom/manager"]
EXPOSE 8080
ENTRYPOINT ["cleanroom", "server", "manager", "--host", "0.0.0.0", \
            "--data-dir", "/var/lib/cleanroom/manager"]
