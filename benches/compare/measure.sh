# shellcheck shell=bash
# The measurements. Each starts its target fresh, runs one bounded load,
# records its numbers with `record`, and stops the target. Sourced by
# compare.sh, which sets the settings used here (CONNS, RATE, ...).
# shellcheck disable=SC2153

# record METRIC TARGET VALUE [FLAG]: one line of RESULTS for this ROUND.
record() {
	printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$ROUND" "$3" "${4:-}" >>"$RESULTS"
}

# calc EXPR: a floating-point awk expression.
calc() { awk "BEGIN {printf \"%.4f\", $1}"; }

# wrk_run CONNS SECONDS CPUS [ARGS...]: wrk (one thread, with ARGS)
# against TARGET_PORT over TARGET_SCHEME, on CPUS (empty: unpinned). Sets
# the WRK associative array from the report line (requests, duration_us,
# errors, p50_us, p99_us); fails without one.
declare -A WRK
wrk_run() {
	local conns=$1 secs=$2 cpus=$3 out=$WORK_DIR/wrk.out pin=() line kv
	shift 3
	[[ -n $cpus ]] && pin=(taskset -c "$cpus")
	WRK=()
	bounded $((secs + 30)) "${pin[@]}" wrk -t1 -c"$conns" -d"${secs}s" "$@" \
		-s "$HERE/wrk-report.lua" "${TARGET_SCHEME:-http}://127.0.0.1:$TARGET_PORT/" >"$out" 2>&1 || true
	line=$(grep '^WRK ' "$out" || true)
	[[ -n $line ]] || {
		log "wrk printed no report: $(tail -n 3 "$out" | tr '\n' ' ')"
		return 1
	}
	for kv in ${line#WRK }; do WRK[${kv%%=*}]=${kv#*=}; done
	WRK[errors]=$((WRK[connect] + WRK[read] + WRK[write] + WRK[status] + WRK[timeout]))
}

wrk_flag() {
	((WRK[errors] == 0)) && return 0
	printf 'wrk errors: connect %s, read %s, write %s, non-2xx %s, timeout %s' \
		"${WRK[connect]}" "${WRK[read]}" "${WRK[write]}" "${WRK[status]}" "${WRK[timeout]}"
}

wrk_rps() { calc "${WRK[requests]} / (${WRK[duration_us]} / 1000000)"; }

# measure_keepalive TARGET: requests/s, latency and proxy CPU per request
# at CONNS keep-alive connections, and the backend connections opened.
measure_keepalive() {
	start_target "$1" 1 rr fast "$PROXY_CPU"
	keepalive_run "$1"
	stop_target
}

# measure_accesslog TARGET: measure_keepalive for Switchyard with its
# access log off (sw-log-off) or JSON to a file (sw-log-json); for the
# latter also the lines written and those dropped, read before it stops.
measure_accesslog() {
	local t=$1 dropped
	rm -f "$ACCESS_LOG"
	start_target "$t" 1 rr fast "$PROXY_CPU"
	keepalive_run "$t"
	if [[ $t == sw-log-json ]]; then
		dropped=$({ curl -s --max-time 5 "http://127.0.0.1:$PORT_ADMIN/metrics" || true; } |
			awk '$1 == "switchyard_access_log_dropped_total" {print $2}')
		record log_dropped "$t" "${dropped:-nan}"
	fi
	stop_target
	[[ -e $ACCESS_LOG ]] && record log_lines "$t" "$(wc -l <"$ACCESS_LOG")"
	rm -f "$ACCESS_LOG"
}

# keepalive_run TARGET: the runs and records of measure_keepalive, on the
# target started.
keepalive_run() {
	local t=$1 a0 a1 c0 c1 flag
	wrk_run "$CONNS" "$WARMUP" "$LOAD_CPU" || true
	a0=$(backend_accepts)
	[[ -n $TARGET_PID ]] && c0=$(cpu_ticks "$TARGET_PID")
	if wrk_run "$CONNS" "$DURATION" "$LOAD_CPU"; then
		[[ -n $TARGET_PID ]] && c1=$(cpu_ticks "$TARGET_PID")
		a1=$(backend_accepts)
		flag=$(wrk_flag)
		record rps64 "$t" "$(wrk_rps)" "$flag"
		record p50_64 "$t" "$(calc "${WRK[p50_us]} / 1000")" "$flag"
		record p99_64 "$t" "$(calc "${WRK[p99_us]} / 1000")" "$flag"
		record churn64 "$t" "$(accepts_between "$a0" "$a1")"
		[[ -n $TARGET_PID ]] && ((WRK[requests] > 0)) &&
			record cpu_us "$t" "$(calc "($c1 - $c0) * 1000000 / $CLK_TCK / ${WRK[requests]}")" "$flag"
	else
		record rps64 "$t" nan "wrk failed"
	fi
}

# h2load_run RATE CONNS PREFIX TARGET: a fixed total RATE over CONNS
# HTTP/1.1 connections, for WARMUP and then for DURATION; records
# PREFIX_p50, _p99, _p999 and _rate from the second run's per-request log,
# and PREFIX_churn, the backend connections opened during it.
h2load_run() {
	local rate=$1 conns=$2 prefix=$3 t=$4 out=$WORK_DIR/h2load.out
	local logfile=$WORK_DIR/h2load.log stats ok p50 p99 p999 achieved flag="" bad a0 a1
	local args=(--h1 -c "$conns" --rps "$(calc "$rate / $conns")" "http://127.0.0.1:$TARGET_PORT/")
	rm -f "$logfile"
	bounded $((WARMUP + 30)) taskset -c "$LOAD_CPU" h2load -D "$WARMUP" "${args[@]}" \
		>"$out" 2>&1 || true
	a0=$(backend_accepts)
	bounded $((DURATION + 30)) taskset -c "$LOAD_CPU" h2load -D "$DURATION" \
		--log-file="$logfile" "${args[@]}" >"$out" 2>&1 || flag="h2load exited non-zero"
	a1=$(backend_accepts)
	if [[ ! -s $logfile ]]; then
		record "${prefix}_rate" "$t" 0 "h2load logged nothing: $(tail -n 2 "$out" | tr '\n' ' ')"
		return 0
	fi
	stats=$(python3 "$HERE/report.py" h2load "$logfile")
	read -r ok p50 p99 p999 <<<"$stats"
	# "requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout".
	# An HTTP/1.1 client sends its next request only after the last answer,
	# so a target that cannot keep up shows as fewer requests started.
	achieved=$(awk -v d="$DURATION" '/^requests:/ {printf "%.1f", $4 / d}' "$out")
	bad=$(awk '/^requests:/ {print $10 + $12 + $14}' "$out")
	((${bad:-0} > 0)) && flag="${flag:+$flag; }$bad requests failed, errored or timed out"
	awk -v a="${achieved:-0}" -v r="$rate" 'BEGIN {exit !(a < 0.97 * r)}' &&
		flag="${flag:+$flag; }sent ${achieved:-0} of $rate req/s"
	if ((ok == 0)); then
		record "${prefix}_rate" "$t" "${achieved:-0}" "${flag:+$flag; }no 2xx answer"
		return 0
	fi
	record "${prefix}_p50" "$t" "$(calc "$p50 / 1000")" "$flag"
	record "${prefix}_p99" "$t" "$(calc "$p99 / 1000")" "$flag"
	record "${prefix}_p999" "$t" "$(calc "$p999 / 1000")" "$flag"
	record "${prefix}_rate" "$t" "$achieved" "$flag"
	record "${prefix}_churn" "$t" "$(accepts_between "$a0" "$a1")"
}

# measure_fixed TARGET: latency at a fixed RATE every target sustains.
measure_fixed() {
	start_target "$1" 1 rr fast "$PROXY_CPU"
	h2load_run "$RATE" "$RATE_CONNS" fixed "$1"
	stop_target
}

# measure_many TARGET: requests/s and peak RSS at MANY_CONNS connections, on
# a fresh process so that the high-water mark is this run's.
measure_many() {
	local t=$1 a0 a1 flag
	start_target "$t" 1 rr fast "$PROXY_CPU"
	a0=$(backend_accepts)
	if wrk_run "$MANY_CONNS" "$DURATION" "$LOAD_CPU"; then
		a1=$(backend_accepts)
		flag=$(wrk_flag)
		record rps1000 "$t" "$(wrk_rps)" "$flag"
		record churn1000 "$t" "$(accepts_between "$a0" "$a1")"
		[[ -n $TARGET_PID ]] &&
			record hwm1000 "$t" "$(calc "$(mem_kib "$TARGET_PID" VmHWM) / 1024")"
	else
		record rps1000 "$t" nan "wrk failed"
	fi
	stop_target
}

# measure_idle TARGET: RSS before and with IDLE_CONNS idle keep-alive
# connections (each has had one request), and the difference per connection.
measure_idle() {
	local t=$1 before with ready="" client deadline opened failed closed flag=""
	local out=$WORK_DIR/idle.out
	start_target "$t" 1 rr fast "$PROXY_CPU"
	before=$(mem_kib "$TARGET_PID" VmRSS)
	start_bg "$out" taskset -c "$LOAD_CPU" timeout -k 5 "$IDLE_HOLD" \
		python3 "$HERE/idle_client.py" --port "$TARGET_PORT" --conns "$IDLE_CONNS" \
		--hold "$IDLE_HOLD"
	client=$BG_PID
	deadline=$((SECONDS + IDLE_HOLD))
	while ((SECONDS < deadline)) && alive "$client"; do
		ready=$(grep '^READY ' "$out" || true)
		[[ -n $ready ]] && break
		sleep 0.2
	done
	if [[ -z $ready ]]; then
		record idle_with "$t" nan "idle client never got ready: $(tail -n 2 "$out" | tr '\n' ' ')"
	else
		sleep 1 # let the proxy settle after the last response
		with=$(mem_kib "$TARGET_PID" VmRSS)
	fi
	stop_pid "$client"
	unregister "$client"
	if [[ -n $ready ]]; then
		opened=$(sed -n 's/.*opened=\([0-9]*\).*/\1/p' <<<"$ready")
		failed=$(sed -n 's/.*failed=\([0-9]*\).*/\1/p' <<<"$ready")
		closed=$(sed -n 's/^DONE closed_by_peer=\([0-9]*\).*/\1/p' "$out")
		((failed > 0)) && flag="$failed of $IDLE_CONNS connections failed"
		((${closed:-0} > 0)) && flag="${flag:+$flag; }$closed closed by the proxy while held"
		record idle_before "$t" "$(calc "$before / 1024")"
		record idle_with "$t" "$(calc "$with / 1024")" "$flag"
		((opened > 0)) && record idle_per_conn "$t" "$(calc "($with - $before) / $opened")" "$flag"
	fi
	stop_target
}

# measure_slow VARIANT: one backend of three answers after SLOW_MS; latency
# at SLOW_RATE. VARIANT is KIND-rr, KIND-lc or switchyard-ll.
measure_slow() {
	local variant=$1
	start_target "${variant%-*}" 1 "${variant##*-}" slow "$PROXY_CPU"
	h2load_run "$SLOW_RATE" "$SLOW_CONNS" slow "$variant"
	stop_target
}

# measure_unpinned TARGET: requests/s with two worker threads and nothing
# pinned (the caller lets the backends use every CPU).
measure_unpinned() {
	local t=$1
	start_target "$t" 2 rr fast ""
	wrk_run "$CONNS" "$WARMUP" "" || true
	if wrk_run "$CONNS" "$DURATION" ""; then
		record rps_unpinned "$t" "$(wrk_rps)" "$(wrk_flag)"
	else
		record rps_unpinned "$t" nan "wrk failed"
	fi
	stop_target
}

# measure_crashloop VARIANT: three Node.js backends, one killed with SIGKILL
# every CRASH_EVERY seconds (each in turn) and restarted CRASH_DOWN seconds later,
# under CRASH_CONNS keep-alive clients that never retry (wrk), for
# CRASH_SECS seconds: requests/s, and requests that failed (any non-2xx or
# socket error). VARIANT is KIND-BALANCE-CHECKS: CHECKS is `checks` (each
# proxy's active checks) or `passive` (Switchyard without them).
measure_crashloop() {
	local variant=$1 kind balance set=crash out=$WORK_DIR/crashloop.out loop kills flag
	kind=${variant%%-*}
	balance=${variant#*-}
	balance=${balance%%-*}
	[[ $variant == *-passive ]] && set=crash-passive
	start_bg "$out" taskset -c "$LOAD_CPU" python3 "$HERE/crashloop.py" \
		--script "$HERE/node_backend.js" --ports "${PORTS_NODE[@]}" \
		--every "$CRASH_EVERY" --down "$CRASH_DOWN" --seconds "$CRASH_SECS" \
		--hold $((CRASH_SECS + 120))
	loop=$BG_PID
	wait_line "$out" READY "$loop" 20 || {
		record crash_rps "$variant" nan "the Node.js backends did not start: $(tail -n 2 "$out" | tr '\n' ' ')"
		stop_pid "$loop"
		unregister "$loop"
		return 0
	}
	start_target "$kind" 1 "$balance" "$set" "$PROXY_CPU"
	kill -USR1 "$loop"
	if wrk_run "$CRASH_CONNS" "$CRASH_SECS" "$LOAD_CPU"; then
		wait_line "$out" DONE "$loop" 10 || true
		kills=$(sed -n 's/^DONE kills=\([0-9]*\).*/\1/p' "$out")
		flag=""
		((${kills:-0} == 0)) && flag="no backend was killed"
		record crash_rps "$variant" "$(wrk_rps)" "$flag"
		record crash_failed "$variant" "${WRK[errors]}" "$flag"
		record crash_kills "$variant" "${kills:-0}" "$flag"
	else
		record crash_rps "$variant" nan "wrk failed"
	fi
	stop_target
	stop_pid "$loop"
	unregister "$loop"
}

# cpu_per PREFIX C0 C1 N FLAG: records PREFIX_cpu_us, the target's CPU per
# request (µs) from its CPU ticks C0 to C1 over N requests.
cpu_per() {
	(($4 > 0)) && record "$1_cpu_us" "$TARGET_NAME" "$(calc "($3 - $2) * 1000000 / $CLK_TCK / $4")" "$5"
	return 0
}

# measure_tls TARGET: requests/s and CPU per request over TLS, CONNS
# keep-alive connections (one handshake each), HTTP/1.1.
measure_tls() {
	local t=$1 c0 c1 flag
	start_target "$t" 1 rr fast "$PROXY_CPU" tls
	wrk_run "$CONNS" "$WARMUP" "$LOAD_CPU" || true
	c0=$(cpu_ticks "$TARGET_PID")
	if wrk_run "$CONNS" "$DURATION" "$LOAD_CPU"; then
		c1=$(cpu_ticks "$TARGET_PID")
		flag=$(wrk_flag)
		record tls_rps "$t" "$(wrk_rps)" "$flag"
		record tls_p99 "$t" "$(calc "${WRK[p99_us]} / 1000")" "$flag"
		cpu_per tls "$c0" "$c1" "${WRK[requests]}" "$flag"
	else
		record tls_rps "$t" nan "wrk failed"
	fi
	stop_target
}

# measure_handshakes TARGET: new TLS connections per second: every request
# says `Connection: close`, so each of HS_CONNS clients makes a full
# handshake (wrk resumes no session) for every request.
measure_handshakes() {
	local t=$1 c0 c1 flag
	start_target "$t" 1 rr fast "$PROXY_CPU" tls
	wrk_run "$HS_CONNS" "$WARMUP" "$LOAD_CPU" -H 'Connection: close' || true
	c0=$(cpu_ticks "$TARGET_PID")
	if wrk_run "$HS_CONNS" "$DURATION" "$LOAD_CPU" -H 'Connection: close'; then
		c1=$(cpu_ticks "$TARGET_PID")
		flag=$(wrk_flag)
		record hs_rps "$t" "$(wrk_rps)" "$flag"
		cpu_per hs "$c0" "$c1" "${WRK[requests]}" "$flag"
	else
		record hs_rps "$t" nan "wrk failed"
	fi
	stop_target
}

# wait_line FILE WORD PID SECONDS: wait until a line of FILE starts with
# WORD; fail if PID exits first or SECONDS pass.
wait_line() {
	local deadline=$((SECONDS + $4))
	while ((SECONDS < deadline)); do
		grep -q "^$2" "$1" 2>/dev/null && return 0
		alive "$3" || return 1
		sleep 0.05
	done
	return 1
}
