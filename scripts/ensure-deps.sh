#!/usr/bin/env bash
# Makes sure the services the integration tests and the demo start for
# themselves are installed: the Postgres server binaries (initdb, postgres)
# and redis-server. Kafka needs nothing: tests and the demo use an
# in-process development broker. promtool (Debian package prometheus), which
# tests the shipped alert rules, and kcat (a librdkafka client the
# Debezium-encoding test reads topics with) are installed too when they can
# be; without them those checks skip.
#
# When something is missing and we run as root on a Debian/Ubuntu machine,
# it is installed with apt-get; otherwise the script says what to install
# and fails.
set -euo pipefail

have_initdb() {
	if [[ -n "${PG_BINDIR:-}" && -x "${PG_BINDIR}/initdb" ]]; then return 0; fi
	if command -v initdb >/dev/null 2>&1; then return 0; fi
	if command -v pg_config >/dev/null 2>&1 && [[ -x "$(pg_config --bindir)/initdb" ]]; then return 0; fi
	compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}

have_redis() {
	command -v redis-server >/dev/null 2>&1
}

have_promtool() {
	command -v promtool >/dev/null 2>&1
}

have_kcat() {
	command -v kcat >/dev/null 2>&1
}

missing=()
have_initdb || missing+=(postgresql)
have_redis || missing+=(redis-server)
# Optional: only the alert-rule test and the kcat check need them.
optional=()
have_promtool || optional+=(prometheus)
have_kcat || optional+=(kcat)

if [[ ${#optional[@]} -gt 0 ]]; then
	if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
		echo "ensure-deps: installing ${optional[*]} (promtool, kcat) with apt-get" >&2
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq || true
		# The package's Prometheus server is not started here (no init
		# system in CI containers); only promtool is used.
		apt-get install -y -qq --no-install-recommends "${optional[@]}" >/dev/null ||
			echo "ensure-deps: could not install ${optional[*]}; the alert-rule test or the kcat check will skip" >&2
	else
		echo "ensure-deps: ${optional[*]} not found (packages prometheus, kcat); the alert-rule test or the kcat check will skip" >&2
	fi
fi

if [[ ${#missing[@]} -eq 0 ]]; then
	exit 0
fi

if [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
	echo "ensure-deps: installing ${missing[*]} with apt-get" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# The tests run their own throwaway clusters; the packaged services
	# are not needed, so no service is started here.
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	have_initdb || { echo "ensure-deps: initdb still not found after installing postgresql" >&2; exit 1; }
	have_redis || { echo "ensure-deps: redis-server still not found after installing redis-server" >&2; exit 1; }
	exit 0
fi

echo "ensure-deps: missing ${missing[*]}." >&2
echo "  Install the Postgres 15+ server binaries (package postgresql; or set PG_BINDIR to the directory holding initdb)" >&2
echo "  and redis-server (package redis-server), e.g.: sudo apt-get install postgresql redis-server" >&2
exit 1
