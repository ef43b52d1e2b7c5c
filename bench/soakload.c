/*
 * soakload: the soak's media generator and sink, one process for the whole run.
 *
 * Calls come and go while it runs (bench/soak.py). Its control channel is a
 * SOCK_SEQPACKET socket, the file descriptor named by its one argument, one
 * command per message:
 *
 *   add ID HOST PORT   with the stream's UDP socket attached (SCM_RIGHTS):
 *                      send to HOST:PORT from it from now on; answers "ok ID"
 *   del ID             stop, close it; answers "ID SENT RECEIVED"
 *   to ID HOST PORT    send to HOST:PORT from now on (its call moved to another
 *                      relay); answers "ok ID"
 *   gap ID             answers "ID MAX_GAP_US SINCE_LAST_US RECEIVED": the longest
 *                      wait between two media packets received since the last
 *                      "gap" (0: fewer than two), the time since the last one
 *                      (0: none yet); then starts a new measurement
 *
 * A stream sends 182-byte packets at 50/s, shaped as SRTP is on the wire
 * (RFC 3711 section 3.1: a 12-byte RTP header, 160 bytes of payload that look
 * like ciphertext, an 80-bit authentication tag): what a relay without keys
 * sees of a call once ZRTP is done. Each stream also counts the packets of
 * that shape it receives (the other phone's, forwarded): what its phone sent
 * and what reached it. The control channel closing ends the process.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_STREAMS 65536
#define PACKET 182
#define INTERVAL_NS 20000000LL /* 50 packets a second */
#define BATCH 32

struct stream {
    int fd; /* -1: free */
    struct sockaddr_in to;
    uint16_t seq;
    uint32_t timestamp, ssrc;
    int64_t due;
    uint64_t sent, received;
    int64_t last_rx, max_gap; /* ns: the last media packet received, the longest wait */
};

static struct stream streams[MAX_STREAMS];
static int control;
static unsigned high; /* streams used so far: [0, high) */
static uint64_t state = 0x9e3779b97f4a7c15ULL;

static uint64_t next_random(void) { /* xorshift64: fills payloads that look like ciphertext */
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void send_one(struct stream *s) {
    uint8_t packet[PACKET];
    for (int i = 0; i < PACKET; i += 8) {
        uint64_t r = next_random();
        memcpy(packet + i, &r, PACKET - i < 8 ? (size_t)(PACKET - i) : 8);
    }
    packet[0] = 0x80; /* V=2, no padding, no extension, no CSRC */
    packet[1] = 0x00; /* PT 0 (PCMU) */
    uint16_t seq = htons(s->seq++);
    uint32_t ts = htonl(s->timestamp), ssrc = htonl(s->ssrc);
    s->timestamp += 160;
    memcpy(packet + 2, &seq, 2);
    memcpy(packet + 4, &ts, 4);
    memcpy(packet + 8, &ssrc, 4);
    if (sendto(s->fd, packet, PACKET, MSG_DONTWAIT, (struct sockaddr *)&s->to, sizeof s->to) ==
        PACKET)
        s->sent++;
}

static void receive_all(struct stream *s) {
    static uint8_t buffers[BATCH][PACKET + 64];
    struct mmsghdr messages[BATCH];
    struct iovec iov[BATCH];
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = buffers[i];
        iov[i].iov_len = sizeof buffers[i];
        memset(&messages[i].msg_hdr, 0, sizeof messages[i].msg_hdr);
        messages[i].msg_hdr.msg_iov = &iov[i];
        messages[i].msg_hdr.msg_iovlen = 1;
    }
    int n = recvmmsg(s->fd, messages, BATCH, MSG_DONTWAIT, NULL);
    int64_t now = n > 0 ? now_ns() : 0;
    for (int i = 0; i < n; i++) /* ZRTP left over from the handshake is not media */
        if (messages[i].msg_len == PACKET && buffers[i][0] == 0x80) {
            s->received++;
            if (s->last_rx && now - s->last_rx > s->max_gap) s->max_gap = now - s->last_rx;
            s->last_rx = now;
        }
}

static void answer(const char *text) { send(control, text, strlen(text), 0); }

