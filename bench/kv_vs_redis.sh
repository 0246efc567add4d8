#!/usr/bin/env bash
# redis-benchmark against pollen kv (master + 2 workers, 2 replicas) and against redis-server
# (no persistence), in the same run, on loopback. Needs redis-benchmark and redis-server
# (apt-get install redis-tools redis-server).
#
#   bench/kv_vs_redis.sh [REQUESTS]        # default 200000
set -euo pipefail
requests=${1:-200000}
here=$(cd "$(dirname "$0")/.." && pwd)
command -v redis-benchmark >/dev/null && command -v redis-server >/dev/null || {
  echo "kv_vs_redis.sh: needs redis-benchmark and redis-server" >&2
  exit 2
}
(cd "$here" && cargo build --release --quiet)
pollen=$here/target/release/pollen
dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
mapfile -t ports < <("$pollen" ports 5)
printf '127.0.0.1:%s\n' "${ports[0]}" "${ports[1]}" >"$dir/workers.txt"
for port in "${ports[0]}" "${ports[1]}"; do
  "$pollen" kv slave "$port" --peer-config-file "$dir/workers.txt" -q &
  pids+=($!)
done
"$pollen" kv master "${ports[2]}" --peer-config-file "$dir/workers.txt" --replicas 2 \
  --resp-port "${ports[3]}" --no-repl -q &
pids+=($!)
redis-server --port "${ports[4]}" --save "" --appendonly no >/dev/null &
pids+=($!)
sleep 1

run() { # PORT PIPELINE -> "SET GET" requests per second
  redis-benchmark -p "$1" -t set,get -n "$requests" -c 50 -P "$2" -q 2>/dev/null | tr '\r' '\n' \
    | awk '/requests per second/ {printf "%s ", $2}'
}
echo "| pipeline | pollen SET | redis SET | ratio | pollen GET | redis GET | ratio |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for pipeline in 16 1; do
  read -r pollen_set pollen_get <<<"$(run "${ports[3]}" "$pipeline")"
  read -r redis_set redis_get <<<"$(run "${ports[4]}" "$pipeline")"
  awk -v p="$pipeline" -v ps="$pollen_set" -v rs="$redis_set" -v pg="$pollen_get" -v rg="$redis_get" \
    'BEGIN { printf "| -P %s | %.0f | %.0f | %.2f | %.0f | %.0f | %.2f |\n", p, ps, rs, ps / rs, pg, rg, pg / rg }'
done
