#!/usr/bin/env bash
# Starts a local three-node raftis cluster from config/node1..3.toml
# (RESP ports 6379, 6380, 6381; data in ./data/node1..3; logs in
# ./data/node<N>.log) and stops all three on Ctrl-C or when any one exits.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --bin raftis
mkdir -p data
pids=()
stop() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop EXIT INT TERM

for n in 1 2 3; do
  ./target/release/raftis --config "config/node$n.toml" >"data/node$n.log" 2>&1 &
  pids+=("$!")
done
echo "raftis: three nodes on 127.0.0.1:6379, :6380, :6381 (logs in data/node<N>.log); Ctrl-C stops them."
# Exits when the first node does, taking the others down with it.
wait -n
