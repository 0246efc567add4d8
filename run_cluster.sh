#!/usr/bin/env bash
# Launch a pollen cluster on loopback, collect every node's output, and say whether they agree.
#
#   ./run_cluster.sh [ROLE] [-n NODES] [--stagger SECS] [--smoke] [--perf N]
#                    [--data-dir DIR [--fsync P]] [-- ROLE ARGS...]
#
# ROLE is gossip (default), ring or kv; NODES defaults to 4 (ring and kv: workers, plus a
# master). gossip's arguments default to --send-for 3 --wait-for 2; --stagger SECS starts the
# gossip nodes SECS apart, as someone starting them by hand in several shells; ring's go to the master
# and default to 2000000 1000000 0 --window 64 (SEND_US GRACE_US SEED [--window W]); kv's go
# to the master (e.g. --replicas 3). kv drops you into the master's REPL (Redis clients on
# the port it prints); --smoke runs a scripted session instead and checks the answers.
# kv --data-dir DIR gives worker N the log DIR/worker-N (kept across runs: start again with the
# same DIR and the data is back), synced per --fsync always|everysec|no (default everysec).
# lamport runs NODES machines for --duration SECS (default 60) with vector clocks, then writes
# analysis.md, plots/*.svg and a ShiViz log next to the machines' logs.
# --perf N builds the `profiling` profile with frame pointers and records node N (0-based, a
# line of the peers file) with perf (cpu-clock, DWARF stacks) into perf-node-N.data, plus a
# flamegraph-node-N.svg if inferno is installed (cargo install inferno).
# The peers file, each node's stdout (node-N.out) and stderr (node-N.err) go to a fresh run
# folder under ./run/ (printed at the end). Exit status: 0 if all nodes printed the same result,
# 1 if they did not, 2 on bad usage. Only the processes this script started are stopped, by PID,
# on exit and on Ctrl-C.
set -euo pipefail

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  exit "${1:-2}"
}

