#!/usr/bin/env bash
# Runs a guest script in a QEMU guest with a real Jool NAT64 kernel module.
#
#   test/jool/run.sh [--out DIR] <guest-script> [args...]
#
# Prepares the cache if needed (prepare.sh), boots the Debian kernel under TCG
# with the host's / as the guest's (read-only, overlaid) root, runs the script
# there as root, and exits with the script's status. The script writes its
# results to $FTPALG_OUT in the guest, which is DIR/out on the host (DIR
# defaults to a new temporary directory, printed at the end).
#
# Environment:
#   FTPALG_CACHE            cache root (see prepare.sh)
#   FTPALG_JOOL_TIMEOUT     outer timeout in seconds for the whole guest run (default 600)
#   FTPALG_GUEST_TIMEOUT    in-guest watchdog in seconds (default: outer timeout - 30)
#   FTPALG_WITH_ALG=1       passed to the guest script (ftp-matrix.sh then also runs the pass with ftpalg)
#   FTPALG_RUN_ARGS         extra flags for "ftpalg run" in that pass
#   FTPALG_QEMU_SMP         guest CPUs (default 2)
#   FTPALG_GUEST_INIT=systemd  boot the host's systemd as the guest's PID 1 and run the
#                           script as a unit (guest/systemd-init; the host needs systemd installed)
set -euo pipefail
source "$(dirname "$0")/common.sh"

out=""
if [ "${1:-}" = --out ]; then
	out=$2
	shift 2
fi
[ $# -ge 1 ] || { echo "usage: $0 [--out DIR] <guest-script> [args...]" >&2; exit 2; }
script=$(realpath "$1")
shift
[ -f "$script" ] || jool_die "no such guest script: $script"
[ "$(id -u)" = 0 ] || jool_die "needs root"

t0=$(jool_now)
entry=$("$JOOL_LAB_DIR/prepare.sh")
t_prepare=$(jool_elapsed "$t0")

if [ -z "$out" ]; then
	out=$(mktemp -d -t ftpalg-jool.XXXXXX)
else
	mkdir -p "$out"
	rm -rf "${out:?}/out" "$out/status" "$out/console.log" "$out/env" "$out/initrd.img"
fi
out=$(realpath "$out")
mkdir -p "$out/out"

timeout_s=${FTPALG_JOOL_TIMEOUT:-600}
guest_timeout=${FTPALG_GUEST_TIMEOUT:-$((timeout_s - 30))}
{
	printf 'GUEST_SCRIPT=%q\n' "$script"
	printf 'FTPALG_REPO=%q\n' "$JOOL_REPO_DIR"
	printf 'JOOL_TOOLS=%q\n' "$entry/tools"
	printf 'FTPALG_GUEST_TIMEOUT=%q\n' "$guest_timeout"
	printf 'FTPALG_WITH_ALG=%q\n' "${FTPALG_WITH_ALG:-0}"
	printf 'FTPALG_RUN_ARGS=%q\n' "${FTPALG_RUN_ARGS:-}"
	printf 'set --'
	for a in "$@"; do printf ' %q' "$a"; done
	printf '\n'
} >"$out/env"

# systemd as PID 1: the cached initramfs with guest/systemd-init as its
# /init (a second archive appended to the first overrides that file).
initrd=$entry/initrd.img
if [ "${FTPALG_GUEST_INIT:-}" = systemd ]; then
	[ -x /lib/systemd/systemd ] || jool_die "FTPALG_GUEST_INIT=systemd needs systemd on the host (apt-get install systemd)"
	stage=$(mktemp -d)
	cp "$JOOL_LAB_DIR/guest/systemd-init" "$stage/init"
	chmod 755 "$stage/init"
	{ cat "$entry/initrd.img"; (cd "$stage" && echo init | cpio -o -H newc --quiet | gzip -1); } >"$out/initrd.img"
	rm -rf "$stage"
	initrd=$out/initrd.img
fi

jool_log "booting $(cat "$entry/versions") (timeout ${timeout_s}s, results in $out)"
t_boot=$(jool_now)
marks="$out/.marks"
: >"$marks"
set +e
# No network device (-nic none): the guest's only links are the veths its
# script creates. The host root is exported read-only.
timeout --kill-after=10 "$timeout_s" qemu-system-x86_64 \
	-accel tcg -cpu max -smp "${FTPALG_QEMU_SMP:-2}" -m 1024 \
	-nographic -no-reboot -nic none \
	-kernel "$entry/vmlinuz" -initrd "$initrd" \
	-append "console=ttyS0 panic=-1 quiet loglevel=3" \
	-virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
	-virtfs local,path="$out",mount_tag=shared,security_model=none \
	</dev/null 2>&1 | while IFS= read -r line; do
	case $line in
	*"[guest-init] kernel"*) echo "booted $(jool_elapsed "$t_boot")" >>"$marks" ;;
	esac
	printf '%s\n' "$line"
done
rcs=("${PIPESTATUS[@]}")
set -e
t_run=$(jool_elapsed "$t_boot")

boot=$(awk '/^booted/ { print $2 }' "$marks")
if [ "${rcs[0]}" = 124 ] || [ "${rcs[0]}" = 137 ]; then
	jool_log "qemu killed by the outer timeout (${timeout_s}s)"
fi
status=$(cat "$out/status" 2>/dev/null || true)
if [ -z "$status" ]; then
	jool_log "guest wrote no status (qemu exit ${rcs[0]})"
	status=125
fi
jool_log "timings: prepare ${t_prepare}s, boot ${boot:-?}s (qemu start to guest script), guest run ${t_run}s (qemu start to exit)"
jool_log "results in $out (console.log, out/); guest script status $status"
rm -f "$marks"
exit "$status"
