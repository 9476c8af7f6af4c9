#!/usr/bin/env bash
# DNS gateway throughput: one mpreg node's DNS gateway beside NSD, an authoritative server,
# in one run. Both answer the same question over UDP on 127.0.0.1 --
#
#   _svc._tcp.web.shop.mpreg SRV  ->  0 0 8080 ip4-10-0-0-7.addr.mpreg.
#                                     0 0 8080 ip4-10-0-0-8.addr.mpreg.   (TTL 60, AA)
#                                     + the A records of both targets in the additional section
#
# -- mpreg from its catalog (a service registered with `mpreg client dns-register`), NSD from
# a static zone file written here with the same records. dnsperf floods each server with that
# one query for SECONDS and reports queries/s, average latency and lost queries. The runs
# alternate (mpreg, nsd, mpreg, nsd) so that drift of the machine hits both alike. The goal
# this checks (the DNS gateway issue): the gateway answers at least 0.5x the queries/s of
# an authoritative server on the same machine.
#
#   scripts/bench_dns.sh [BIN_DIR] [SECONDS]
#     BIN_DIR  holds the release binaries mpreg-node and mpreg
#              (default ${CARGO_TARGET_DIR:-target}/release; cargo build --release)
#     SECONDS  length of each dnsperf run (default 10)
#   Settings (environment): RUNS (default 2) runs of each server; NSD2=0 skips the extra
#   NSD with server-count 2; CLIENTS (default 8) and OUTSTANDING (default 100), dnsperf's
#   -c and -q; NSD (default: nsd on PATH, else /usr/sbin/nsd).
#
# Needs: nsd and dnsperf (Debian: apt-get install nsd dnsperf), dig (bind9-dnsutils),
# curl, python3. Everything listens on 127.0.0.1 on ports the OS hands out; state lives in
# a temporary directory that goes, with every process started here, when the script ends.
#
# Fairness notes, printed with the results as well:
# - Response rate limiting is off on both: dnsperf floods from one address, which RRL
#   (mpreg's default 100 answers/s per network, NSD's compiled-in 200/s) would throttle.
# - NSD runs with server-count 1, one serving process, as mpreg's gateway serves UDP from
#   one task. NSD with server-count 2 (one process a core, reuseport) is reported as well,
#   not used for the ratio.
# - dnsperf runs one thread (-T 1) and shares the machine's cores with the server; on a
#   2-core machine the load generator itself is near its limit at ~100k queries/s.
# - NSD's answer is slightly larger than mpreg's: NSD also puts the zone's NS record in the
#   authority section and its glue A in the additional one (mpreg sends neither); NSD's
#   minimal-responses would drop the SRV targets' A records too, so it is left off. The
#   response sizes dnsperf measured are printed.
# - The latencies are under saturating load, so mostly queueing: about OUTSTANDING / qps.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${1:-${CARGO_TARGET_DIR:-target}/release}
seconds=${2:-10}
runs=${RUNS:-2}
clients=${CLIENTS:-8}
outstanding=${OUTSTANDING:-100}
nsd2=${NSD2:-1}
qname=_svc._tcp.web.shop.mpreg

die() { echo "bench_dns.sh: $*" >&2; exit 1; }

for b in "$bin/mpreg-node" "$bin/mpreg"; do
  [ -x "$b" ] || die "$b is missing (build with: cargo build --release --bin mpreg --bin mpreg-node)"
done
nsd_bin=${NSD:-$(command -v nsd || echo /usr/sbin/nsd)}
[ -x "$nsd_bin" ] || die "no nsd (apt-get install nsd), looked for $nsd_bin"
for t in dnsperf dig curl python3; do
  command -v "$t" >/dev/null || die "$t is not on PATH"
done

