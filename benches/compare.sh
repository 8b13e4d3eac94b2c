#!/usr/bin/env bash
# Switchyard, nginx and HAProxy side by side on this machine, with the same
# backends, the same number of worker threads and the same CPU.
#
#     bash benches/compare.sh              # 3 rounds of 10 s runs
#     QUICK=1 bash benches/compare.sh      # 1 round of 2 s runs (smoke test)
#
# It installs what is missing (Debian packages: nginx and its echo module,
# haproxy, wrk, nghttp2-client for h2load, nodejs), builds Switchyard in release mode
# (and, for the gRPC row, the grpc_bench example: a tonic client and backend),
# starts the backends (one nginx worker: two fast servers, one that answers
# after SLOW_MS, the fast answer over h2c twice, and stub_status; two
# one-thread gRPC backends) and the load generators on LOAD_CPU, and
# each proxy fresh for every run, pinned to PROXY_CPU. Targets run
# interleaved: every measurement goes through all of them before the next
# starts, ROUNDS times. Everything listens on 127.0.0.1.
#
# The markdown table goes to stdout and to target/compare/<timestamp>.md;
# progress goes to stderr. Settings (environment, defaults in brackets):
#   ROUNDS [3]  DURATION [10] seconds per run  WARMUP [1] seconds before a run
#   CONNS [64]  MANY_CONNS [1000]  IDLE_CONNS [10000] (fewer if `ulimit -n` is low)
#   RATE [5000] req/s, over RATE_CONNS [100] connections, for the fixed-rate run
#   SLOW_MS [20]  SLOW_RATE [RATE / 2] over SLOW_CONNS [200] connections
#   CRASH_SECS [20] seconds of crash loop, CRASH_CONNS [8] clients; one of the
#     Node.js backends, in turn, killed every CRASH_EVERY [2] s, restarted CRASH_DOWN [1] s later
#   HS_CONNS [16] clients making a new TLS connection for every request
#   H2_CONNS [16] HTTP/2 connections with H2_STREAMS [10] concurrent streams
#     (or gRPC calls) each, for the h2, h2c_upstream and grpc rows
#   PROXY_CPU [0]  LOAD_CPU [1]  QUICK [0]  KEEP_TMP [0]: keep configs and logs
#   ONLY [all]: some of keepalive fixed many idle slow unpinned crashloop tls
#     handshakes h2 h2c_upstream grpc accesslog, to rerun those; accesslog is
#     Switchyard with its access log off and JSON to a file, side by side
#     (ONLY=accesslog bash benches/compare.sh)
#   TIME_LIMIT [generous] seconds after the build before the whole run is stopped
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE=$REPO/benches/compare
# shellcheck source=benches/compare/procs.sh
source "$HERE/procs.sh"
# shellcheck source=benches/compare/install.sh
source "$HERE/install.sh"
# shellcheck source=benches/compare/targets.sh
source "$HERE/targets.sh"
# shellcheck source=benches/compare/measure.sh
source "$HERE/measure.sh"
# shellcheck source=benches/compare/measure_h2.sh
source "$HERE/measure_h2.sh"

if [[ ${QUICK:-0} == 1 ]]; then
	ROUNDS=${ROUNDS:-1}
	DURATION=${DURATION:-2}
fi
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-1}
CONNS=${CONNS:-64}
MANY_CONNS=${MANY_CONNS:-1000}
IDLE_CONNS=${IDLE_CONNS:-10000}
RATE=${RATE:-5000}
RATE_CONNS=${RATE_CONNS:-100}
SLOW_MS=${SLOW_MS:-20}
# Half the fixed rate: the balancing, not the proxy's capacity, should decide
# the tail when one backend is slow.
SLOW_RATE=${SLOW_RATE:-$((RATE / 2))}
SLOW_CONNS=${SLOW_CONNS:-200}
CRASH_SECS=${CRASH_SECS:-$((${QUICK:-0} == 1 ? 6 : 20))}
CRASH_CONNS=${CRASH_CONNS:-8}
CRASH_EVERY=${CRASH_EVERY:-2}
CRASH_DOWN=${CRASH_DOWN:-1}
HS_CONNS=${HS_CONNS:-16}
H2_CONNS=${H2_CONNS:-16}
H2_STREAMS=${H2_STREAMS:-10}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
# Longest an idle-connections client may hold its connections, in seconds.
IDLE_HOLD=120
# Every listener's connection cap: the idle run plus headroom.
MAX_CONNS=20000
ECHO_MODULE=/usr/lib/nginx/modules/ngx_http_echo_module.so
CLK_TCK=$(getconf CLK_TCK)
TARGETS=(direct switchyard nginx haproxy)
PROXIES=(switchyard nginx haproxy)
SLOW_VARIANTS=(switchyard-rr switchyard-lc switchyard-ll nginx-lc haproxy-lc)
CRASH_VARIANTS=(switchyard-lc-checks switchyard-rr-checks switchyard-lc-passive nginx-lc-checks haproxy-lc-checks)
LOG_VARIANTS=(sw-log-off sw-log-json)
SCENARIOS=${ONLY:-keepalive fixed many idle slow unpinned crashloop tls handshakes h2 h2c_upstream grpc accesslog}
# wants NAME: whether this run includes scenario NAME.
wants() { [[ " $SCENARIOS " == *" $1 "* ]]; }

