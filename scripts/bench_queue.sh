#!/usr/bin/env bash
# Work queues, mpreg beside NATS JetStream in one run, 16-byte payloads:
#   1. acknowledged sends only: 4 connections x 64 in flight (natsbench js-pub; mpreg bench
#      --queue --consumers 0);
#   2. a work queue, unpaced: 2 producers x 32 in flight, 4 competing consumers acking every
#      message (natsbench js-work --ack async; mpreg bench --queue);
#   3. the same paced at 4000 msgs/s, for end-to-end latency.
# mpreg runs one node in sqlite mode (every send fsynced before it is answered); NATS one
# nats-server with JetStream, file storage, one replica. Whether NATS fsyncs before its acks
# depends on the server: 2.10+ can (`sync_interval: always`, set when SYNC_ALWAYS=1); 2.9
# (Debian bookworm) cannot, and fsyncs every 2 minutes. The script prints which.
# Passes alternate NATS and mpreg; medians of each tool's own rounds are what it prints.
#
#   NATSBENCH_DIR=/path/to/natsbench scripts/bench_queue.sh    # 2 passes x 3 rounds of 5 s
#   NATSBENCH=/path/to/natsbench PASSES=1 ROUNDS=1 scripts/bench_queue.sh
#
# Needs: nats-server on PATH, the release binaries (MPREG_BIN_DIR, default target/release;
# `cargo build --release --bin mpreg --bin mpreg-node`), and natsbench (NATSBENCH_DIR, its
# directory built with `cargo build --release`, or NATSBENCH, the binary). The data of both
# live under a temporary directory (TMPDIR: put it on the disk you mean to measure).
set -euo pipefail
cd "$(dirname "$0")/.."
me=bench_queue.sh
# shellcheck source=scripts/bench_common.sh
. scripts/bench_common.sh

sync=""
[ "${SYNC_ALWAYS:-0}" = 1 ] && sync="  sync_interval: always"
printf 'listen: 127.0.0.1:4222\njetstream {\n  store_dir: %s\n%s\n}\n' "$work/js" "$sync" >"$work/nats.conf"
if ! nats-server -t -c "$work/nats.conf" >/dev/null 2>&1; then
  echo "bench_queue.sh: nats-server $(nats-server --version) rejects the config (sync_interval needs 2.10+)" >&2
  exit 2
fi
nats-server -c "$work/nats.conf" >"$work/nats.log" 2>&1 &
pids+=($!)
if [ -n "$sync" ]; then nats_sync="fsync before every ack (sync_interval: always)"
else nats_sync="NO fsync before its acks ($(nats-server --version): stream files synced every 2 min)"; fi

out="$work/node.out"
"$bin/mpreg-node" --port 0 --name q --persistence-mode sqlite --data-dir "$work/mpreg" \
  --queue-max-messages 5000000 --queue-max-bytes 4294967296 --no-monitoring --log-level error >"$out" 2>"$work/node.err" &
pids+=($!)
for _ in $(seq 300); do grep -q MPREG_URL= "$out" && break; sleep 0.1; done
url=$(grep MPREG_URL= "$out" | cut -d= -f2)
[ -n "$url" ] || { echo "bench_queue.sh: the node did not start" >&2; exit 1; }
sleep 1 # the node elects itself and registers

common=(--duration "$duration" --warmup 1 --rounds "$rounds")
nats() { "$natsbench" "$@" --url nats://127.0.0.1:4222 --stream BENCH "${common[@]}" 2>/dev/null | grep -v '^JSON' | tail -2 | tr '\n' ' '; }
mpreg() { "$bin/mpreg" bench --queue --queue-max-size 5000000 --url "$url" "${common[@]}" "$@" 2>/dev/null | tail -1; }
echo "NATS: $nats_sync; mpreg: sqlite, fsync before every answer"
for pass in $(seq "$passes"); do
  echo "== pass $pass/$passes: acknowledged sends, 4 x 64 in flight"
  echo "nats:  $(nats js-pub --connections 4 --inflight 64 --size 16)"
  echo "mpreg: $(mpreg --connections 4 --inflight 64 --consumers 0)"
  echo "== pass $pass/$passes: work queue, 2 producers x 32, 4 consumers, unpaced"
  echo "nats:  $(nats js-work --producers 2 --inflight 32 --consumers 4 --batch 10 --ack async --size 16)"
  echo "mpreg: $(mpreg --connections 2 --inflight 32 --consumers 4 --batch 10)"
  echo "== pass $pass/$passes: work queue paced at 4000 msgs/s"
  echo "nats:  $(nats js-work --producers 2 --inflight 32 --consumers 4 --batch 10 --ack async --size 16 --rate 4000)"
  echo "mpreg: $(mpreg --connections 2 --inflight 32 --consumers 4 --batch 10 --rate 4000)"
done
