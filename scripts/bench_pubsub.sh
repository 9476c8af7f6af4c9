#!/usr/bin/env bash
# Topic pub/sub, mpreg beside NATS in one run: 1 publisher, 4 subscribers of
# `*.*.created`-style patterns over 1000 topics, 16-byte payloads; unpaced (throughput),
# then paced at 10k msgs/s (one-way latency). mpreg on one node and across two (the
# publisher on the second node, the subscribers on the first); NATS with one nats-server.
# Passes alternate NATS and mpreg; medians of each tool's own rounds are what it prints.
#
#   NATSBENCH_DIR=/path/to/natsbench scripts/bench_pubsub.sh    # 2 passes x 3 rounds of 5 s
#   NATSBENCH_DIR=/path/to/natsbench PASSES=1 ROUNDS=1 scripts/bench_pubsub.sh
#
# Needs: nats-server on PATH (Debian: apt-get install nats-server), the release binaries
# (MPREG_BIN_DIR, default target/release; `cargo build --release --bin mpreg --bin
# mpreg-node`), and natsbench, the NATS load generator the figures are compared with. It is
# not part of this repository, so its place is a setting: NATSBENCH_DIR, its directory
# (built there with `cargo build --release`), or NATSBENCH, the binary itself. Ports: nats
# 4222, mpreg chosen by the OS.
set -euo pipefail
cd "$(dirname "$0")/.."
me=bench_pubsub.sh
# shellcheck source=scripts/bench_common.sh
. scripts/bench_common.sh

printf 'listen: 127.0.0.1:4222\n' >"$work/nats.conf"
nats-server -c "$work/nats.conf" >"$work/nats.log" 2>&1 &
pids+=($!)

# node NAME [PEER_URL]: starts a node and sets `url` to its URL. Not called inside $(...):
# a subshell's `pids+=` would never reach the cleanup, which then left the nodes running.
node() {
  local out="$work/$1.out" peers=()
  [ -n "${2:-}" ] && peers=(--peers "$2")
  "$bin/mpreg-node" --port 0 --name "$1" --persistence-mode memory --no-monitoring \
    --log-level error "${peers[@]}" >"$out" 2>"$work/$1.err" &
  pids+=($!)
  for _ in $(seq 300); do grep -q MPREG_URL= "$out" && break; sleep 0.1; done
  url=$(grep MPREG_URL= "$out" | cut -d= -f2)
}
node a; a=$url
node b "$a"; b=$url
[ -n "$a" ] && [ -n "$b" ] || { echo "bench_pubsub.sh: a node did not start" >&2; exit 1; }
sleep 2 # b joins a's cluster

common=(--duration "$duration" --warmup 1 --rounds "$rounds" --payload-bytes 16)
nats() {
  "$natsbench" pubsub --url nats://127.0.0.1:4222 --subscribers 4 --sub-subject 'orders.*.created' \
    --pub-subject 'orders.{id}.created' --pub-ids 1000 "${common[@]}" "$@" 2>/dev/null | tail -2 | head -1
}
mpreg() {
  "$bin/mpreg" bench --pubsub --url "$a" --subscribers 4 --topics 1000 "${common[@]}" "$@" 2>/dev/null
}
for pass in $(seq "$passes"); do
  echo "== pass $pass/$passes: unpaced"
  echo "nats:        $(nats)"
  echo "mpreg 1 node:  $(mpreg | tail -1)"
  echo "mpreg 2 nodes: $(mpreg --publish-url "$b" | tail -1)"
  echo "== pass $pass/$passes: paced at 10000 msgs/s"
  echo "nats:        $(nats --rate 10000)"
  echo "mpreg 1 node:  $(mpreg --rate 10000 | tail -1)"
  echo "mpreg 2 nodes: $(mpreg --rate 10000 --publish-url "$b" | tail -1)"
done
