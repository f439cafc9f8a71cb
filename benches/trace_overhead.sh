#!/usr/bin/env bash
# What tracing costs SET throughput.
#
# Builds raftis and the OTLP sink (examples/otlp_sink.rs) in release mode,
# then measures `redis-benchmark -t set` against the leader of a fresh
# three-node cluster on this machine, in three configurations:
#
#   off       no exporter configured: the tracer is off
#   0.01      telemetry.sample_ratio 0.01, exported over OTLP/gRPC to the sink
#   1.0       every write traced and exported (for reference)
#   baseline  with BASELINE_BIN set: that binary (a build from before the
#             telemetry code, say), no exporter: what "off" costs compared
#             with no tracing code at all
#
# Each round runs every configuration once, in turn, so that a change in the
# machine's load hits all of them alike; the table shows each configuration's
# median over the rounds and its ratio to "off", for throughput and for the
# CPU time the nodes used per SET (which other load on a shared machine
# disturbs far less). Every configuration starts its own cluster with empty
# data dirs, so none inherits another's log.
#
# Usage: benches/trace_overhead.sh
# Settings (environment): ROUNDS (default 3), REQUESTS per run (default
# 100000), CLIENTS (default 50), DATA_SIZE (default 64), KEYSPACE (default
# 100000), BENCH_DIR (temp dir parent, default $TMPDIR or /tmp),
# BASELINE_BIN (a raftis binary to compare "off" with; it must take the
# same flags), CONFIGS (the configurations to run, default
# "off 0.01 1.0", plus "baseline" with BASELINE_BIN). For example, for the
# commit before the telemetry work:
#   git worktree add /tmp/raftis-base 5fed72e &&
#   (cd /tmp/raftis-base && cargo build --release --bin raftis) &&
#   BASELINE_BIN=/tmp/raftis-base/target/release/raftis benches/trace_overhead.sh
#
# Needs redis-cli, redis-benchmark and python3 (to find free ports).
set -Eeuo pipefail
BENCHES=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

ROUNDS=${ROUNDS:-3}
REQUESTS=${REQUESTS:-100000}
CLIENTS=${CLIENTS:-50}
DATA_SIZE=${DATA_SIZE:-64}
KEYSPACE=${KEYSPACE:-100000}
# CONFIGS (space-separated, e.g. "off baseline") runs a subset; "off"
# must be among them (the ratios are to it).
read -r -a CONFIGS <<<"${CONFIGS:-off 0.01 1.0${BASELINE_BIN:+ baseline}}"
if [[ " ${CONFIGS[*]} " == *" baseline "* ]]; then
    [[ -x ${BASELINE_BIN:-} ]] || { echo "trace_overhead: configuration baseline needs BASELINE_BIN, an executable" >&2; exit 1; }
fi
[[ " ${CONFIGS[*]} " == *" off "* ]] || { echo "trace_overhead: CONFIGS must include off" >&2; exit 1; }

cd "$(dirname "$0")/.."
for tool in redis-cli redis-benchmark python3; do
    command -v "$tool" >/dev/null || { echo "trace_overhead: $tool is not installed" >&2; exit 1; }
done
# The caller's settings must not change what is measured.
while read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(RAFTIS_|OTEL_)' || true)

echo "building (release)..." >&2
cargo build --release --quiet --bin raftis
cargo build --release --quiet --example otlp_sink
RAFTIS=target/release/raftis
SINK=target/release/examples/otlp_sink

WORK=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/raftis-trace-bench.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# set -e exits without a word; say which command failed (-E: in functions too).
trap 'echo "trace_overhead: line $LINENO failed: $BASH_COMMAND" >&2' ERR

# free_ports, wait_for, stop.
# shellcheck source=benches/common.sh
source "$BENCHES/common.sh"

# Prints the RESP port of the node that says it leads, if all agree on one.
leader_port() {
    local port info
    for port in "$@"; do
        info=$(redis-cli -p "$port" INFO raft 2>/dev/null | tr -d '\r') || continue
        # The field is raft_role (role in older builds) in INFO's # Raft section.
        if grep -Eqx '(raft_)?role:leader' <<<"$info"; then
            echo "$port"; return 0
        fi
    done
    return 1
}

# The Raft term node $1 (a RESP port) is in, or "?".
term_of() {
    local info
    info=$(redis-cli -p "$1" INFO raft 2>/dev/null | tr -d '\r') || { echo '?'; return 0; }
    sed -n 's/^term://p' <<<"$info" | grep . || echo '?'
}

