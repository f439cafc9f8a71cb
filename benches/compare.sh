#!/usr/bin/env bash
# raftis side by side with redis-server, in one run on one machine.
#
# Builds raftis in release mode, then starts each target in turn on free
# local ports with empty temp data dirs (one target at a time, stopped
# before the next starts, so that no two compete for the cores):
#
#   redis-always       redis-server, appendonly yes, appendfsync always: the
#                      baseline every ratio is taken to (always runs)
#   redis-everysec     redis-server, appendfsync everysec (for reference)
#   raftis-1           raftis, one node
#   raftis-3-leader    raftis, three nodes, load on the leader
#   raftis-3-follower  three nodes, load on a follower (writes forwarded,
#                      reads confirmed with the leader: linearizable GET,
#                      the default; READONLY is not used)
#   raftis-3-spread    three nodes, one redis-benchmark per node at once,
#                      each with the same arguments
#   raftis-5-leader    raftis, five nodes, load on the leader
#   raftis-3-leader-lease, raftis-3-follower-lease
#                      as raftis-3-leader and raftis-3-follower with
#                      raft.read_policy = "lease" (linearizable reads from
#                      the leader's lease; not the default, so reported apart)
#
# and runs redis-benchmark against each with the same arguments: every test
# in TESTS (one redis-benchmark run per test, so that a failure costs one
# cell and the parallel runs of raftis-3-spread stay in step), in every
# scenario in SCENARIOS:
#
#   c50    -c 50 -d 64            (REQUESTS requests)
#   c1     -c 1 -d 64             (REQUESTS_C1 requests: one client is slow)
#   p16    -c 50 -P 16 -d 64      (REQUESTS requests)
#   d4096  -c 50 -d 4096          (REQUESTS_D4096 requests: each MSET writes
#                                  40 KB on every node)
#
# all with -r 100000. Scenarios run in that order on the same instance of a
# target (started once per target), so a later scenario finds the keys an
# earlier one wrote, alike for every target.
#
# Prints to stdout, ready to paste into benches/RESULTS.md: the command
# line and settings, the date, the machine, the versions, one Markdown table
# (throughput, p50 and p99 with each figure's ratio to redis-always in this
# run), and a summary of issue 5's targets evaluated on this run's numbers.
# Progress, timings and failures go to stderr; a run that fails (a
# redis-benchmark error, a timeout, a target that does not start) is shown
# as "failed" and the other runs go on.
#
# Usage: benches/compare.sh
# Settings (environment):
#   TARGETS         targets to run, default all of the above; must include
#                   redis-always
#   SCENARIOS       scenarios to run, default "c50 c1 p16 d4096"
#   TESTS           redis-benchmark tests, default "set,get,incr,mset"
#   REQUESTS        requests per run (-n), default 30000 (about 5 min
#                   for everything on a quiet 2-core machine)
#   REQUESTS_C1     requests per run of scenario c1, default 3000
#   REQUESTS_D4096  requests per run of scenario d4096, default 5000
#   RUN_TIMEOUT     seconds one redis-benchmark run may take, default 300
#   BENCH_DIR       parent of the temp data dirs, default $TMPDIR or /tmp;
#                   every target's data lives there, on one filesystem, so
#                   that fsync costs compare
#   RAFTIS_BIN      a raftis binary to use instead of building one
# For example, the leader against the baseline only, at 50 clients:
#   TARGETS="redis-always raftis-3-leader" SCENARIOS=c50 benches/compare.sh
#
# Needs redis-server, redis-cli and redis-benchmark (Debian: redis-server,
# redis-tools), python3 (to find free ports) and, without RAFTIS_BIN, cargo.
set -Eeuo pipefail
BENCHES=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Decimal points in awk's and printf's numbers, whatever the caller's locale.
export LC_ALL=C

