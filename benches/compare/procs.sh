# shellcheck shell=bash
# Process bookkeeping for compare.sh: every process the harness starts is
# registered here, stopped by its PID, and every run is bounded in time.
# Sourced by compare.sh.

# PIDs of the long-lived processes (backends, proxies, the watchdog), oldest
# first; cleanup stops them newest first.
STARTED_PIDS=()
# The bounded foreground run in progress (a `timeout` process), if any.
RUN_PID=""

# The script's stderr, kept for messages: a trap may run while a command's
# output is redirected to a file.
exec {LOG_FD}>&2

log() { printf 'compare: %s\n' "$*" >&"$LOG_FD"; }

die() {
	log "error: $*"
	exit 1
}

# register PID: remember a process so that cleanup stops it.
register() { STARTED_PIDS+=("$1"); }

unregister() {
	local pid=$1 i
	for i in "${!STARTED_PIDS[@]}"; do
		[[ ${STARTED_PIDS[$i]} == "$pid" ]] && unset 'STARTED_PIDS[i]'
	done
	STARTED_PIDS=("${STARTED_PIDS[@]}")
}

# alive PID: the process exists and is not a zombie waiting to be reaped.
alive() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[[ ${stat%% *} != Z ]]
}

# descendants PID: the PIDs below PID (an nginx master's workers), one a line.
descendants() {
	local child
	for child in $(pgrep -P "$1"); do
		echo "$child"
		descendants "$child"
	done
}

# stop_pid PID [SIGNAL]: signal PID (TERM by default), wait up to 10 s for
# it and its descendants to exit, then KILL whatever is left. It watches
# /proc rather than calling `wait`: bash reaps its children by itself, and a
# `wait` inside a trap that interrupted another `wait` can block for good.
stop_pid() {
	local pid=$1 sig=${2:-TERM} kids deadline p
	alive "$pid" || return 0
	kids=$(descendants "$pid")
	kill "-$sig" "$pid" 2>/dev/null || true
	deadline=$((SECONDS + 10))
	while alive "$pid" && ((SECONDS < deadline)); do sleep 0.05; done
	for p in $kids "$pid"; do
		if alive "$p"; then kill -KILL "$p" 2>/dev/null || true; fi
	done
}

# start_bg LOGFILE CMD...: start CMD in the background with its output in
# LOGFILE; its PID is registered and left in BG_PID.
start_bg() {
	local logfile=$1
	shift
	"$@" >"$logfile" 2>&1 </dev/null {LOG_FD}>&- &
	BG_PID=$!
	register "$BG_PID"
}

# bounded SECONDS CMD...: run CMD for at most SECONDS (then TERM, and KILL 5 s
# later), waiting in a way that lets INT and TERM reach the trap at once.
bounded() {
	local secs=$1 rc=0
	shift
	timeout -k 5 "$secs" "$@" {LOG_FD}>&- &
	RUN_PID=$!
	wait "$RUN_PID" || rc=$?
	RUN_PID=""
	return "$rc"
}

cleanup() {
	local rc=$? i
	trap - EXIT INT TERM
	[[ -n $RUN_PID ]] && stop_pid "$RUN_PID"
	for ((i = ${#STARTED_PIDS[@]} - 1; i >= 0; i--)); do
		stop_pid "${STARTED_PIDS[$i]}"
	done
	if [[ -n ${WORK_DIR:-} && -d $WORK_DIR ]]; then
		if ((rc != 0)) || [[ ${KEEP_TMP:-0} == 1 ]]; then
			log "logs and configs kept in $WORK_DIR"
		else
			rm -rf "$WORK_DIR"
		fi
	fi
	exit "$rc"
}

install_traps() {
	trap cleanup EXIT
	trap 'log "interrupted"; exit 130' INT
	trap 'log "terminated"; exit 143' TERM
}

# start_watchdog SECONDS: TERM this script after SECONDS, so that a hung
# step still ends in cleanup.
start_watchdog() {
	local secs=$1 me=$$
	(
		trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
		sleep "$secs" &
		sleeper=$!
		wait "$sleeper"
		log "watchdog: still running after ${secs}s, stopping"
		kill -TERM "$me"
	) &
	register "$!"
}

# cpu_ticks PID: utime + stime of PID and its descendants, in clock ticks.
cpu_ticks() {
	local total=0 p stat fields
	for p in "$1" $(descendants "$1"); do
		stat=$(cat "/proc/$p/stat" 2>/dev/null) || continue
		read -ra fields <<<"${stat##*) }"
		# After the command name: state is field 3, utime 14, stime 15.
		total=$((total + fields[11] + fields[12]))
	done
	echo "$total"
}

# serving_pids PID: the processes that hold the connections: an nginx
# master's workers, otherwise PID itself.
serving_pids() {
	local kids
	kids=$(descendants "$1")
	if [[ -n $kids ]]; then echo "$kids"; else echo "$1"; fi
}

# mem_kib PID FIELD: FIELD (VmRSS or VmHWM) of the serving processes, summed, in KiB.
mem_kib() {
	local total=0 p v
	for p in $(serving_pids "$1"); do
		v=$(awk -v f="$2:" '$1 == f {print $2}' "/proc/$p/status" 2>/dev/null)
		total=$((total + ${v:-0}))
	done
	echo "$total"
}
