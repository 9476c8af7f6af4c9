# Sourced by every benchmark script (through bench_common.sh for the NATS ones): reads
# PASSES, ROUNDS and DURATION, and makes a work directory that the exit takes away with
# every process started into `pids`.
passes=${PASSES:-2}
rounds=${ROUNDS:-3}
duration=${DURATION:-5}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