ALL_TARGETS="redis-always redis-everysec raftis-1 raftis-3-leader raftis-3-follower raftis-3-spread raftis-5-leader raftis-3-leader-lease raftis-3-follower-lease"
ALL_SCENARIOS="c50 c1 p16 d4096"
# The command line as given, with the settings that were set, for the record.
SETTINGS=()
for var in TARGETS SCENARIOS TESTS REQUESTS REQUESTS_C1 REQUESTS_D4096 RUN_TIMEOUT BENCH_DIR RAFTIS_BIN; do
    setting=${!var:-}
    if [[ -z $setting ]]; then continue; fi
    # Shell-quoted as a person would type it: bare, or in double quotes
    # (sed, not ${//}: "&" in a replacement needs bash 5.2).
    if [[ ! $setting =~ ^[A-Za-z0-9_./,:=+-]+$ ]]; then
        # shellcheck disable=SC2001
        setting=\"$(sed 's/[\\"$`]/\\&/g' <<<"$setting")\"
    fi
    SETTINGS+=("$var=$setting")
done
COMMAND_LINE="${SETTINGS[*]}${SETTINGS[*]:+ }benches/compare.sh"

read -r -a TARGETS <<<"${TARGETS:-$ALL_TARGETS}"
read -r -a SCENARIOS <<<"${SCENARIOS:-$ALL_SCENARIOS}"
IFS=, read -r -a TESTS <<<"${TESTS:-set,get,incr,mset}"
REQUESTS=${REQUESTS:-30000}
REQUESTS_C1=${REQUESTS_C1:-3000}
REQUESTS_D4096=${REQUESTS_D4096:-5000}
RUN_TIMEOUT=${RUN_TIMEOUT:-300}
KEYSPACE=100000

fail() { echo "compare: $*" >&2; exit 1; }
for t in "${TARGETS[@]}"; do
    [[ " $ALL_TARGETS " == *" $t "* ]] || fail "unknown target $t (known: $ALL_TARGETS)"
done
[[ " ${TARGETS[*]} " == *" redis-always "* ]] || fail "TARGETS must include redis-always (every ratio is to it)"
for s in "${SCENARIOS[@]}"; do
    [[ " $ALL_SCENARIOS " == *" $s "* ]] || fail "unknown scenario $s (known: $ALL_SCENARIOS)"
done
((${#TESTS[@]} > 0)) || fail "TESTS is empty"
for t in "${TESTS[@]}"; do
    [[ $t =~ ^[a-z_]+$ ]] || fail "TESTS must be comma-separated redis-benchmark test names, got '$t'"
done
for n in REQUESTS REQUESTS_C1 REQUESTS_D4096 RUN_TIMEOUT; do
    [[ ${!n} =~ ^[1-9][0-9]*$ ]] || fail "$n must be a positive integer, got '${!n}'"
done

# Paths given relative to the caller's directory, before moving to the repo's.
if [[ -n ${RAFTIS_BIN:-} ]]; then RAFTIS_BIN=$(realpath -- "$RAFTIS_BIN"); fi
BENCH_DIR=$(realpath -- "${BENCH_DIR:-${TMPDIR:-/tmp}}")
cd "$(dirname "$0")/.."
for tool in redis-server redis-cli redis-benchmark python3 timeout; do
    command -v "$tool" >/dev/null || fail "$tool is not installed"
done
# The caller's settings must not change what is measured.
while read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(RAFTIS_|OTEL_)' | grep -vx RAFTIS_BIN || true)

if [[ -n ${RAFTIS_BIN:-} ]]; then
    [[ -x $RAFTIS_BIN ]] || fail "RAFTIS_BIN=$RAFTIS_BIN is not an executable"
    RAFTIS=$RAFTIS_BIN
else
    command -v cargo >/dev/null || fail "cargo is not installed (or set RAFTIS_BIN)"
    echo "building (release)..." >&2
    cargo build --release --quiet --bin raftis
    RAFTIS=target/release/raftis
fi
unset RAFTIS_BIN

WORK=$(mktemp -d "$BENCH_DIR/raftis-compare.XXXXXX")
PIDS=()
cleanup() {
    local pid
    # TERM first: timeout(1) passes it on to the redis-benchmark it runs
    # (in timeout's own process group, which a Ctrl-C does not reach).
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    sleep 0.2
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# set -e exits without a word; say which command failed (-E: in functions too).
trap 'echo "compare: line $LINENO failed: $BASH_COMMAND" >&2' ERR

# free_ports, wait_for, stop.
# shellcheck source=benches/common.sh
source "$BENCHES/common.sh"

# Polls "$@" until it succeeds, for at most $1 seconds, giving up early
# when a process of the target being started has exited.
wait_for_target() {
    local deadline=$((SECONDS + $1)) pid state; shift
    until "$@"; do
        for pid in "${TARGET_PIDS[@]}"; do
            # A child that exited stays a zombie (state Z) until reaped.
            state=$(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null || echo gone)
            if [[ $state == Z || $state == gone ]]; then
                echo "compare: process $pid of the target exited during startup" >&2
                return 1
            fi
        done
        if ((SECONDS >= deadline)); then return 1; fi
        sleep 0.1
    done
}

# INFO raft of the node at RESP port $1, without carriage returns.
raft_info() { redis-cli -p "$1" INFO raft 2>/dev/null | tr -d '\r'; }

# Prints the RESP port of the node that says it leads, if one does.
leader_port() {
    local port
    for port in "$@"; do
        # The field is raft_role (role in older builds) in INFO's # Raft section.
        if raft_info "$port" | grep -Eqx '(raft_)?role:leader'; then
            echo "$port"; return 0
        fi
    done
    return 1
}

# Succeeds when the server at RESP port $1 answers PING.
answers_ping() { [[ $(redis-cli -p "$1" PING 2>/dev/null) == PONG ]]; }

# Succeeds when every node at the RESP ports "$@" names the same, known
# leader and accepts a write (a follower forwards it): ready for load.
cluster_ready() {
    local port id ids=()
    for port in "$@"; do
        id=$(raft_info "$port" | sed -n 's/^leader_id://p')
        [[ -n $id && $id != 0 && $id != none ]] || return 1
        ids+=("$id")
    done
    [[ $(printf '%s\n' "${ids[@]}" | sort -u | wc -l) == 1 ]] || return 1
    for port in "$@"; do
        [[ $(redis-cli -p "$port" SET compare:ready 1 2>/dev/null) == OK ]] || return 1
    done
}

# The Raft term of the node at RESP port $1, or "?".
term_of() {
    raft_info "$1" | sed -n 's/^term://p' | grep . || echo '?'
}

# Starts a target ($1) in a fresh dir under $WORK; sets TARGET_PORTS (RESP
# ports of its nodes), TARGET_PIDS and TARGET_DIR. Not called in a subshell,
# so that PIDS stays visible to the exit trap.
start_target() {
    local target=$1 nodes=0 i cluster="" ports=()
    TARGET_DIR=$(mktemp -d "$WORK/$target.XXXXXX")
    TARGET_PORTS=(); TARGET_PIDS=()
    case $target in
        redis-always | redis-everysec)
            read -r -a ports <<<"$(free_ports 1)"
            redis-server --save '' --appendonly yes --appendfsync "${target#redis-}" \
                --dir "$TARGET_DIR" --port "${ports[0]}" --bind 127.0.0.1 \
                >"$TARGET_DIR/redis.log" 2>&1 &
            TARGET_PIDS+=($!); PIDS+=($!); TARGET_PORTS+=("${ports[0]}")
            if ! wait_for_target 10 answers_ping "${ports[0]}"; then
                echo "compare: $target did not start; its log:" >&2
                tail -n 20 "$TARGET_DIR/redis.log" >&2
                return 1
            fi
            return 0
            ;;
        raftis-1) nodes=1 ;;
        raftis-3-*) nodes=3 ;;
        raftis-5-*) nodes=5 ;;
    esac
    read -r -a ports <<<"$(free_ports $((nodes * 3)))"
    for ((i = 0; i < nodes; i++)); do
        cluster+="${cluster:+,}$((i + 1))=127.0.0.1:${ports[i * 3 + 1]}"
    done
    local read_policy=read_index
    [[ $target == *-lease ]] && read_policy=lease
    for ((i = 0; i < nodes; i++)); do
        RAFTIS_RAFT__READ_POLICY=$read_policy "$RAFTIS" --id $((i + 1)) \
            --listen "127.0.0.1:${ports[i * 3]}" --peer-listen "127.0.0.1:${ports[i * 3 + 1]}" \
            --http-listen "127.0.0.1:${ports[i * 3 + 2]}" --data-dir "$TARGET_DIR/node$((i + 1))" \
            --initial-cluster "$cluster" >"$TARGET_DIR/node$((i + 1)).log" 2>&1 &
        TARGET_PIDS+=($!); PIDS+=($!); TARGET_PORTS+=("${ports[i * 3]}")
    done
    if ! wait_for_target 30 cluster_ready "${TARGET_PORTS[@]}"; then
        echo "compare: $target did not get a leader that every node knows and that accepts writes; node logs:" >&2
        tail -n 20 "$TARGET_DIR"/node*.log >&2
        return 1
    fi
}

# Stops the running target and deletes its data.
stop_target() {
    local pid rest=()
    stop "${TARGET_PIDS[@]}"
    for pid in "${PIDS[@]}"; do
        [[ " ${TARGET_PIDS[*]} " == *" $pid "* ]] || rest+=("$pid")
    done
    PIDS=("${rest[@]}")
    rm -rf "$TARGET_DIR"
}

# redis-benchmark arguments of scenario $1, test $2 (and -n).
bench_args() {
    local common=(-t "$2" -r "$KEYSPACE" --csv)
    case $1 in
        c50) echo "${common[@]}" -c 50 -d 64 -n "$REQUESTS" ;;
        c1) echo "${common[@]}" -c 1 -d 64 -n "$REQUESTS_C1" ;;
        p16) echo "${common[@]}" -c 50 -P 16 -d 64 -n "$REQUESTS" ;;
        d4096) echo "${common[@]}" -c 50 -d 4096 -n "$REQUESTS_D4096" ;;
    esac
}

# Whether the redis-benchmark run against RESP port $1 with arguments
# "${@:3}", which exited with status $2 and wrote file $OUT, succeeded; says
# why not on a timeout, an error exit or no result row.
bench_ok() {
    local port=$1 status=$2 out=$OUT why; shift 2
    if ((status == 124)); then
        why="timed out after $RUN_TIMEOUT s"
    elif ((status != 0)); then
        why="exited with status $status"
    elif ! awk '/^"[A-Z]/ && !/^"test"/ { found = 1 } END { exit !found }' "$out"; then
        why="printed no result row"
    else
        return 0
    fi
    printf 'compare: redis-benchmark -p %s %s %s; its last lines:\n%s\n' \
        "$port" "$*" "$why" "$(tail -n 5 "$out" | sed '/^"test"/d; s/^/    /')" >&2
    return 1
}

# Field $2 (2 = rps, 5 = p50, 7 = p99; 1 = test name) of the result row in file $1.
csv_field() {
    grep -v '^"test"' "$1" | grep '^"[A-Z]' | head -n 1 | awk -F'","' -v f="$2" '{ gsub(/^"|"$/, ""); print $f }'
}

declare -A RPS P50 P99 MOVED NAME FAILED STEAL
# Runs scenario $1, test $2 against the running target $3; records the
# result under "$1|$2|$3".
# The machine's CPU ticks since boot: "<steal> <total>" (/proc/stat). On a
# virtual machine the hypervisor may run other guests on our CPUs (steal);
# a run that lost much CPU that way measured the host, not the target.
cpu_ticks() {
    awk 'NR == 1 { t = 0; for (i = 2; i <= NF; i++) t += $i; print $9, t; exit }' /proc/stat
}

# Percent of the CPU time between two cpu_ticks readings that was stolen.
steal_percent() {
    local s0 t0 s1 t1
    read -r s0 t0 <<<"$1"; read -r s1 t1 <<<"$2"
    awk -v s="$((s1 - s0))" -v t="$((t1 - t0))" 'BEGIN { printf "%.0f", (t > 0 ? 100 * s / t : 0) }'
}

run_bench() {
    local scen=$1 test=$2 target=$3 key="$1|$2|$3" args leader="" port term_before term_after
    read -r -a args <<<"$(bench_args "$scen" "$test")"
    # Choose the node now: leadership may have moved since the target started.
    if [[ $target == raftis-* ]]; then
        leader=$(wait_for 10 leader_port "${TARGET_PORTS[@]}") || {
            echo "compare: $target has no leader before $scen $test" >&2; FAILED[$key]=1; return 0; }
        term_before=$(term_of "$leader")
    fi
    local targets_ports=()
    case $target in
        redis-* | raftis-1) targets_ports=("${TARGET_PORTS[0]}") ;;
        *-leader | *-leader-lease) targets_ports=("$leader") ;;
        *-follower | *-follower-lease)
            for port in "${TARGET_PORTS[@]}"; do
                if [[ $port != "$leader" ]]; then targets_ports=("$port"); break; fi
            done
            ;;
        *-spread) targets_ports=("${TARGET_PORTS[@]}") ;;
    esac
    local i pids=() ok=1 t0=$SECONDS status stat_before
    stat_before=$(cpu_ticks)
    # timeout(1) itself is the background job, so that PIDS holds its pid:
    # it runs redis-benchmark in a process group of its own (out of reach
    # of a terminal's Ctrl-C), and passes the exit trap's TERM on to it.
    for i in "${!targets_ports[@]}"; do
        timeout "$RUN_TIMEOUT" redis-benchmark -p "${targets_ports[i]}" "${args[@]}" \
            >"$TARGET_DIR/bench.$i.csv" 2>&1 &
        pids+=($!); PIDS+=($!)
    done
    for i in "${!pids[@]}"; do
        status=0; wait "${pids[i]}" || status=$?
        OUT="$TARGET_DIR/bench.$i.csv" bench_ok "${targets_ports[i]}" "$status" "${args[@]}" || ok=""
    done
    STEAL[$key]=$(steal_percent "$stat_before" "$(cpu_ticks)")
    local rest=() pid
    for pid in "${PIDS[@]}"; do [[ " ${pids[*]} " == *" $pid "* ]] || rest+=("$pid"); done
    PIDS=("${rest[@]}")
    if [[ -z $ok ]]; then
        echo "  $scen $test on $target: failed after $((SECONDS - t0)) s" >&2
        FAILED[$key]=1; return 0
    fi
    if [[ $target == raftis-* ]]; then
        term_after=$(term_of "$leader")
        # An election during the run: the load partly went to a follower (or,
        # on a follower, to the new leader); the row is marked.
        if [[ $term_after != "$term_before" || $term_before == '?' ]]; then MOVED[$key]=1; fi
    fi
    # Spread: throughput summed over the nodes' runs, latency the worst node's.
    local rps=0 p50=0 p99=0 f
    for i in "${!targets_ports[@]}"; do
        f="$TARGET_DIR/bench.$i.csv"
        NAME[$test]=$(csv_field "$f" 1)
        rps=$(awk -v a="$rps" -v b="$(csv_field "$f" 2)" 'BEGIN { printf "%.2f", a + b }')
        p50=$(awk -v a="$p50" -v b="$(csv_field "$f" 5)" 'BEGIN { printf "%.3f", (b > a) ? b : a }')
        p99=$(awk -v a="$p99" -v b="$(csv_field "$f" 7)" 'BEGIN { printf "%.3f", (b > a) ? b : a }')
    done
    RPS[$key]=$rps; P50[$key]=$p50; P99[$key]=$p99
    echo "  $scen ${NAME[$test]} on $target: $rps req/s, p50 $p50 ms, p99 $p99 ms${MOVED[$key]:+ (election during the run)} ($((SECONDS - t0)) s)" >&2
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
START=$SECONDS
for target in "${TARGETS[@]}"; do
    t0=$SECONDS
    echo "$target: starting" >&2
    if start_target "$target"; then
        for scen in "${SCENARIOS[@]}"; do
            for test in "${TESTS[@]}"; do run_bench "$scen" "$test" "$target"; done
        done
    else
        for scen in "${SCENARIOS[@]}"; do
            for test in "${TESTS[@]}"; do FAILED["$scen|$test|$target"]=1; done
        done
    fi
    stop_target
    echo "$target: done in $((SECONDS - t0)) s" >&2
done
echo "all targets: $((SECONDS - START)) s" >&2

# --- Report -----------------------------------------------------------------

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
describe() {
    case $1 in
        redis-always) echo "redis-server, appendfsync always" ;;
        redis-everysec) echo "redis-server, appendfsync everysec" ;;
        raftis-1) echo "raftis, 1 node" ;;
        raftis-3-leader) echo "raftis, 3 nodes, leader" ;;
        raftis-3-follower) echo "raftis, 3 nodes, follower" ;;
        raftis-3-spread) echo "raftis, 3 nodes, spread over all" ;;
        raftis-5-leader) echo "raftis, 5 nodes, leader" ;;
        raftis-3-leader-lease) echo "raftis, 3 nodes, leader, lease reads" ;;
        raftis-3-follower-lease) echo "raftis, 3 nodes, follower, lease reads" ;;
    esac
}
scenario_args() { bench_args "$1" "$(IFS=,; echo "${TESTS[*]}")" | sed 's/ --csv//'; }

rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git diff --quiet HEAD -- 2>/dev/null; then rev+=" (working tree with uncommitted changes)"; fi
fs=$(df -PT "$WORK" | awk 'NR == 2 { print $2 " on " $1 }')

echo "Command:"
echo
echo '```sh'
echo "$COMMAND_LINE"
echo '```'
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "- machine: $(nproc) CPUs, $(uname -sr), load average before: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- $(redis-server --version | cut -d' ' -f1-3), $(redis-benchmark --version)"
echo "- raftis: $("$RAFTIS" --version 2>/dev/null | head -n 1), git $rev$( [[ $RAFTIS != target/release/raftis ]] && echo ", binary $RAFTIS")"
echo "- data dirs: $fs (the same for every target)"
echo "- settings: TARGETS=\"${TARGETS[*]}\" SCENARIOS=\"${SCENARIOS[*]}\" TESTS=$(IFS=,; echo "${TESTS[*]}") REQUESTS=$REQUESTS REQUESTS_C1=$REQUESTS_C1 REQUESTS_D4096=$REQUESTS_D4096"
echo "- scenarios (redis-benchmark arguments, the same for every target):"
for scen in "${SCENARIOS[@]}"; do echo "  - $scen: \`$(scenario_args "$scen")\`"; done
echo
echo "| scenario | test | target | req/s | ratio | p50 ms | ratio | p99 ms | ratio | steal % |"
echo "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"
any_moved=""
for scen in "${SCENARIOS[@]}"; do
    for test in "${TESTS[@]}"; do
        base="$scen|$test|redis-always"
        for target in "${TARGETS[@]}"; do
            key="$scen|$test|$target"
            name=${NAME[$test]:-${test^^}}
            if [[ -n ${FAILED[$key]:-} ]]; then
                printf '| %s | %s | %s | failed | | | | | | %s |\n' "$scen" "$name" "$(describe "$target")" \
                    "${STEAL[$key]:-}"
                continue
            fi
            mark=""
            if [[ -n ${MOVED[$key]:-} ]]; then mark="\\*"; any_moved=1; fi
            if [[ -n ${FAILED[$base]:-} ]]; then
                r1=-; r2=-; r3=-
            else
                r1=$(ratio "${RPS[$key]}" "${RPS[$base]}")
                r2=$(ratio "${P50[$key]}" "${P50[$base]}")
                r3=$(ratio "${P99[$key]}" "${P99[$base]}")
            fi
            printf '| %s | %s | %s%s | %.0f | %s | %.3f | %s | %.3f | %s | %s |\n' "$scen" "$name" \
                "$(describe "$target")" "$mark" "${RPS[$key]}" "$r1" "${P50[$key]}" "$r2" "${P99[$key]}" "$r3" \
                "${STEAL[$key]:-}"
        done
    done
