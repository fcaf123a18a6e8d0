#!/usr/bin/env bash
# Prepares everything the Jool QEMU lab needs, once: host packages, the Debian
# kernel and Jool packages (downloaded and unpacked, never installed), the two
# Jool kernel modules built out of tree, and a small initramfs.
#
# Idempotent: a second run with the same Debian versions downloads and builds
# nothing (only the initramfs is rebuilt, in about a second, if guest/init or
# the module list changed). Prints the path of the prepared cache entry on
# stdout; everything else goes to stderr.
#
# Environment:
#   FTPALG_CACHE         cache root (default /var/cache/ftpalg-lab); this script uses $FTPALG_CACHE/jool
#   FTPALG_JOOL_KERNEL   kernel ABI to use, e.g. 6.1.0-56-amd64 (default: what linux-image-amd64 depends on)
#   FTPALG_JOOL_REFRESH=1  ask apt for the current versions even when a prepared entry exists
#   FTPALG_JOOL_KEEP=1   keep the unpacked packages and the build tree (about 500 MB) for debugging
set -euo pipefail
source "$(dirname "$0")/common.sh"
source "$(dirname "$0")/../lib/pkgs.sh"

[ "$(id -u)" = 0 ] || jool_die "needs root (apt-get, and run.sh needs it for the shared folder)"
t_start=$(jool_now)

# --- host packages --------------------------------------------------------
# qemu and busybox run the guest; gcc/make/libelf build the modules; the rest
# runs inside the guest, which sees the host's root file system read-only
# (systemd: PID 1 of the guest with FTPALG_GUEST_INIT=systemd).
host_packages=(qemu-system-x86 busybox-static cpio kmod gcc-12 make libelf-dev
	iproute2 vsftpd lftp curl python3 nftables iptables tcpdump systemd)

