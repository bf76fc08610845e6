#!/usr/bin/env bash
# The Gateway API standard-channel CRDs of one pinned release (the same as the conformance suite's,
# tests/tools/gateway-conformance.sh), taken from the sigs.k8s.io/gateway-api Go module into a
# cache outside the repo as one crds.yaml; does nothing when it is already there. Prints the file's
# path on its last line. tests/cluster.rs applies it.
set -euo pipefail
VERSION="${GATEWAY_API_VERSION:-v1.6.3}"
CACHE="${FERRY_TOOLS_CACHE:-$HOME/.cache/ferry-tools}"
OUT="$CACHE/gateway-api-crds-$VERSION.yaml"
if [ -f "$OUT" ]; then
  echo "$OUT"
  exit 0
fi
command -v go >/dev/null || { echo "gateway-crds.sh: go is required (this machine kind ships it)" >&2; exit 1; }
mkdir -p "$CACHE"
DIR="$(GOFLAGS=-mod=mod GOTOOLCHAIN=local go mod download -json "sigs.k8s.io/gateway-api@$VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
[ -d "$DIR/config/crd/standard" ] || { echo "gateway-crds.sh: cannot download sigs.k8s.io/gateway-api@$VERSION" >&2; exit 1; }
for f in "$DIR"/config/crd/standard/gateway.networking.k8s.io_*.yaml; do
  # ValidatingAdmissionPolicies (vap_*) are not CRDs.
  case "$f" in *_vap_*) continue ;; esac
  echo "---"
  cat "$f"
done > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "$OUT"
