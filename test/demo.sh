#!/usr/bin/env bash
# ftpalg demo (root): a small NAT64 network with Tayga, an IPv6-only and an
# IPv4-only vsftpd, and FTP clients on the other side of the translator.
# The same transfers run first without ftpalg (they fail: the addresses
# inside the FTP control connection are wrong for the other side), then with
# `ftpalg run` in the translator's namespace (they work; the log shows what
# it rewrote). Everything is built in network namespaces and removed at the
# end, also on failure or Ctrl-C. Needs test/deps.sh and bin/ftpalg
# (`make demo` does both).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
export PATH="$PATH:/usr/sbin:/sbin"

bin=${FTPALG_BIN:-$repo/bin/ftpalg}
lab=$repo/test/lab/lab.sh
client=$repo/test/lab/ftpclient.py
[[ $(id -u) -eq 0 ]] || { echo "demo: needs root (network namespaces)" >&2; exit 1; }
[[ -x $bin ]] || { echo "demo: $bin missing: run make build" >&2; exit 1; }

if [[ -t 1 ]]; then
	bold=$'\e[1m' red=$'\e[31m' green=$'\e[32m' off=$'\e[0m'
else
	bold='' red='' green='' off=
fi

prefix=demo$$
dir=$(mktemp -d -t ftpalg-demo.XXXXXX)
alg_pid=
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [[ -n $alg_pid ]] && kill -0 "$alg_pid" 2>/dev/null; then
		kill -TERM "$alg_pid" 2>/dev/null || true
		wait "$alg_pid" 2>/dev/null || true
	fi
	"$lab" down "$prefix" || true
	rm -rf "$dir"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

section() { printf '\n%s== %s ==%s\n' "$bold" "$*" "$off"; }
indent() { sed 's/^/    /'; }

section "Building the lab"
cat <<TXT
  IPv4 client c4 (192.0.2.2) --> Tayga NAT64 --> IPv6 server s6 (2001:db8:1::10),
      which IPv4 clients reach as 203.0.113.10 (Tayga's static map)     ["46"]
  IPv6 client c6 (2001:db8:2::2) --> Tayga NAT64 --> IPv4 server s4 (198.51.100.10),
      which IPv6 clients reach as 2001:db8:64::198.51.100.10 (prefix)  ["64"]
  Tayga: prefix 2001:db8:64::/96, dynamic pool 192.168.255.0/24.
  Servers: vsftpd (anonymous) serving data.bin, 1 MiB of random bytes.
TXT
"$lab" up "$dir" "$prefix"
"$lab" server vsftpd "$dir" "$prefix"
want=$(cat "$dir/data.sha256")
echo "  ready (namespaces $prefix-{c4,c6,nat,s4,s6})"

# The transfers: name | namespace | command (run in that namespace).
names=(
	"IPv4 client, passive mode with PASV (python ftplib)"
	"IPv4 client, active mode with PORT (curl)"
	"IPv6 client, passive mode with EPSV 2 (python ftplib)"
	"IPv6 client, active mode with EPRT |2| (curl)"
)

# transfer N OUT: runs transfer N in its client's namespace, its download
# written to OUT.
transfer() {
	local n=$1 out=$2
	case $n in
	0) ip netns exec "$prefix-c4" python3 "$client" 203.0.113.10 PASV --timeout 3 --get data.bin --out "$out" ;;
	1) ip netns exec "$prefix-c4" curl -sS -v --connect-timeout 3 --max-time 10 -P - --disable-eprt \
		-o "$out" ftp://203.0.113.10/data.bin ;;
	2) ip netns exec "$prefix-c6" python3 "$client" 2001:db8:64::198.51.100.10 "EPSV 2" --timeout 3 \
		--get data.bin --out "$out" ;;
	3) ip netns exec "$prefix-c6" curl -sS -v --connect-timeout 3 --max-time 10 -P - \
		-o "$out" "ftp://[2001:db8:64::198.51.100.10]/data.bin" ;;
	esac
}

