#!/usr/bin/env bash
# Memory and growth: what a node holds in memory, and what more data costs.
#
# Builds raftis in release mode and, on free ports of this machine, measures
# four things (PARTS selects them; each part starts its own servers on empty
# temp dirs and stops them before the next):
#
#   rss       resident memory (VmRSS of /proc/PID/status) with KEYS keys of
#             VALUE_SIZE bytes loaded: redis-server (appendonly yes,
#             appendfsync always), a one-node raftis, and each node of a
#             three-node raftis cluster; right after the load, and again
#             after GETS random GETs have filled the block cache; with the
#             peak (VmHWM).
#   growth    SET and GET throughput of a one-node raftis (redis-benchmark
#             -c CLIENTS -d VALUE_SIZE -n REQUESTS) with SMALL_KEYS keys
#             loaded and -r SMALL_KEYS, then with BIG_KEYS keys loaded and
#             -r BIG_KEYS; the ratio is the figure to watch. GETs run twice:
#             right after the load, while the engine still flushes and
#             compacts what it wrote (minutes for 10M keys), and once INFO's
#             storage_flushes_pending and storage_compactions_running have
#             stayed 0 for SETTLE_SECONDS (at most SETTLE_TIMEOUT seconds);
#             the SETs run then, after the settled GETs.
#   restart   a one-node raftis holding KEYS keys, stopped with SIGTERM (and
#             once with SIGKILL, as a crash), started again: the time from
#             exec until /ready answers 200 and a GET of a loaded key
#             returns its value, and the CPU time the process used by then
#             (which the machine's other load disturbs far less).
#   snapshot  a one-node raftis holding SNAPSHOT_VALUES values of
#             SNAPSHOT_VALUE_SIZE bytes (1 GB by default) builds a snapshot
#             and purges its log; a second node joins with --join and is
#             caught up by that snapshot. Peak RSS of the sender and the
#             receiver while it transfers (sampled every 0.1 s, and VmHWM).
#
# Keys are loaded exactly: a python3 generator writes MSET commands of
# LOAD_BATCH distinct keys named as redis-benchmark names them
# (key:000000000042), LOAD_PIPES of them in parallel into redis-cli --pipe.
# Load times are printed (to stderr) as they go.
#
# Usage: benches/memory.sh
# Settings (environment): PARTS (default "rss growth restart snapshot"),
# KEYS (default 1000000), VALUE_SIZE (64), GETS (200000), SMALL_KEYS
# (100000), BIG_KEYS (10000000), REQUESTS per benchmark (200000), CLIENTS
# (50), SNAPSHOT_VALUES (250000), SNAPSHOT_VALUE_SIZE (4096), LOAD_BATCH
# (100 keys per MSET), LOAD_PIPES (4), SETTLE_SECONDS (3), SETTLE_TIMEOUT
# (900), BENCH_DIR (temp dir parent, default
# $TMPDIR or /tmp; the snapshot part needs about 4 GB free there), BIN (a
# raftis binary to use instead of building one). Extra
# raftis settings can be given as RAFTIS_* variables with a BENCH_ prefix,
# e.g. BENCH_RAFTIS_STORAGE__MEMTABLE_SIZE_MB=32.
#
# Needs redis-server, redis-cli, redis-benchmark, curl and python3.
set -Eeuo pipefail
BENCHES=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

read -r -a PARTS <<<"${PARTS:-rss growth restart snapshot}"
KEYS=${KEYS:-1000000}
VALUE_SIZE=${VALUE_SIZE:-64}
GETS=${GETS:-200000}
SMALL_KEYS=${SMALL_KEYS:-100000}
BIG_KEYS=${BIG_KEYS:-10000000}
REQUESTS=${REQUESTS:-200000}
CLIENTS=${CLIENTS:-50}
SNAPSHOT_VALUES=${SNAPSHOT_VALUES:-250000}
SNAPSHOT_VALUE_SIZE=${SNAPSHOT_VALUE_SIZE:-4096}
LOAD_BATCH=${LOAD_BATCH:-100}
LOAD_PIPES=${LOAD_PIPES:-4}
SETTLE_SECONDS=${SETTLE_SECONDS:-3}
SETTLE_TIMEOUT=${SETTLE_TIMEOUT:-900}
for part in "${PARTS[@]}"; do
    case $part in
        rss | growth | restart | snapshot) ;;
        *) echo "memory: unknown part '$part' in PARTS (rss growth restart snapshot)" >&2; exit 1 ;;
    esac