role=gossip
nodes=4
smoke=0
duration=60
perf_node=
stagger=
data_dir=
fsync=
role_args=()
if [[ $# -gt 0 && $1 != -* ]]; then
  role=$1
  shift
fi
while [[ $# -gt 0 ]]; do
  case $1 in
    -n) [[ $# -ge 2 ]] || usage; nodes=$2; shift 2 ;;
    --smoke) smoke=1; shift ;;
    --duration) [[ $# -ge 2 ]] || usage; duration=$2; shift 2 ;;
    --perf) [[ $# -ge 2 ]] || usage; perf_node=$2; shift 2 ;;
    --stagger) [[ $# -ge 2 ]] || usage; stagger=$2; shift 2 ;;
    --data-dir) [[ $# -ge 2 ]] || usage; data_dir=$2; shift 2 ;;
    --fsync) [[ $# -ge 2 ]] || usage; fsync=$2; shift 2 ;;
    --help) usage 0 ;;
    --) shift; role_args=("$@"); break ;;
    *) echo "run_cluster.sh: unknown option $1" >&2; usage ;;
  esac
done
[[ $nodes =~ ^[0-9]+$ && $nodes -ge 1 && $nodes -le 256 ]] || {
  echo "run_cluster.sh: -n must be 1..256" >&2
  exit 2
}
if [[ ( -n $data_dir || -n $fsync ) && $role != kv ]]; then
  echo "run_cluster.sh: --data-dir and --fsync are for kv" >&2
  exit 2
fi
if [[ -n $stagger ]] && ! [[ $stagger =~ ^[0-9]+(\.[0-9]+)?$ && $role == gossip ]]; then
  echo "run_cluster.sh: --stagger takes seconds (e.g. 0.5), for gossip" >&2
  exit 2
fi
if [[ -n $fsync && -z $data_dir ]]; then
  echo "run_cluster.sh: --fsync needs --data-dir" >&2
  exit 2
fi
case $role in
  gossip) [[ ${#role_args[@]} -gt 0 ]] || role_args=(--send-for 3 --wait-for 2) ;;
  ring) [[ ${#role_args[@]} -gt 0 ]] || role_args=(2000000 1000000 0 --window 64) ;;
  kv | lamport) ;;
  *) echo "run_cluster.sh: unknown role $role (gossip|ring|kv|lamport)" >&2; exit 2 ;;
esac

if [[ -n $perf_node ]]; then
  [[ $perf_node =~ ^[0-9]+$ && $perf_node -lt $nodes ]] || {
    echo "run_cluster.sh: --perf takes a node index below $nodes" >&2
    exit 2
  }
  command -v perf >/dev/null || {
    echo "run_cluster.sh: --perf needs perf (apt-get install linux-perf or linux-tools-generic)" >&2
    exit 2
  }
fi

here=$(cd "$(dirname "$0")" && pwd)
binary=${POLLEN_BIN:-$here/target/release/pollen}
if [[ -n $perf_node && -z ${POLLEN_BIN:-} ]]; then
  # Frame pointers cannot be set per Cargo profile on stable; a separate target directory keeps
  # these flags from invalidating the ordinary release build.
  (cd "$here" && RUSTFLAGS="-C force-frame-pointers=yes" CARGO_TARGET_DIR=target/fp \
    cargo build --profile profiling --quiet)
  binary=$here/target/fp/profiling/pollen
elif [[ -z ${POLLEN_BIN:-} ]]; then
  (cd "$here" && cargo build --release --quiet)
fi

run_dir=$here/run/$role-$(date +%Y%m%d-%H%M%S)-$$
mkdir -p "$run_dir"
peers=$run_dir/peers.txt
"$binary" ports "$((nodes + 2))" | sed 's/^/127.0.0.1:/' >"$run_dir/ports.txt"
head -n "$nodes" "$run_dir/ports.txt" >"$peers"
master_port=$(sed -n "$((nodes + 1))p" "$run_dir/ports.txt" | sed 's/.*://')
resp_port=$(tail -n 1 "$run_dir/ports.txt" | sed 's/.*://')

pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
}
trap 'cleanup; finish_perf' EXIT
trap 'cleanup; exit 130' INT TERM

perf_pid=
# Waits for perf and renders the flamegraph (once, on any exit path).
finish_perf() {
  [[ -n $perf_pid ]] || return 0
  wait "$perf_pid" 2>/dev/null || true
  perf_pid=
  local data=$run_dir/perf-node-$perf_node.data
  [[ -s $data ]] || { echo "perf: no data; see $run_dir/perf-node-$perf_node.log" >&2; return 0; }
  echo "perf: $data (perf report -i $data --no-children)" >&2
  if command -v inferno-collapse-perf >/dev/null && command -v inferno-flamegraph >/dev/null; then
    perf script -i "$data" 2>/dev/null | inferno-collapse-perf | inferno-flamegraph \
      --title "pollen $role node $perf_node" >"$run_dir/flamegraph-node-$perf_node.svg" || true
    echo "perf: flamegraph $run_dir/flamegraph-node-$perf_node.svg" >&2
  else
    echo "perf: no flamegraph (cargo install inferno for one)" >&2
  fi
}

index=0
while read -r address; do
  port=${address##*:}
  case $role in
    gossip) args=(gossip -h 127.0.0.1 -p "$port" --peer-config-file "$peers" "${role_args[@]}") ;;
    ring) args=(ring slave 127.0.0.1 "$port" --peer-config-file "$peers") ;;
    kv)
      args=(kv slave "$port" --peer-config-file "$peers")
      [[ -z $data_dir ]] || args+=(--data-dir "$data_dir/worker-$index" --fsync "${fsync:-everysec}")
      ;;
    lamport) args=(lamport -p "$port" --peer-config-file "$peers" --duration "$duration" --vector
      --log "$run_dir/machine-$index.csv" "${role_args[@]}") ;;
  esac
  if [[ -n $stagger && $index -gt 0 ]]; then
    sleep "$stagger"
  fi
  "$binary" "${args[@]}" >"$run_dir/node-$index.out" 2>"$run_dir/node-$index.err" &
  pids+=($!)
  if [[ $index == "$perf_node" ]]; then
    # perf stops by itself when the node exits; it is not in pids (waited for separately).
    perf record -q -e cpu-clock -F 999 --call-graph dwarf -p "$!" \
      -o "$run_dir/perf-node-$index.data" 2>"$run_dir/perf-node-$index.log" &
    perf_pid=$!
  fi
  index=$((index + 1))
done <"$peers"
if [[ $role == kv ]]; then
  master=("$binary" kv master "$master_port" --peer-config-file "$peers" --resp-port "$resp_port"
    "${role_args[@]}")
  if [[ $smoke -eq 0 ]]; then
    echo "kv: $nodes workers; the REPL is yours (QUIT ends it); Redis clients: redis-cli -p $resp_port"
    "${master[@]}" 2>"$run_dir/master.err"
    status=$?
    wait "${pids[@]}" 2>/dev/null || true
    pids=()
    echo "logs: $run_dir"
    exit $status
  fi
  script='SET greeting "hello world"\nGET greeting\nSET n 1\nDEL n\nGET n\nNODES\nQUIT\n'
  printf "$script" | "${master[@]}" >"$run_dir/master.out" 2>"$run_dir/master.err"
  wait "${pids[@]}" || true
  pids=()
  cat "$run_dir/master.out"
  echo "logs: $run_dir"
  expected=$'OK\n"hello world"\nOK\n(integer) 1\n(nil)'
  if [[ $(head -n 5 "$run_dir/master.out") == "$expected" ]] && grep -q "every key has" "$run_dir/master.out" \
    && ! grep -q "NOT every key" "$run_dir/master.out"; then
    echo "SMOKE OK: set, get, del and placement answered as expected"
    exit 0
  fi
  echo "SMOKE FAILED"
  exit 1
fi
if [[ $role == lamport ]]; then
  echo "lamport: $nodes machines for $duration s; logs in $run_dir" >&2
  status=0
  wait "${pids[@]}" || status=1
  pids=()
  "$binary" lamport analyze --plots "$run_dir/plots" --shiviz "$run_dir/shiviz.log" \
    "$run_dir"/machine-*.csv | tee "$run_dir/analysis.md"
  echo "logs: $run_dir (machine-N.csv, shiviz.log, analysis.md, plots/*.svg)"
  exit $status
fi
if [[ $role == ring ]]; then
  "$binary" ring master 127.0.0.1 "$master_port" "${role_args[@]}" --peer-config-file "$peers" \
    >"$run_dir/master.out" 2>"$run_dir/master.err" &
  master_pid=$!
  master_status=0
  wait "$master_pid" || master_status=$?
  if [[ $master_status -eq 2 ]]; then
    # It refused its arguments; the workers would wait for it forever (the EXIT trap stops them).
    cat "$run_dir/master.err" >&2
    exit 2
  fi
fi

failed=0
if [[ $role == ring && $master_status -ne 0 ]]; then
  echo "the master exited with status $master_status; see $run_dir/master.err" >&2
  failed=1
fi
for index in "${!pids[@]}"; do
  if ! wait "${pids[$index]}"; then
    echo "process $index exited with an error; see $run_dir/*.err" >&2
    failed=1
  fi
done
pids=()

for index in $(seq 0 $((nodes - 1))); do
  printf 'node %d: %s\n' "$index" "$(cat "$run_dir/node-$index.out")"
done
if [[ $role == ring ]]; then
  sed 's/^/master: /' "$run_dir/master.out"
fi
distinct=$(cat "$run_dir"/node-*.out | sort -u | wc -l)
empty=$(find "$run_dir" -name 'node-*.out' -empty | wc -l)
echo "logs: $run_dir"
if [[ $failed -eq 0 && $distinct -eq 1 && $empty -eq 0 ]]; then
  echo "AGREE: all $nodes nodes printed $(cat "$run_dir/node-0.out")"
else
  echo "DISAGREE: $distinct distinct results"
  exit 1
fi
