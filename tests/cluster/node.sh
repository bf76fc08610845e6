#!/usr/bin/env bash
# Kubernetes nodes for ferry's end-to-end deploy test: each node is a network namespace plus a
# mount namespace of its own (held by one `sleep` process), running Debian's containerd (1.6, runc,
# CNI bridge) and the kubelet and kube-proxy built by build.sh, joined to the control plane of
# up.sh. Nothing here touches the host's network setup: the nodes hang off a bridge of the
# harness's own, each pod CIDR is routed to its node, and CNI's bridge, iptables rules and
# ip_forward live in the node's namespace. Images come from `ctr images import` (no registry).
#
#   tests/cluster/node.sh net DIR [NODES]    # namespaces, links, routes; writes DIR/nodes.env
#   FERRY_K8S_ADDRESS=$HOST_IP tests/cluster/up.sh DIR   # control plane on the nodes' bridge
#   tests/cluster/node.sh start DIR IMAGE.tar...        # containerd, kubelet, kube-proxy per node
#                                   # (FERRY_K8S_ENV=CPDIR/env when up.sh ran in another DIR)
#   tests/cluster/node.sh down DIR           # stops exactly what it started, removes every link,
#                                            # namespace, cgroup and mount it made
set -euo pipefail

cmd="${1:?usage: node.sh net|start|down DIR ...}"
DIR="${2:?usage: node.sh $cmd DIR}"
HERE="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"

