#!/bin/bash
# Guest script (FTPALG_GUEST_INIT=systemd): the Debian package's service
# under a real systemd as PID 1.
#
#   FTPALG_GUEST_INIT=systemd test/jool/run.sh test/jool/guest/systemd-service.sh
#
# Installs build/ftpalg_*.deb (make deb), configures a Tayga translator (its
# configuration only: the daemon reads tayga.conf; no Tayga runs), then:
# start (ready = the table is in), the process's user and capabilities,
# reload (same PID, the change logged), a watchdog of 2 s that the daemon's
# pings keep happy, an upgrade by SIGUSR2 (a new main PID, no restart), kill -9,
# a package upgrade (postinst sends SIGUSR2) (restarted, the table back), stop (no table, no
# socket), and the template ftpalg@NAME. Exit status 0 when all held.
set -uo pipefail
fail=0
step() { echo "== $*"; }
ok() { echo "ok: $*"; }
bad() { echo "FAIL: $*"; fail=1; }
# wait_for SECONDS CMD...: polls CMD until it succeeds.
wait_for() {
	local n=$(($1 * 10))
	shift
	while ! "$@" >/dev/null 2>&1; do
		n=$((n - 1))
		[ $n -gt 0 ] || return 1
		sleep 0.1
	done
}
table() { nft list table ip ftpalg >/dev/null 2>&1; }
mainpid() { systemctl show -p MainPID --value "${1:-ftpalg}"; }
active() { [ "$(systemctl is-active "${1:-ftpalg}")" = active ]; }
finish() {
	journalctl --no-pager -o short-monotonic -u 'ftpalg*' >"$FTPALG_OUT/journal.txt" 2>&1
	systemctl status --no-pager 'ftpalg*' >"$FTPALG_OUT/status.txt" 2>&1
	echo "systemd-service: $([ $fail = 0 ] && echo PASS || echo FAIL)"
	exit $fail
}
trap finish EXIT

step "systemd $(systemctl --version | head -n1), PID 1 is $(cat /proc/1/comm)"
[ "$(cat /proc/1/comm)" = systemd ] || { bad "PID 1 is not systemd"; exit 1; }

deb=$(ls "$FTPALG_REPO"/build/ftpalg_*.deb 2>/dev/null | head -n1)
[ -n "$deb" ] || { bad "no build/ftpalg_*.deb (make deb)"; exit 1; }
step "dpkg -i $(basename "$deb")"
# --no-triggers: man-db's index update takes minutes under TCG.
dpkg -i --no-triggers "$deb" || { bad "dpkg -i"; exit 1; }
systemctl cat ftpalg.service >/dev/null && ok "ftpalg.service known to systemd" || bad "systemctl cat ftpalg.service"

cat >/etc/tayga.conf <<'EOF2'
tun-device nat64
ipv4-addr 192.168.255.1
ipv6-addr 2001:db8:ffff::1
prefix 2001:db8:64::/96
map 203.0.113.10 2001:db8:1::10
EOF2
chmod 644 /etc/tayga.conf
cp /etc/ftpalg/ftpalg.conf /etc/ftpalg/ftpalg.conf.dist
echo "tayga-conf /etc/tayga.conf" >>/etc/ftpalg/ftpalg.conf

step "start"
t0=$(date +%s%N)
systemctl start ftpalg || bad "systemctl start ftpalg"
echo "start returned after $((($(date +%s%N) - t0) / 1000000)) ms (Type=notify: after READY=1)"
active && ok "active" || bad "not active after start"
table && ok "table ip ftpalg in place when start returned" || bad "no table when start returned"
pid=$(mainpid)
st=/proc/$pid/status
echo "main PID $pid: $(grep -E '^(Uid|CapEff|CapBnd|CapAmb|NoNewPrivs)' "$st" | tr -s '\t ' ' ' | paste -sd ';')"
[ "$(awk '/^Uid/ { print $2 }' "$st")" != 0 ] && ok "not root" || bad "runs as root"
[ "$(awk '/^CapEff/ { print $2 }' "$st")" = 0000000000001000 ] && ok "CapEff = CAP_NET_ADMIN only" || bad "CapEff is not CAP_NET_ADMIN only"
ftpalg status --socket /run/ftpalg/ftpalg.sock >"$FTPALG_OUT/ftpalg-status.txt" 2>&1 && ok "ftpalg status answers" ||
	bad "ftpalg status: $(cat "$FTPALG_OUT/ftpalg-status.txt")"

