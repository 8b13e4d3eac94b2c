#!/usr/bin/env bash
# Taking one backend out under load: `switchyard drain --wait`, then stop it,
# against stopping it with no drain. Three Node.js backends answering after
# DELAY_MS, least-connections, and wrk sending POSTs (never retried once
# sent, so a request lost at the stop shows as an error) over CONNS
# connections for DURATION seconds; STOP_AT seconds in, backend 2 is
# drained and stopped (SIGKILL) the moment the command returns, or just
# stopped. Each mode ROUNDS times, interleaved.
#
#     bash benches/drain.sh
#
# Settings (environment, defaults in brackets): ROUNDS [3] DURATION [8]
# STOP_AT [3] CONNS [30] DELAY_MS [20]. Installs wrk and nodejs from
# Debian's packages if missing; builds Switchyard in release mode. Only
# 127.0.0.1 is used.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE=$REPO/benches/compare
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
STOP_AT=${STOP_AT:-3}
CONNS=${CONNS:-30}
DELAY_MS=${DELAY_MS:-20}

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v node >/dev/null || need+=(nodejs)
if ((${#need[@]})); then
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
fi
(cd "$REPO" && cargo build --release --bin switchyard >&2)
BIN=$REPO/target/release/switchyard

WORK=$(mktemp -d)
PIDS=()
cleanup() {
	for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
	rm -rf "$WORK"
}
trap cleanup EXIT

{
	echo 'wrk.method = "POST"'
	echo 'wrk.body = "an order"'
	cat "$HERE/wrk-report.lua"
} >"$WORK/post.lua"

# round MODE: one run; prints "MODE requests errors drain_s".
round() {
	local mode=$1 ports port i proxy admin drain_s=-
	mapfile -t ports < <(python3 "$HERE/ports.py" 5)
	local backends=() pids=()
	for i in 0 1 2; do
		node "$HERE/node_backend.js" "${ports[$i]}" "backend-$i" "$DELAY_MS" &
		pids+=($!)
		PIDS+=($!)
		backends+=("\"127.0.0.1:${ports[$i]}\"")
	done
	proxy=127.0.0.1:${ports[3]}
	admin=127.0.0.1:${ports[4]}
	cat >"$WORK/proxy.toml" <<-TOML
		[server]
		listen = ["$proxy"]
		threads = 2
		watch_config = false
		[admin]
		listen = "$admin"
		[upstreams.app]
		balance = "least_connections"
		backends = [$(
			IFS=,
			echo "${backends[*]}"
		)]
	TOML
	RUST_LOG=warn "$BIN" --config "$WORK/proxy.toml" &
	local sy=$!
	PIDS+=($sy)
	for _ in $(seq 100); do
		curl -fsS "http://$admin/readyz" >/dev/null 2>&1 && curl -fsS -d x "http://$proxy/" >/dev/null 2>&1 && break
		sleep 0.1
	done
	wrk -t2 -c"$CONNS" -d"${DURATION}s" -s "$WORK/post.lua" "http://$proxy/" >"$WORK/wrk.out" 2>&1 &
	local load=$!
	sleep "$STOP_AT"
	if [[ $mode == drain ]]; then
		local start end
		start=$(date +%s.%N)
		"$BIN" drain --admin "$admin" app "127.0.0.1:${ports[1]}" --wait >"$WORK/drain.out"
		end=$(date +%s.%N)
		drain_s=$(python3 -c "print(f'{$end - $start:.3f}')")
	fi
	kill -9 "${pids[1]}"
	wait "$load" || true
	kill "$sy" "${pids[0]}" "${pids[2]}" 2>/dev/null || true
	wait "$sy" "${pids[@]}" 2>/dev/null || true
	python3 - "$mode" "$drain_s" "$WORK/wrk.out" <<-'PY'
		import re, sys
		mode, drain_s, path = sys.argv[1:]
		line = next(l for l in open(path) if l.startswith("WRK "))
		f = dict(kv.split("=") for kv in line.split()[1:])
		errors = sum(int(f[k]) for k in ("connect", "read", "write", "status", "timeout"))
		print(mode, f["requests"], errors, drain_s)
	PY
}

echo "| round | mode | requests | failed (errors + non-2xx) | drain --wait took (s) |"
echo "| --- | --- | --- | --- | --- |"
for r in $(seq "$ROUNDS"); do
	for mode in drain kill; do
		read -r m requests errors took < <(round "$mode")
		echo "| $r | $m | $requests | $errors | $took |"
	done
done
