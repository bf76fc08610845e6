#!/usr/bin/env bash
# Stops exactly the processes up.sh started (DIR/pids), newest first, and waits for them to exit.
set -uo pipefail
DIR="${1:?usage: down.sh DIR}"
[ -f "$DIR/pids" ] || exit 0
mapfile -t entries < <(tac "$DIR/pids")
for e in "${entries[@]}"; do
  pid="${e##* }"
  kill -TERM "$pid" 2>/dev/null || true
done
for e in "${entries[@]}"; do
  pid="${e##* }"
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
done
rm -f "$DIR/pids"
