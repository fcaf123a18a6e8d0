#!/usr/bin/env bash
# Installs what the test suite and the demo need, on Debian 12, as root:
#   - Debian packages: Tayga, vsftpd, the FTP clients (curl, lftp, python3),
#     nftables/iptables, iproute2, and the shared libraries of the FTP servers
#     that are only unpacked;
#   - proftpd and pure-ftpd, which conflict with vsftpd as packages: their
#     .debs are downloaded and unpacked under test/.cache/pkg/ (never
#     installed system-wide);
#   - the Go modules (go mod download).
# Idempotent and quiet; with everything present it only checks and exits.
#
#   test/deps.sh         what `make test` and `make demo` need
#   test/deps.sh bench   also what test/bench/nfqueue.sh needs (a C compiler
#                        and libnetfilter_queue's headers for its C floor)
#                        and test/bench/replayscale.sh (GNU time for the
#                        peak RSS)
# Package maintainer scripts are not allowed to start services (a temporary
# policy-rc.d), so installing vsftpd leaves no daemon on port 21.
set -euo pipefail
cd "$(dirname "$0")/.."
source test/lib/pkgs.sh
export PATH="$PATH:/usr/local/go/bin:/usr/sbin:/sbin"
export DEBIAN_FRONTEND=noninteractive

# Installed with apt-get (ncftp: the client that checks the origin of a data
# connection, test/jool/guest/active-origin.sh; man-db and systemd: test/deb.sh checks the man
# pages and the units with them). The lib* entries are the run-time dependencies of
# the unpacked proftpd-core and pure-ftpd.
packages=(
	tayga vsftpd curl lftp ncftp python3 nftables iptables iproute2 procps conntrack conntrackd
	man-db systemd
	libacl1 libcap2 libcrypt1 libhiredis0.14 libidn2-0 libmemcached11
	libmemcachedutil2 libncursesw6 libpam0g libpcre2-8-0 libpcre2-posix3
	libssl3 libtinfo6 zlib1g libsodium23 libwrap0
)
for group in "$@"; do
	case $group in
	bench) packages+=(gcc libc6-dev libnetfilter-queue-dev time) ;;
	*) echo "deps: unknown group $group (known: bench)" >&2; exit 2 ;;
	esac
done
# Downloaded and unpacked into test/.cache/pkg/<name>/.
unpacked=(proftpd-core pure-ftpd)

cache=test/.cache/pkg

mapfile -t missing < <(pkgs_missing "${packages[@]}")
need_unpack=()
for p in "${unpacked[@]}"; do
	[[ -f "$cache/$p/.done" ]] || need_unpack+=("$p")
done

if ((${#missing[@]} + ${#need_unpack[@]})); then
	if [[ $(id -u) -ne 0 ]]; then
		echo "deps: missing ${missing[*]} ${need_unpack[*]}; run as root to install" >&2
		exit 1
	fi
	if ((${#missing[@]})); then
		echo "deps: installing ${missing[*]}"
		pkgs_install "${missing[@]}"
	else
		apt-get -qq update >/dev/null # apt-get download needs the package lists
	fi
	for p in "${need_unpack[@]}"; do
		echo "deps: unpacking $p into $cache/$p"
		tmp=$(mktemp -d)
		chmod 755 "$tmp" # apt's download user must be able to write there
		(cd "$tmp" && chown _apt "$tmp" 2>/dev/null; apt-get -qq download "$p" >/dev/null)
		rm -rf "${cache:?}/$p"
		mkdir -p "$cache/$p"
		dpkg-deb -x "$tmp"/*.deb "$cache/$p"
		rm -rf "$tmp"
		touch "$cache/$p/.done"
	done
fi

go mod download
