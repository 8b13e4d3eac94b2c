# shellcheck shell=bash
# Installs the tools compare.sh needs, from Debian's packages, when missing.
# Sourced by compare.sh; installs nothing that is already there.

# install_tools: nginx and its echo module (the slow backend's 20 ms delay),
# HAProxy, wrk, h2load (fixed-rate load with per-request logs), python3,
# Node.js (the crash loop's backends), curl, openssl (the TLS rows'
# certificate), pgrep, taskset and timeout.
install_tools() {
	local missing=()
	command -v nginx >/dev/null || missing+=(nginx)
	[[ -e $ECHO_MODULE ]] || missing+=(libnginx-mod-http-echo)
	command -v haproxy >/dev/null || missing+=(haproxy)
	command -v wrk >/dev/null || missing+=(wrk)
	command -v h2load >/dev/null || missing+=(nghttp2-client)
	command -v python3 >/dev/null || missing+=(python3)
	command -v node >/dev/null || missing+=(nodejs)
	command -v curl >/dev/null || missing+=(curl)
	command -v openssl >/dev/null || missing+=(openssl)
	command -v taskset >/dev/null || missing+=(util-linux)
	command -v pgrep >/dev/null || missing+=(procps)
	command -v timeout >/dev/null || missing+=(coreutils)
	((${#missing[@]} == 0)) && return 0

	log "installing ${missing[*]} (apt-get)"
	local sudo=()
	if ((EUID != 0)); then
		command -v sudo >/dev/null || die "need root or sudo to install: ${missing[*]}"
		sudo=(sudo)
	fi
	timeout 600 "${sudo[@]}" apt-get update -qq ||
		die "apt-get update failed"
	timeout 900 "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
		die "apt-get install ${missing[*]} failed"
	if ! command -v nginx >/dev/null || ! command -v haproxy >/dev/null ||
		! command -v wrk >/dev/null || ! command -v h2load >/dev/null ||
		! command -v node >/dev/null ||
		[[ ! -e $ECHO_MODULE ]]; then
		die "tools still missing after apt-get install"
	fi
}

# nginx and HAProxy live in /usr/sbin, which a non-root PATH may lack.
add_sbin_to_path() {
	case ":$PATH:" in
	*:/usr/sbin:*) ;;
	*) PATH="$PATH:/usr/sbin:/sbin" ;;
	esac
}

# tool_versions: one markdown line per tool, for the report's header.
tool_versions() {
	local nginx_v haproxy_v wrk_v h2load_v py_v
	# `wrk -v` exits 1 after printing its version.
	nginx_v=$({ nginx -v 2>&1 || true; } | sed 's/^nginx version: //')
	haproxy_v=$({ haproxy -v 2>&1 || true; } | awk 'NR == 1 {print $3}')
	wrk_v=$({ wrk -v 2>&1 || true; } | awk 'NR == 1 {print $2}')
	h2load_v=$({ h2load --version 2>&1 || true; } | awk 'NR == 1 {print $NF}')
	py_v=$({ python3 -V 2>&1 || true; } | awk '{print $2}')
	printf -- '- tools: %s, HAProxy %s, wrk %s, h2load %s, python %s, %s\n' \
		"$nginx_v" "$haproxy_v" "$wrk_v" "$h2load_v" "$py_v" "$(rustc --version 2>/dev/null || echo rustc)"
}