done
echo
echo "Ratios are to redis-server with appendfsync always in the same scenario and test of this run:"
echo "throughput ratio = target req/s / redis req/s (higher is better); latency ratio = target ms / redis ms"
echo "(lower is better). Steal is the share of the machine's CPU time the hypervisor gave to other"
echo "guests during the row's run (/proc/stat): a row with much steal measured a busy host; compare"
echo "rows with little."
if [[ " ${TARGETS[*]} " == *" raftis-3-spread "* ]]; then
    echo "The spread rows sum the req/s of the three redis-benchmark processes (one per node, started"
    echo "together, each sending the full -n) and show the worst node's p50 and p99."
fi
echo "Each target ran alone, with empty data dirs at its start; the scenarios ran in the order shown."
if [[ -n $any_moved ]]; then
    echo
    echo "\\* the Raft term changed during this run (an election): the load partly went to another node than the one named."
fi

# --- Issue 5's targets, from this run ------------------------------------------

echo
echo "Summary (issue 5's targets for three nodes, from this run's numbers):"
echo
SUMMARY_LINES=0
# A value for the summary: "$scen|$test|$target" field, empty if not run or failed.
value() {
    local key=$2
    [[ -z ${FAILED[$key]:-} ]] || return 0
    case $1 in
        rps) echo "${RPS[$key]:-}" ;;
        p50) echo "${P50[$key]:-}" ;;
    esac
}
# "label: measured (goal) met/missed"; $2 value, $3 reference, $4 minimum ratio.
check_ratio() {
    local label=$1 v=$2 ref=$3 min=$4 keys=$5 r verdict mark="" k
    [[ -n $v && -n $ref ]] || return 0
    r=$(ratio "$v" "$ref")
    verdict=$(awk -v r="$r" -v m="$min" 'BEGIN { print (r >= m) ? "met" : "missed" }')
    for k in $keys; do if [[ -n ${MOVED[$k]:-} ]]; then mark=" (\\* election during a run)"; fi; done
    echo "- $label: ${r}x (goal ≥ ${min}x) $verdict$mark"
    SUMMARY_LINES=$((SUMMARY_LINES + 1))
}
check_ratio "SET -c 50 on the leader, to redis-always" "$(value rps 'c50|set|raftis-3-leader')" \
    "$(value rps 'c50|set|redis-always')" 0.6 'c50|set|raftis-3-leader'