done

cd "$(dirname "$0")/.."
for tool in redis-server redis-cli redis-benchmark curl python3; do
    command -v "$tool" >/dev/null || { echo "memory: $tool is not installed" >&2; exit 1; }
done
# The caller's settings must not change what is measured; BENCH_RAFTIS_*
# ones are passed on on purpose.
EXTRA_ENV=()
while read -r var; do
    EXTRA_ENV+=("${var#BENCH_}=${!var}")
done < <(compgen -e | grep -E '^BENCH_RAFTIS_' || true)
while read -r var; do unset "$var"; done < <(compgen -e | grep -E '^(RAFTIS_|OTEL_)' || true)

if [[ -n ${BIN:-} ]]; then
    [[ -x $BIN ]] || { echo "memory: BIN=$BIN is not an executable" >&2; exit 1; }
    RAFTIS=$(realpath "$BIN")
else
    echo "building (release)..." >&2
    cargo build --release --quiet --bin raftis
    RAFTIS=$PWD/target/release/raftis
fi

WORK=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/raftis-memory-bench.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
trap 'echo "memory: line $LINENO failed: $BASH_COMMAND" >&2' ERR

say() { echo "memory: $*" >&2; }

# free_ports, wait_for, stop.
# shellcheck source=benches/common.sh
source "$BENCHES/common.sh"

# A field of INFO (all sections) of the server on port $1, or nothing.
info_field() {
    redis-cli -p "$1" INFO everything 2>/dev/null | tr -d '\r' | sed -n "s/^$2://p"
}

is_leader() { [[ $(info_field "$1" raft_role) == leader ]]; }

# The key filter's memory on the node at port $1, in MiB (INFO
# key_filter_bytes; 0 while it is being built or when it is off).
filter_mib() {
    awk -v b="$(info_field "$1" key_filter_bytes)" 'BEGIN { printf "%.1f", b / 1048576 }'
}

# Whether the node on port $1 has purged its log (after a snapshot).
log_purged() {
    local purged
    purged=$(info_field "$1" purged_index)
    [[ -n $purged ]] && ((purged > 0))
}

# Resident and peak resident memory of process $1, in MiB ("rss peak").
rss_of() {
    awk '/^VmRSS:/ { r = $2 } /^VmHWM:/ { h = $2 } END { printf "%.0f %.0f\n", r / 1024, h / 1024 }' "/proc/$1/status"
}

# CPU seconds (user + system) process $1 has used.
cpu_of() {
    awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f\n", ($14 + $15) / hz }' "/proc/$1/stat"
}

# Nodes holding many keys flush their memtables when they stop.
STOP_GRACE=30

