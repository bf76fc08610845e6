#!/usr/bin/env bash
# Starts a real Kubernetes control plane on 127.0.0.1 for ferry's tests:
#   etcd → kube-apiserver (TLS, token auth for an admin, RBAC, service-account keys)
#        → kube-controller-manager (endpoint, endpointslice, endpointslice-mirroring,
#          serviceaccount, serviceaccount-token, namespace, garbagecollector controllers).
# No kubelet, scheduler or kube-proxy: test "pods" are network namespaces (see the Rust harness).
# With FERRY_K8S_ADDRESS set (the host's address on node.sh's bridge), the apiserver serves and
# advertises there (the `kubernetes` Service gets its endpoint), and kube-scheduler plus the
# controllers real pods need (deployment, replicaset, podgc, disruption, root-ca-cert-publisher,
# nodelifecycle: it lifts the not-ready taint a kubelet registers its node with)
# run too, for the nodes node.sh starts.
#
#   tests/cluster/up.sh DIR      # writes DIR/kubeconfig, DIR/pids, DIR/env, logs in DIR/*.log
#   tests/cluster/down.sh DIR    # stops exactly the processes in DIR/pids
set -euo pipefail

DIR="${1:?usage: up.sh DIR}"
HERE="$(cd "$(dirname "$0")" && pwd)"
BIN="${FERRY_K8S_BIN:-$("$HERE/build.sh" | tail -n 1)}"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
[ -e "$DIR/pids" ] && { echo "up.sh: $DIR/pids exists; run down.sh $DIR first" >&2; exit 1; }
: > "$DIR/pids"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
fail() {
  echo "up.sh: $*" >&2
  for f in "$DIR"/*.log; do echo "--- tail $f" >&2; tail -n 20 "$f" >&2; done
  "$HERE/down.sh" "$DIR" >&2 || true
  exit 1
}

ETCD_CLIENT=$(free_port); ETCD_PEER=$(free_port); API_PORT=$(free_port)
TOKEN="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
ADDR="${FERRY_K8S_ADDRESS:-127.0.0.1}"
if [ "$ADDR" = 127.0.0.1 ]; then
  RECONCILER=none
  CONTROLLERS=endpoint,endpointslice,endpointslicemirroring,serviceaccount,serviceaccount-token,namespace,garbagecollector
else
  for t in kube-scheduler kubelet kube-proxy; do
    [ -x "$BIN/$t" ] || { echo "up.sh: $BIN/$t missing (FERRY_K8S_NODES=1 build.sh builds it)" >&2; exit 1; }
  done
  RECONCILER=lease
  CONTROLLERS=endpoint,endpointslice,endpointslicemirroring,serviceaccount,serviceaccount-token,namespace,garbagecollector,deployment,replicaset,podgc,disruption,root-ca-cert-publisher,nodelifecycle
fi

# --- certificates: a CA, the apiserver's serving cert (127.0.0.1, localhost, the kubernetes
# Service IP), and the service-account signing key pair.
PKI="$DIR/pki"; mkdir -p "$PKI"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=ferry-test-ca" \
  -keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
  -keyout "$PKI/apiserver.key" -out "$PKI/apiserver.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,IP:%s,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' "$ADDR" > "$PKI/ext.cnf"
openssl x509 -req -in "$PKI/apiserver.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
  -days 2 -extfile "$PKI/ext.cnf" -out "$PKI/apiserver.crt" 2>/dev/null
openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
printf '%s,ferry-test-admin,ferry-test-admin,system:masters\n' "$TOKEN" > "$PKI/tokens.csv"

# --- etcd
"$BIN/etcd" --name ferry-test --data-dir "$DIR/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT" --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER" \
  --initial-cluster "ferry-test=http://127.0.0.1:$ETCD_PEER" --unsafe-no-fsync \
  --log-level warn > "$DIR/etcd.log" 2>&1 &
echo "etcd $!" >> "$DIR/pids"
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$ETCD_CLIENT/health" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$ETCD_CLIENT/health" >/dev/null || fail "etcd did not become healthy"

# --- kube-apiserver
"$BIN/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_CLIENT" \
  --bind-address "$ADDR" --advertise-address "$ADDR" --secure-port "$API_PORT" \
  --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
  --client-ca-file "$PKI/ca.crt" --token-auth-file "$PKI/tokens.csv" \
  --authorization-mode RBAC \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
  --service-cluster-ip-range 10.96.0.0/24 \
  --endpoint-reconciler-type "$RECONCILER" --kubelet-preferred-address-types InternalIP \
  --allow-privileged=false --profiling=false \
  > "$DIR/kube-apiserver.log" 2>&1 &
echo "kube-apiserver $!" >> "$DIR/pids"

cat > "$DIR/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: ferry-test
  cluster:
    server: https://$ADDR:$API_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: ferry-test-admin
  user:
    token: $TOKEN
contexts:
- name: ferry-test
  context: { cluster: ferry-test, user: ferry-test-admin, namespace: default }
current-context: ferry-test
KC

ready=""
for _ in $(seq 1 600); do
  if curl -sf --cacert "$PKI/ca.crt" -H "Authorization: Bearer $TOKEN" "https://$ADDR:$API_PORT/readyz" >/dev/null 2>&1; then
    ready=1; break
  fi
  kill -0 "$(awk '$1=="kube-apiserver"{print $2}' "$DIR/pids")" 2>/dev/null || fail "kube-apiserver exited"
  sleep 0.1
done
[ -n "$ready" ] || fail "kube-apiserver not ready after 60s"

# --- kube-controller-manager (uses the admin kubeconfig; no leader election, no serving port)
"$BIN/kube-controller-manager" \
  --kubeconfig "$DIR/kubeconfig" \
  --controllers "$CONTROLLERS" \
  --service-account-private-key-file "$PKI/sa.key" --root-ca-file "$PKI/ca.crt" \
  --leader-elect=false --secure-port 0 --concurrent-endpoint-syncs 5 \
  > "$DIR/kube-controller-manager.log" 2>&1 &
echo "kube-controller-manager $!" >> "$DIR/pids"

# The default ServiceAccount appearing proves the controller manager is working.
for _ in $(seq 1 300); do
  "$BIN/kubectl" --kubeconfig "$DIR/kubeconfig" -n default get serviceaccount default >/dev/null 2>&1 && break
  kill -0 "$(awk '$1=="kube-controller-manager"{print $2}' "$DIR/pids")" 2>/dev/null || fail "kube-controller-manager exited"
  sleep 0.1
done
"$BIN/kubectl" --kubeconfig "$DIR/kubeconfig" -n default get serviceaccount default >/dev/null 2>&1 \
  || fail "kube-controller-manager did not create the default ServiceAccount"

if [ "$ADDR" != 127.0.0.1 ]; then
  "$BIN/kube-scheduler" --kubeconfig "$DIR/kubeconfig" --leader-elect=false --secure-port 0 \
    > "$DIR/kube-scheduler.log" 2>&1 &
  echo "kube-scheduler $!" >> "$DIR/pids"
fi

cat > "$DIR/env" <<ENV
FERRY_K8S_BIN=$BIN
KUBECONFIG=$DIR/kubeconfig
FERRY_K8S_API=https://$ADDR:$API_PORT
ENV
echo "up.sh: control plane ready at https://$ADDR:$API_PORT (kubeconfig $DIR/kubeconfig)" >&2