check_ratio "SET -c 50 on a follower, to the leader" "$(value rps 'c50|set|raftis-3-follower')" \
    "$(value rps 'c50|set|raftis-3-leader')" 0.9 'c50|set|raftis-3-follower c50|set|raftis-3-leader'
check_ratio "GET -c 50 on the leader, to redis-always" "$(value rps 'c50|get|raftis-3-leader')" \
    "$(value rps 'c50|get|redis-always')" 0.8 'c50|get|raftis-3-leader'
check_ratio "GET -c 50 on a follower, to redis-always" "$(value rps 'c50|get|raftis-3-follower')" \
    "$(value rps 'c50|get|redis-always')" 0.8 'c50|get|raftis-3-follower'
check_ratio "SET -c 50 -P 16 on the leader, to redis-always" "$(value rps 'p16|set|raftis-3-leader')" \
    "$(value rps 'p16|set|redis-always')" 0.3 'p16|set|raftis-3-leader'
p50=$(value p50 'c1|set|raftis-3-leader')
if [[ -n $p50 ]]; then
    verdict=$(awk -v v="$p50" 'BEGIN { print (v <= 0.35) ? "met" : "missed" }')
    echo "- SET -c 1 on the leader, p50: ${p50} ms (goal ≤ 0.35 ms) $verdict${MOVED['c1|set|raftis-3-leader']:+ (\\* election during the run)}"
    SUMMARY_LINES=$((SUMMARY_LINES + 1))
fi
check_ratio "SET -c 50, 5 nodes' leader to 3 nodes' leader" "$(value rps 'c50|set|raftis-5-leader')" \
    "$(value rps 'c50|set|raftis-3-leader')" 0.8 'c50|set|raftis-5-leader c50|set|raftis-3-leader'
check_ratio "GET -c 50 on the leader with lease reads (not the default), to redis-always" \
    "$(value rps 'c50|get|raftis-3-leader-lease')" "$(value rps 'c50|get|redis-always')" 0.8 \
    'c50|get|raftis-3-leader-lease'
check_ratio "GET -c 50 on a follower with lease reads (not the default), to redis-always" \
    "$(value rps 'c50|get|raftis-3-follower-lease')" "$(value rps 'c50|get|redis-always')" 0.8 \
    'c50|get|raftis-3-follower-lease'
if ((SUMMARY_LINES == 0)); then
    echo "- none: every goal needs a run this one did not make (or that failed): raftis-3-leader and more, in c50, c1 or p16"
fi
