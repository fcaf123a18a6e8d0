# Shared settings for prepare.sh and run.sh (sourced, not executed).
#
# Cache layout, outside the repository:
#   ${FTPALG_CACHE:-/var/cache/ftpalg-lab}/jool/<kernel ABI>_<kernel package version>_jool-<jool version>/
#     debs/            the downloaded .deb files (kept: Debian drops old kernel versions)
#     vmlinuz          the guest kernel
#     modules/         lib/modules/<ABI>/ with the Jool modules and the in-tree modules the lab needs
#     tools/           jool (userspace tool) and the libnl-genl library it needs
#     initrd.img       busybox + modules/ + guest/init
#     modules.stamp    written when everything above initrd.img is complete
#     initrd.stamp     hash of what initrd.img was built from

JOOL_LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
JOOL_REPO_DIR=$(cd "$JOOL_LAB_DIR/../.." && pwd)
JOOL_CACHE_ROOT="${FTPALG_CACHE:-/var/cache/ftpalg-lab}/jool"

jool_log() { printf '[jool-lab %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
jool_die() { jool_log "error: $*"; exit 1; }

# jool_now prints a monotonic-enough timestamp in milliseconds.
jool_now() { date +%s%3N; }

# jool_elapsed START prints seconds since START (from jool_now) with one decimal.
jool_elapsed() { local d=$(( $(jool_now) - $1 )); printf '%d.%d' $((d / 1000)) $(((d % 1000) / 100)); }
