#!/usr/bin/env bash
# Catalog writes through Raft on three nodes (sqlite: every node fsyncs its log before it
# acknowledges), beside what this disk allows with one fdatasync per write, in one run:
#   1. the disk: 4 KiB writes, each followed by fdatasync, for DURATION seconds (python3);
#   2. mpreg bench --catalog with 64 writers, then with 1, against the first node.
# The three nodes share this machine's disk and cores; the data lives under a temporary
# directory (TMPDIR: put it on the disk you mean to measure).
#
#   scripts/bench_catalog.sh                      # 2 passes x 3 rounds of 5 s
#   PASSES=1 ROUNDS=1 DURATION=3 scripts/bench_catalog.sh
#
# Needs: python3, the release binaries (MPREG_BIN_DIR, default target/release;
# `cargo build --release --bin mpreg --bin mpreg-node`).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${MPREG_BIN_DIR:-target/release}
for b in "$bin/mpreg" "$bin/mpreg-node"; do
  [ -x "$b" ] || { echo "bench_catalog.sh: $b is missing (see the header)" >&2; exit 2; }
done
command -v python3 >/dev/null || { echo "bench_catalog.sh: python3 is not on PATH" >&2; exit 2; }
# shellcheck source=scripts/bench_work.sh
. scripts/bench_work.sh

openssl rand -hex 32 >"$work/secret" 2>/dev/null || python3 -c 'import secrets; print(secrets.token_hex(32))' >"$work/secret"
chmod 600 "$work/secret"
node_flags=(--cluster-secret-file "$work/secret")
# shellcheck source=scripts/bench_cluster.sh
. scripts/bench_cluster.sh
start_node n1
url1=$(url_of n1)
[ -n "$url1" ] || { echo "bench_catalog.sh: the first node did not start" >&2; exit 1; }
start_node n2 --peers "$url1"
start_node n3 --peers "$url1"
wait_members 3 "$url1"

fsync_rate() {
  python3 - "$work/fsync.dat" "$duration" <<'EOF'
import os, sys, time
path, secs = sys.argv[1], float(sys.argv[2])
fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
block, n, t0 = b"\0" * 4096, 0, time.monotonic()
while time.monotonic() - t0 < secs:
    os.pwrite(fd, block, (n % 256) * 4096)
    os.fdatasync(fd)
    n += 1
print(f"{n / (time.monotonic() - t0):.0f}")
EOF
}
common=(--duration "$duration" --warmup 1 --rounds "$rounds" --cluster-secret-file "$work/secret")
catalog() { "$bin/mpreg" bench --catalog --url "$url1" "${common[@]}" "$@" 2>/dev/null | tail -1; }
for pass in $(seq "$passes"); do
  echo "== pass $pass/$passes"
  echo "disk: $(fsync_rate) fdatasyncs/s (4 KiB writes, one sync each)"
  echo "mpreg, 64 writers: $(catalog --connections 64)"
  echo "mpreg, 1 writer:   $(catalog --connections 1)"
done
# How the writes were grouped on the leader (the first node, which bootstrapped).
mon=$(grep MPREG_MONITORING_URL= "$work/n1.out" | cut -d= -f2)
if [ -n "$mon" ]; then
  "$bin/mpreg" monitor metrics --url "$mon" 2>/dev/null | awk '
    /^mpreg_raft_proposal_commands_sum / { s = $2 } /^mpreg_raft_proposal_commands_count / { c = $2 }
    /^mpreg_raft_log_writes_total / { w = $2 } /^mpreg_raft_log_commits_total / { k = $2 }
    END { if (c > 0 && k > 0) printf "leader: %.1f commands per entry, %.1f writes per fsync\n", s / c, w / k }'
fi
