#!/usr/bin/env bash
# Builds the Gateway API conformance suite (sigs.k8s.io/gateway-api/conformance, `go test -c`) and
# its echo backend (conformance/echo-basic) from Go modules at one pinned release, and copies that
# release's standard-channel CRDs beside them, into a cache outside the repo; does nothing when they
# are already there. Prints the directory on its last line. tests/gateway_api.rs uses it.
#
# v1.6.3, not v1.7.0: v1.6.3 builds with this machine's Go (1.26), v1.7.0 needs Go 1.27 through
# GOTOOLCHAIN (a second toolchain on every machine and in every shell) for no test ferry needs.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
VERSION="${GATEWAY_API_VERSION:-v1.6.3}"
CACHE="${FERRY_TOOLS_CACHE:-$HOME/.cache/ferry-tools}"
DIR="$CACHE/gateway-api-$VERSION"
if [ -x "$DIR/conformance.test" ] && [ -x "$DIR/echo-basic" ] && [ -f "$DIR/crds.yaml" ]; then
  echo "$DIR"
  exit 0
fi
command -v go >/dev/null || { echo "gateway-conformance.sh: go is required (this machine kind ships it)" >&2; exit 1; }
start=$(date +%s)
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0 GOTOOLCHAIN=local
mkdir -p "$DIR" && cd "$WORK"
go mod init ferry.invalid/gwconformance >/dev/null 2>&1
# The conformance module points sigs.k8s.io/gateway-api at "../" (its repository); a dependency's
# replace is ignored, so pin the same release here.
go mod edit -require="sigs.k8s.io/gateway-api/conformance@$VERSION" \
  -replace="sigs.k8s.io/gateway-api=sigs.k8s.io/gateway-api@$VERSION"
cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "sigs.k8s.io/gateway-api/conformance"
	_ "sigs.k8s.io/gateway-api/conformance/echo-basic"
)
GO
go mod tidy -e >/dev/null 2>&1 || true
echo "gateway-conformance.sh: go test -c sigs.k8s.io/gateway-api/conformance@$VERSION" >&2
go test -c -trimpath -ldflags "-s -w" -o "$DIR/conformance.test.tmp" sigs.k8s.io/gateway-api/conformance
echo "gateway-conformance.sh: go build echo-basic" >&2
go build -trimpath -ldflags "-s -w" -o "$DIR/echo-basic.tmp" sigs.k8s.io/gateway-api/conformance/echo-basic
cp "$(bash "$HERE/gateway-crds.sh" | tail -n 1)" "$DIR/crds.yaml.tmp"
mv "$DIR/conformance.test.tmp" "$DIR/conformance.test"
mv "$DIR/echo-basic.tmp" "$DIR/echo-basic"
mv "$DIR/crds.yaml.tmp" "$DIR/crds.yaml"
echo "gateway-conformance.sh: done in $(( $(date +%s) - start ))s" >&2
echo "$DIR"
