#!/usr/bin/env bash
# Builds h2spec (the HTTP/2 conformance tester, github.com/summerwind/h2spec) from Go modules at a
# pinned release into a cache outside the repo; does nothing when it is already there. Prints the
# binary's path on its last line. tests/h2spec.rs finds it there (or at $FERRY_H2SPEC).
set -euo pipefail
VERSION="${H2SPEC_VERSION:-v2.2.1+incompatible}"
CACHE="${FERRY_TOOLS_CACHE:-$HOME/.cache/ferry-tools}"
DIR="$CACHE/h2spec-$VERSION"
if [ -x "$DIR/h2spec" ]; then
  echo "$DIR/h2spec"
  exit 0
fi
command -v go >/dev/null || { echo "h2spec.sh: go is required (this machine kind ships it)" >&2; exit 1; }
mkdir -p "$DIR"
GOBIN="$DIR" CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS="-buildvcs=false" \
  go install "github.com/summerwind/h2spec/cmd/h2spec@$VERSION" >&2
echo "$DIR/h2spec"