step "reload"
echo "hold-timeout 1s" >>/etc/ftpalg/ftpalg.conf
systemctl reload ftpalg || bad "systemctl reload"
wait_for 10 sh -c 'journalctl -u ftpalg --no-pager | grep -q "configuration reloaded"' && ok "reload logged" || bad "no 'configuration reloaded' in the journal"
active && [ "$(mainpid)" = "$pid" ] && ok "same PID $pid after reload" || bad "PID $(mainpid) after reload, was $pid"
echo "ports 0" >>/etc/ftpalg/ftpalg.conf
systemctl reload ftpalg || bad "systemctl reload (bad file)"
wait_for 10 sh -c 'journalctl -u ftpalg --no-pager | grep -q "configuration not reloaded"' && ok "bad file refused and logged" || bad "bad file not logged"
active && [ "$(mainpid)" = "$pid" ] && ok "still PID $pid after a bad file" || bad "PID $(mainpid) after a bad reload"
sed -i '/^ports 0$/d' /etc/ftpalg/ftpalg.conf

step "watchdog (WatchdogSec=2s through a drop-in)"
mkdir -p /etc/systemd/system/ftpalg.service.d
printf '[Service]\nWatchdogSec=2s\n' >/etc/systemd/system/ftpalg.service.d/watchdog.conf
systemctl daemon-reload
systemctl restart ftpalg || bad "restart with WatchdogSec=2s"
pid=$(mainpid)
sleep 7 # more than three watchdog intervals: no ping would have meant a kill
active && [ "$(mainpid)" = "$pid" ] && [ "$(systemctl show -p NRestarts --value ftpalg)" = 0 ] &&
	ok "alive after 7 s with a 2 s watchdog, no restart" || bad "watchdog: PID $(mainpid) (was $pid), NRestarts $(systemctl show -p NRestarts --value ftpalg)"

step "upgrade without loss: kill -USR2 (the new daemon takes over and becomes the main PID)"
kill -USR2 "$pid"
wait_for 20 sh -c "[ \"\$(systemctl show -p MainPID --value ftpalg)\" != $pid ] && [ \"\$(systemctl show -p MainPID --value ftpalg)\" != 0 ] && ! kill -0 $pid" &&
	ok "main PID $(mainpid) after SIGUSR2 (was $pid), the old one gone" || bad "after SIGUSR2: main PID $(mainpid) (was $pid)"
active && table && [ "$(systemctl show -p NRestarts --value ftpalg)" = 0 ] && ok "active, table in place, no restart" ||
	bad "after SIGUSR2: $(systemctl is-active ftpalg), table $(table && echo yes || echo no), NRestarts $(systemctl show -p NRestarts --value ftpalg)"
journalctl -u ftpalg --no-pager | grep -q "took over from the old daemon.*switched_in_place=true" && ok "took over, rules switched in place" ||
	bad "no 'took over ... switched_in_place=true' in the journal"
pid=$(mainpid)
sleep 7 # the new main process pings the watchdog
active && [ "$(mainpid)" = "$pid" ] && [ "$(systemctl show -p NRestarts --value ftpalg)" = 0 ] &&
	ok "the new daemon alive after 7 s with a 2 s watchdog" || bad "after the takeover, watchdog: PID $(mainpid) (was $pid)"
rm -r /etc/systemd/system/ftpalg.service.d
systemctl daemon-reload