work=$(mktemp -d)
pids=()
dnsperf_pid=
cleanup() {
  local p
  [ -z "$dnsperf_pid" ] || kill -TERM "$dnsperf_pid" 2>/dev/null || true
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A port free for both UDP and TCP on 127.0.0.1 (the servers take both).
free_port() {
  python3 - <<'EOF'
import socket
while True:
    t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    t.bind(("127.0.0.1", 0))
    port = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        t.close()
    u.close()
    print(port)
    break
EOF
}

# srv_count PORT: how many SRV records the server at PORT answers for the question.
srv_count() {
  dig @127.0.0.1 -p "$1" "$qname" SRV +short +time=1 +tries=1 2>/dev/null | grep -c ' 8080 ' || true
}

# wait_srv NAME PORT LOG: until the server answers both SRV records (up to ~15 s); when it
# does not, shows the end of its LOG.
wait_srv() {
  local n=0
  for _ in $(seq 75); do
    n=$(srv_count "$2")
    [ "$n" = 2 ] && return 0
    sleep 0.2
  done
  tail -20 "$3" >&2 || true
  die "$1 on port $2 answers $n SRV records instead of 2"
}

# --- mpreg ------------------------------------------------------------------------------
mpreg_port=$(free_port)
"$bin/mpreg-node" --port 0 --dns-port "$mpreg_port" --persistence-mode memory \
  --dns-rrl-responses-per-second 0 --monitoring-port 0 --log-level error \
  >"$work/node.out" 2>"$work/node.err" &
pids+=($!)
for _ in $(seq 300); do grep -q '^MPREG_DNS_PORT=' "$work/node.out" && break; sleep 0.1; done
grep -q '^MPREG_DNS_PORT=' "$work/node.out" || { cat "$work/node.err" >&2; die "mpreg-node did not start"; }
url=$(sed -n 's/^MPREG_URL=//p' "$work/node.out")
monitoring=$(sed -n 's/^MPREG_MONITORING_URL=//p' "$work/node.out")
"$bin/mpreg" client dns-register --url "$url" --name web --namespace shop --protocol tcp \
  --port 8080 --target 10.0.0.7 --target 10.0.0.8 >"$work/register.out" \
  || die "dns-register failed: $(cat "$work/register.out")"
wait_srv mpreg "$mpreg_port" "$work/node.err" # the registration is a Raft commit: retry until it shows

# --- nsd --------------------------------------------------------------------------------
cat >"$work/mpreg.zone" <<'EOF'
$ORIGIN mpreg.
$TTL 60
@                   IN SOA ns.mpreg. hostmaster.mpreg. 1 60 10 600 5
@                   IN NS  ns.mpreg.
ns                  IN A   127.0.0.1
_svc._tcp.web.shop  IN SRV 0 0 8080 ip4-10-0-0-7.addr.mpreg.
_svc._tcp.web.shop  IN SRV 0 0 8080 ip4-10-0-0-8.addr.mpreg.
ip4-10-0-0-7.addr   IN A   10.0.0.7
ip4-10-0-0-8.addr   IN A   10.0.0.8
EOF

# start_nsd NAME SERVER_COUNT: an NSD in the foreground (-d) of a background job, its
# state under $work/NAME; sets `port`.
start_nsd() {
  local dir="$work/$1"
  mkdir -p "$dir"
  port=$(free_port)
  cat >"$dir/nsd.conf" <<EOF
server:
  ip-address: 127.0.0.1
  port: $port
  username: ""
  chroot: ""
  zonesdir: "$work"
  pidfile: "$dir/nsd.pid"
  database: ""
  zonelistfile: "$dir/zone.list"
  xfrdfile: "$dir/xfrd.state"
  xfrdir: "$dir"
  logfile: "$dir/nsd.log"
  server-count: $2
  reuseport: $([ "$2" -gt 1 ] && echo yes || echo no)
  verbosity: 1
  rrl-ratelimit: 0
  rrl-whitelist-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: "mpreg."
  zonefile: "mpreg.zone"
EOF
  "$nsd_bin" -d -c "$dir/nsd.conf" >"$dir/stdout" 2>&1 &
  pids+=($!)
  wait_srv "$1" "$port" "$dir/stdout"
}
start_nsd nsd 1
nsd_port=$port
servers=(mpreg nsd)
declare -A server_port=([mpreg]=$mpreg_port [nsd]=$nsd_port)
if [ "$nsd2" != 0 ]; then
  start_nsd nsd-x2 2
  servers+=(nsd-x2)
  server_port[nsd-x2]=$port
fi

# --- runs -------------------------------------------------------------------------------
echo "$qname SRV" >"$work/queries"
dnsperf_args=(-s 127.0.0.1 -d "$work/queries" -l "$seconds" -c "$clients" -q "$outstanding" -T 1)
echo "dnsperf ${dnsperf_args[*]} -p PORT   ($(nproc) cores, server and dnsperf share them)"
echo "servers: mpreg $mpreg_port (UDP task, RRL off)," \
  "nsd $nsd_port (server-count 1, RRL off)$([ "$nsd2" != 0 ] && echo ", nsd-x2 ${server_port[nsd-x2]} (server-count 2)")"
results=$work/results # lines: server run qps latency_ms lost response_bytes
: >"$results"
for run in $(seq "$runs"); do
  for s in "${servers[@]}"; do
    out="$work/dnsperf.$s.$run"
    # In the background and waited for, so that an interrupt ends the script at once.
    dnsperf "${dnsperf_args[@]}" -p "${server_port[$s]}" >"$out" 2>&1 &
    dnsperf_pid=$!
    if ! wait "$dnsperf_pid"; then
      grep -v '^\[Timeout\]' "$out" >&2 || true
      die "dnsperf against $s failed"
    fi
    dnsperf_pid=
    awk -v s="$s" -v r="$run" '
      /Queries lost:/          { lost = $3 }
      /Average packet size:/   { size = $NF }
      /Queries per second:/    { qps = $4 }
      /Average Latency \(s\):/ { lat = $4 * 1000 }
      END { if (qps == "") exit 1; printf "%s %s %.0f %.3f %s %s\n", s, r, qps, lat, lost, size }
    ' "$out" >>"$results" || die "could not read dnsperf's report for $s (in $out)"
    echo "  run $run $s: $(tail -1 "$results" | awk '{print $3 " q/s, " $4 " ms"}')"
  done
done

# --- summary ----------------------------------------------------------------------------
echo
printf '%-8s %4s %10s %16s %8s %15s\n' server run 'queries/s' 'avg latency ms' lost 'response bytes'
sort -s -k1,1 "$results" | awk '{printf "%-8s %4s %10s %16s %8s %15s\n", $1, $2, $3, $4, $5, $6}'
echo
awk '
  { n[$1]++; sum[$1] += $3; if ($3 > best[$1]) best[$1] = $3 }
  END {
    split("mpreg nsd nsd-x2", order, " ")
    for (i = 1; i <= 3; i++) if ((s = order[i]) in n)
      printf "%-8s best %8.0f q/s, mean %8.0f q/s\n", s, best[s], sum[s] / n[s]
    rb = best["mpreg"] / best["nsd"]; rm = (sum["mpreg"] / n["mpreg"]) / (sum["nsd"] / n["nsd"])
    printf "mpreg / nsd (server-count 1): best %.2fx, mean %.2fx -- goal >= 0.50x: %s\n",
      rb, rm, (rm >= 0.5 ? "met" : "NOT met")
  }
' "$results"
curl -s "$monitoring/dns/metrics" | python3 -c '
import json, sys
m = json.load(sys.stdin)["dns_gateway"]["metrics"]
print("mpreg DNS cache hits/misses: %d/%d (queries %d, rate-limited dropped %d)" % (
    m["cache_hits"], m["cache_misses"], m["total_queries"], m["rate_limited_dropped"]))
' || echo "mpreg DNS cache hits/misses: unavailable ($monitoring/dns/metrics)"
echo "notes: response rate limiting off on both servers (dnsperf floods from one address);" \
  "nsd also sends its NS record and glue (larger answer); dnsperf -T 1 shares the cores."
