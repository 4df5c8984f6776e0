#!/bin/sh
# Starts one cleanroom Gramine enclave (attester or worker) and the relay the Controller
# reaches it through: the entrypoint of the enclave images, and what the direct launcher
# runs in bubblewrap.
#
# It runs OUTSIDE the enclave, as untrusted as the host. The enclave listens on loopback in
# this network namespace (Gramine's Unix sockets do not reach the host); socat carries the
# Controller's Unix socket to it, and moves only what the Controller would relay anyway:
# every answer is checked by a client or an enclave. The enclave's output (no secret: the
# services log sizes and checks only) goes to a log in its room directory, where the
# Controller reads a refusal's last line.
set -eu

role="${1:?usage: enclave-entrypoint attester|worker}"
gramine_dir="${CLEANROOM_GRAMINE_DIR:-/opt/cleanroom/gramine}"
case "$role" in
  attester) port=7100 ;;
  worker) port=7101 ;;
  *)
    echo "enclave-entrypoint: no enclave named $role" >&2
    exit 2
    ;;
esac

socat "UNIX-LISTEN:/cleanroom/socket/enclave.sock,fork,mode=600,unlink-early" \
  "TCP:127.0.0.1:$port" &
exec gramine-sgx "$gramine_dir/$role" >>"/cleanroom/room/$role.log" 2>&1