# One run: starts a cluster in configuration $1 (and a sink unless off),
# benchmarks SET against its leader, stops everything; sets RUN_RPS (SET
# requests per second), RUN_CPU (CPU microseconds the nodes used per SET,
# startup included) and RUN_SPANS (spans the sink received, or -).
# Not called in a subshell, so that PIDS stays visible to the exit trap.
run_one() {
    local config=$1 dir ports resp=() peer=() http=() i cluster="" sink_pid="" env=()
    dir=$(mktemp -d "$WORK/run.XXXXXX")
    read -r -a ports <<<"$(free_ports 10)"
    for i in 0 1 2; do
        resp[i]=${ports[i * 3]}; peer[i]=${ports[i * 3 + 1]}; http[i]=${ports[i * 3 + 2]}
        cluster+="${cluster:+,}$((i + 1))=127.0.0.1:${peer[i]}"
    done
    if [[ $config != off && $config != baseline ]]; then
        "$SINK" "127.0.0.1:${ports[9]}" >"$dir/sink.out" 2>&1 &
        sink_pid=$!; PIDS+=("$sink_pid")
        wait_for 10 grep -qs listening "$dir/sink.out" || { cat "$dir/sink.out" >&2; return 1; }
        env=(RAFTIS_TELEMETRY__OTLP_ENDPOINT="http://127.0.0.1:${ports[9]}"
             RAFTIS_TELEMETRY__SAMPLE_RATIO="$config")
    fi
    local nodes=() bin=$RAFTIS
    if [[ $config == baseline ]]; then bin=$BASELINE_BIN; fi
    for i in 0 1 2; do
        env "${env[@]}" "$bin" --id $((i + 1)) \
            --listen "127.0.0.1:${resp[i]}" --peer-listen "127.0.0.1:${peer[i]}" \
            --http-listen "127.0.0.1:${http[i]}" --data-dir "$dir/node$((i + 1))" \
            --initial-cluster "$cluster" >"$dir/node$((i + 1)).log" 2>&1 &
        nodes+=($!); PIDS+=($!)
    done
    local leader="" deadline=$((SECONDS + 30))
    until leader=$(leader_port "${resp[@]}"); do
        if ((SECONDS >= deadline)); then
            echo "trace_overhead: no leader in configuration $config; node logs:" >&2
            tail -n 20 "$dir"/node*.log >&2
            return 1
        fi
        sleep 0.1
    done
    local csv rps term
    term=$(term_of "$leader")
    csv=$(redis-benchmark -p "$leader" -t set -c "$CLIENTS" -d "$DATA_SIZE" \
        -r "$KEYSPACE" -n "$REQUESTS" -q --csv)
    # "test","rps",...  then  "SET","12345.67",...
    rps=$(awk -F'","' '/^"SET"/ { print $2 }' <<<"$csv")
    [[ -n $rps ]] || { echo "trace_overhead: no SET result in: $csv" >&2; return 1; }
    # An election during the run (a loaded machine can starve heartbeats)
    # measures forwarding, not tracing: such a run is marked.
    RUN_MOVED=""
    if [[ $(term_of "$leader") != "$term" ]]; then RUN_MOVED="*"; fi
    # CPU time the three nodes used (user + system, in clock ticks), from
    # start to now: what tracing costs in work, which the machine's other
    # load disturbs far less than it does throughput.
    local ticks=0 pid
    for pid in "${nodes[@]}"; do
        ticks=$((ticks + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
    done
    RUN_CPU=$(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" -v n="$REQUESTS" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
    stop "${nodes[@]}"
    RUN_SPANS=-
    if [[ -n $sink_pid ]]; then
        stop "$sink_pid"
        RUN_SPANS=$(sed -n 's/^spans received: \([0-9]*\).*/\1/p' "$dir/sink.out")
        RUN_SPANS=${RUN_SPANS:--}
    fi
    # Everything started in this run is reaped: no pid to kill on exit.
    PIDS=()
    rm -rf "$dir"
    RUN_RPS=$rps
}

# Other work on the machine is the main source of noise: show how much.
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A RESULTS SHOWN CPU SPANS
MOVED=""
for round in $(seq 1 "$ROUNDS"); do
    for config in "${CONFIGS[@]}"; do
        run_one "$config"
        echo "round $round, $config: $RUN_RPS SET/s, $RUN_CPU CPU µs/SET, spans exported: $RUN_SPANS${RUN_MOVED:+, election during the run}" >&2
        CPU[$config]+="$RUN_CPU "
        RESULTS[$config]+="$RUN_RPS "
        SHOWN[$config]+="$RUN_RPS$RUN_MOVED "
        if [[ -n $RUN_MOVED ]]; then MOVED=1; fi
        SPANS[$config]+="$RUN_SPANS "
    done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

base=$(median <<<"${RESULTS[off]}")
base_cpu=$(median <<<"${CPU[off]}")
echo
echo "redis-benchmark -t set -c $CLIENTS -d $DATA_SIZE -r $KEYSPACE -n $REQUESTS, leader of 3 local nodes, $ROUNDS rounds, $(nproc) CPUs"
echo "(load average before: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg))"
echo
echo "| configuration | SET/s (median of $ROUNDS) | ratio to off | SET/s per round | CPU µs per SET (median) | ratio to off | spans exported per run |"
echo "|---|---:|---:|---|---:|---:|---|"
for config in "${CONFIGS[@]}"; do
    m=$(median <<<"${RESULTS[$config]}")
    case $config in
        off) name="telemetry off" ;;
        baseline) name="baseline build (BASELINE_BIN), no exporter" ;;
        *) name="OTLP export, sample_ratio $config" ;;
    esac
    c=$(median <<<"${CPU[$config]}")
    printf '| %s | %.0f | %.3f | %s | %.1f | %.3f | %s |\n' "$name" "$m" "$(awk -v a="$m" -v b="$base" 'BEGIN { print a / b }')" \
        "$(xargs <<<"${SHOWN[$config]}" | sed 's/ /, /g')" "$c" "$(awk -v a="$c" -v b="$base_cpu" 'BEGIN { print a / b }')" \
        "$(xargs <<<"${SPANS[$config]}" | sed 's/ /, /g')"
done
if [[ -n $MOVED ]]; then
    echo
    echo "\* the Raft term changed during this run (an election): the benchmark then ran partly against a follower."
fi
