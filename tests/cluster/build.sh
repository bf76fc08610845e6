#!/usr/bin/env bash
# Builds the real Kubernetes control plane used by ferry's cluster tests: kube-apiserver,
# kube-controller-manager and kubectl from k8s.io/kubernetes at one pinned release, and etcd at a
# pinned 3.5.x, all from Go modules. Output goes to a cache outside the repo; when the binaries are
# already there it does nothing. Prints the bin directory on its last line. With FERRY_K8S_NODES=1
# it also builds kubelet, kube-proxy and kube-scheduler (for tests/deploy.rs's nodes), from the
# same module graph; what is already cached is not built again.
#
#   tests/cluster/build.sh            # build or reuse
#   FERRY_K8S_NODES=1 tests/cluster/build.sh
#   FERRY_K8S_CACHE=/some/dir tests/cluster/build.sh
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.5.35}"
CACHE="${FERRY_K8S_CACHE:-$HOME/.cache/ferry-k8s}"
BIN="$CACHE/k8s-$K8S_VERSION-etcd-$ETCD_VERSION/bin"
K8S_TOOLS=(kube-apiserver kube-controller-manager kubectl)
[ "${FERRY_K8S_NODES:-0}" = 1 ] && K8S_TOOLS+=(kube-scheduler kubelet kube-proxy)
TOOLS=("${K8S_TOOLS[@]}" etcd)

have_all() { for t in "${TOOLS[@]}"; do [ -x "$BIN/$t" ] || return 1; done; }
if have_all; then
  echo "$BIN"
  exit 0
fi
command -v go >/dev/null || { echo "build.sh: go is required (this machine kind ships it)" >&2; exit 1; }

# k8s.io/kubernetes v1.Y.Z publishes its staging modules as k8s.io/<name> v0.Y.Z.
STAGING_VERSION="v0.${K8S_VERSION#v1.}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$BIN"
missing_k8s=()
for t in "${K8S_TOOLS[@]}"; do [ -x "$BIN/$t" ] || missing_k8s+=("$t"); done
export GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0 GOTOOLCHAIN=local

echo "build.sh: building ${missing_k8s[*]:-} $([ -x "$BIN/etcd" ] || echo etcd) (Kubernetes $K8S_VERSION, staging $STAGING_VERSION; etcd $ETCD_VERSION) into $BIN" >&2
start=$(date +%s)

if [ ${#missing_k8s[@]} -gt 0 ]; then

# --- Kubernetes: a wrapper module that requires k8s.io/kubernetes and replaces every staging
# module (k8s.io/kubernetes's own go.mod points them at ./staging/..., which a dependency cannot use).
mkdir -p "$WORK/k8s" && cd "$WORK/k8s"
go mod init ferry.invalid/k8sbuild >/dev/null 2>&1
K8S_GOMOD="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
[ -f "$K8S_GOMOD" ] || { echo "build.sh: cannot download k8s.io/kubernetes@$K8S_VERSION" >&2; exit 1; }
go mod edit -require="k8s.io/kubernetes@$K8S_VERSION"
staging=$(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/src/k8s.io/[a-z0-9-]*$#\1#p' "$K8S_GOMOD")
[ -n "$staging" ] || { echo "build.sh: found no staging replaces in $K8S_GOMOD" >&2; exit 1; }
for m in $staging; do
  go mod edit -replace="$m=$m@$STAGING_VERSION"
done
# Keep the release's own pins for everything else (replace directives of a dependency are ignored).
cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
GO
go mod tidy -e >/dev/null 2>&1 || true
for t in "${missing_k8s[@]}"; do
  echo "build.sh: go build $t" >&2
  go build -trimpath -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION" \
    -o "$BIN/$t.tmp" "k8s.io/kubernetes/cmd/$t"
  mv "$BIN/$t.tmp" "$BIN/$t"
done
fi

# --- etcd: its server module has relative replaces too; a wrapper main that calls etcdmain uses the
# published go.etcd.io/etcd/*/v3 modules instead.
if [ ! -x "$BIN/etcd" ]; then
mkdir -p "$WORK/etcd" && cd "$WORK/etcd"
go mod init ferry.invalid/etcdbuild >/dev/null 2>&1
cat > main.go <<'GO'
// Command etcd runs the etcd server of the pinned go.etcd.io/etcd/server/v3 release.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
go mod edit -require="go.etcd.io/etcd/server/v3@$ETCD_VERSION"
go mod tidy >/dev/null
echo "build.sh: go build etcd" >&2
go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" .
mv "$BIN/etcd.tmp" "$BIN/etcd"
fi

echo "build.sh: done in $(( $(date +%s) - start ))s; cache $(du -sh "$CACHE" | cut -f1), module cache $(du -sh "$(go env GOMODCACHE)" 2>/dev/null | cut -f1)" >&2
echo "$BIN"
