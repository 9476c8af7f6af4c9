#!/usr/bin/env bash
# The cache, mpreg beside Redis in one run: 90% gets and 10% sets over 100k keys of 64-byte
# values, at the same concurrency, 4 connections x 64 in flight:
#   redis-benchmark -c 4 -P 64 (pipelining 64 per connection), GET and SET measured apart
#   and combined as 90/10 (the time of 0.9 gets and 0.1 sets);
#   mpreg bench --cache (L1; its gets and puts ask without metadata, as Redis GET answers),
#   beside echo calls at the same concurrency, for get p50 over echo p50.
# One mpreg node in memory mode and one redis-server without persistence; passes alternate
# them; each tool's medians are what it prints.
#
#   scripts/bench_cache.sh                     # 2 passes x 3 rounds of 5 s
#   PASSES=1 ROUNDS=1 DURATION=3 scripts/bench_cache.sh
#
# Needs: redis-server and redis-benchmark on PATH (Debian: redis-server, redis-tools) and
# the release binaries (MPREG_BIN_DIR, default target/release; `cargo build --release --bin
# mpreg --bin mpreg-node`).
set -euo pipefail
cd "$(dirname "$0")/.."
me=bench_cache.sh
bin=${MPREG_BIN_DIR:-target/release}
for b in "$bin/mpreg" "$bin/mpreg-node"; do
  [ -x "$b" ] || { echo "$me: $b is missing (see the header)" >&2; exit 2; }
done
for c in redis-server redis-benchmark; do
  command -v "$c" >/dev/null || { echo "$me: $c is not on PATH (apt-get install redis-server redis-tools)" >&2; exit 2; }
done
# shellcheck source=scripts/bench_work.sh
. scripts/bench_work.sh

redis_port=16399
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
pids+=($!)
out="$work/node.out"
"$bin/mpreg-node" --port 0 --name c --persistence-mode memory --no-monitoring --log-level error >"$out" 2>"$work/node.err" &
pids+=($!)
for _ in $(seq 300); do grep -q MPREG_URL= "$out" && break; sleep 0.1; done
url=$(grep MPREG_URL= "$out" | cut -d= -f2)
[ -n "$url" ] || { echo "$me: the node did not start" >&2; exit 1; }
for _ in $(seq 100); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

# requests per second of one redis-benchmark test (-t get|set) at 4 x 64, for the length of
# a round; the keyspace loaded first by a SET pass.
redis_rps() {
  local n=$(( 1000000 * duration ))
  redis-benchmark -p "$redis_port" -c 4 -P 64 -n "$n" -r 100000 -d 64 -t "$1" --csv 2>/dev/null \
    | tail -1 | cut -d, -f2 | tr -d '"'
}
redis() {
  local gets=() sets=() g s
  for _ in $(seq "$rounds"); do
    s=$(redis_rps set); g=$(redis_rps get); sets+=("$s"); gets+=("$g")
  done
  g=$(printf '%s\n' "${gets[@]}" | sort -n | sed -n "$(( (rounds + 1) / 2 ))p")
  s=$(printf '%s\n' "${sets[@]}" | sort -n | sed -n "$(( (rounds + 1) / 2 ))p")
  awk -v g="$g" -v s="$s" 'BEGIN { printf "GET %.0f/s, SET %.0f/s; 90/10 mix %.0f ops/s\n", g, s, 1 / (0.9 / g + 0.1 / s) }'
}
mpreg() {
  "$bin/mpreg" bench --cache --url "$url" --connections 4 --inflight 64 \
    --duration "$duration" --warmup 1 --rounds "$rounds" 2>/dev/null | tail -2 | tr '\n' ' '
  echo
}
for pass in $(seq "$passes"); do
  echo "== pass $pass/$passes: 90% get / 10% set, 100k keys, 64 B values, 4 x 64 in flight"
  echo "redis: $(redis)"
  echo "mpreg: $(mpreg)"
done
