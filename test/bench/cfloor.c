/*
 * cfloor: the smallest useful NFQUEUE consumer, the floor ftpalg's packet
 * loop is measured against. It binds one queue with libnetfilter_queue,
 * configured as ftpalg configures its queues (whole packets, copy range
 * 0xffff, queue length 4096, 8 MiB receive buffer, NETLINK_NO_ENOBUFS),
 * and accepts every packet unchanged, one verdict per packet.
 *
 *   cfloor QUEUE
 *
 * Exits on SIGINT/SIGTERM, printing the number of packets it accepted.
 * Build: gcc -O2 -o cfloor cfloor.c -lnetfilter_queue -lnfnetlink
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <linux/netfilter.h>
#include <linux/netlink.h>
#include <libnetfilter_queue/libnetfilter_queue.h>

#ifndef SOL_NETLINK
#define SOL_NETLINK 270
#endif

static volatile sig_atomic_t stop;
static unsigned long long packets;

static void on_signal(int sig) { (void)sig; stop = 1; }

static int on_packet(struct nfq_q_handle *qh, struct nfgenmsg *msg, struct nfq_data *nfa, void *data)
{
	(void)msg;
	(void)data;
	struct nfqnl_msg_packet_hdr *ph = nfq_get_msg_packet_hdr(nfa);
	if (ph == NULL)
		return 0;
	packets++;
	return nfq_set_verdict(qh, ntohl(ph->packet_id), NF_ACCEPT, 0, NULL);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: cfloor QUEUE\n");
		return 2;
	}
	uint16_t queue = (uint16_t)atoi(argv[1]);

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal; /* no SA_RESTART: recv returns EINTR */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);

	struct nfq_handle *h = nfq_open();
	if (h == NULL) {
		perror("nfq_open");
		return 1;
	}
	struct nfq_q_handle *qh = nfq_create_queue(h, queue, on_packet, NULL);
	if (qh == NULL) {
		perror("nfq_create_queue");
		return 1;
	}
	if (nfq_set_mode(qh, NFQNL_COPY_PACKET, 0xffff) < 0) {
		perror("nfq_set_mode");
		return 1;
	}
	if (nfq_set_queue_maxlen(qh, 4096) < 0) {
		perror("nfq_set_queue_maxlen");
		return 1;
	}
	int fd = nfq_fd(h);
	nfnl_rcvbufsiz(nfq_nfnlh(h), 8 << 20);
	int one = 1;
	setsockopt(fd, SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof one);

	static char buf[0xffff + 4096] __attribute__((aligned));
	fprintf(stderr, "cfloor: queue %u bound\n", queue);
	while (!stop) {
		ssize_t n = recv(fd, buf, sizeof buf, 0);
		if (n < 0) {
			if (errno == EINTR || errno == ENOBUFS)
				continue;
			perror("recv");
			break;
		}
		nfq_handle_packet(h, buf, (int)n);
	}
	printf("%llu\n", packets);
	nfq_destroy_queue(qh);
	nfq_close(h);
	return 0;
}
