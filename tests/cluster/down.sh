#!/usr/bin/env bash
# Stops exactly the processes up.sh started (DIR/pids), newest first, each one gone before the next
# is asked (the apiserver's graceful shutdown still needs etcd): SIGTERM, up to 10 s, then SIGKILL.
set -uo pipefail
DIR="${1:?usage: down.sh DIR}"
[ -f "$DIR/pids" ] || exit 0
gone() { ! grep -qs '^State:[[:space:]]*[^Z]' "/proc/$1/status"; }
mapfile -t entries < <(tac "$DIR/pids")
for e in "${entries[@]}"; do
  pid="${e##* }"
  kill -TERM "$pid" 2>/dev/null || continue
  for _ in $(seq 1 100); do gone "$pid" && break; sleep 0.1; done
  if ! gone "$pid"; then
    kill -KILL "$pid" 2>/dev/null
    for _ in $(seq 1 50); do gone "$pid" && break; sleep 0.1; done
  fi
done
rm -f "$DIR/pids"