/* One control message; 0 when the channel closed. */
static int command(int epoll) {
    char text[256] = {0};
    char fds[CMSG_SPACE(sizeof(int))];
    struct iovec iov = {.iov_base = text, .iov_len = sizeof text - 1};
    struct msghdr message = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = fds, .msg_controllen = sizeof fds};
    ssize_t n = recvmsg(control, &message, 0);
    if (n <= 0) return 0;
    int fd = -1;
    struct cmsghdr *header = CMSG_FIRSTHDR(&message);
    if (header && header->cmsg_level == SOL_SOCKET && header->cmsg_type == SCM_RIGHTS)
        memcpy(&fd, CMSG_DATA(header), sizeof fd);
    unsigned id;
    char host[64], reply[128];
    int port;
    if (sscanf(text, "add %u %63s %d", &id, host, &port) == 3 && id < MAX_STREAMS && fd >= 0 &&
        streams[id].fd < 0) {
        struct stream *s = &streams[id];
        memset(s, 0, sizeof *s);
        s->fd = fd;
        s->to.sin_family = AF_INET;
        s->to.sin_port = htons((uint16_t)port);
        inet_pton(AF_INET, host, &s->to.sin_addr);
        s->ssrc = (uint32_t)next_random();
        s->seq = (uint16_t)next_random();
        s->due = now_ns();
        if (id >= high) high = id + 1;
        struct epoll_event event = {.events = EPOLLIN, .data.u32 = id + 1};
        epoll_ctl(epoll, EPOLL_CTL_ADD, fd, &event);
        snprintf(reply, sizeof reply, "ok %u", id);
    } else if (sscanf(text, "del %u", &id) == 1 && id < MAX_STREAMS && streams[id].fd >= 0) {
        struct stream *s = &streams[id];
        receive_all(s);
        epoll_ctl(epoll, EPOLL_CTL_DEL, s->fd, NULL);
        close(s->fd);
        s->fd = -1;
        snprintf(reply, sizeof reply, "%u %llu %llu", id, (unsigned long long)s->sent,
                 (unsigned long long)s->received);
    } else if (sscanf(text, "to %u %63s %d", &id, host, &port) == 3 && id < MAX_STREAMS &&
               streams[id].fd >= 0) {
        streams[id].to.sin_port = htons((uint16_t)port);
        inet_pton(AF_INET, host, &streams[id].to.sin_addr);
        snprintf(reply, sizeof reply, "ok %u", id);
    } else if (sscanf(text, "gap %u", &id) == 1 && id < MAX_STREAMS && streams[id].fd >= 0) {
        struct stream *s = &streams[id];
        receive_all(s);
        int64_t since = s->last_rx ? now_ns() - s->last_rx : 0;
        snprintf(reply, sizeof reply, "%u %lld %lld %llu", id, (long long)(s->max_gap / 1000),
                 (long long)(since / 1000), (unsigned long long)s->received);
        s->max_gap = 0;
    } else {
        if (fd >= 0) close(fd);
        snprintf(reply, sizeof reply, "error %.100s", text);
    }
    answer(reply);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: soakload CONTROL_FD\n");
        return 2;
    }
    control = atoi(argv[1]);
    for (int i = 0; i < MAX_STREAMS; i++) streams[i].fd = -1;
    int epoll = epoll_create1(0);
    struct epoll_event channel = {.events = EPOLLIN, .data.u32 = 0};
    epoll_ctl(epoll, EPOLL_CTL_ADD, control, &channel);
    struct epoll_event events[BATCH];
    for (;;) {
        int64_t now = now_ns();
        for (unsigned i = 0; i < high; i++) {
            struct stream *s = &streams[i];
            if (s->fd < 0) continue;
            for (int late = 0; s->due <= now && late < 5; late++) { /* catch up, not flood */
                send_one(s);
                s->due += INTERVAL_NS;
            }
            if (s->due <= now) s->due = now + INTERVAL_NS;
        }
        int n = epoll_wait(epoll, events, BATCH, 2);
        for (int i = 0; i < n; i++) {
            uint32_t tag = events[i].data.u32;
            if (tag == 0) {
                if (!command(epoll)) return 0;
            } else {
                receive_all(&streams[tag - 1]);
            }
        }
    }
}
