/* Shared by stream_upstream.c and stream_client.c: clock, socket options, buffers, and the
 * record layout the client writes (read by benchmarks/gateway_streams.py with numpy). */
#ifndef STREAM_COMMON_H
#define STREAM_COMMON_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

static inline int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline void die(const char *what) {
    perror(what);
    exit(2);
}

static inline void set_nodelay(int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* Thousands of sockets: raise the soft descriptor limit to the hard one. Returns the limit. */
static inline int raise_nofile(void) {
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) != 0) die("getrlimit");
    limit.rlim_cur = limit.rlim_max;
    if (limit.rlim_cur > (1 << 20)) limit.rlim_cur = 1 << 20;
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0) die("setrlimit");
    return (int)limit.rlim_cur;
}

/* Arm (absolute CLOCK_MONOTONIC ns) or, with at_ns < 0, disarm a timerfd. */
static inline void arm_timer(int timer_fd, int64_t at_ns) {
    struct itimerspec spec;
    memset(&spec, 0, sizeof spec);
    if (at_ns >= 0) {
        if (at_ns == 0) at_ns = 1; /* 0 would disarm */
        spec.it_value.tv_sec = at_ns / 1000000000LL;
        spec.it_value.tv_nsec = at_ns % 1000000000LL;
    }
    if (timerfd_settime(timer_fd, TFD_TIMER_ABSTIME, &spec, NULL) != 0) die("timerfd_settime");
}

/* A growable byte buffer, kept NUL-terminated past `len` so that strto* calls on it stop. */
typedef struct {
    char *data;
    size_t len, cap;
} buf_t;

static inline void buf_reserve(buf_t *b, size_t extra) {
    if (b->len + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra + 1) cap *= 2;
    char *data = realloc(b->data, cap);
    if (data == NULL) die("realloc");
    b->data = data;
    b->cap = cap;
}

static inline void buf_append(buf_t *b, const char *data, size_t len) {
    buf_reserve(b, len);
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

static inline void buf_consume(buf_t *b, size_t len) {
    memmove(b->data, b->data + len, b->len - len);
    b->len -= len;
    b->data[b->len] = '\0';
}

static inline void buf_free(buf_t *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

/* The client's output file: header, one record per stream, one per content chunk received.
 * All little-endian, naturally aligned (no padding). */
#define RECORDS_MAGIC "MYSTRM1"

typedef struct {
    char magic[8];
    uint32_t streams;
    uint32_t chunks_per_stream;
    uint64_t chunk_records;
} records_header_t;

enum stream_error {
    STREAM_OK = 0,
    STREAM_CONNECT = 1,   /* connect() failed */
    STREAM_RESET = 2,     /* the connection ended before the response did */
    STREAM_STATUS = 3,    /* a status other than 200 */
    STREAM_PARSE = 4,     /* a response the client could not read */
    STREAM_DEADLINE = 5,  /* not finished by the deadline */
};

enum stream_flags {
    FLAG_DONE_EVENT = 1, /* `data: [DONE]` arrived */
    FLAG_BODY_END = 2,   /* the body ended cleanly (last chunk, length reached, or close) */
};

typedef struct {
    int64_t scheduled_ns;   /* when the stream was due to start (open loop) */
    int64_t connected_ns;
    int64_t sent_ns;        /* request written */
    int64_t headers_ns;     /* response head complete */
    int64_t first_chunk_ns; /* first content chunk arrived */
    int64_t done_ns;        /* response complete, or the error seen */
    uint32_t chunks;        /* content chunks received */
    uint32_t status;        /* HTTP status */
    uint32_t error;         /* enum stream_error */
    uint32_t flags;         /* enum stream_flags */
} stream_record_t;

typedef struct {
    int64_t arrival_ns; /* read() that completed the chunk returned */
    int64_t due_ns;     /* when the upstream was due to send it (from the chunk) */
    int64_t written_ns; /* when the upstream wrote it (from the chunk) */
    uint32_t stream;
    uint32_t seq;       /* the upstream's sequence number in the stream, from 0 */
} chunk_record_t;

_Static_assert(sizeof(records_header_t) == 24, "header layout");
_Static_assert(sizeof(stream_record_t) == 64, "stream record layout");
_Static_assert(sizeof(chunk_record_t) == 32, "chunk record layout");

#endif
