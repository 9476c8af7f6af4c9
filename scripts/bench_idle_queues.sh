#!/usr/bin/env bash
# What an idle node hosting many replicated queues costs: three mpreg-nodes on SQLite, N
# queues with replicas 3 (so every node holds N replicas), then, with nothing sent, each
# node's CPU (utime+stime from /proc over the window), resident memory, and peer bytes sent
# per second (its /metrics, mpreg_peer_bytes_sent) over the same window; the same three
# nodes with no queue measured first, as the baseline.
#
#   scripts/bench_idle_queues.sh                 # N=1000, 30 s windows
#   QUEUES=200 WINDOW=10 scripts/bench_idle_queues.sh
#
# Needs the release binaries (MPREG_BIN_DIR, default target/release).
set -euo pipefail
cd "$(dirname "$0")/.."
me=bench_idle_queues.sh
bin=${MPREG_BIN_DIR:-target/release}
for b in "$bin/mpreg" "$bin/mpreg-node"; do
  [ -x "$b" ] || { echo "$me: $b is missing (see the header)" >&2; exit 2; }
done
queues=${QUEUES:-1000}
window=${WINDOW:-30}
# shellcheck source=scripts/bench_work.sh
. scripts/bench_work.sh

node_flags=(--queue-max-queues 10000)
# shellcheck source=scripts/bench_cluster.sh
. scripts/bench_cluster.sh
start_node n1
url1=$(url_of n1)
[ -n "$url1" ] || { echo "$me: the first node did not start" >&2; exit 1; }
start_node n2 --peers "$url1"
start_node n3 --peers "$url1"
wait_members 3 "$url1"

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$1/status"; }
sent_bytes() { # monitoring url -> mpreg_peer_bytes_sent summed over peers
  "$bin/mpreg" monitor metrics --url "$1" 2>/dev/null |
    awk '/^mpreg_peer_bytes_sent/ { s += $2 } END { printf "%.0f\n", s }'
}
measure() { # label
  local hz t0 t1 b0 b1 p mon
  hz=$(getconf CLK_TCK)
  declare -A t0 b0
  for n in n1 n2 n3; do
    p=$(cat "$work/$n.pid"); mon=$(grep MPREG_MONITORING_URL= "$work/$n.out" | cut -d= -f2)
    t0[$n]=$(ticks "$p"); b0[$n]=$(sent_bytes "$mon")
  done
  sleep "$window"
  for n in n1 n2 n3; do
    p=$(cat "$work/$n.pid"); mon=$(grep MPREG_MONITORING_URL= "$work/$n.out" | cut -d= -f2)
    t1=$(ticks "$p"); b1=$(sent_bytes "$mon")
    awk -v l="$1" -v n="$n" -v dt=$((t1 - t0[$n])) -v hz="$hz" -v w="$window" \
        -v db=$((b1 - b0[$n])) -v rss="$(rss_kib "$p")" \
      'BEGIN { printf "%s %s: CPU %.2f%% of a core, RSS %.1f MiB, peer bytes sent %.0f/s\n", l, n, 100 * dt / hz / w, rss / 1024, db / w }'
  done
}
sleep 3
measure "no queues:"
echo "creating $queues queues with replicas 3 ..."
for i in $(seq "$queues"); do
  "$bin/mpreg" client call queue_create --url "$url1" \
    "{\"queue_name\": \"idle-$i\", \"replicas\": 3}" >/dev/null 2>&1 ||
    { echo "$me: queue_create idle-$i failed" >&2; exit 1; }
done
# Every group elected its leader and went quiet.
sleep 10
measure "$queues queues:"