# Writes keys key:<$2..$3) with values of $4 bytes to the server on port
# $1, exactly, as MSETs of LOAD_BATCH keys over LOAD_PIPES connections.
load_keys() {
    local port=$1 from=$2 to=$3 size=$4 pipes=$LOAD_PIPES j lo hi started=$SECONDS
    local per=$(((to - from + pipes - 1) / pipes)) loaders=()
    for ((j = 0; j < pipes; j++)); do
        lo=$((from + j * per)); hi=$((lo + per < to ? lo + per : to))
        ((lo < hi)) || continue
        python3 - "$lo" "$hi" "$size" "$LOAD_BATCH" <<'EOF' | redis-cli -p "$port" --pipe >"$WORK/load.$j.out" 2>&1 &
import signal, sys
# Stop quietly, as a filter does, when redis-cli is gone (killed by the
# exit trap, or failed).
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
lo, hi, size, batch = (int(a) for a in sys.argv[1:])
out = sys.stdout.buffer
value = b"$%d\r\n" % size + b"x" * size + b"\r\n"
chunk = []
for start in range(lo, hi, batch):
    end = min(hi, start + batch)
    parts = [b"*%d\r\n$4\r\nMSET\r\n" % (1 + 2 * (end - start))]
    for i in range(start, end):
        parts.append(b"$16\r\nkey:%012d\r\n" % i)
        parts.append(value)
    chunk.append(b"".join(parts))
    if len(chunk) >= 64:
        out.write(b"".join(chunk))
        chunk = []
out.write(b"".join(chunk))
EOF
        # $! is redis-cli's pid (the pipeline's last command): in PIDS, so
        # that the exit trap stops it; python3 then ends on the closed pipe.
        loaders+=($!); PIDS+=($!)
    done
    local failed=0 rest=() pid
    for j in "${loaders[@]}"; do wait "$j" || failed=1; done
    for pid in "${PIDS[@]}"; do [[ " ${loaders[*]} " == *" $pid "* ]] || rest+=("$pid"); done
    PIDS=("${rest[@]}")
    if ((failed)) || grep -qs 'errors: [1-9]' "$WORK"/load.*.out; then
        cat "$WORK"/load.*.out >&2
        say "loading into port $port failed"
        return 1
    fi
    LOAD_SECONDS=$((SECONDS - started))
    say "loaded $((to - from)) keys of $size bytes into port $port in ${LOAD_SECONDS} s"
}

# Whether the node on port $1 has no flush or compaction running or queued.
storage_idle() {
    [[ $(info_field "$1" storage_flushes_pending) == 0 && $(info_field "$1" storage_compactions_running) == 0 ]]
}

# Waits until the node on port $1 has been storage_idle for SETTLE_SECONDS
# in a row (fjall starts the next compaction a moment after one ends), at
# most SETTLE_TIMEOUT seconds; sets SETTLE_WAITED to the seconds waited.
wait_storage_idle() {
    local started=$SECONDS idle_since=""
    while ((SECONDS - started < SETTLE_TIMEOUT)); do
        if storage_idle "$1"; then
            idle_since=${idle_since:-$SECONDS}
            if ((SECONDS - idle_since >= SETTLE_SECONDS)); then
                SETTLE_WAITED=$((SECONDS - started))
                return 0
            fi
        else
            idle_since=""
        fi
        sleep 0.5
    done
    say "port $1: flushes or compactions still running after $SETTLE_TIMEOUT s"
    return 1
}

# Starts raftis node $1 (ids from 1) with data dir $2, RESP/peer/HTTP ports
# $3 $4 $5 and further flags "${@:6}"; sets NODE_PID.
start_node() {
    local id=$1 dir=$2 resp=$3 peer=$4 http=$5
    shift 5
    env "${EXTRA_ENV[@]}" ${NODE_ENV[@]+"${NODE_ENV[@]}"} "$RAFTIS" --id "$id" \
        --listen "127.0.0.1:$resp" --peer-listen "127.0.0.1:$peer" \
        --http-listen "127.0.0.1:$http" --data-dir "$dir" "$@" >>"$dir.log" 2>&1 &
    NODE_PID=$!
    PIDS+=("$NODE_PID")
}
NODE_ENV=()

