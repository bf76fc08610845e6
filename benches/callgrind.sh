#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind (steadier than wall time on a shared
# machine): ferry (release build) forwards N keep-alive GETs of a 100 B file to a local nginx;
# collection starts after ferry is listening, so start-up is not counted. Prints Ir per request,
# and with TOP=1 the functions that cost most (self cost; TOPN=45 of them).
#   bash benches/callgrind.sh [requests] [connections]
# ROUTE=', forwarded_headers: false' adds keys to the route (to price a feature).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}
C=${2:-8}
command -v valgrind >/dev/null && command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || { echo "needs valgrind and nginx" >&2; exit 1; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
cargo build --release -q --bin ferry
d=$(mktemp -d)
trap 'kill $(cat $d/pids 2>/dev/null) 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$d"' EXIT
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
BP=$(free); FP=$(free)
mkdir -p "$d/www"; head -c ${SIZE:-100} /dev/zero | tr "\0" x > "$d/www/b100"
cat > "$d/nginx.conf" <<C
daemon off; master_process off; worker_processes 1; pid $d/nginx.pid; error_log $d/nginx.err;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000000;
  server { listen 127.0.0.1:$BP; root $d/www; location / { default_type text/plain; } } }
C
"$NGINX" -c "$d/nginx.conf" -p "$d" & echo $! >> "$d/pids"
cat > "$d/routes.yaml" <<C
listeners:
- { name: web, bind: '127.0.0.1:$FP', access_log: { to: off }, request_id: false, trace_context: { start: false }, routes: [ { backend: b ${ROUTE:-} } ] }
backends:
  b: { addresses: ['127.0.0.1:$BP'] }
C
valgrind --tool=callgrind --callgrind-out-file="$d/cg.out" \
  target/release/ferry run --threads 1 -c "$d/routes.yaml" 2> "$d/vg.err" & echo $! >> "$d/pids"
VG=$!
for _ in $(seq 300); do (exec 3<>/dev/tcp/127.0.0.1/$FP) 2>/dev/null && break; sleep 0.1; done
cat > "$d/load.py" <<'P'
import socket, sys, threading
port, n, c = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
def run(k):
    s = socket.create_connection(("127.0.0.1", port)); f = s.makefile("rb")
    for _ in range(k):
        s.sendall(b"GET /b100 HTTP/1.1\r\nHost: x\r\n\r\n")
        line = f.readline(); ln = 0
        while True:
            h = f.readline()
            if h in (b"\r\n", b""): break
            if h.lower().startswith(b"content-length:"): ln = int(h.split(b":")[1])
        f.read(ln)
        assert line.startswith(b"HTTP/1.1 200"), line
ts = [threading.Thread(target=run, args=(n // c,)) for _ in range(c)]
[t.start() for t in ts]; [t.join() for t in ts]
P
# Warm the pools, then count from zero.
python3 "$d/load.py" "$FP" 200 "$C"
callgrind_control -z "$VG" >/dev/null
python3 "$d/load.py" "$FP" "$N" "$C"
callgrind_control -d "$VG" >/dev/null
sleep 1
f=$(ls -v "$d"/cg.out.* | tail -1)
ir=$(callgrind_annotate "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1; exit}')
echo "callgrind: $N requests over $C connections: $ir Ir, $(( ir / N )) Ir per request"
if [ "${TOP:-0}" = 1 ]; then
  callgrind_annotate --auto=no --threshold=100 "$f" 2>/dev/null | sed -n '/file:function/,$p' | grep -v '(100.0%)' | head -${TOPN:-45}
fi
