# shellcheck shell=bash
# The processes under test: the backends, and each proxy started fresh from a
# config rendered into WORK_DIR. Sourced by compare.sh.

# render TEMPLATE OUT KEY=VALUE...: TEMPLATE with each @KEY@ replaced.
render() {
	local text kv
	text=$(<"$1")
	local out=$2
	shift 2
	for kv in "$@"; do
		text=${text//"@${kv%%=*}@"/"${kv#*=}"}
	done
	printf '%s\n' "$text" >"$out"
}

# wait_ready PORT PID LOG [SCHEME]: poll GET / on PORT (http, https
# trusting anything, or h2c: HTTP/2 by prior knowledge) until it answers
# 200 (20 s at most); fail with LOG's tail if PID exits first.
wait_ready() {
	local port=$1 pid=$2 logfile=$3 scheme=${4:-http} deadline=$((SECONDS + 20)) code
	local args=(-sk)
	[[ $scheme == h2c ]] && args+=(--http2-prior-knowledge) && scheme=http
	while ((SECONDS < deadline)); do
		if [[ -n $pid ]] && ! alive "$pid"; then
			tail -n 20 "$logfile" >&"$LOG_FD"
			die "process $pid for port $port exited during startup (log: $logfile)"
		fi
		code=$(curl "${args[@]}" -o /dev/null -w '%{http_code}' --max-time 1 "$scheme://127.0.0.1:$port/" || true)
		[[ $code == 200 ]] && return 0
		sleep 0.1
	done
	tail -n 20 "$logfile" >&"$LOG_FD"
	die "nothing answered 200 on 127.0.0.1:$port within 20 s (log: $logfile)"
}

start_backends() {
	local conf=$WORK_DIR/backend.nginx.conf
	render "$HERE/backend.nginx.conf" "$conf" \
		"DIR=$WORK_DIR" "ECHO_MODULE=$ECHO_MODULE" "NOFILE=$NOFILE" \
		"MAX_CONNS=$MAX_CONNS" "FAST1=$PORT_FAST1" "FAST2=$PORT_FAST2" \
		"SLOW=$PORT_SLOW" "STATUS=$PORT_STATUS" "SLOW_MS=$SLOW_MS" \
		"H2C1=$PORT_H2C1" "H2C2=$PORT_H2C2" \
		"SLOW_S=$(awk -v ms="$SLOW_MS" 'BEGIN {printf "%.3f", ms / 1000}')"
	start_bg "$WORK_DIR/backend.log" taskset -c "$LOAD_CPU" \
		nginx -e "$WORK_DIR/backend.err" -p "$WORK_DIR" -c "$conf" -g 'daemon off;'
	BACKEND_PID=$BG_PID
	wait_ready "$PORT_FAST1" "$BACKEND_PID" "$WORK_DIR/backend.err"
	wait_ready "$PORT_FAST2" "$BACKEND_PID" "$WORK_DIR/backend.err"
	wait_ready "$PORT_SLOW" "$BACKEND_PID" "$WORK_DIR/backend.err"
	wait_ready "$PORT_H2C1" "$BACKEND_PID" "$WORK_DIR/backend.err" h2c
	wait_ready "$PORT_H2C2" "$BACKEND_PID" "$WORK_DIR/backend.err" h2c
}

# start_grpc_backends HOLD: the two gRPC backends (grpc_bench servers, one
# thread each) on PORTS_GRPC, pinned with the other backends; each exits
# after HOLD seconds whatever happens.
start_grpc_backends() {
	local port out
	for port in "${PORTS_GRPC[@]}"; do
		out=$WORK_DIR/grpc-backend-$port.log
		start_bg "$out" taskset -c "$LOAD_CPU" "$GRPC_BENCH_BIN" server \
			--listen "127.0.0.1:$port" --hold "$1"
		wait_line "$out" READY "$BG_PID" 20 ||
			die "the gRPC backend on $port did not start: $(tail -n 2 "$out" | tr '\n' ' ')"
		wait_ready "$port" "$BG_PID" "$out" h2c
	done
}

# make_cert: one certificate for every proxy's TLS rows, in WORK_DIR: an
# ECDSA P-256 key (what most sites serve) for localhost and 127.0.0.1, as
# tls.pem and tls.key, and both in tls.both.pem for HAProxy.
make_cert() {
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
		-subj /CN=localhost -addext 'subjectAltName=DNS:localhost,IP:127.0.0.1' \
		-keyout "$WORK_DIR/tls.key" -out "$WORK_DIR/tls.pem" 2>/dev/null ||
		die "openssl could not make the TLS rows' certificate"
	cat "$WORK_DIR/tls.pem" "$WORK_DIR/tls.key" >"$WORK_DIR/tls.both.pem"
}

# backend_cpus CPUS: move the backend processes (every thread) to CPUS.
backend_cpus() {
	local p
	for p in "$BACKEND_PID" $(descendants "$BACKEND_PID"); do
		taskset -a -p -c "$1" "$p" >/dev/null
	done
}

# backend_accepts: connections the backends have accepted so far, this
# query's own included; empty if stub_status does not answer.
backend_accepts() {
	{ curl -s --max-time 5 "http://127.0.0.1:$PORT_STATUS/" || true; } | awk 'NR == 3 {print $1}'
}

# accepts_between A0 A1: new backend connections between two readings of
# backend_accepts (the second reading's own connection left out), or nan.
accepts_between() {
	if [[ -n $1 && -n $2 ]]; then echo $(($2 - $1 - 1)); else echo nan; fi
}

# backend_list KIND SET: the backends in KIND's config syntax; SET is
# `fast` (the two fast ones), `slow` (those plus the slow one), `h2c` (the
# two fast ones over HTTP/2 without TLS), `grpc` (the two gRPC backends;
# HAProxy speaks HTTP/2 to both of these with `proto h2`), or `crash`
# and `crash-passive` (the three Node.js backends of the crash loop, with
# each proxy's settings for processes that die and come back: nginx
# `max_fails=1 fail_timeout=2s`; HAProxy checks every second, one failure
# out and one pass in, three retries with redispatch).
backend_list() {
	local kind=$1 ports=("$PORT_FAST1" "$PORT_FAST2") i=0 p out="" opts=""
	[[ $2 == slow ]] && ports+=("$PORT_SLOW")
	if [[ $2 == h2c || $2 == grpc ]]; then
		ports=("$PORT_H2C1" "$PORT_H2C2")
		[[ $2 == grpc ]] && ports=("${PORTS_GRPC[@]}")
		[[ $kind == haproxy ]] && opts=" proto h2"
	fi
	if [[ $2 == crash* ]]; then
		ports=("${PORTS_NODE[@]}")
		case $kind in
		nginx) opts=" max_fails=1 fail_timeout=2s" ;;
		haproxy)
			opts=" check inter 1s fall 1 rise 1"
			out="    retries 3"$'\n'"    option redispatch"$'\n'"    retry-on all-retryable-errors"$'\n'
			;;
		esac
	fi
	for p in "${ports[@]}"; do
		i=$((i + 1))
		case $kind in
		nginx) out+="        server 127.0.0.1:$p$opts;"$'\n' ;;
		haproxy) out+="    server b$i 127.0.0.1:$p$opts"$'\n' ;;
		switchyard) out+="${out:+, }\"127.0.0.1:$p\"" ;;
		esac
	done
	printf '%s' "${out%$'\n'}"
}

