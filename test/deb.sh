#!/usr/bin/env bash
# Checks a Debian package built by 'make deb' without installing it: its
# control data (dpkg-deb -I), its file list (dpkg-deb -c), the conffile,
# and, unpacked, that the binary runs and tells its version, the man pages
# render, and systemd accepts the units (systemd-analyze verify, when
# present).
#
#   test/deb.sh build/ftpalg_<version>_<arch>.deb
set -euo pipefail
deb=${1:?usage: $0 PACKAGE.deb}
fail=0
bad() { echo "deb: FAIL: $*" >&2; fail=1; }

info=$(dpkg-deb -I "$deb")
for field in "Package: ftpalg" "Architecture: $(dpkg --print-architecture)" "Section: net" "Recommends: nftables"; do
	grep -qx " $field" <<<"$info" || bad "control lacks '$field'"
done
version=$(dpkg-deb -f "$deb" Version)
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+([+.][0-9a-z.]+)?$ ]] || bad "version '$version' is not from git describe"
[ "$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)" = /etc/ftpalg/ftpalg.conf ] || bad "conffiles is not /etc/ftpalg/ftpalg.conf"

list=$(dpkg-deb -c "$deb" | awk '{ print $1, $6 }')
for want in \
	"-rwxr-xr-x ./usr/sbin/ftpalg" \
	"-rw-r--r-- ./lib/systemd/system/ftpalg.service" \
	"-rw-r--r-- ./lib/systemd/system/ftpalg@.service" \
	"-rw-r--r-- ./etc/ftpalg/ftpalg.conf" \
	"-rw-r--r-- ./usr/share/man/man8/ftpalg.8.gz" \
	"-rw-r--r-- ./usr/share/man/man5/ftpalg.conf.5.gz" \
	"-rw-r--r-- ./usr/share/ftpalg/tayga.nft" \
	"-rw-r--r-- ./usr/share/ftpalg/jool.nft" \
	"-rw-r--r-- ./usr/share/doc/ftpalg/copyright" \
	"-rw-r--r-- ./usr/share/doc/ftpalg/changelog.gz"; do
	grep -qxF -- "$want" <<<"$list" || bad "no '$want' in the package"
done

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
dpkg-deb -x "$deb" "$root"
out=$("$root/usr/sbin/ftpalg" version)
upstream=${version%%+*}
[[ $out == "ftpalg v$upstream"* ]] || bad "'ftpalg version' says '$out', the package $version"
grep -q "Apache License" "$root/usr/share/doc/ftpalg/copyright" || bad "copyright is not the Apache License"
command -v man >/dev/null || bad "man missing (test/deps.sh installs man-db)"
if command -v man >/dev/null; then
	for page in man8/ftpalg.8.gz man5/ftpalg.conf.5.gz; do
		warn=$(MANWIDTH=80 man --warnings -l "$root/usr/share/man/$page" 2>&1 >/dev/null) || bad "man $page fails"
		[ -z "$warn" ] || bad "man $page warns: $warn"
	done
fi
command -v systemd-analyze >/dev/null || bad "systemd-analyze missing (test/deps.sh installs systemd)"
if command -v systemd-analyze >/dev/null; then
	# verify wants the binary where ExecStart= names it: the unpacked one.
	mkdir -p "$root/units"
	for unit in ftpalg.service ftpalg@.service; do
		sed "s|/usr/sbin/ftpalg|$root/usr/sbin/ftpalg|g" "$root/lib/systemd/system/$unit" >"$root/units/$unit"
	done
	ln -s ftpalg@.service "$root/units/ftpalg@nat64.service"
	for unit in ftpalg.service ftpalg@nat64.service; do
		msg=$(cd "$root/units" && systemd-analyze verify --man=no "$root/units/$unit" 2>&1) || bad "systemd-analyze verify $unit failed"
		[ -z "$msg" ] || bad "systemd-analyze verify $unit: $msg"
	done
fi
[ $fail = 0 ] && echo "deb: $deb ($version) OK"
exit $fail
