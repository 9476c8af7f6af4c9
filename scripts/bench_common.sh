# Sourced by the benchmarks that set mpreg beside NATS (bench_pubsub.sh, bench_queue.sh):
# finds the binaries (MPREG_BIN_DIR, default target/release), natsbench (NATSBENCH, its
# binary, or NATSBENCH_DIR, its directory built with `cargo build --release`) and
# nats-server, reads PASSES, ROUNDS and DURATION, and makes a work directory that the
# exit takes away with every process started into `pids`. The caller names itself in $me.
bin=${MPREG_BIN_DIR:-target/release}
if [ -n "${NATSBENCH:-}" ]; then
  natsbench=$NATSBENCH
elif [ -n "${NATSBENCH_DIR:-}" ]; then
  natsbench=$NATSBENCH_DIR/target/release/natsbench
else
  echo "$me: say where natsbench is: NATSBENCH_DIR=<its directory, built with" \
    "cargo build --release> or NATSBENCH=<its binary> (see the header)" >&2
  exit 2
fi
[ -x "$natsbench" ] || {
  echo "$me: no natsbench binary at $natsbench (from NATSBENCH_DIR or NATSBENCH;" \
    "build it in its directory with cargo build --release)" >&2
  exit 2
}
for b in "$bin/mpreg" "$bin/mpreg-node"; do
  [ -x "$b" ] || { echo "$me: $b is missing (see the header)" >&2; exit 2; }
done
command -v nats-server >/dev/null || { echo "$me: nats-server is not on PATH" >&2; exit 2; }
# shellcheck source=scripts/bench_work.sh
. scripts/bench_work.sh
