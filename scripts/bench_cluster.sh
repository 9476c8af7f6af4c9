# Sourced (after bench_work.sh) by the benchmarks that run three mpreg-nodes: bench_catalog.sh,
# bench_queue_r3.sh, bench_idle_queues.sh.
#   start_node NAME [FLAGS...]  starts one on SQLite in $work/NAME with the caller's
#                               node_flags and FLAGS, its pid in `pids` and $work/NAME.pid,
#                               and waits for its MPREG_URL line (not in $(...): the pid
#                               must reach `pids`)
#   url_of NAME                 that node's URL
#   wait_members N URL          waits (up to 20 s) until N nodes are in URL's cluster map
start_node() {
  local name=$1; shift
  "$bin/mpreg-node" --port 0 --name "$name" --persistence-mode sqlite --data-dir "$work/$name" \
    --monitoring-port 0 --log-level error "${node_flags[@]}" "$@" \
    >"$work/$name.out" 2>"$work/$name.err" &
  pids+=($!)
  echo $! >"$work/$name.pid"
  for _ in $(seq 300); do grep -q MPREG_URL= "$work/$name.out" && break; sleep 0.1; done
}
url_of() { grep MPREG_URL= "$work/$1.out" | cut -d= -f2; }
wait_members() {
  local n
  for _ in $(seq 100); do
    n=$("$bin/mpreg" client call cluster_map --url "$2" 2>/dev/null | grep -c '"node_id"' || true)
    [ "$n" -ge "$1" ] && return 0
    sleep 0.2
  done
}