log() { echo "node.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# Paths containerd, CNI and the kubelet use whatever they are told (pod network namespaces, shim
# sockets, IPAM state, pod logs, the kubelet's device-plugin socket): tmpfs of each node's own.
NODE_TMPFS="/run/netns /run/containerd /var/lib/cni /var/log/pods /var/log/containers /var/lib/kubelet"

# Candidate /24s for the node link and /16s for the pod CIDRs (one /24 per node); the first pair
# that overlaps no route on this machine is used.
LINK_CANDIDATES=(10.213.0 172.30.213 192.168.213)
POD_CANDIDATES=(10.214 10.215 172.29)

overlaps() { # $1 = a CIDR; true if any route on this machine overlaps it
  python3 - "$1" <<'PY'
import ipaddress, subprocess, sys
mine = ipaddress.ip_network(sys.argv[1])
out = subprocess.run(["ip", "-4", "route", "show", "table", "all"], capture_output=True, text=True).stdout
for line in out.splitlines():
    w = line.split()
    if not w: continue
    dst = w[1] if w[0] in ("local", "broadcast", "unreachable", "blackhole") and len(w) > 1 else w[0]
    if dst == "default": continue
    try: theirs = ipaddress.ip_network(dst, strict=False)
    except ValueError: continue
    if theirs.overlaps(mine): sys.exit(0)
sys.exit(1)
PY
}

net() {
  local nodes="${1:-1}"
  [ -e "$DIR/nodes.env" ] && die "$DIR/nodes.env exists; run node.sh down $DIR first"
  local tag="fn$(( $$ % 100000 ))" link="" pods=""
  for c in "${LINK_CANDIDATES[@]}"; do overlaps "$c.0/24" || { link=$c; break; }; done
  for c in "${POD_CANDIDATES[@]}"; do overlaps "$c.0.0/16" || { pods=$c; break; }; done
  [ -n "$link" ] && [ -n "$pods" ] || die "every candidate subnet collides with a route here"
  : > "$DIR/node-pids"
  {
    echo "NODES=$nodes"
    echo "TAG=$tag"
    echo "BRIDGE=${tag}br"
    echo "HOST_IP=$link.1"
    echo "CLUSTER_CIDR=$pods.0.0/16"
  } > "$DIR/nodes.env"
  ip link add "${tag}br" type bridge
  ip addr add "$link.1/24" dev "${tag}br"
  ip link set "${tag}br" up
  for i in $(seq 1 "$nodes"); do
    local ns="${tag}n$i" nip="$link.$((i + 1))" cidr="$pods.$i.0/24" nd="$DIR/node$i"
    mkdir -p "$nd"
    ip netns add "$ns"
    ip link add "${tag}h$i" type veth peer name "${tag}p$i"
    ip link set "${tag}p$i" netns "$ns"
    ip link set "${tag}h$i" master "${tag}br" up
    nsenter --net="/run/netns/$ns" sh -euc "
      ip link set lo up
      ip link set ${tag}p$i name eth0
      ip addr add $nip/24 dev eth0
      ip link set eth0 up
      ip route add default via $link.1
      sysctl -qw net.ipv4.ip_forward=1
      sysctl -qw net.ipv4.conf.all.route_localnet=1
    "
    # The other nodes' pods, straight over the bridge.
    for j in $(seq 1 "$nodes"); do
      [ "$j" = "$i" ] || nsenter --net="/run/netns/$ns" ip route add "$pods.$j.0/24" via "$link.$((j + 1))"
    done
    ip route add "$cidr" via "$nip" dev "${tag}br"
    # The node's mount namespace: private copies of the host's mounts, with the paths containerd,
    # CNI and the kubelet insist on (pod network namespaces, IPAM state, shim sockets, pod logs)
    # on tmpfs of its own, and the three kernel settings the kubelet checks bound to files that
    # already hold its values (protectKernelDefaults: true), so the host's stay as they are.
    printf '1\n' > "$nd/overcommit_memory"; printf '10\n' > "$nd/panic"; printf '1\n' > "$nd/panic_on_oops"
    local d
    for d in $NODE_TMPFS; do
      # A mount point missing on the host is made here and removed again by down.
      [ -e "$d" ] || { mkdir -p "$d"; echo "$d" >> "$DIR/dirs-made"; }
    done
    nsenter --net="/run/netns/$ns" unshare --mount --propagation private sh -euc "
      for d in $NODE_TMPFS; do mount -t tmpfs -o mode=755 tmpfs \$d; done
      mount --bind $nd/overcommit_memory /proc/sys/vm/overcommit_memory
      mount --bind $nd/panic /proc/sys/kernel/panic
      mount --bind $nd/panic_on_oops /proc/sys/kernel/panic_on_oops
      echo ready > $nd/holder.ready
      exec sleep infinity
    " > "$nd/holder.log" 2>&1 &
    echo "holder$i $!" >> "$DIR/node-pids"
    for _ in $(seq 1 50); do [ -e "$nd/holder.ready" ] && break; sleep 0.1; done
    [ -e "$nd/holder.ready" ] || die "node $i's namespace holder did not start: $(cat "$nd/holder.log")"
    {
      echo "NODE${i}_NETNS=$ns"
      echo "NODE${i}_IP=$nip"
      echo "NODE${i}_POD_CIDR=$cidr"
      echo "NODE${i}_HOLDER=$(awk -v k="holder$i" '$1==k{print $2}' "$DIR/node-pids")"
    } >> "$DIR/nodes.env"
    # Refuse to go on unless the kernel sends the node's pods through our bridge.
    local dev
    dev=$(ip -o route get "$pods.$i.2" | sed -n 's/.* dev \([^ ]*\).*/\1/p')
    [ "$dev" = "${tag}br" ] || die "route to $pods.$i.2 goes through '$dev', not ${tag}br: refusing"
  done
  log "nodes: $nodes on ${tag}br ($link.0/24), pods $pods.0.0/16"
}

# Runs a command in node $1's network and mount namespaces.
in_node() {
  local i=$1; shift
  local holder; holder=$(awk -v k="holder$i" '$1==k{print $2}' "$DIR/node-pids")
  nsenter --target "$holder" --net --mount -- "$@"
}

start() {
  [ -e "$DIR/nodes.env" ] || die "run node.sh net $DIR first"
  local cp_env="${FERRY_K8S_ENV:-$DIR/env}"
  [ -e "$cp_env" ] || die "$cp_env missing: run up.sh first (FERRY_K8S_ENV names its env file)"
  # shellcheck disable=SC1090,SC1091
  . "$DIR/nodes.env"; . "$cp_env"
  local bin="$FERRY_K8S_BIN" images=("$@")
  for t in kubelet kube-proxy; do [ -x "$bin/$t" ] || die "$bin/$t missing: run build.sh"; done
  for t in containerd containerd-shim-runc-v2 runc ctr iptables; do
    command -v "$t" >/dev/null || die "$t is missing (apt: containerd runc iptables)"
  done
  [ -x /usr/lib/cni/bridge ] || die "CNI plugins missing (apt: containernetworking-plugins)"

  # The pause image, from source.
  if [ ! -e "$DIR/pause.tar" ]; then
    gcc -static -O2 -o "$DIR/pause" "$HERE/pause.c"
    python3 "$HERE/mkimage.py" "$DIR/pause.tar" ferry.invalid/pause:1 --entrypoint /pause \
      --user 65535:65535 --file "$DIR/pause=/pause" >&2
  fi
  # This session's cgroup (v1, memory hierarchy): the nodes' pods are accounted under it.
  local own; own=$(awk -F: '$2=="memory"{print $3}' /proc/self/cgroup)
  own="${own%/}"
  for i in $(seq 1 "$NODES"); do
    local nd="$DIR/node$i" nip ns cidr root
    nip=$(eval echo "\$NODE${i}_IP"); ns=$(eval echo "\$NODE${i}_NETNS"); cidr=$(eval echo "\$NODE${i}_POD_CIDR")
    root="$own/ferry-$TAG-node$i"
    echo "$root" > "$nd/cgroup-root"
    mkdir -p "$nd"
    for h in /sys/fs/cgroup/*/; do
      [ -e "$h/cgroup.procs" ] || continue
      # Level by level: a new cpuset cgroup starts empty, so each gets its parent's CPUs and
      # memory nodes before the next can be given them.
      local path="${h%/}" part
      for part in ${root//\// }; do
        [ -d "$path/$part" ] || { mkdir "$path/$part"; echo "$path/$part" >> "$nd/cgroups-made"; }
        if [ -e "$path/$part/cpuset.cpus" ] && [ -z "$(cat "$path/$part/cpuset.cpus")" ]; then
          cat "$path/cpuset.cpus" > "$path/$part/cpuset.cpus"; cat "$path/cpuset.mems" > "$path/$part/cpuset.mems"
        fi
        path="$path/$part"
      done
    done
    mkdir -p "$nd/cni" "$nd/kubelet" "$nd/containerd"
    printf 'nameserver 127.0.0.1\noptions ndots:1\n' > "$nd/resolv.conf"
    cat > "$nd/containerd.toml" <<TOML
version = 2
root = "$nd/containerd/root"
state = "$nd/containerd/state"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.grpc.v1.cri.restart"]
[grpc]
  address = "$nd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "ferry.invalid/pause:1"
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$nd/cni"
TOML
    cat > "$nd/cni/10-ferry-node.conflist" <<JSON
{
  "cniVersion": "0.4.0",
  "name": "ferry-node",
  "plugins": [
    { "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": { "type": "host-local", "ranges": [[{ "subnet": "$cidr" }]], "routes": [{ "dst": "0.0.0.0/0" }] } },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
JSON
    in_node "$i" containerd --config "$nd/containerd.toml" > "$nd/containerd.log" 2>&1 &
    echo "containerd$i $!" >> "$DIR/node-pids"
    local ok=""
    for _ in $(seq 1 100); do
      if in_node "$i" ctr --address "$nd/containerd.sock" version >/dev/null 2>&1; then ok=1; break; fi
      sleep 0.1
    done
    [ -n "$ok" ] || die "containerd on node $i did not start: $(tail -n 20 "$nd/containerd.log")"
    for img in "$DIR/pause.tar" "${images[@]}"; do
      in_node "$i" ctr --address "$nd/containerd.sock" -n k8s.io images import --no-unpack "$img" >&2
    done

    cat > "$nd/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $nip
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
# Reached only inside the node's namespace: the apiserver asks it for logs and exec without a client cert.
authentication: { anonymous: { enabled: true }, webhook: { enabled: false }, x509: {} }
authorization: { mode: AlwaysAllow }
containerRuntimeEndpoint: unix://$nd/containerd.sock
cgroupDriver: cgroupfs
failCgroupV1: false
cgroupRoot: $root
cgroupsPerQOS: true
enforceNodeAllocatable: [pods]
protectKernelDefaults: true
oomScoreAdj: 0
failSwapOn: false
resolvConf: $nd/resolv.conf
podLogsDir: /var/log/pods
maxPods: 40
syncFrequency: 10s
fileCheckFrequency: 10s
nodeStatusUpdateFrequency: 5s
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: { memory.available: 1Mi, nodefs.available: 1%, imagefs.available: 1% }
serializeImagePulls: false
volumePluginDir: $nd/volume-plugins
YAML
    "$bin/kubectl" --kubeconfig "$KUBECONFIG" config view --raw > "$nd/kubeconfig"
    in_node "$i" "$bin/kubelet" --config "$nd/kubelet.yaml" --kubeconfig "$nd/kubeconfig" \
      --root-dir "$nd/kubelet" --cert-dir "$nd/kubelet/pki" --hostname-override "node$i" --node-ip "$nip" --v 1 \
      > "$nd/kubelet.log" 2>&1 &
    echo "kubelet$i $!" >> "$DIR/node-pids"

    cat > "$nd/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: { kubeconfig: $nd/kubeconfig }
mode: iptables
hostnameOverride: node$i
clusterCIDR: $CLUSTER_CIDR
oomScoreAdj: 0
conntrack: { maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s }
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
nodePortAddresses: [primary]
YAML
    in_node "$i" "$bin/kube-proxy" --config "$nd/kube-proxy.yaml" > "$nd/kube-proxy.log" 2>&1 &
    echo "kube-proxy$i $!" >> "$DIR/node-pids"
  done
  log "started $NODES node(s)"
}

# The processes in a node's cgroup tree (its pods' pause and container processes), one per line.
pods_of() {
  local root=$1 h
  for h in /sys/fs/cgroup/*/; do
    [ -d "$h$root" ] && find "$h$root" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -u
}

# SIGKILLs the PIDs the command "$@" prints until it prints none (at most 5 s).
sweep() {
  local left
  for _ in $(seq 1 50); do
    left=$("$@")
    [ -z "$left" ] && return
    # shellcheck disable=SC2086
    kill -9 $left 2>/dev/null
    sleep 0.1
  done
}

# The PIDs in network namespace $1 other than $2 (the holder).
netns_pids_but() { ip netns pids "$1" 2>/dev/null | grep -vx "$2"; }

# Every node's pod processes, swept.
sweep_pods() {
  local i
  for i in $(seq 1 "${NODES:-0}"); do
    [ -e "$DIR/node$i/cgroup-root" ] && sweep pods_of "$(cat "$DIR/node$i/cgroup-root")"
  done
}

down() {
  [ -e "$DIR/node-pids" ] || exit 0
  # Best effort from here on: one step failing must not leave the rest behind.
  set +e
  # shellcheck disable=SC1091
  [ -e "$DIR/nodes.env" ] && . "$DIR/nodes.env"
  local n="${NODES:-0}" i pid
  pid_of() { awk -v k="$1" '$1==k{print $2}' "$DIR/node-pids"; }
  # 1. The kubelets and kube-proxies, gone for good before anything else: a kubelet still
  #    shutting down restarts the containers killed below.
  local daemons=""
  for i in $(seq 1 "$n"); do daemons="$daemons $(pid_of "kubelet$i") $(pid_of "kube-proxy$i")"; done
  # shellcheck disable=SC2086
  kill $daemons 2>/dev/null
  for _ in $(seq 1 50); do
    local running=""
    for pid in $daemons; do
      grep -qs '^State:[[:space:]]*[^Z]' "/proc/$pid/status" && running="$running $pid"
    done
    [ -z "$running" ] && break
    sleep 0.1
  done
  # shellcheck disable=SC2086
  [ -n "${running:-}" ] && kill -9 $running 2>/dev/null
  # 2. Every pod's processes: they live in the node's cgroup tree (runc puts them there), in
  #    network and mount namespaces of their own, children of shims that outlive containerd.
  sweep_pods
  # 3. containerd, then whatever is left in the node's network namespace (the shims), then the
  #    namespace holder; its mount namespace (overlays, tmpfs) goes with its last process.
  for i in $(seq 1 "$n"); do
    for pid in $(pid_of "containerd$i"); do kill "$pid" 2>/dev/null || true; done
    local ns; ns=$(eval echo "\${NODE${i}_NETNS:-}")
    [ -n "$ns" ] && [ -e "/run/netns/$ns" ] || continue
    sweep netns_pids_but "$ns" "$(pid_of "holder$i")"
    for pid in $(pid_of "holder$i"); do kill "$pid" 2>/dev/null || true; done
  done
  # A container a shim was starting when it was killed (runc's init, waiting to exec) is in the
  # cgroup tree too: once more, with nothing left to start another.
  sweep_pods
  # 4. The cgroups the kubelet and runc made, deepest first (a killed task takes a moment to
  #    leave), then the levels above them that start made.
  for i in $(seq 1 "$n"); do
    [ -e "$DIR/node$i/cgroup-root" ] || continue
    local root h; root=$(cat "$DIR/node$i/cgroup-root")
    for _ in $(seq 1 30); do
      local all_gone=1
      for h in /sys/fs/cgroup/*/; do
        [ -d "$h$root" ] || continue
        find "$h$root" -depth -type d -exec rmdir {} \; 2>/dev/null || true
        [ -d "$h$root" ] && all_gone=""
      done
      [ -n "$all_gone" ] && break
      sleep 0.1
    done
  done
  for i in $(seq "$n" -1 1); do
    [ -e "$DIR/node$i/cgroups-made" ] && tac "$DIR/node$i/cgroups-made" | while read -r d; do rmdir "$d" 2>/dev/null || true; done
  done
  # 5. Links and namespaces.
  if [ -n "${TAG:-}" ]; then
    for i in $(seq 1 "$n"); do
      ip link del "${TAG}h$i" 2>/dev/null || true
      ip netns del "${TAG}n$i" 2>/dev/null || true
    done
    ip link del "${TAG}br" 2>/dev/null || true
  fi
  # 6. Mount points made on the host (empty: what was mounted on them went with the namespaces).
  [ -e "$DIR/dirs-made" ] && tac "$DIR/dirs-made" | while read -r d; do rmdir "$d" 2>/dev/null || true; done
  rm -f "$DIR/node-pids" "$DIR/nodes.env" "$DIR/dirs-made"
}

case "$cmd" in
  net) net "${3:-1}" ;;
  start) shift 2; start "$@" ;;
  down) down ;;
  *) die "unknown command $cmd (net, start, down)" ;;
esac
