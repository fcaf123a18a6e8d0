# Sourced by the guest scripts: vsftpd (the host's) in s6, IPv6 only, and in
# s4, IPv4 only, serving $WORK/ftproot anonymously, active and passive
# (passive ports 40000-40100), protocol logs in $OUT. Needs nx and the pids
# array of the sourcing script.

vsftpd_conf() { # vsftpd_conf NAME listen-lines
	cat >"$WORK/vsftpd-$1.conf" <<EOF
$2
background=NO
anonymous_enable=YES
no_anon_password=YES
anon_root=$WORK/ftproot
local_enable=NO
write_enable=NO
pasv_enable=YES
pasv_min_port=40000
pasv_max_port=40100
port_enable=YES
connect_from_port_20=NO
secure_chroot_dir=/run/vsftpd/empty
seccomp_sandbox=NO
isolate_network=NO
xferlog_enable=YES
xferlog_std_format=NO
log_ftp_protocol=YES
vsftpd_log_file=$OUT/vsftpd-$1.log
EOF
}

# start_vsftpd_pair starts both servers and waits until they listen.
start_vsftpd_pair() {
	mkdir -p /run/vsftpd/empty
	vsftpd_conf s6 $'listen=NO\nlisten_ipv6=YES'
	vsftpd_conf s4 $'listen=YES\nlisten_ipv6=NO'
	ip netns exec s6 vsftpd "$WORK/vsftpd-s6.conf" &
	pids+=($!)
	ip netns exec s4 vsftpd "$WORK/vsftpd-s4.conf" &
	pids+=($!)
	local ns
	for ns in s6 s4; do
		for _ in $(seq 50); do
			nx "$ns" ss -Hltn 'sport = :21' | grep -q . && break
			sleep 0.1
		done
	done
}
