#!/usr/bin/env bash
# Launch a pollen cluster on loopback, collect every node's output, and say whether they agree.
#
#   ./run_cluster.sh [ROLE] [-n NODES] [--stagger SECS] [--smoke] [--duration SECS] [--perf N]
#                    [--data-dir DIR [--fsync P]] [-- ROLE ARGS...]
#
# ROLE is gossip (default), ring, kv or lamport; NODES defaults to 4 (ring and kv: workers,
# plus a master).
# gossip: ROLE ARGS default to --send-for 3 --wait-for 2; --stagger SECS starts the nodes SECS
#   apart, as someone starting them by hand in several shells.
# ring: ROLE ARGS go to the master and default to 2000000 1000000 0 --window 64 (SEND_US
#   GRACE_US SEED [--window W]; the binary's own default window is 1, cloudy's single token).
# kv: ROLE ARGS go to the master (e.g. --replicas 3). You get the master's REPL (Redis clients
#   on the port it prints; SHUTDOWN or QUIT stops the cluster); --smoke runs a scripted session
#   instead and checks the answers. --data-dir DIR gives worker N the log DIR/worker-N (kept
#   across runs: start again with the same DIR and the data is back), synced per
#   --fsync always|everysec|no (default everysec).
# lamport: NODES machines for --duration SECS (default 60) with vector clocks, then
#   analysis.md, plots/*.svg and a ShiViz log next to the machines' logs.
# --perf N builds the `profiling` profile with frame pointers and records node N (0-based, a
# line of the peers file) with perf (cpu-clock, DWARF stacks) into perf-node-N.data, plus a
# flamegraph-node-N.svg if inferno is installed (cargo install inferno).
# The peers file, each node's stdout (node-N.out) and stderr (node-N.err) go to a fresh run
# folder under ./run/ (printed at the end, and on Ctrl-C). A node that fails has its error
# printed here. Exit status: 0 if all nodes printed the same result, 1 if they did not (or a
# node failed), 2 on bad usage (the script's or a node's), 130 when interrupted. Only the
# processes this script started are stopped, by PID, on exit, Ctrl-C and SIGTERM.
set -euo pipefail

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  exit 0
}

# Bad usage: one line saying what is wrong, exit 2.
die() {
  echo "run_cluster.sh: $*; try --help" >&2
  exit 2
}

role=gossip
nodes=4
smoke=0
duration=
perf_node=
stagger=
data_dir=
fsync=
role_args=()
role_given=0
if [[ $# -gt 0 && $1 != -* ]]; then
  role=$1
  role_given=1
  shift
fi
# The value of option $1, which must be there.
value() {
  [[ $# -ge 2 && $2 != --* ]] || die "$1 needs a value"
}
while [[ $# -gt 0 ]]; do
  case $1 in
    -n) value "$@"; nodes=$2; shift 2 ;;
    --smoke) smoke=1; shift ;;
    --duration) value "$@"; duration=$2; shift 2 ;;
    --perf) value "$@"; perf_node=$2; shift 2 ;;
    --stagger) value "$@"; stagger=$2; shift 2 ;;
    --data-dir) value "$@"; data_dir=$2; shift 2 ;;
    --fsync) value "$@"; fsync=$2; shift 2 ;;
    -h | --help) usage ;;
    --) shift; role_args=("$@"); break ;;
    -*) die "unknown option $1" ;;
    *)
      [[ $role_given -eq 0 ]] || die "unexpected argument $1 (ROLE ARGS go after --)"
      role=$1
      role_given=1
      shift
      ;;
  esac
done
case $role in
  gossip | ring | kv | lamport) ;;
  *) die "unknown role $role (gossip|ring|kv|lamport)" ;;
esac
[[ $nodes =~ ^[0-9]+$ && $nodes -ge 1 && $nodes -le 256 ]] || die "-n must be 1..256"
[[ -z $stagger || ($stagger =~ ^[0-9]+(\.[0-9]+)?$ && $role == gossip) ]] ||
  die "--stagger takes seconds (e.g. 0.5), for gossip"
