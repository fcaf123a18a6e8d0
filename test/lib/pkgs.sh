# Debian package checks shared by test/deps.sh and test/jool/prepare.sh
# (sourced, not executed).

# pkgs_missing NAME... prints, one per line, the names that dpkg does not list
# as installed. It never fails: a package dpkg has never heard of is missing,
# not an error (dpkg-query exits 1 for those, which under `set -e` and
# `pipefail` used to end the caller silently on a fresh machine).
pkgs_missing() {
	local p status
	for p in "$@"; do
		status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) || status=
		[[ $status == "install ok installed" ]] || printf '%s\n' "$p"
	done
	return 0
}

# pkgs_install NAME... installs the named packages with apt-get, refreshing
# the package lists first (a fresh machine has none), with maintainer scripts
# forbidden to start services (a temporary policy-rc.d). On failure it prints
# apt's output and returns its status.
pkgs_install() {
	(($#)) || return 0
	local apt=(apt-get -qq -o Dpkg::Use-Pty=0 -o DPkg::Lock::Timeout=300)
	local policy=/usr/sbin/policy-rc.d own_policy= rc=0 log
	log=$(mktemp)
	"${apt[@]}" update >"$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; return 1; }
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		own_policy=1
	fi
	DEBIAN_FRONTEND=noninteractive "${apt[@]}" install --no-install-recommends -y "$@" >"$log" 2>&1 || rc=$?
	((rc == 0)) || cat "$log" >&2
	rm -f "$log"
	[[ -n $own_policy ]] && rm -f "$policy"
	return "$rc"
}
