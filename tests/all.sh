#!/usr/bin/env bash
# Installs what the tests need on this machine if it is missing, then runs every test: the
# README's test command (`bash tests/all.sh`); `.ci/run` runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# Installing packages needs root: sudo when not root (CI runs as root).
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need() { command -v "$1" >/dev/null 2>&1; }

# Rust comes with the machine image (rustup); fmt and clippy are its components.
if ! need cargo; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
need cargo || { echo "tests: cargo not found; this machine kind ships Rust via rustup" >&2; exit 1; }
# The binary tests signal ferry with kill(1) (procps); the cluster tests need iproute2 (network
# namespaces), openssl (certificates), curl (readiness probes), python3 (pod upstreams) and go (to
# build kube-apiserver, kube-controller-manager, kubectl and etcd from Go modules).
missing=()
need kill || missing+=(procps)
need ip || missing+=(iproute2)
need openssl || missing+=(openssl)
need curl || missing+=(curl)
need python3 || missing+=(python3)
# tests/browser.rs loads a page through ferry in headless Chromium.
need chromium || missing+=(chromium)
# tests/status_page.rs drives it over WebDriver.
need chromedriver || missing+=(chromium-driver)
# tests/import_nginx.rs runs each imported config in real nginx too (its stream module for `stream`).
need nginx || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || missing+=(libnginx-mod-stream)
# tests/deploy.rs runs deploy/ on real nodes: Debian's containerd (1.6), runc, the CNI plugins and
# iptables (kube-proxy) inside network namespaces of its own; gcc builds the pause image, objcopy
# (binutils) strips the image's ferry binary.
need containerd || missing+=(containerd)
need runc || missing+=(runc)
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
need iptables || missing+=(iptables)
need objcopy || missing+=(binutils)
if [ ${#missing[@]} -gt 0 ]; then
  as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
need go || { [ -x /usr/local/go/bin/go ] && export PATH="/usr/local/go/bin:$PATH"; }
need go || { echo "tests: go not found; this machine kind ships it" >&2; exit 1; }

# tests/fuzz.rs runs libFuzzer over ferry's fuzz targets where a nightly toolchain exists (it replays
# the committed corpus on stable either way): cargo-fuzz comes from crates.io, and libfuzzer-sys
# compiles libFuzzer with a C++ compiler.
if command -v rustup >/dev/null 2>&1 && rustup run nightly rustc --version >/dev/null 2>&1; then
  if ! need c++; then
    as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++
  fi
  cargo +nightly fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked
else
  echo "tests: no nightly toolchain; tests/fuzz.rs will replay the fuzz corpus without running libFuzzer"
fi

# Build (or reuse from ~/.cache/ferry-k8s) the real control plane, and the kubelet, kube-proxy and
# kube-scheduler of the same release for tests/deploy.rs, before the tests time anything.
FERRY_K8S_NODES=1 bash tests/cluster/build.sh

# tests/h2spec.rs runs h2spec (HTTP/2 conformance), built from Go modules and cached like the above.
bash tests/tools/h2spec.sh

# A fresh clone builds ferry twice (the tests, and the fuzz targets with their own flags):
# about 10 GB. Say so up front when the disk is short, rather than failing mid-link.
avail_kb=$(df -Pk . | awk 'NR==2 {print $4}')
if [ "${avail_kb:-0}" -lt $((12 * 1024 * 1024)) ]; then
  echo "tests: warning: only $((avail_kb / 1024 / 1024)) GB free here; the build needs about 10 GB" >&2
fi
# CI builds once from clean: incremental state would only take disk.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi

cargo --version
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings

cargo test
