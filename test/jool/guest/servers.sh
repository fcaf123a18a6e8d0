# Sourced by the guest scripts: the three FTP servers of the labs, one kind
# at a time, in s6 (IPv6, S6) and s4 (IPv4, S4), serving $WORK/ftproot:
# vsftpd (the host's; vsftpd.sh), proftpd and pure-ftpd (test/.cache/pkg,
# configured as the namespace lab has them; pure-ftpd with the virtual user
# ftptest/ftptest). Needs nx, WORK, OUT, REPO, PKG, S6, S4, vsftpd_conf and
# /run/vsftpd/empty; start_server fills server_pids.

waitport() { # waitport NS: until something listens on port 21
	for _ in $(seq 100); do
		nx "$1" ss -Hltn 'sport = :21' | grep -q . && return 0
		sleep 0.1
	done
	return 1
}
waitfree() { # waitfree NS: until nothing listens on port 21
	for _ in $(seq 100); do
		nx "$1" ss -Hltn 'sport = :21' | grep -q . || return 0
		sleep 0.1
	done
	return 1
}
start_server() { # start_server NAME
	local name=$1 ns fam addr
	server_pids=()
	for ns in s6 s4; do
		fam=${ns#s}
		addr=$S4
		[ "$fam" = 6 ] && addr=$S6
		case $name in
		vsftpd)
			if [ "$fam" = 6 ]; then
				vsftpd_conf "$ns" "$(printf 'listen=NO\nlisten_ipv6=YES')"
			else
				vsftpd_conf "$ns" "$(printf 'listen=YES\nlisten_ipv6=NO')"
			fi
			ip netns exec "$ns" vsftpd "$WORK/vsftpd-$ns.conf" >"$OUT/vsftpd-$ns.out" 2>&1 &
			;;
		proftpd)
			local ipv6=on
			[ "$fam" = 4 ] && ipv6=off
			sed -e "s|@ROOT@|$WORK/ftproot|g" -e "s|@DIR@|$WORK|g" -e "s|@FAM@|$fam|g" \
				-e "s|@ADDR@|$addr|g" -e "s|@IPV6@|$ipv6|g" "$REPO/test/lab/proftpd.conf" >"$WORK/proftpd-$fam.conf"
			ip netns exec "$ns" "$PKG/proftpd-core/usr/sbin/proftpd" -n -q -c "$WORK/proftpd-$fam.conf" >"$OUT/proftpd-$ns.out" 2>&1 &
			;;
		pure-ftpd)
			# A virtual user (PureDB) "ftptest", password "ftptest", as the
			# namespace lab has it (test/lab/lab.sh).
			if [ ! -f "$WORK/pureftpd.pdb" ]; then
				# shellcheck disable=SC2016 # the $ of the hash are literal
				printf '%s\n' 'ftptest:$6$ftpalglab$RRes8Bh3jfCCNRzWfFZrUz0aXn.A78Zvc0qT24oqPvNUSOEI8Jn1TtgCrKkbweuV/SBC2eDbgl/EvAtICHebp1:65534:65534::'"$WORK/ftproot"'/./::::::::::::' >"$WORK/pureftpd.passwd"
				"$PKG/pure-ftpd/usr/bin/pure-pw" mkdb "$WORK/pureftpd.pdb" -f "$WORK/pureftpd.passwd" >/dev/null
			fi
			local only=--ipv4only
			[ "$fam" = 6 ] && only=--ipv6only
			ip netns exec "$ns" "$PKG/pure-ftpd/usr/sbin/pure-ftpd" "$only" --bind "$addr,21" \
				--login "puredb:$WORK/pureftpd.pdb" --noanonymous --dontresolve --syslogfacility none \
				--maxclientsnumber 50 --maxclientsperip 50 >"$OUT/pure-ftpd-$ns.out" 2>&1 &
			;;
		esac
		server_pids+=($!)
	done
	waitport s6 && waitport s4
}
stop_server() {
	local p
	for p in "${server_pids[@]}"; do kill "$p" 2>/dev/null; done
	for p in "${server_pids[@]}"; do wait "$p" 2>/dev/null; done
	# proftpd and vsftpd fork per session: whatever is left in the servers'
	# namespaces goes too.
	for ns in s6 s4; do ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null; done
	server_pids=()
	waitfree s6 && waitfree s4
}
