# shellcheck shell=bash
# The HTTP/2 measurements: h2load over TLS and without it (h2c to HTTP/2
# backends), and gRPC unary calls with grpc_bench. Each starts its target
# fresh, runs a bounded warm-up and then a bounded load, records its
# numbers with `record` and `cpu_per` (measure.sh), and stops the target.
# Sourced by compare.sh after measure.sh.
# shellcheck disable=SC2153

# h2load_streams PREFIX URL PROTO [churn]: h2load at URL, H2_CONNS
# connections with H2_STREAMS concurrent streams on each, for WARMUP and
# then for DURATION; records PREFIX_rps, (for a proxy) PREFIX_cpu_us and,
# with `churn`, PREFIX_churn, the backend connections opened during the
# run; flags a run whose application protocol was not PROTO.
h2load_streams() {
	local prefix=$1 url=$2 proto=$3 churn=${4:-} c0="" c1 out=$WORK_DIR/h2load-$1.out
	local ok flag="" bad args a0 a1
	args=(-c "$H2_CONNS" -m "$H2_STREAMS" "$url")
	bounded $((WARMUP + 30)) taskset -c "$LOAD_CPU" h2load -D "$WARMUP" "${args[@]}" \
		>"$out" 2>&1 || true
	a0=$(backend_accepts)
	[[ -n $TARGET_PID ]] && c0=$(cpu_ticks "$TARGET_PID")
	bounded $((DURATION + 30)) taskset -c "$LOAD_CPU" h2load -D "$DURATION" "${args[@]}" \
		>"$out" 2>&1 || flag="h2load exited non-zero"
	[[ -n $TARGET_PID ]] && c1=$(cpu_ticks "$TARGET_PID")
	a1=$(backend_accepts)
	grep -q "^Application protocol: $proto\$" "$out" || flag="${flag:+$flag; }$proto was not negotiated"
	ok=$(awk '/^requests:/ {print $8}' "$out")
	bad=$(awk '/^requests:/ {print $10 + $12 + $14}' "$out")
	((${bad:-0} > 0)) && flag="${flag:+$flag; }$bad requests failed, errored or timed out"
	if ((${ok:-0} == 0)); then
		record "${prefix}_rps" "$TARGET_NAME" nan \
			"${flag:+$flag; }no request succeeded: $(tail -n 2 "$out" | tr '\n' ' ')"
		return 0
	fi
	record "${prefix}_rps" "$TARGET_NAME" "$(calc "$ok / $DURATION")" "$flag"
	[[ -n $c0 ]] && cpu_per "$prefix" "$c0" "$c1" "$ok" "$flag"
	[[ $churn == churn ]] && record "${prefix}_churn" "$TARGET_NAME" "$(accepts_between "$a0" "$a1")"
	return 0
}

# measure_h2 TARGET: requests/s and CPU per request over HTTP/2 and TLS
# (ALPN h2), backends HTTP/1.1.
measure_h2() {
	start_target "$1" 1 rr fast "$PROXY_CPU" tls
	h2load_streams h2 "https://127.0.0.1:$TARGET_PORT/" h2
	stop_target
}

# measure_h2c_upstream TARGET: the same without TLS: h2c by prior knowledge
# to the proxy, and HTTP/2 without TLS from it to the two h2c backends
# (nginx: grpc_pass), which speak nothing else, so every answer came over
# HTTP/2. Direct is one of those backends.
measure_h2c_upstream() {
	start_target "$1" 1 rr h2c "$PROXY_CPU" h2c
	h2load_streams h2c "http://127.0.0.1:$TARGET_PORT/" h2c churn
	stop_target
}

# grpc_load SECONDS: grpc_bench's client on LOAD_CPU against TARGET_PORT,
# H2_CONNS connections with H2_STREAMS calls in flight on each, for
# SECONDS; its JSON line and errors go to WORK_DIR/grpc.out.
grpc_load() {
	bounded $(($1 + 30)) taskset -c "$LOAD_CPU" "$GRPC_BENCH_BIN" load \
		--target "127.0.0.1:$TARGET_PORT" --connections "$H2_CONNS" \
		--concurrency $((H2_CONNS * H2_STREAMS)) --duration "$1" \
		>"$WORK_DIR/grpc.out" 2>&1
}

# measure_grpc TARGET: unary gRPC calls per second, their latency and the
# proxy's CPU per call, through the proxy (h2c on both sides) to the two
# gRPC backends; a proxy that sent every call to one backend is flagged.
# Direct is one of the backends.
measure_grpc() {
	local t=$1 c0="" c1 out=$WORK_DIR/grpc.out flag="" ok errors rate p50 p99 backends
	start_target "$t" 1 rr grpc "$PROXY_CPU" h2c
	grpc_load "$WARMUP" || true
	[[ -n $TARGET_PID ]] && c0=$(cpu_ticks "$TARGET_PID")
	grpc_load "$DURATION" || flag="grpc_bench exited non-zero"
	[[ -n $TARGET_PID ]] && c1=$(cpu_ticks "$TARGET_PID")
	if ! read -r ok errors rate p50 p99 backends < <(python3 "$HERE/report.py" grpc "$out"); then
		record grpc_rps "$t" nan "${flag:+$flag; }no report: $(tail -n 2 "$out" | tr '\n' ' ')"
		stop_target
		return 0
	fi
	((errors > 0)) && flag="${flag:+$flag; }$errors calls failed"
	[[ -n $TARGET_PID ]] && ((backends < 2)) && flag="${flag:+$flag; }only $backends backend answered"
	if ((ok == 0)); then
		record grpc_rps "$t" 0 "${flag:+$flag; }no call succeeded"
	else
		record grpc_rps "$t" "$rate" "$flag"
		record grpc_p50 "$t" "$(calc "$p50 / 1000")" "$flag"
		record grpc_p99 "$t" "$(calc "$p99 / 1000")" "$flag"
		[[ -n $c0 ]] && cpu_per grpc "$c0" "$c1" "$ok" "$flag"
	fi
	stop_target
}