step "kill -9"
pid=$(mainpid)
kill -9 "$pid"
wait_for 20 sh -c "[ \"\$(systemctl show -p MainPID --value ftpalg)\" != $pid ] && [ \"\$(systemctl show -p MainPID --value ftpalg)\" != 0 ] && [ \"\$(systemctl is-active ftpalg)\" = active ]" &&
	ok "restarted after kill -9: PID $(mainpid), NRestarts $(systemctl show -p NRestarts --value ftpalg)" || bad "not restarted after kill -9"
table && ok "table back after the restart" || bad "no table after the restart"

step "package upgrade (dpkg -i again): postinst hands the daemon over by SIGUSR2"
pid=$(mainpid)
restarts=$(systemctl show -p NRestarts --value ftpalg)
dpkg -i --no-triggers "$deb" || bad "dpkg -i (upgrade)"
[ "$(mainpid)" != "$pid" ] && [ "$(mainpid)" != 0 ] && active && ! kill -0 "$pid" 2>/dev/null &&
	[ "$(systemctl show -p NRestarts --value ftpalg)" = "$restarts" ] && ok "main PID $(mainpid) after the upgrade (was $pid), no restart" ||
	bad "after the upgrade: main PID $(mainpid) (was $pid), $(systemctl is-active ftpalg), NRestarts $(systemctl show -p NRestarts --value ftpalg) (was $restarts)"
[ "$(journalctl -u ftpalg --no-pager | grep -c 'took over from the old daemon.*switched_in_place=true')" = 2 ] &&
	ok "took over at the upgrade" || bad "no second 'took over' in the journal"
table && ok "table in place after the upgrade" || bad "no table after the upgrade"

step "stop"
for p in $(cat /sys/fs/cgroup/system.slice/ftpalg.service/cgroup.procs 2>/dev/null); do
	echo "in the unit's cgroup: $p ppid $(awk '/^PPid/ { print $2 }' /proc/$p/status) $(tr '\0' ' ' </proc/$p/cmdline)"
done
t0=$(date +%s%N)
systemctl stop ftpalg || bad "systemctl stop"
echo "stop returned after $((($(date +%s%N) - t0) / 1000000)) ms"
[ "$(systemctl is-active ftpalg)" = inactive ] && ok "inactive" || bad "$(systemctl is-active ftpalg) after stop"
table && bad "table ip ftpalg left after stop" || ok "no table left"
[ -e /run/ftpalg/ftpalg.sock ] && bad "socket left after stop" || ok "no socket left"

step "kill -9, then stop before the restart: ExecStopPost removes the rules"
systemctl start ftpalg && pid=$(mainpid)
systemctl kill -s KILL ftpalg
systemctl stop ftpalg
table && bad "table left after kill -9 and stop" || ok "no table after kill -9 and stop"

step "template ftpalg@lab"
sed -e 's/^ports 0$//' /etc/ftpalg/ftpalg.conf >/etc/ftpalg/lab.conf
echo "queue-num 7" >>/etc/ftpalg/lab.conf
systemctl start ftpalg@lab || bad "start ftpalg@lab"
active ftpalg@lab && ok "ftpalg@lab active" || bad "ftpalg@lab not active"
[ -S /run/ftpalg-lab/ftpalg.sock ] && ok "its socket /run/ftpalg-lab/ftpalg.sock" || bad "no /run/ftpalg-lab/ftpalg.sock"
nft list table ip ftpalg 2>/dev/null | grep -q "queue.* 7" && ok "its rules use queue 7" || bad "ftpalg@lab's rules lack queue 7"
systemctl stop ftpalg@lab
table && bad "table left after stopping ftpalg@lab" || ok "nothing left after ftpalg@lab"

step "dpkg -r"
journalctl --no-pager -o short-monotonic -u 'ftpalg*' >"$FTPALG_OUT/journal.txt" 2>&1
dpkg -r --no-triggers ftpalg >/dev/null && ok "dpkg -r" || bad "dpkg -r"
[ ! -e /lib/systemd/system/ftpalg.service ] && [ ! -e /usr/sbin/ftpalg ] && [ -e /etc/ftpalg/ftpalg.conf ] &&
	ok "removed, the conffile kept" || bad "dpkg -r left the wrong files"
