#!/usr/bin/env bash
# What recording metrics costs per call: the node's instructions per `echo` call (4x64
# connections x in flight, `mpreg bench`), with the request path's recording and without
# it, counted by callgrind (a VM has no hardware counters, and throughput on 2 shared
# cores varies by ±10% run to run; instruction counts repeat to 0.1%).
#
#   scripts/metrics_cost.sh            # builds both variants (release), then measures
#
# "Without" is HEAD with the recording calls removed (per-call histogram and its two clock
# reads, the per-connection byte and DAG-size tallies), built in a git worktree: this
# checkout is never modified. Each variant runs twice for 3 s and 9 s under callgrind;
# per-call instructions are (Ir(9 s) - Ir(3 s)) / (calls(9 s) - calls(3 s)), which cancels
# start-up and shutdown. Needs valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${MPREG_COST_DIR:-/var/tmp/mpreg-metrics-cost}
mkdir -p "$work"
target="$work/target"

echo "== building with metrics (HEAD)"
rm -rf "$work/on-src"
git worktree add --force --detach "$work/on-src" HEAD >/dev/null
(cd "$work/on-src" && CARGO_TARGET_DIR="$target" cargo build --release --quiet --bin mpreg --bin mpreg-node)
mkdir -p "$work/on" && cp "$target/release/mpreg" "$target/release/mpreg-node" "$work/on/"
git worktree remove --force "$work/on-src"

echo "== building without the request path's recording"
rm -rf "$work/off-src"
git worktree add --force --detach "$work/off-src" HEAD >/dev/null
python3 - "$work/off-src" <<'PY'
import sys
root = sys.argv[1]
def rep(p, old, new):
    p = f"{root}/{p}"
    s = open(p).read()
    if old not in s:
        sys.exit(f"metrics_cost.sh: {p} changed; update the patch ({old[:50]!r})")
    open(p, "w").write(s.replace(old, new))
rep("src/rpc/exec.rs", """    let started = clock.now();
    let result = call_guarded(&*f.handler, args).await;
    let took = clock.now().saturating_duration_since(started);
    f.stats.record(caller, result.is_ok(), took);
    result""", """    let _ = (clock, caller);
    call_guarded(&*f.handler, args).await""")
rep("src/node/conn.rs", """        self.tally
            .bytes_out
            .fetch_add(m.len() as u64, Ordering::Relaxed);""", "")
rep("src/node/conn.rs", """        self.tally
            .bytes_in
            .fetch_add(charged as u64, Ordering::Relaxed);""", "")
rep("src/node/conn.rs", """        self.tally.dag_steps.record(req.cmds.len() as u64);""", "")
PY
(cd "$work/off-src" && CARGO_TARGET_DIR="$target" cargo build --release --quiet --bin mpreg-node)
mkdir -p "$work/off" && cp "$target/release/mpreg-node" "$work/off/"
git worktree remove --force "$work/off-src"

# One run: the node under callgrind, `secs` seconds of 4x64 echo; prints "calls Ir".
run() {
  local v=$1 secs=$2 out cg pid url calls
  out=$(mktemp); cg="$work/cg-$v-$secs.out"; rm -f "$cg"
  valgrind --tool=callgrind --callgrind-out-file="$cg" "$work/$v/mpreg-node" --port 0 \
    --persistence-mode memory --no-monitoring --log-level error >"$out" 2>/dev/null &
  pid=$!
  # run() is called in a process substitution (a subshell): this trap is its own, and stops
  # the node however the subshell ends (a failed bench included).
  trap 'kill -TERM "$pid" 2>/dev/null || true; rm -f "$out"' EXIT
  for _ in $(seq 600); do grep -q MPREG_URL= "$out" && break; sleep 0.1; done
  url=$(grep MPREG_URL= "$out" | cut -d= -f2)
  sleep 3 # the node bootstraps and commits its registration first
  calls=$("$work/on/mpreg" bench --url "$url" --duration "$secs" --warmup 0 --rounds 1 --json 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["mpreg"]["rounds"][0]["calls"])')
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
  echo "$calls $(grep -m1 '^summary:' "$cg" | awk '{print $2}')"
  rm -f "$out"
}

echo "== measuring (callgrind; about 2 minutes)"
declare -A per
for round in 1 2; do
  for v in on off; do
    read -r c3 i3 < <(run "$v" 3)
    read -r c9 i9 < <(run "$v" 9)
    p=$(( (i9 - i3) / (c9 - c3) ))
    echo "round $round, metrics $v: $p instructions per call ($c3 and $c9 calls)"
    per[$v]=$(( ${per[$v]:-0} + p ))
  done
done
python3 -c "on, off = ${per[on]} / 2, ${per[off]} / 2; print(f'with metrics {on:.0f}, without {off:.0f} instructions per call: recording costs {100 * (on - off) / off:.2f}% (ratio {on / off:.4f})')"