for v in ROUNDS DURATION WARMUP CONNS MANY_CONNS IDLE_CONNS RATE RATE_CONNS \
	SLOW_MS SLOW_RATE SLOW_CONNS CRASH_SECS CRASH_CONNS CRASH_EVERY CRASH_DOWN \
	HS_CONNS H2_CONNS H2_STREAMS \
	PROXY_CPU LOAD_CPU ${TIME_LIMIT:+TIME_LIMIT}; do
	[[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a whole number, not '${!v}'"
done
((ROUNDS >= 1 && DURATION >= 1 && WARMUP >= 1)) || die "ROUNDS, DURATION and WARMUP must be at least 1"
((CRASH_DOWN < CRASH_EVERY && CRASH_SECS >= 1)) || die "CRASH_DOWN must be shorter than CRASH_EVERY"
(($(nproc) >= 2)) || die "needs two CPUs: one for the proxy, one for the load and the backends"
((PROXY_CPU != LOAD_CPU)) || die "PROXY_CPU and LOAD_CPU must differ"
for cpu in "$PROXY_CPU" "$LOAD_CPU"; do
	taskset -c "$cpu" true 2>/dev/null || die "cannot run on CPU $cpu; set PROXY_CPU and LOAD_CPU to CPUs of $(taskset -pc $$ | awk '{print $NF}')"
done

install_traps
add_sbin_to_path
install_tools

# Ten thousand idle connections need as many descriptors in the client and
# in the proxy, and HAProxy reserves two per connection (client and server
# side) up front: raise the soft limit to the hard one and scale down if short.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
NOFILE=$(ulimit -n)
[[ $NOFILE == unlimited ]] && NOFILE=1048576
((MAX_CONNS > NOFILE - 100)) && MAX_CONNS=$((NOFILE - 100))
HAPROXY_MAX_CONNS=$(((NOFILE - 100) / 2))
((HAPROXY_MAX_CONNS > MAX_CONNS)) && HAPROXY_MAX_CONNS=$MAX_CONNS
if ((IDLE_CONNS > HAPROXY_MAX_CONNS - 50)); then
	log "ulimit -n allows $NOFILE descriptors (hard limit), and HAProxy needs two per connection:" \
		"holding $((HAPROXY_MAX_CONNS - 50)) idle connections instead of $IDLE_CONNS"
	IDLE_CONNS=$((HAPROXY_MAX_CONNS - 50))
fi
((IDLE_CONNS >= 100 && MANY_CONNS < MAX_CONNS)) || die "ulimit -n ($NOFILE) is too low for this benchmark"

BUILD=(--bin switchyard)
wants grpc && BUILD+=(--example grpc_bench)
log "building Switchyard (cargo build --release ${BUILD[*]})"
bounded 3600 cargo build --release --quiet "${BUILD[@]}" --manifest-path "$REPO/Cargo.toml" ||
	die "cargo build --release failed"
SWITCHYARD_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/switchyard
GRPC_BENCH_BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/examples/grpc_bench
[[ -x $SWITCHYARD_BIN ]] || die "no binary at $SWITCHYARD_BIN"
if wants grpc; then [[ -x $GRPC_BENCH_BIN ]] || die "no binary at $GRPC_BENCH_BIN"; fi

WORK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-compare.XXXXXX")
RESULTS=$WORK_DIR/results.tsv
ACCESS_LOG=$WORK_DIR/access.json.log
: >"$RESULTS"
mapfile -t PORTS < <(python3 "$HERE/ports.py" 15)
((${#PORTS[@]} == 15)) || die "could not find 15 free ports on 127.0.0.1"
PORT_FAST1=${PORTS[0]} PORT_FAST2=${PORTS[1]} PORT_SLOW=${PORTS[2]} PORT_STATUS=${PORTS[3]}
PORT_SWITCHYARD=${PORTS[4]} PORT_ADMIN=${PORTS[5]} PORT_NGINX=${PORTS[6]} PORT_HAPROXY=${PORTS[7]}
PORTS_NODE=("${PORTS[8]}" "${PORTS[9]}" "${PORTS[10]}")
PORT_H2C1=${PORTS[11]} PORT_H2C2=${PORTS[12]}
PORTS_GRPC=("${PORTS[13]}" "${PORTS[14]}")
make_cert

# A generous bound on the whole run: 43 runs a round, each with its warm-up,
# start, stop and the load tools' own slack, and 5 crash-loop runs.
LIMIT=${TIME_LIMIT:-$((ROUNDS * (43 * (DURATION + WARMUP + 30) + 5 * (CRASH_SECS + 40)) + 600))}
start_watchdog "$LIMIT"
start_backends
wants grpc && start_grpc_backends $((LIMIT + 60))

STARTED_AT=$SECONDS
# scenario NAME WHAT MEASURE TARGET...: unless ONLY leaves NAME out, run
# MEASURE on each TARGET in turn.
scenario() {
	local name=$1 what=$2 measure=$3 t
	shift 3
	wants "$name" || return 0
	log "round $ROUND of $ROUNDS: $what"
	for t in "$@"; do "$measure" "$t"; done
}
for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
	scenario keepalive "$CONNS connections" measure_keepalive "${TARGETS[@]}"
	scenario fixed "fixed $RATE req/s" measure_fixed "${TARGETS[@]}"
	scenario many "$MANY_CONNS connections" measure_many "${TARGETS[@]}"
	scenario idle "$IDLE_CONNS idle connections" measure_idle "${PROXIES[@]}"
	scenario slow "one slow backend" measure_slow "${SLOW_VARIANTS[@]}"
	backend_cpus "$PROXY_CPU,$LOAD_CPU"
	scenario unpinned "2 threads, unpinned" measure_unpinned "${TARGETS[@]}"
	backend_cpus "$LOAD_CPU"
	scenario crashloop "crash-looping backends" measure_crashloop "${CRASH_VARIANTS[@]}"
	scenario tls "TLS, $CONNS keep-alive connections" measure_tls "${PROXIES[@]}"
	scenario handshakes "a TLS handshake per request" measure_handshakes "${PROXIES[@]}"
	scenario h2 "HTTP/2 over TLS, $H2_CONNS connections x $H2_STREAMS streams" measure_h2 "${PROXIES[@]}"
	scenario h2c_upstream "h2c to HTTP/2 backends, $H2_CONNS connections x $H2_STREAMS streams" \
		measure_h2c_upstream "${TARGETS[@]}"
	scenario grpc "gRPC unary calls, $H2_CONNS connections x $H2_STREAMS calls" measure_grpc "${TARGETS[@]}"
	scenario accesslog "access log off and JSON, $CONNS connections" measure_accesslog "${LOG_VARIANTS[@]}"
done
ELAPSED=$((SECONDS - STARTED_AT))

OUT_DIR=${CARGO_TARGET_DIR:-$REPO/target}/compare
mkdir -p "$OUT_DIR"
REPORT=$OUT_DIR/$(date +%Y%m%d-%H%M%S).md
{
	echo "# Switchyard, nginx and HAProxy on one machine"
	echo
	printf -- '- date: %s; Switchyard %s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')" \
		"$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo '(no git)')"
	printf -- '- machine: %s, %s CPUs, Linux %s\n' \
		"$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)" "$(nproc)" "$(uname -r)"
	tool_versions
	printf -- '- proxies: 1 worker thread (process for nginx) pinned to CPU %s; load (wrk, h2load, grpc_bench: one thread) and backends (one nginx worker; two one-thread gRPC servers) on CPU %s\n' \
		"$PROXY_CPU" "$LOAD_CPU"
	printf -- '- %s round(s), targets interleaved, each run %s s after a %s s warm-up, each proxy fresh per run; %s s of measuring in all\n' \
		"$ROUNDS" "$DURATION" "$WARMUP" "$ELAPSED"
	echo '- cells: median (min–max) over rounds; ratios compare medians, "better" says which way'
	echo
	python3 "$HERE/report.py" table "$RESULTS" --rate "$RATE" --conns "$CONNS" \
		--many-conns "$MANY_CONNS" --idle-conns "$IDLE_CONNS" --slow-ms "$SLOW_MS" \
		--slow-rate "$SLOW_RATE" --slow-conns "$SLOW_CONNS" --crash-secs "$CRASH_SECS" \
		--crash-conns "$CRASH_CONNS" --crash-every "$CRASH_EVERY" --crash-down "$CRASH_DOWN" \
		--hs-conns "$HS_CONNS" --h2-conns "$H2_CONNS" --h2-streams "$H2_STREAMS"
} >"$REPORT"
cat "$REPORT"
log "saved to $REPORT"