# switchyard_balance rr|lc|ll: Switchyard's name for it.
switchyard_balance() {
	case $1 in
	lc) echo least_connections ;;
	ll) echo least_latency ;;
	*) echo round_robin ;;
	esac
}

# http2_set SET: whether SET's backends speak HTTP/2 (without TLS).
http2_set() { [[ $1 == h2c || $1 == grpc ]]; }

# nginx_pass SET: nginx's location body for SET: proxy_pass over HTTP/1.1
# with keep-alive, or grpc_pass for HTTP/2 backends (nginx's proxy module
# speaks only HTTP/1.x to a backend; its gRPC module passes any request).
nginx_pass() {
	if http2_set "$1"; then
		echo '            grpc_pass grpc://app;'
	else
		printf '%s\n' '            proxy_pass http://app;' '            proxy_http_version 1.1;' \
			'            proxy_set_header Connection "";'
	fi
}

# switchyard_tables SET: the tables after Switchyard's backends: for
# `crash`, TCP checks every second, one failure out and one pass in.
switchyard_tables() {
	[[ $1 == crash ]] || return 0
	printf '%s\n' '[upstreams.app.health_check]' 'type = "tcp"' 'interval = "1s"' \
		'healthy_threshold = 1' 'unhealthy_threshold = 1'
}

