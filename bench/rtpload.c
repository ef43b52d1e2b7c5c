/*
 * rtpload: the media benchmark's packet generator and sink.
 *
 * Every stream is a UDP socket handed over by the parent (bench/relay.py) as
 * an open file descriptor, with the address it sends to. Each stream sends
 * 172-byte RTP packets (12-byte header, 160 bytes of payload carrying the
 * stream index, a sequence number and the send time) at a fixed rate, the
 * streams' phases spread evenly; every socket also receives what the relay
 * forwards to it and records one-way latency from the send time inside.
 *
 * usage: rtpload SECONDS PACKETS_PER_SECOND FD:HOST:PORT...
 * prints one line: sent received late_or_foreign p50_us p99_us cpu_s
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PACKET 172
#define BATCH 64
#define BUCKETS 100000 /* latency histogram: 10 us buckets up to 1 s */
#define DRAIN_NS 300000000LL

struct stream {
    int fd;
    struct sockaddr_in to;
    uint32_t seq;
};

static uint64_t histogram[BUCKETS + 1];

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int parse_stream(const char *arg, struct stream *s) {
    char host[64];
    int fd, port;
    if (sscanf(arg, "%d:%63[^:]:%d", &fd, host, &port) != 3) return -1;
    memset(s, 0, sizeof *s);
    s->fd = fd;
    s->to.sin_family = AF_INET;
    s->to.sin_port = htons((uint16_t)port);
    return inet_pton(AF_INET, host, &s->to.sin_addr) == 1 ? 0 : -1;
}

static void send_one(struct stream *s, uint32_t index, int64_t at, uint64_t *sent) {
    uint8_t packet[PACKET] = {0x80, 0x00};
    uint32_t seq = s->seq++;
    packet[2] = (uint8_t)(seq >> 8);
    packet[3] = (uint8_t)seq;
    memcpy(packet + 8, &index, 4); /* SSRC: the stream */
    memcpy(packet + 12, &index, 4);
    memcpy(packet + 16, &seq, 4);
    memcpy(packet + 20, &at, 8);
    if (sendto(s->fd, packet, PACKET, 0, (struct sockaddr *)&s->to, sizeof s->to) == PACKET)
        (*sent)++;
}

static void receive_all(int fd, uint64_t *received, uint64_t *other) {
    static uint8_t buffers[BATCH][PACKET + 16];
    struct mmsghdr messages[BATCH];
    struct iovec iov[BATCH];
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = buffers[i];
        iov[i].iov_len = sizeof buffers[i];
        memset(&messages[i].msg_hdr, 0, sizeof messages[i].msg_hdr);
        messages[i].msg_hdr.msg_iov = &iov[i];
        messages[i].msg_hdr.msg_iovlen = 1;
    }
    /* one call per readiness: epoll is level-triggered, a second call would mostly say EAGAIN */
    int n = recvmmsg(fd, messages, BATCH, MSG_DONTWAIT, NULL);
    int64_t now = now_ns();
    for (int i = 0; i < n; i++) {
        if (messages[i].msg_len != PACKET) {
            (*other)++;
            continue;
        }
        int64_t at;
        memcpy(&at, buffers[i] + 20, 8);
        int64_t bucket = (now - at) / 10000;
        histogram[bucket < 0 ? 0 : bucket > BUCKETS ? BUCKETS : bucket]++;
        (*received)++;
    }
}

static double percentile(uint64_t total, double fraction) {
    uint64_t want = (uint64_t)(total * fraction), seen = 0;
    for (int i = 0; i <= BUCKETS; i++) {
        seen += histogram[i];
        if (seen > want) return i * 10.0 + 5.0;
    }
    return BUCKETS * 10.0;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: rtpload SECONDS PACKETS_PER_SECOND FD:HOST:PORT...\n");
        return 2;
    }
    double seconds = atof(argv[1]), rate = atof(argv[2]);
    int count = argc - 3;
    struct stream *streams = calloc((size_t)count, sizeof *streams);
    int epoll = epoll_create1(0);
    for (int i = 0; i < count; i++) {
        if (parse_stream(argv[i + 3], &streams[i]) != 0) {
            fprintf(stderr, "rtpload: bad stream %s\n", argv[i + 3]);
            return 2;
        }
        struct epoll_event event = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        epoll_ctl(epoll, EPOLL_CTL_ADD, streams[i].fd, &event);
    }
    int64_t interval = (int64_t)(1e9 / rate), start = now_ns() + 10000000LL;
    int64_t stop = start + (int64_t)(seconds * 1e9);
    uint64_t sent = 0, received = 0, other = 0, next = 0; /* next: packets due so far */
    struct epoll_event events[BATCH];
    for (;;) {
        int64_t now = now_ns();
        if (now < stop) {
            /* packet k is due at start + k * interval / count (stream k % count) */
            while ((int64_t)(next * interval / (uint64_t)count) <= now - start) {
                uint32_t index = (uint32_t)(next % (uint64_t)count);
                send_one(&streams[index], index, now, &sent);
                next++;
            }
        } else if (now > stop + DRAIN_NS) {
            break;
        }
        int n = epoll_wait(epoll, events, BATCH, 1);
        for (int i = 0; i < n; i++)
            receive_all(streams[events[i].data.u32].fd, &received, &other);
    }
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    double cpu = usage.ru_utime.tv_sec + usage.ru_stime.tv_sec +
                 (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
    printf("%llu %llu %llu %.0f %.0f %.3f\n", (unsigned long long)sent,
           (unsigned long long)received, (unsigned long long)other,
           percentile(received, 0.5), percentile(received, 0.99), cpu);
    return 0;
}
