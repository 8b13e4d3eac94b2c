#!/usr/bin/env bash
# The Node.js fleet behind Switchyard, on one screen: a shared store, two
# "machines" (cluster primaries with one worker per CPU) on 127.0.0.1:4101
# and :4102, and Switchyard on 127.0.0.1:4180 (admin 127.0.0.1:4190) with
# least_connections and HTTP health checks. It shows the traffic spread, a
# worker killed while the fleet keeps answering, a reload that adds a third
# machine, and the metrics; then it stops everything it started.
#
#   bash examples/node-fleet/run.sh
#
# Needs Rust (cargo); installs Node.js and curl from Debian's packages where
# they are missing. Every wait has a deadline. Exits 1 if a request failed.
set -euo pipefail
cd "$(dirname "$0")/../.."

FLEET=examples/node-fleet
STORE=127.0.0.1:4100
PROXY=127.0.0.1:4180
ADMIN=127.0.0.1:4190
MACHINE_PORTS=(4101 4102 4103)

if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
step() { printf '\n%s%s%s\n' "$bold" "$*" "$plain"; }
indent() { sed 's/^/  /'; }

# ------------------------------------------------------------ what it needs
missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v curl >/dev/null 2>&1 || missing+=(curl)
if ((${#missing[@]} > 0)); then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "run.sh: please install ${missing[*]}" >&2
    exit 1
  fi
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "run.sh: need root or sudo to install ${missing[*]}" >&2; exit 1; }
    sudo=(sudo)
  fi
  echo "run.sh: installing ${missing[*]} (apt-get)" >&2
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
bash examples/setup.sh
echo "run.sh: building Switchyard (cargo build --release)" >&2
cargo build --release --bin switchyard
BIN="${CARGO_TARGET_DIR:-target}/release/switchyard"

for port in 4100 4101 4102 4103 4180 4190; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "run.sh: 127.0.0.1:$port is in use; stop what listens there first" >&2
    exit 1
  fi
done

# ------------------------------------------- what it starts, and stopping it
WORK=$(mktemp -d "${TMPDIR:-/tmp}/switchyard-node-fleet.XXXXXX")
PIDS=()

# start NAME COMMAND...: in the background, in its own process group (so
# stopping it stops its workers too), output in $WORK/NAME.log.
start() {
  local name=$1
  shift
  if command -v setsid >/dev/null 2>&1; then
    setsid "$@" >"$WORK/$name.log" 2>&1 &
  else
    "$@" >"$WORK/$name.log" 2>&1 &
  fi
  PIDS+=("$!")
}

stop_all() {
  local status=$? pid alive
  trap - EXIT
  for pid in "${PIDS[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true; done
  if ((status != 0)) && [ -d "$WORK" ]; then
    for log in "$WORK"/*.log; do
      [ -e "$log" ] && { echo "--- ${log##*/} (last lines)"; tail -n 5 "$log"; }
    done >&2
  fi
  rm -rf "$WORK"
  echo "run.sh: stopped everything it started" >&2
  exit "$status"
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_ok WHAT URL: polls until URL answers 2xx, for 15 s at most.
wait_ok() {
  local deadline=$((SECONDS + 15))
  until curl -fsS -o /dev/null --max-time 1 "$2" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      echo "run.sh: $1 did not answer $2 within 15 s" >&2
      exit 1
    fi
    sleep 0.1
  done
}

start_machine() {
  local n=$1
  start "machine-$n" env MACHINE="machine-$n" PORT="${MACHINE_PORTS[n - 1]}" STORE_URL="http://$STORE" node "$FLEET/app.js"
  wait_ok "machine-$n" "http://127.0.0.1:${MACHINE_PORTS[n - 1]}/healthz"
}

# Each backend as /status shows it: address, state, in flight.
backends() {
  curl -fsS --max-time 5 "http://$ADMIN/status" | node -e '
    const s = JSON.parse(require("fs").readFileSync(0, "utf8"));
    for (const u of s.upstreams) for (const b of u.backends)
      console.log(`${u.name} ${b.address.padEnd(16)} ${String(b.state).padEnd(9)} in flight ${b.in_flight}`);'
}

failed=0
start store env STORE_PORT="${STORE##*:}" node "$FLEET/store.js"
wait_ok store "http://$STORE/healthz"
start_machine 1
start_machine 2
cp "$FLEET/proxy.toml" "$WORK/proxy.toml"
start switchyard "$BIN" --config "$WORK/proxy.toml"
wait_ok Switchyard "http://$ADMIN/readyz"

step "Node.js fleet behind Switchyard: http://$PROXY (admin http://$ADMIN)"
echo "  store $STORE; machine-1 127.0.0.1:4101 and machine-2 127.0.0.1:4102, $(node -p 'require("os").availableParallelism?.() ?? require("os").cpus().length') workers each"
backends | indent

step "1. Traffic spread: one client session over six requests, a WebSocket, then a load"
for _ in 1 2 3 4 5 6; do
  curl -fsS --max-time 5 -b "$WORK/cookies" -c "$WORK/cookies" "http://$PROXY/" | indent
done
node "$FLEET/client.js" ws "ws://$PROXY/ws" "hello fleet" || failed=1
node "$FLEET/client.js" load "http://$PROXY/" 300 12 || failed=1

step "2. A worker killed: SIGKILL to one of machine-1's workers during 600 requests"
victim=$(curl -fsS --max-time 2 "http://127.0.0.1:4101/healthz" | awk '{print $NF}')
node "$FLEET/client.js" load "http://$PROXY/" 600 12 --kill "$victim" --after 150 || failed=1
deadline=$((SECONDS + 15))
# Replaced once the primary's last word after the death is a new worker serving.
until grep -q "pid $victim) died" "$WORK/machine-1.log" &&
  grep -E "died|serving" "$WORK/machine-1.log" | tail -n 1 | grep -q serving; do
  ((SECONDS < deadline)) || { echo "run.sh: machine-1 did not replace its worker" >&2; exit 1; }
  sleep 0.1
done
grep -E "died|serving" "$WORK/machine-1.log" | tail -n 2 | indent
backends | indent

step "3. A reload adding machine-3: start it, add it to proxy.toml, POST /reload"
start_machine 3
awk '{ print } /# machine-2$/ { print "  \"127.0.0.1:4103\",             # machine-3, added by run.sh" }' \
  "$WORK/proxy.toml" >"$WORK/proxy.toml.new"
mv "$WORK/proxy.toml.new" "$WORK/proxy.toml"
curl -fsS --max-time 5 -X POST "http://$ADMIN/reload" | node -e '
  const r = JSON.parse(require("fs").readFileSync(0, "utf8"));
  const changes = typeof r.changes === "object"
    ? Object.entries(r.changes).filter(([, v]) => v.length).map(([k, v]) => `${k}: ${v.join(", ")}`).join("; ")
    : r.changes ?? r.error;
  console.log(`  POST /reload: ${r.result}; ${changes}`);'
node "$FLEET/client.js" load "http://$PROXY/" 300 12 || failed=1

step "4. Metrics: curl http://$ADMIN/metrics (the non-zero lines of a few)"
curl -fsS --max-time 5 "http://$ADMIN/metrics" |
  grep -E '^switchyard_(requests_total|backend_healthy|health_checks_total|upstream_failures_total|retries_total|tunnels_total|config_reloads_total)' |
  grep -v ' 0$' | indent

if ((failed)); then
  step "Some requests failed (counted above)."
  exit 1
fi
step "Every request was answered. Stopping everything."