# show: the lines that matter in a client's output: the data-channel
# command and the reply to it, and errors.
show() {
	awk '
		/^> (PASV|EPSV|LPSV|PORT|EPRT|LPRT)/ { print "client: " substr($0, 3); want = 1; next }
		want && /^< / { print "server: " substr($0, 3); want = 0; next }
		# curl 7.88 words a refused PORT/EPRT as an inet_ntop error.
		/^curl: .*inet_ntop/ { sub(/\).*/, ") the server refused the command"); print; next }
		/^(curl|ftpclient):/ { print }
		/^[0-9][0-9][0-9] / { print "server: " $0 }
	'
}

# run PHASE: runs every transfer; counts passes in $passed.
run() {
	local phase=$1 i out text rc logmark
	passed=0
	for i in "${!names[@]}"; do
		printf '\n  %s-- %s%s\n' "$bold" "${names[$i]}" "$off"
		out=$dir/$phase-$i.bin
		logmark=0
		[[ -f $dir/ftpalg.log ]] && logmark=$(wc -l <"$dir/ftpalg.log")
		rc=0
		text=$(transfer "$i" "$out" 2>&1) || rc=$?
		printf '%s\n' "$text" | show | indent
		if ((rc == 0)) && [[ -f $out ]] && [[ $(sha256sum "$out" | cut -d' ' -f1) == "$want" ]]; then
			printf '    %sPASS%s (1 MiB downloaded, sha256 matches)\n' "$green" "$off"
			passed=$((passed + 1))
		else
			printf '    %sFAIL%s\n' "$red" "$off"
		fi
		if [[ $phase == with ]]; then
			sleep 0.2 # let the log catch up
			echo "    ftpalg rewrote:"
			tail -n +"$((logmark + 1))" "$dir/ftpalg.log" | grep 'msg=rewrite' |
				sed -E 's/.* dir=([^ ]+) before=("[^"]*"|[^ ]*) after=("[^"]*"|[^ ]*).*/\1: \2  =>  \3/' |
				sed 's/^/      /' || echo "      (nothing)"
		fi
	done
}

section "1. Without ftpalg: FTP through the NAT64 as it is"
run without
without=$passed

section "2. Starting ftpalg in the translator's namespace"
echo "  ip netns exec $prefix-nat $bin run --tayga-conf $dir/tayga.conf --log-level debug"
ip netns exec "$prefix-nat" "$bin" run --tayga-conf "$dir/tayga.conf" --log-level debug >"$dir/ftpalg.log" 2>&1 &
alg_pid=$!
for _ in $(seq 50); do
	ip netns exec "$prefix-nat" nft list ruleset 2>/dev/null | grep -q queue && break
	kill -0 "$alg_pid" 2>/dev/null || { echo "ftpalg exited:"; indent <"$dir/ftpalg.log"; exit 1; }
	sleep 0.1
done
grep -v 'msg=rewrite' "$dir/ftpalg.log" | sed 's/^/  log: /'
echo "  its rules in the nat namespace (FTP control packets go to the queue):"
ip netns exec "$prefix-nat" nft list ruleset 2>/dev/null | grep -E "^table|queue" | sed -E "s/^[[:space:]]+/  /" | indent

section "3. With ftpalg: the same transfers"
run with
with=$passed

section "4. Stopping ftpalg (SIGTERM: it removes its rules)"
kill -TERM "$alg_pid"
wait "$alg_pid" || echo "  ftpalg exited with status $?"
alg_pid=
tail -n 1 "$dir/ftpalg.log" | sed 's/^/  log: /'
if ip netns exec "$prefix-nat" nft list ruleset 2>/dev/null | grep -q queue; then
	echo "  ${red}its queue rules are still installed${off}"
else
	echo "  its rules are gone from the nat namespace"
fi

section "Summary"
echo "  without ftpalg: $without of ${#names[@]} transfers passed"
echo "  with ftpalg:    $with of ${#names[@]} transfers passed"
((with == ${#names[@]}))
