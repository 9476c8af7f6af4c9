#!/usr/bin/env bash
# Replicated work queues, mpreg beside NATS JetStream in one run, 16-byte payloads, three
# nodes each:
#   - mpreg: three mpreg-nodes on SQLite (every entry fsynced before it counts toward a
#     commit), a queue with replicas 3 (a Raft group; a send is acknowledged once two of the
#     three have it on disk);
#   - NATS: a 3-node nats-server cluster (../shared/tools/natsbench/js_cluster.sh), a stream
#     with 3 replicas. On nats-server 2.9 (Debian bookworm) its acks come without fsync (a
#     quorum's page caches); with SYNC_ALWAYS=1 and a 2.10+ server, fsync before every ack.
# Runs: acknowledged sends, 4 connections x 64 in flight (natsbench js-pub --replicas 3;
# mpreg bench --queue --consumers 0 --queue-replicas 3), then a work queue paced at 2000
# msgs/s for end-to-end latency (2 producers x 32, 4 consumers acking every message).
# Passes alternate NATS and mpreg; each prints the medians of its own rounds.
#
#   NATSBENCH_DIR=/path/to/natsbench scripts/bench_queue_r3.sh   # 2 passes x 3 rounds of 5 s
#   NATSBENCH=/path/to/natsbench PASSES=1 ROUNDS=1 scripts/bench_queue_r3.sh
#
# Needs what bench_queue.sh needs (nats-server on PATH, release binaries in MPREG_BIN_DIR,
# natsbench), and JS_CLUSTER (default ../shared/tools/natsbench/js_cluster.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
me=bench_queue_r3.sh
# shellcheck source=scripts/bench_common.sh
. scripts/bench_common.sh
js_cluster=${JS_CLUSTER:-../shared/tools/natsbench/js_cluster.sh}
[ -x "$js_cluster" ] || { echo "$me: no js_cluster.sh at $js_cluster (JS_CLUSTER)" >&2; exit 2; }

sync=()
[ "${SYNC_ALWAYS:-0}" = 1 ] && sync=(--sync-always)
TMPDIR="$work" "$js_cluster" "$work/js" "${sync[@]}" >"$work/js.log" 2>&1 ||
  { echo "$me: the NATS cluster did not start:" >&2; cat "$work/js.log" >&2; exit 1; }
stop_js() { TMPDIR="$work" "$js_cluster" stop >/dev/null 2>&1 || true; }
trap 'stop_js; cleanup' EXIT
if [ ${#sync[@]} -gt 0 ]; then nats_sync="fsync before every ack (sync_interval: always)"
else nats_sync="NO fsync before its acks ($(nats-server --version))"; fi

node_flags=(--queue-max-messages 5000000 --queue-max-bytes 4294967296)
# shellcheck source=scripts/bench_cluster.sh
. scripts/bench_cluster.sh
start_node n1
url1=$(url_of n1)
[ -n "$url1" ] || { echo "$me: the first node did not start" >&2; exit 1; }
start_node n2 --peers "$url1"
start_node n3 --peers "$url1"
wait_members 3 "$url1"

common=(--duration "$duration" --warmup 1 --rounds "$rounds")
nats() { "$natsbench" "$@" --url nats://127.0.0.1:4222 --stream BENCH --replicas 3 "${common[@]}" 2>/dev/null | grep -v '^JSON' | tail -2 | tr '\n' ' '; }
mpreg() { "$bin/mpreg" bench --queue --queue-replicas 3 --queue-max-size 5000000 --url "$url1" "${common[@]}" "$@" 2>/dev/null | tail -1; }
echo "NATS: 3 nodes, R3, $nats_sync; mpreg: 3 nodes, R3, sqlite, fsync before every entry counts"
for pass in $(seq "$passes"); do
  echo "== pass $pass/$passes: acknowledged sends, 4 x 64 in flight"
  echo "nats:  $(nats js-pub --connections 4 --inflight 64 --size 16)"
  echo "mpreg: $(mpreg --connections 4 --inflight 64 --consumers 0)"
  echo "== pass $pass/$passes: work queue paced at 2000 msgs/s"
  echo "nats:  $(nats js-work --producers 2 --inflight 32 --consumers 4 --batch 10 --ack async --size 16 --rate 2000)"
  echo "mpreg: $(mpreg --connections 2 --inflight 32 --consumers 4 --batch 10 --rate 2000)"
done
