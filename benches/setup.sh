#!/usr/bin/env bash
# Installs what `cargo bench --bench compare` measures against and with: nginx and HAProxy from
# Debian (their daemons are not started), wrk (Debian) and oha (crates.io).
set -euo pipefail
need() { command -v "$1" >/dev/null 2>&1; }
pkgs=()
need nginx || [ -x /usr/sbin/nginx ] || pkgs+=(nginx-light)
need haproxy || [ -x /usr/sbin/haproxy ] || pkgs+=(haproxy)
need wrk || pkgs+=(wrk)
need taskset || pkgs+=(util-linux)
if [ ${#pkgs[@]} -gt 0 ]; then
  apt-get update -qq
  # policy-rc.d 101: do not start the packaged daemons (unless the machine has its own policy).
  made_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && made_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}"
  [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
fi
need oha || cargo install oha --locked