ready() { [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/ready") == 200 ]]; }

# Waits until node on RESP port $1 (HTTP $2) is ready and leads or follows.
wait_serving() {
    wait_for 60 ready "$2" || { say "node on port $1 never became ready"; tail -n 20 "$3" >&2; return 1; }
}

# Waits until every node on the RESP ports "$@" applied the same index,
# and that index stays put for a second (the load is over everywhere).
wait_settled() {
    local last="" now port
    local deadline=$((SECONDS + 600))
    while ((SECONDS < deadline)); do
        now=""
        for port in "$@"; do now+="$(info_field "$port" last_applied) "; done
        if [[ $now == "$last" && $(tr ' ' '\n' <<<"$now" | sort -u | grep -c .) == 1 ]]; then return 0; fi
        last=$now
        sleep 1
    done
    say "nodes $* never settled: $now"
    return 1
}

bench_rps() { # port test keyspace -> requests per second
    redis-benchmark -p "$1" -t "$2" -c "$CLIENTS" -d "$VALUE_SIZE" -r "$3" -n "$REQUESTS" -q --csv |
        awk -F'","' -v t="${2^^}" '$1 == "\"" t { print $2 }'
}

# The tables go to stdout as each part finishes, so a part that fails
# later loses nothing measured before it.
report() { printf '%s\n' "$*"; }

# Warms the block cache with GETS random GETs on port $1.
warm() { redis-benchmark -p "$1" -t get -c "$CLIENTS" -r "$KEYS" -n "$GETS" -q >/dev/null; }

part_rss() {
    local dir=$WORK/rss ports rows=() p
    mkdir -p "$dir"
    read -r -a ports <<<"$(free_ports 13)"

    # redis-server, durable like raftis.
    redis-server --port "${ports[0]}" --bind 127.0.0.1 --dir "$dir" --save '' \
        --appendonly yes --appendfsync always >"$dir/redis.log" 2>&1 &
    local redis=$!; PIDS+=("$redis")
    wait_for 10 redis-cli -p "${ports[0]}" PING >/dev/null 2>&1
    load_keys "${ports[0]}" 0 "$KEYS" "$VALUE_SIZE"
    local after; after=$(rss_of "$redis")
    warm "${ports[0]}"
    rows+=("| redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') | - | ${after% *} | $(rss_of "$redis" | tr ' ' '|' | sed 's/|/ | /') | - | ${LOAD_SECONDS} |")
    local redis_rss=${after% *}
    stop "$redis"

    # One raftis node.
    start_node 1 "$dir/one" "${ports[1]}" "${ports[2]}" "${ports[3]}"
    local one=$NODE_PID
    wait_serving "${ports[1]}" "${ports[3]}" "$dir/one.log"
    wait_for 30 is_leader "${ports[1]}"
    load_keys "${ports[1]}" 0 "$KEYS" "$VALUE_SIZE"
    wait_settled "${ports[1]}"
    after=$(rss_of "$one")
    warm "${ports[1]}"
    rows+=("| raftis, 1 node | 1 (leader) | ${after% *} | $(rss_of "$one" | tr ' ' '|' | sed 's/|/ | /') | $(filter_mib "${ports[1]}") | ${LOAD_SECONDS} |")
    stop "$one"

    # Three raftis nodes; the load goes to the leader.
    local resp=() http=() cluster="" i nodes=()
    for i in 0 1 2; do
        resp[i]=${ports[4 + i * 3]}; http[i]=${ports[6 + i * 3]}
        cluster+="${cluster:+,}$((i + 1))=127.0.0.1:${ports[5 + i * 3]}"
    done
    for i in 0 1 2; do
        start_node $((i + 1)) "$dir/three$((i + 1))" "${resp[i]}" "${ports[5 + i * 3]}" "${http[i]}" --initial-cluster "$cluster"
        nodes+=("$NODE_PID")
    done
    local leader="" deadline=$((SECONDS + 60))
    until [[ -n $leader ]]; do
        for i in 0 1 2; do if is_leader "${resp[i]}"; then leader=$i; fi; done
        ((SECONDS < deadline)) || { say "no leader among three nodes"; tail -n 20 "$dir"/three*.log >&2; return 1; }
        sleep 0.1
    done
    load_keys "${resp[leader]}" 0 "$KEYS" "$VALUE_SIZE"
    wait_settled "${resp[@]}"
    local three_after=()
    for i in 0 1 2; do three_after[i]=$(rss_of "${nodes[i]}"); done
    for i in 0 1 2; do warm "${resp[i]}"; done
    for i in 0 1 2; do
        local role=follower
        if ((i == leader)); then role=leader; fi
        rows+=("| raftis, 3 nodes | $((i + 1)) ($role) | ${three_after[i]% *} | $(rss_of "${nodes[i]}" | tr ' ' '|' | sed 's/|/ | /') | $(filter_mib "${resp[i]}") | ${LOAD_SECONDS} |")
    done
    stop "${nodes[@]}"
    PIDS=()

    report "### Resident memory with $KEYS keys of $VALUE_SIZE bytes"
    report ""
    report "MiB of VmRSS; 'after GETs' is after $GETS random GETs (-c $CLIENTS) on that node; peak is VmHWM; key filter: INFO key_filter_bytes in MiB (part of the RSS). redis-server: appendonly yes, appendfsync always."
    report ""
    report "| server | node | RSS after load | RSS after GETs | peak | key filter | load time (s) |"
    report "|---|---|---:|---:|---:|---:|---:|"
    for p in "${rows[@]}"; do report "$p"; done
    report ""
    report "redis-server RSS after load: $redis_rss MiB."
    report ""
    rm -rf "$dir"
}

part_growth() {
    local dir=$WORK/growth ports
    mkdir -p "$dir"
    read -r -a ports <<<"$(free_ports 3)"
    start_node 1 "$dir/node" "${ports[0]}" "${ports[1]}" "${ports[2]}"
    local pid=$NODE_PID
    wait_serving "${ports[0]}" "${ports[2]}" "$dir/node.log"
    wait_for 30 is_leader "${ports[0]}"
    load_keys "${ports[0]}" 0 "$SMALL_KEYS" "$VALUE_SIZE"
    local small_load=$LOAD_SECONDS
    wait_settled "${ports[0]}"
    local set_small get_small early_small set_big get_big early_big
    early_small=$(bench_rps "${ports[0]}" get "$SMALL_KEYS")
    wait_storage_idle "${ports[0]}"
    local small_settle=$SETTLE_WAITED
    get_small=$(bench_rps "${ports[0]}" get "$SMALL_KEYS")
    set_small=$(bench_rps "${ports[0]}" set "$SMALL_KEYS")
    local rss_small; rss_small=$(rss_of "$pid")
    local filter_small; filter_small=$(filter_mib "${ports[0]}")
    load_keys "${ports[0]}" "$SMALL_KEYS" "$BIG_KEYS" "$VALUE_SIZE"
    local big_load=$LOAD_SECONDS
    wait_settled "${ports[0]}"
    early_big=$(bench_rps "${ports[0]}" get "$BIG_KEYS")
    wait_storage_idle "${ports[0]}"
    local big_settle=$SETTLE_WAITED
    get_big=$(bench_rps "${ports[0]}" get "$BIG_KEYS")
    set_big=$(bench_rps "${ports[0]}" set "$BIG_KEYS")
    local rss_big; rss_big=$(rss_of "$pid")
    local filter_big; filter_big=$(filter_mib "${ports[0]}")
    local disk; disk=$(du -sm "$dir/node" | cut -f1)
    stop "$pid"
    PIDS=()
    ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
    report "### Throughput as the data grows (one raftis node)"
    report ""
    report "redis-benchmark -c $CLIENTS -d $VALUE_SIZE -n $REQUESTS -r KEYS, after loading KEYS keys. Loading $SMALL_KEYS keys took $small_load s, the $((BIG_KEYS - SMALL_KEYS)) more $big_load s; the data dir then took $disk MiB. GET/s first right after each load, while the engine flushed and compacted, then once it had been idle for $SETTLE_SECONDS s ($small_settle s and $big_settle s after those GETs), then SET/s."
    report ""
    report "| keys | GET/s after load | GET/s settled | SET/s | RSS (MiB) | peak | key filter (MiB) |"
    report "|---:|---:|---:|---:|---:|---:|---:|"
    report "| $SMALL_KEYS | ${early_small%.*} | ${get_small%.*} | ${set_small%.*} | ${rss_small// / | } | $filter_small |"
    report "| $BIG_KEYS | ${early_big%.*} | ${get_big%.*} | ${set_big%.*} | ${rss_big// / | } | $filter_big |"
    report "| ratio | $(ratio "$early_big" "$early_small") | $(ratio "$get_big" "$get_small") | $(ratio "$set_big" "$set_small") | | | |"
    report ""
    rm -rf "$dir"
}

# Restarts the node (data dir $1, ports $2 $3 $4) and sets RESTART_S (exec
# to serving) and RESTART_CPU (CPU seconds by then).
# shellcheck disable=SC2178,SC2128 # locals, not the callers' arrays of ports
restart_once() {
    local dir=$1 resp=$2 peer=$3 http=$4 started
    started=$(date +%s.%N)
    start_node 1 "$dir" "$resp" "$peer" "$http"
    local pid=$NODE_PID deadline=$((SECONDS + 120))
    # Loaded, so present (redis-benchmark's SETs may have rewritten it).
    until ready "$http" && [[ -n $(redis-cli -p "$resp" GET key:000000000042 2>/dev/null) ]]; do
        ((SECONDS < deadline)) || { say "restarted node never served"; tail -n 20 "$dir.log" >&2; return 1; }
        sleep 0.01
    done
    RESTART_S=$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
    RESTART_CPU=$(cpu_of "$pid")
    RESTART_PID=$pid
}

part_restart() {
    local dir=$WORK/restart ports
    mkdir -p "$dir"
    read -r -a ports <<<"$(free_ports 3)"
    start_node 1 "$dir/node" "${ports[0]}" "${ports[1]}" "${ports[2]}"
    local pid=$NODE_PID
    wait_serving "${ports[0]}" "${ports[2]}" "$dir/node.log"
    wait_for 30 is_leader "${ports[0]}"
    load_keys "${ports[0]}" 0 "$KEYS" "$VALUE_SIZE"
    wait_settled "${ports[0]}"
    local log_entries applied
    log_entries=$(info_field "${ports[0]}" raft_log_entries)
    applied=$(info_field "${ports[0]}" last_applied)
    local rows=() journal kind
    for kind in SIGTERM SIGTERM SIGKILL; do
        if [[ $kind == SIGKILL ]]; then
            # Fresh writes since the last clean stop, as a crash would leave them.
            redis-benchmark -p "${ports[0]}" -t set -c "$CLIENTS" -d "$VALUE_SIZE" -r "$KEYS" -n "$REQUESTS" -q >/dev/null
            kill -KILL "$pid"; wait "$pid" 2>/dev/null || true
        else
            stop "$pid"
        fi
        journal=$(du -cm "$dir"/node/db/*.jnl 2>/dev/null | tail -n 1 | cut -f1)
        restart_once "$dir/node" "${ports[0]}" "${ports[1]}" "${ports[2]}"
        pid=$RESTART_PID
        rows+=("| $kind | $RESTART_S | $RESTART_CPU | $journal |")
    done
    stop "$pid"
    PIDS=()
    report "### Restart of a node holding $KEYS keys"
    report ""
    report "One raftis node, $KEYS keys of $VALUE_SIZE bytes; $applied log entries applied, $log_entries in the log before the first restart. Time from exec until /ready answers 200 and a GET returns a loaded key; CPU the process used by then; size of the journal (MiB) it found. The SIGKILL run follows $REQUESTS SETs."
    report ""
    report "| stopped with | ready after (s) | CPU (s) | journal (MiB) |"
    report "|---|---:|---:|---:|"
    for p in "${rows[@]}"; do report "$p"; done
    report ""
    rm -rf "$dir"
}

part_snapshot() {
    local dir=$WORK/snapshot ports
    mkdir -p "$dir"
    read -r -a ports <<<"$(free_ports 6)"
    local batch=$LOAD_BATCH
    # About 100 KB per MSET, so that the log holds entries of a usual size.
    LOAD_BATCH=$((100000 / SNAPSHOT_VALUE_SIZE > 0 ? 100000 / SNAPSHOT_VALUE_SIZE : 1))
    start_node 1 "$dir/one" "${ports[0]}" "${ports[1]}" "${ports[2]}"
    local sender=$NODE_PID
    wait_serving "${ports[0]}" "${ports[2]}" "$dir/one.log"
    wait_for 30 is_leader "${ports[0]}"
    load_keys "${ports[0]}" 0 "$SNAPSHOT_VALUES" "$SNAPSHOT_VALUE_SIZE"
    LOAD_BATCH=$batch
    local load=$LOAD_SECONDS
    wait_settled "${ports[0]}"
    stop "$sender"
    # Restarted to snapshot soon and keep no log behind the snapshot, so the
    # joining node can only be caught up by the snapshot.
    NODE_ENV=(RAFTIS_RAFT__SNAPSHOT_LOGS_SINCE_LAST=50 RAFTIS_RAFT__MAX_IN_SNAPSHOT_LOG_TO_KEEP=0
              RAFTIS_RAFT__INSTALL_SNAPSHOT_TIMEOUT_MS=600000)
    start_node 1 "$dir/one" "${ports[0]}" "${ports[1]}" "${ports[2]}"
    sender=$NODE_PID
    wait_serving "${ports[0]}" "${ports[2]}" "$dir/one.log"
    wait_for 30 is_leader "${ports[0]}"
    redis-benchmark -p "${ports[0]}" -t set -c 1 -r 1000 -n 100 -q >/dev/null
    local built=$SECONDS
    wait_for 600 log_purged "${ports[0]}" ||
        { say "no snapshot was built"; return 1; }
    built=$((SECONDS - built))
    local size; size=$(du -sm "$dir/one/snapshots" | cut -f1)
    local sender_before; sender_before=$(rss_of "$sender")

    local started=$SECONDS
    start_node 2 "$dir/two" "${ports[3]}" "${ports[4]}" "${ports[5]}" --join "127.0.0.1:${ports[0]}"
    local receiver=$NODE_PID
    local max_s=0 max_r=0 r s want deadline=$((SECONDS + 1200))
    want=$(info_field "${ports[0]}" snapshot_index)
    while true; do
        s=$(rss_of "$sender"); s=${s% *}
        r=$(rss_of "$receiver" 2>/dev/null) || r="0 0"; r=${r% *}
        ((s > max_s)) && max_s=$s
        ((r > max_r)) && max_r=$r
        local got; got=$(info_field "${ports[3]}" last_applied)
        if [[ -n $got ]] && ((got >= want)) && [[ $(info_field "${ports[3]}" db0 | sed 's/keys=\([0-9]*\).*/\1/') -ge $SNAPSHOT_VALUES ]]; then break; fi
        ((SECONDS < deadline)) || { say "the new node was never caught up"; tail -n 20 "$dir/two.log" >&2; return 1; }
        sleep 0.1
    done
    local took=$((SECONDS - started))
    local hwm_s hwm_r
    hwm_s=$(rss_of "$sender"); hwm_r=$(rss_of "$receiver")
    stop "$receiver" "$sender"
    PIDS=()
    NODE_ENV=()
    report "### Snapshot transfer to a joining node"
    report ""
    report "$SNAPSHOT_VALUES values of $SNAPSHOT_VALUE_SIZE bytes (loaded in $load s) on one node; its snapshot file: $size MiB (built in about $built s after a restart with raft.snapshot_logs_since_last 50 and max_in_snapshot_log_to_keep 0). A second node joined with --join and was caught up by that snapshot in $took s. RSS sampled every 0.1 s during the transfer; peak is VmHWM since the process started (the sender was restarted before building the snapshot)."
    report ""
    report "| process | RSS before (MiB) | max RSS sampled (MiB) | peak VmHWM (MiB) |"
    report "|---|---:|---:|---:|"
    report "| sender (leader) | ${sender_before% *} | $max_s | ${hwm_s#* } |"
    report "| receiver (joining node) | - | $max_r | ${hwm_r#* } |"
    report ""
    rm -rf "$dir"
}

echo "benches/memory.sh, PARTS=\"${PARTS[*]}\", $(nproc) CPUs${EXTRA_ENV[*]:+, raftis settings: ${EXTRA_ENV[*]}}"
echo
for part in "${PARTS[@]}"; do
    say "part $part"
    load_before=$(cut -d' ' -f1-3 /proc/loadavg)
    "part_$part"
    echo "(load average before this part: $load_before; after: $(cut -d' ' -f1-3 /proc/loadavg))"
    echo
done
