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