# start_target KIND THREADS BALANCE SET CPUS [tls|h2c]: start a fresh KIND
# (direct, switchyard, nginx or haproxy; sw-log-off and sw-log-json are
# Switchyard with its access log off or JSON to ACCESS_LOG) balancing with BALANCE (rr or lc)
# over the backends of SET, on CPUS (empty: unpinned); with `tls`, its port
# speaks TLS (ALPN h2 and http/1.1) with make_cert's certificate; with
# `h2c`, HTTP/2 by prior knowledge (nginx and HAProxy then speak nothing
# else there). Direct is SET's first backend. Sets TARGET_PID (empty for
# direct), TARGET_PORT and TARGET_SCHEME.
start_target() {
	local kind=$1 threads=$2 balance=$3 set=$4 cpus=$5 tls=${6:-} conf pin=()
	local plain tls_table="" nginx_listen="" nginx_tls="" haproxy_bind="" h2c="" protocol=""
	local keepalive=128 log_table=""
	TARGET_NAME=$kind
	# Switchyard with its access log off, or JSON to ACCESS_LOG.
	case $kind in
	sw-log-off) kind=switchyard ;;
	sw-log-json)
		kind=switchyard
		log_table=$(printf '%s\n' '[log]' "access = \"$ACCESS_LOG\"" 'format = "json"')
		;;
	esac
	TARGET_SCHEME=http
	plain="\"127.0.0.1:$PORT_SWITCHYARD\""
	if [[ $tls == tls ]]; then
		TARGET_SCHEME=https
		plain=""
		tls_table=$(printf '%s\n' '[server.tls]' "listen = [\"127.0.0.1:$PORT_SWITCHYARD\"]" \
			"certificates = [{ cert = \"$WORK_DIR/tls.pem\", key = \"$WORK_DIR/tls.key\" }]")
		nginx_listen="ssl http2 "
		nginx_tls="        ssl_certificate $WORK_DIR/tls.pem;"$'\n'"        ssl_certificate_key $WORK_DIR/tls.key;"
		haproxy_bind=" ssl crt $WORK_DIR/tls.both.pem alpn h2,http/1.1"
	elif [[ $tls == h2c ]]; then
		TARGET_SCHEME=h2c
		h2c="h2c = true"
		nginx_listen="http2 "
		haproxy_bind=" proto h2"
	fi
	if http2_set "$set"; then
		protocol='protocol = "http2"'
		((H2_CONNS * H2_STREAMS > keepalive)) && keepalive=$((H2_CONNS * H2_STREAMS))
	fi
	[[ -n $cpus ]] && pin=(taskset -c "$cpus")
	conf=$WORK_DIR/$kind.conf
	case $kind in
	direct)
		TARGET_PID=""
		TARGET_PORT=$PORT_FAST1
		[[ $set == h2c ]] && TARGET_PORT=$PORT_H2C1
		[[ $set == grpc ]] && TARGET_PORT=${PORTS_GRPC[0]}
		return 0
		;;
	switchyard)
		render "$HERE/switchyard.toml" "$conf" "PLAIN=$plain" "TLS=$tls_table" "H2C=$h2c" "PROTOCOL=$protocol" \
			"ADMIN=$PORT_ADMIN" "THREADS=$threads" "MAX_CONNS=$MAX_CONNS" \
			"BALANCE=$(switchyard_balance "$balance")" \
			"SERVERS=$(backend_list switchyard "$set")" \
			"TABLES=$(switchyard_tables "$set")"$'\n'"$log_table"
		start_bg "$WORK_DIR/switchyard.log" "${pin[@]}" "$SWITCHYARD_BIN" --config "$conf"
		TARGET_PORT=$PORT_SWITCHYARD
		;;
	nginx)
		render "$HERE/proxy.nginx.conf" "$conf" "DIR=$WORK_DIR" "PORT=$PORT_NGINX" \
			"LISTEN=$nginx_listen" "TLS=$nginx_tls" "PASS=$(nginx_pass "$set")" \
			"KEEPALIVE=$keepalive" \
			"WORKERS=$threads" "NOFILE=$NOFILE" "MAX_CONNS=$MAX_CONNS" \
			"BALANCE=$([[ $balance == lc ]] && echo 'least_conn;')" \
			"SERVERS=$(backend_list nginx "$set")"
		start_bg "$WORK_DIR/nginx.log" "${pin[@]}" \
			nginx -e "$WORK_DIR/nginx.err" -p "$WORK_DIR" -c "$conf" -g 'daemon off;'
		TARGET_PORT=$PORT_NGINX
		;;
	haproxy)
		render "$HERE/haproxy.cfg" "$conf" "PORT=$PORT_HAPROXY" "BIND=$haproxy_bind" \
			"THREADS=$threads" "MAX_CONNS=$HAPROXY_MAX_CONNS" \
			"BALANCE=$([[ $balance == lc ]] && echo leastconn || echo roundrobin)" \
			"SERVERS=$(backend_list haproxy "$set")"
		start_bg "$WORK_DIR/haproxy.log" "${pin[@]}" haproxy -db -f "$conf"
		TARGET_PORT=$PORT_HAPROXY
		;;
	*) die "unknown target $kind" ;;
	esac
	TARGET_PID=$BG_PID
	local logfile=$WORK_DIR/$kind.log
	[[ $kind == nginx ]] && logfile=$WORK_DIR/nginx.err
	wait_ready "$TARGET_PORT" "$TARGET_PID" "$logfile" "$TARGET_SCHEME"
}

# stop_target: stop the target; a proxy that is already gone crashed or was
# killed during the run, which marks the round as suspect.
stop_target() {
	[[ -z $TARGET_PID ]] && return 0
	alive "$TARGET_PID" ||
		record exited "$TARGET_NAME" nan "the proxy exited during the run (log: $WORK_DIR)"
	stop_pid "$TARGET_PID"
	unregister "$TARGET_PID"
	TARGET_PID=""
}