[[ $smoke -eq 0 || $role == kv ]] || die "--smoke is for kv"
[[ -z $duration || $role == lamport ]] || die "--duration is for lamport"
[[ -z $duration || $duration =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "--duration takes seconds"
duration=${duration:-60}
[[ (-z $data_dir && -z $fsync) || $role == kv ]] || die "--data-dir and --fsync are for kv"
[[ -z $fsync || -n $data_dir ]] || die "--fsync needs --data-dir"
case $role in
  gossip) [[ ${#role_args[@]} -gt 0 ]] || role_args=(--send-for 3 --wait-for 2) ;;
  ring) [[ ${#role_args[@]} -gt 0 ]] || role_args=(2000000 1000000 0 --window 64) ;;
esac

if [[ -n $perf_node ]]; then
  [[ $perf_node =~ ^[0-9]+$ && $perf_node -lt $nodes ]] || die "--perf takes a node index below $nodes"
  command -v perf >/dev/null || {
    echo "run_cluster.sh: --perf needs perf (apt-get install linux-perf or linux-tools-generic)" >&2
    exit 2
  }
fi

here=$(cd "$(dirname "$0")" && pwd)
binary=${POLLEN_BIN:-$here/target/release/pollen}
[[ -z ${POLLEN_BIN:-} || -x $POLLEN_BIN ]] || die "POLLEN_BIN=$POLLEN_BIN is not an executable"
for arg in "${role_args[@]}"; do
  if [[ $arg == --help ]]; then
    # The role's own help, not NODES copies of it.
    [[ -x $binary ]] || (cd "$here" && cargo build --release)
    exec "$binary" "$role" --help
  fi
done
# cargo shows its progress (a first build takes minutes); an up-to-date build prints one line.
if [[ -n $perf_node && -z ${POLLEN_BIN:-} ]]; then
  # Frame pointers cannot be set per Cargo profile on stable; a separate target directory keeps
  # these flags from invalidating the ordinary release build.
  (cd "$here" && RUSTFLAGS="-C force-frame-pointers=yes" CARGO_TARGET_DIR=target/fp \
    cargo build --profile profiling)
  binary=$here/target/fp/profiling/pollen
elif [[ -z ${POLLEN_BIN:-} ]]; then
  (cd "$here" && cargo build --release)
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
trap 'cleanup; echo "interrupted; stopped the nodes this script started; logs: $run_dir" >&2; exit 130' INT TERM

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

# The error a failed process gave: its `pollen: ...` line, else its last line.
error_of() {
  grep -m 1 '^pollen' "$1" 2>/dev/null || tail -n 1 "$1" 2>/dev/null || true
}

# After the master has exited: workers that never reached it would wait for it forever; give
# them a moment to finish on their own, then stop them.
stopped=()
stop_orphans() {
  local pid deadline=$((SECONDS + 2))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null && [[ $SECONDS -lt $deadline ]]; do
      sleep 0.1
    done
    if kill "$pid" 2>/dev/null; then
      stopped+=("$pid")
    fi
  done
}

# Warnings the nodes logged, on the terminal (the rest stays in the run folder).
show_warnings() {
  local file
  for file in "$run_dir"/*.err; do
    grep -h "warning" "$file" 2>/dev/null | sed "s|^|$(basename "$file" .err): |" >&2 || true
  done
}

# Waits for every node; prints each failure's reason. Sets `failed` (1) and `usage_failed` (a
# node refused its arguments: exit 2).
failed=0
usage_failed=0
wait_nodes() {
  local index status
  for index in "${!pids[@]}"; do
    status=0
    wait "${pids[$index]}" || status=$?
    if [[ " ${stopped[*]} " == *" ${pids[$index]} "* ]]; then
      echo "node $index stopped: its master had gone" >&2
    elif [[ $status -ne 0 ]]; then
      echo "node $index exited with status $status: $(error_of "$run_dir/node-$index.err")" >&2
      failed=1
      [[ $status -ne 2 ]] || usage_failed=1
    fi
  done
  pids=()
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
    echo "kv: $nodes workers; the REPL is yours (SHUTDOWN or QUIT ends it); Redis clients: redis-cli -p $resp_port"
    echo "logs: $run_dir"
    # In the background (with the terminal as its input) so that a signal to this script
    # reaches the trap at once and stops the master with the workers.
    "${master[@]}" <&0 2>"$run_dir/master.err" &
    master_pid=$!
    pids+=("$master_pid")
    status=0
    wait "$master_pid" || status=$?
    if [[ $status -ne 0 ]]; then
      echo "the master exited with status $status: $(error_of "$run_dir/master.err")" >&2
    fi
    unset 'pids[-1]'
    stop_orphans
    wait_nodes || true
    echo "logs: $run_dir"
    exit $((status == 2 || usage_failed ? 2 : status))
  fi
  script='SET greeting "hello world"\nGET greeting\nSET n 1\nDEL n\nGET n\nNODES\nQUIT\n'
  status=0
  printf "$script" | "${master[@]}" >"$run_dir/master.out" 2>"$run_dir/master.err" || status=$?
  stop_orphans
  wait_nodes
  cat "$run_dir/master.out"
  echo "logs: $run_dir"
  if [[ $status -ne 0 ]]; then
    echo "the master exited with status $status: $(error_of "$run_dir/master.err")" >&2
    exit $((status == 2 ? 2 : 1))
  fi
  [[ $usage_failed -eq 0 ]] || exit 2
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
  wait_nodes
  if [[ $failed -ne 0 ]]; then
    echo "logs: $run_dir"
    exit $((usage_failed ? 2 : 1))
  fi
  "$binary" lamport analyze --plots "$run_dir/plots" --shiviz "$run_dir/shiviz.log" \
    "$run_dir"/machine-*.csv 2>"$run_dir/analyze.err" | tee "$run_dir/analysis.md"
  cat "$run_dir/analyze.err" >&2
  echo "logs: $run_dir (machine-N.csv, shiviz.log, analysis.md, plots/*.svg)"
  exit 0
fi
master_status=0
if [[ $role == ring ]]; then
  "$binary" ring master 127.0.0.1 "$master_port" "${role_args[@]}" --peer-config-file "$peers" \
    >"$run_dir/master.out" 2>"$run_dir/master.err" &
  master_pid=$!
  wait "$master_pid" || master_status=$?
  if [[ $master_status -ne 0 ]]; then
    echo "the master exited with status $master_status: $(error_of "$run_dir/master.err")" >&2
    failed=1
  fi
  if [[ $master_status -eq 2 ]]; then
    # It refused its arguments; the workers would wait for it forever (the EXIT trap stops them).
    echo "logs: $run_dir"
    exit 2
  fi
fi

wait_nodes
show_warnings
for index in $(seq 0 $((nodes - 1))); do
  printf 'node %d: %s\n' "$index" "$(cat "$run_dir/node-$index.out")"
done
if [[ $role == ring ]]; then
  sed 's/^/master: /' "$run_dir/master.out"
fi
echo "logs: $run_dir"
if [[ $usage_failed -ne 0 ]]; then
  exit 2
fi
distinct=$(cat "$run_dir"/node-*.out | sort -u | wc -l)
empty=$(find "$run_dir" -name 'node-*.out' -empty | wc -l)
if [[ $failed -eq 0 && $distinct -eq 1 && $empty -eq 0 ]]; then
  echo "AGREE: all $nodes nodes printed $(cat "$run_dir/node-0.out")"
else
  echo "DISAGREE: $distinct distinct results ($empty nodes printed nothing)"
  exit 1
fi
