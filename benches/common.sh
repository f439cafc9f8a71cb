# shellcheck shell=bash
# Shell functions the benchmark scripts in this directory share; sourced,
# not run.

# N distinct free ports on 127.0.0.1 (all held until every one is chosen).
free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
held = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    held.append(s)
print(" ".join(str(s.getsockname()[1]) for s in held))
PY
}

# Polls "$@" until it succeeds, for at most $1 seconds.
wait_for() {
    local deadline=$((SECONDS + $1)); shift
    until "$@"; do
        if ((SECONDS >= deadline)); then return 1; fi
        sleep 0.1
    done
}

# Stops the processes "$@" with SIGTERM, waiting up to STOP_GRACE seconds
# (default 20: a node flushes its storage and queued spans on the way out),
# then with SIGKILL; reaps them.
stop() {
    kill -TERM "$@" 2>/dev/null || true
    local deadline=$((SECONDS + ${STOP_GRACE:-20})) pid
    for pid in "$@"; do
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.05; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