mapfile -t missing < <(pkgs_missing "${host_packages[@]}")
if [ ${#missing[@]} -gt 0 ]; then
	jool_log "installing host packages: ${missing[*]}"
	pkgs_install "${missing[@]}" || jool_die "apt-get install ${missing[*]} failed"
fi

# --- versions --------------------------------------------------------------
apt_candidate() { apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { if ($2 != "(none)") print $2 }'; }

resolve_versions() {
	kabi=${FTPALG_JOOL_KERNEL:-$(apt-cache depends linux-image-amd64 2>/dev/null |
		sed -n 's/^ *Depends: linux-image-\(6\.[0-9.]*-[0-9]*-amd64\)$/\1/p' | head -n1)}
	kpkg=""
	jver=""
	[ -n "$kabi" ] || return 1
	kpkg=$(apt_candidate "linux-image-$kabi")
	jver=$(apt_candidate jool-dkms)
	[ -n "$kpkg" ] && [ -n "$jver" ]
}

newest_complete_entry() {
	local d
	for d in $(ls -1dt "$JOOL_CACHE_ROOT"/*/ 2>/dev/null); do
		[ -f "$d/modules.stamp" ] && { echo "${d%/}"; return 0; }
	done
	return 1
}

# A warm run asks apt nothing (each apt-cache call costs seconds on a busy
# machine, and CI may be offline): it takes the newest complete cache entry.
# FTPALG_JOOL_REFRESH=1 checks apt for a newer kernel or Jool first.
if [ -z "${FTPALG_JOOL_KERNEL:-}" ] && [ "${FTPALG_JOOL_REFRESH:-0}" != 1 ] && entry=$(newest_complete_entry); then
	:
elif resolve_versions; then
	key="${kabi}_${kpkg}_jool-${jver}"
	entry="$JOOL_CACHE_ROOT/$key"
else
	jool_log "package lists missing or stale; running apt-get update"
	apt-get update >&2 || true
	resolve_versions || jool_die "cannot resolve kernel ${kabi:-linux-image-amd64} and jool-dkms versions with apt-cache"
	key="${kabi}_${kpkg}_jool-${jver}"
	entry="$JOOL_CACHE_ROOT/$key"
fi
# The entry name is the version key: <kernel ABI>_<kernel package version>_jool-<version>.
kabi=${entry##*/}; kabi=${kabi%%_*}

# --- download, unpack, build (skipped when cached) ---------------------------
build_entry() {
	local entry=$1 kabi=$2 kpkg=$3 jver=$4
	local kbase=${kabi%-amd64} kseries
	kseries=$(echo "$kabi" | cut -d. -f1,2)
	local debs="$entry/debs" work="$entry/work"
	mkdir -p "$debs"
	rm -rf "$work" "$entry/modules" "$entry/tools"
	mkdir -p "$work/root"

	local pkgs=("linux-image-$kabi=$kpkg" "linux-headers-$kabi=$kpkg" "linux-headers-$kbase-common=$kpkg"
		"linux-kbuild-$kseries=$kpkg" "jool-dkms=$jver" "jool-tools=$jver" libnl-genl-3-200)
	local t0 p name have
	t0=$(jool_now)
	for p in "${pkgs[@]}"; do
		name=${p%%=*}
		have=$(ls "$debs/${name}"_*.deb 2>/dev/null | head -n1 || true)
		if [ -z "$have" ]; then
			jool_log "downloading $p"
			(cd "$debs" && apt-get -o APT::Sandbox::User=root -q download "$p" >&2) ||
				(apt-get update >&2 && cd "$debs" && apt-get -o APT::Sandbox::User=root -q download "$p" >&2) ||
				return 1
		fi
	done
	jool_log "downloads: $(du -sh "$debs" | cut -f1) in $(jool_elapsed "$t0") s"

	t0=$(jool_now)
	for p in "$debs"/*.deb; do dpkg-deb -x "$p" "$work/root"; done
	local root="$work/root"
	local headers="$root/usr/src/linux-headers-$kabi"
	local jsrc
	jsrc=$(ls -d "$root"/usr/src/jool-dkms-* | head -n1)
	[ -d "$headers" ] && [ -n "$jsrc" ] || { jool_log "unpacked packages lack headers or jool source"; return 1; }
	# The arch headers' Makefile includes the common headers by absolute path;
	# point it at the unpacked copy. scripts/ and tools/ are relative symlinks
	# into the unpacked linux-kbuild and need nothing.
	sed -i "s#^include /usr/src/#include $root/usr/src/#" "$headers/Makefile"
	jool_log "unpacked in $(jool_elapsed "$t0") s"

	t0=$(jool_now)
	cp -a "$jsrc" "$work/jool"
	local jobs
	jobs=$(nproc)
	for m in common nat64; do
		jool_log "building jool module src/mod/$m against $kabi"
		if ! make -C "$headers" M="$work/jool/src/mod/$m" -j"$jobs" modules >"$work/build-$m.log" 2>&1; then
			tail -n 30 "$work/build-$m.log" >&2
			jool_log "module build failed against $kabi (log: $work/build-$m.log)"
			return 1
		fi
	done
	jool_log "jool modules built in $(jool_elapsed "$t0") s"

	# Install the two modules beside the in-tree ones and resolve what the lab
	# needs with modules.dep of the unpacked image.
	local mdir="$root/lib/modules/$kabi"
	mkdir -p "$mdir/extra"
	cp "$work/jool/src/mod/common/jool_common.ko" "$work/jool/src/mod/nat64/jool.ko" "$mdir/extra/"
	depmod -b "$root" "$kabi"

	# Seeds: transport for the 9p root, overlayfs, veth/tun, Jool, and all of
	# netfilter so nftables, iptables-nft and NFQUEUE work in the guest.
	local seeds=(virtio_pci virtio_rng 9pnet_virtio 9p overlay veth tun jool jool_common)
	local f
	for f in $(cd "$mdir" && find kernel/net/netfilter kernel/net/ipv4/netfilter kernel/net/ipv6/netfilter \
		kernel/net/bridge/netfilter -name '*.ko' 2>/dev/null); do
		f=${f##*/}
		seeds+=("${f%.ko}")
	done
	local out="$entry/modules/lib/modules/$kabi"
	mkdir -p "$out"
	local list
	list=$(modprobe -d "$root" -S "$kabi" --show-depends --ignore-install -a "${seeds[@]}" |
		awk '$1 == "insmod" { print $2 }' | sort -u)
	local n=0
	for f in $list; do
		f=${f#"$root/lib/modules/$kabi/"}
		mkdir -p "$out/$(dirname "$f")"
		cp "$mdir/$f" "$out/$f"
		n=$((n + 1))
	done
	cp "$mdir/modules.order" "$mdir/modules.builtin" "$mdir/modules.builtin.modinfo" "$out/"
	depmod -b "$entry/modules" "$kabi"
	modprobe -d "$entry/modules" -S "$kabi" --show-depends jool >/dev/null ||
		{ jool_log "module closure lacks jool's dependencies"; return 1; }
	jool_log "selected $n modules ($(du -sh "$out" | cut -f1))"

	cp "$root/boot/vmlinuz-$kabi" "$entry/vmlinuz"
	mkdir -p "$entry/tools"
	cp "$root/usr/bin/jool" "$entry/tools/jool"
	local lib
	lib=$(find "$root/lib" "$root/usr/lib" -name 'libnl-genl-3.so.200' 2>/dev/null | head -n1)
	[ -n "$lib" ] || { jool_log "libnl-genl-3.so.200 not found in the unpacked packages"; return 1; }
	cp -L "$lib" "$entry/tools/"
	echo "$kabi $kpkg jool $jver" >"$entry/versions"

	if [ "${FTPALG_JOOL_KEEP:-0}" != 1 ]; then rm -rf "$work"; fi
	date -u +%FT%TZ >"$entry/modules.stamp"
}

if [ -f "$entry/modules.stamp" ]; then
	jool_log "cached: $(basename "$entry")"
else
	[ -n "${kpkg:-}" ] || jool_die "no cached entry and no versions for $entry"
	jool_log "preparing $(basename "$entry") in $JOOL_CACHE_ROOT"
	# Run in the background and wait: a function called as an if condition
	# would run with errexit disabled.
	rc=0
	build_entry "$entry" "$kabi" "$kpkg" "$jver" &
	wait $! || rc=$?
	if [ "$rc" != 0 ]; then
		jool_log "preparing $kabi with jool-dkms $jver failed"
		if [ -z "${FTPALG_JOOL_KERNEL:-}" ] && fallback=$(newest_complete_entry); then
			jool_log "falling back to the previously prepared $(basename "$fallback")"
			entry=$fallback
			kabi=${entry##*/}; kabi=${kabi%%_*}
		else
			jool_die "no fallback; try an older kernel ABI with FTPALG_JOOL_KERNEL=6.1.0-NN-amd64 (see apt-cache search linux-image-6.1)"
		fi
	fi
fi

# --- initramfs (rebuilt when its inputs change; about a second) -------------
busybox=/bin/busybox # from busybox-static
file_hash=$(cat "$JOOL_LAB_DIR/guest/init" "$entry/modules.stamp" "$busybox" | sha256sum | cut -c1-16)
if [ -f "$entry/initrd.img" ] && [ "$(cat "$entry/initrd.stamp" 2>/dev/null)" = "$file_hash" ]; then
	jool_log "initramfs cached"
else
	t0=$(jool_now)
	stage=$(mktemp -d)
	trap 'rm -rf "$stage"' EXIT
	mkdir -p "$stage"/{bin,sbin,proc,sys,dev,run,tmp,host,shared,newroot,upper,lib}
	cp "$busybox" "$stage/bin/busybox"
	ldd "$stage/bin/busybox" >/dev/null 2>&1 && jool_die "$busybox is not static (install busybox-static)"
	cp "$JOOL_LAB_DIR/guest/init" "$stage/init"
	chmod 755 "$stage/init"
	cp -a "$entry/modules/lib/modules" "$stage/lib/"
	echo "$kabi" >"$stage/kabi"
	(cd "$stage" && find . | cpio -o -H newc --quiet | gzip -1) >"$entry/initrd.img.tmp"
	mv "$entry/initrd.img.tmp" "$entry/initrd.img"
	echo "$file_hash" >"$entry/initrd.stamp"
	jool_log "initramfs $(du -h "$entry/initrd.img" | cut -f1) built in $(jool_elapsed "$t0") s"
fi

jool_log "prepare done in $(jool_elapsed "$t_start") s; cache entry $entry; $(df -h "$entry" | awk 'NR==2 { print $4 " free on " $6 }')"
echo "$entry"
