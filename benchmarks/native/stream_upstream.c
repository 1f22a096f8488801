/* An OpenAI-style streaming upstream for benchmarks/gateway_streams.py: one thread, epoll, one
 * timerfd, every chunk written at its due time.
 *
 *   stream_upstream --port P --interval-us U
 *
 * Listens on 127.0.0.1:P (0: any free port; the port is printed as "listening P"). Answers
 * GET /health with 200, and POST /v1/chat/completions or /v1/completions with a chunked
 * text/event-stream: a role chunk and content chunk 0 at once, content chunk k at
 * arrival + k * U microseconds, `max_tokens` content chunks in all (16 when absent), the last
 * with finish_reason "stop", then a usage chunk and `data: [DONE]`. Each content chunk's text is
 * "#SEQ:DUE_NS:WRITTEN_NS " (CLOCK_MONOTONIC), so a client on the same machine can check order
 * and time every hop. Connections are kept alive. Due times are absolute (no drift); a chunk
 * the socket cannot take yet is buffered and sent when it can. */
#include "stream_common.h" /* first: it defines _GNU_SOURCE */

#include <arpa/inet.h>
#include <signal.h>
#include <sys/epoll.h>

enum conn_state { IDLE, STREAMING };

typedef struct {
    int open;
    enum conn_state state;
    uint32_t generation; /* bumped whenever a stream ends: stale timer entries are skipped */
    buf_t in, out;
    int want_out;       /* EPOLLOUT armed */
    int chat;           /* chat.completion.chunk, else text_completion */
    uint32_t stream_id;
    uint32_t total, next_seq;
    int64_t start_ns;
} conn_t;

typedef struct {
    int64_t due_ns;
    int fd;
    uint32_t generation;
} due_t;

static conn_t *conns;
static int max_fds;
static due_t *heap;
static size_t heap_len, heap_cap;
static int64_t interval_ns;
static int epoll_fd;
static uint32_t next_stream_id;

static void heap_push(due_t item) {
    if (heap_len == heap_cap) {
        heap_cap = heap_cap ? heap_cap * 2 : 1024;
        heap = realloc(heap, heap_cap * sizeof *heap);
        if (heap == NULL) die("realloc");
    }
    size_t i = heap_len++;
    while (i > 0 && heap[(i - 1) / 2].due_ns > item.due_ns) {
        heap[i] = heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    heap[i] = item;
}

static due_t heap_pop(void) {
    due_t top = heap[0], last = heap[--heap_len];
    size_t i = 0;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= heap_len) break;
        if (child + 1 < heap_len && heap[child + 1].due_ns < heap[child].due_ns) child++;
        if (heap[child].due_ns >= last.due_ns) break;
        heap[i] = heap[child];
        i = child;
    }
    if (heap_len > 0) heap[i] = last;
    return top;
}

static void watch(int fd, int want_out) {
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | (want_out ? EPOLLOUT : 0)};
    ev.data.fd = fd;
    conns[fd].want_out = want_out;
    if (epoll_ctl(epoll_fd, EPOLL_CTL_MOD, fd, &ev) != 0) die("epoll_ctl mod");
}

static void close_conn(int fd) {
    conn_t *c = &conns[fd];
    buf_free(&c->in);
    buf_free(&c->out);
    c->open = 0;
    c->state = IDLE;
    c->generation++;
    close(fd); /* also leaves the epoll set */
}

/* Write what is pending and then `data`, in order; buffer what the socket does not take. */
static int send_bytes(int fd, const char *data, size_t len) {
    conn_t *c = &conns[fd];
    if (c->out.len > 0) {
        buf_append(&c->out, data, len);
        return 0;
    }
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) break;
            return -1;
        }
        data += n;
        len -= (size_t)n;
    }
    if (len > 0) {
        buf_append(&c->out, data, len);
        watch(fd, 1);
    }
    return 0;
}

static int flush_out(int fd) {
    conn_t *c = &conns[fd];
    while (c->out.len > 0) {
        ssize_t n = write(fd, c->out.data, c->out.len);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) return 0;
            return -1;
        }
        buf_consume(&c->out, (size_t)n);
    }
    watch(fd, 0);
    return 0;
}

/* One SSE event as one HTTP chunk: "<hex>\r\ndata: <json>\n\n\r\n", appended to `out`. */
static size_t frame_event(char *out, size_t room, const char *json, size_t json_len) {
    int head = snprintf(out, room, "%zx\r\ndata: ", json_len + 8);
    memcpy(out + head, json, json_len);
    memcpy(out + head + json_len, "\n\n\r\n", 4);
    return (size_t)head + json_len + 4;
}

static size_t content_event(conn_t *c, char *out, size_t room, uint32_t seq, int64_t due_ns) {
    char json[512];
    const char *finish = seq + 1 == c->total ? "\"stop\"" : "null";
    int64_t written_ns = now_ns();
    int len;
    if (c->chat)
        len = snprintf(json, sizeof json,
                       "{\"id\":\"chatcmpl-%u\",\"object\":\"chat.completion.chunk\","
                       "\"created\":1764300000,\"model\":\"bench\",\"choices\":[{\"index\":0,"
                       "\"delta\":{\"content\":\"#%u:%lld:%lld \"},\"logprobs\":null,"
                       "\"finish_reason\":%s}]}",
                       c->stream_id, seq, (long long)due_ns, (long long)written_ns, finish);
    else
        len = snprintf(json, sizeof json,
                       "{\"id\":\"cmpl-%u\",\"object\":\"text_completion\",\"created\":1764300000,"
                       "\"model\":\"bench\",\"choices\":[{\"index\":0,\"text\":\"#%u:%lld:%lld \","
                       "\"logprobs\":null,\"finish_reason\":%s}]}",
                       c->stream_id, seq, (long long)due_ns, (long long)written_ns, finish);
    return frame_event(out, room, json, (size_t)len);
}

static size_t closing_events(conn_t *c, char *out, size_t room) {
    char json[320];
    int len = snprintf(json, sizeof json,
                       "{\"id\":\"%s-%u\",\"object\":\"%s\",\"created\":1764300000,"
                       "\"model\":\"bench\",\"choices\":[],\"usage\":{\"prompt_tokens\":8,"
                       "\"completion_tokens\":%u,\"total_tokens\":%u}}",
                       c->chat ? "chatcmpl" : "cmpl", c->stream_id,
                       c->chat ? "chat.completion.chunk" : "text_completion", c->total,
                       c->total + 8);
    size_t used = frame_event(out, room, json, (size_t)len);
    const char done[] = "e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n";
    memcpy(out + used, done, sizeof done - 1);
    return used + sizeof done - 1;
}

static void process_requests(int fd);

/* Send content chunk `seq` of the stream on `fd` (and, after the last, the end of the stream). */
static void send_chunk(int fd, int64_t due_ns) {
    conn_t *c = &conns[fd];
    char out[2048];
    uint32_t seq = c->next_seq++;
    size_t len = content_event(c, out, sizeof out, seq, due_ns);
    int last = c->next_seq == c->total;
    if (last) len += closing_events(c, out + len, sizeof out - len);
    if (send_bytes(fd, out, len) != 0) {
        close_conn(fd);
        return;
    }
    if (!last) {
        heap_push((due_t){c->start_ns + (int64_t)c->next_seq * interval_ns, fd, c->generation});
        return;
    }
    c->state = IDLE;
    c->generation++;
    process_requests(fd); /* a pipelined next request */
}

static const char *find_header_end(const char *data, size_t len) {
    const char *end = memmem(data, len, "\r\n\r\n", 4);
    return end ? end + 4 : NULL;
}

static long header_number(const char *head, size_t len, const char *name) {
    size_t name_len = strlen(name);
    for (const char *p = head; p + name_len < head + len; p++) {
        if ((p == head || p[-1] == '\n') && strncasecmp(p, name, name_len) == 0)
            return strtol(p + name_len, NULL, 10);
    }
    return -1;
}

static uint32_t body_number(const char *body, size_t len, const char *key, uint32_t fallback) {
    const char *at = memmem(body, len, key, strlen(key));
    if (at == NULL) return fallback;
    at += strlen(key);
    while (at < body + len && (*at == ' ' || *at == ':')) at++;
    if (at >= body + len || *at < '0' || *at > '9') return fallback;
    unsigned long value = strtoul(at, NULL, 10);
    return value > 0 && value < 10000000 ? (uint32_t)value : fallback;
}

/* Answer complete requests in `in` while the connection is idle. */
static void process_requests(int fd) {
    conn_t *c = &conns[fd];
    while (c->open && c->state == IDLE && c->in.len > 0) {
        const char *end = find_header_end(c->in.data, c->in.len);
        if (end == NULL) return;
        size_t head_len = (size_t)(end - c->in.data);
        long body_len = header_number(c->in.data, head_len, "content-length:");
        if (body_len < 0) body_len = 0;
        if (c->in.len < head_len + (size_t)body_len) return;
        const char *head = c->in.data, *body = end;
        if (strncmp(head, "GET /health ", 12) == 0) {
            static const char ok[] =
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";
            if (send_bytes(fd, ok, sizeof ok - 1) != 0) {
                close_conn(fd);
                return;
            }
        } else if (strncmp(head, "POST /v1/chat/completions ", 26) == 0 ||
                   strncmp(head, "POST /v1/completions ", 21) == 0) {
            c->chat = head[9] == 'c' && head[10] == 'h';
            c->total = body_number(body, (size_t)body_len, "\"max_tokens\"", 16);
            c->stream_id = next_stream_id++;
            c->next_seq = 0;
            c->start_ns = now_ns();
            c->state = STREAMING;
            char out[2048];
            static const char response_head[] =
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                "Transfer-Encoding: chunked\r\n\r\n";
            size_t len = sizeof response_head - 1;
            memcpy(out, response_head, len);
            char role[256];
            int role_len = snprintf(
                role, sizeof role,
                c->chat ? "{\"id\":\"chatcmpl-%u\",\"object\":\"chat.completion.chunk\","
                          "\"created\":1764300000,\"model\":\"bench\",\"choices\":[{\"index\":0,"
                          "\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"logprobs\":null,"
                          "\"finish_reason\":null}]}"
                        : "{\"id\":\"cmpl-%u\",\"object\":\"text_completion\","
                          "\"created\":1764300000,\"model\":\"bench\",\"choices\":[{\"index\":0,"
                          "\"text\":\"\",\"logprobs\":null,\"finish_reason\":null}]}",
                c->stream_id);
            len += frame_event(out + len, sizeof out - len, role, (size_t)role_len);
            buf_consume(&c->in, head_len + (size_t)body_len);
            if (send_bytes(fd, out, len) != 0) {
                close_conn(fd);
                return;
            }
            send_chunk(fd, c->start_ns);
            return; /* send_chunk goes on with pipelined requests after the stream */
        } else {
            static const char missing[] = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
            if (send_bytes(fd, missing, sizeof missing - 1) != 0) {
                close_conn(fd);
                return;
            }
        }
        buf_consume(&c->in, head_len + (size_t)body_len);
    }
}

static void on_readable(int fd) {
    conn_t *c = &conns[fd];
    char data[65536];
    for (;;) {
        ssize_t n = read(fd, data, sizeof data);
        if (n > 0) {
            buf_append(&c->in, data, (size_t)n);
            if ((size_t)n < sizeof data) break;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) break;
        close_conn(fd); /* EOF or error */
        return;
    }
    if (c->in.len > (1 << 20)) {
        close_conn(fd);
        return;
    }
    process_requests(fd);
}

static void on_accept(int listen_fd) {
    for (;;) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            return; /* EAGAIN, or out of descriptors (the client sees a reset) */
        }
        if (fd >= max_fds) {
            close(fd);
            continue;
        }
        set_nodelay(fd);
        conn_t *c = &conns[fd];
        c->open = 1;
        c->state = IDLE;
        c->generation++;
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP};
        ev.data.fd = fd;
        if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) die("epoll_ctl add");
        c->want_out = 0;
    }
}

int main(int argc, char **argv) {
    int port = 0;
    long interval_us = 50000;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--port") == 0) port = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--interval-us") == 0) interval_us = atol(argv[i + 1]);
        else {
            fprintf(stderr, "usage: %s --port P --interval-us U\n", argv[0]);
            return 2;
        }
    }
    interval_ns = interval_us * 1000;
    signal(SIGPIPE, SIG_IGN);
    max_fds = raise_nofile();
    conns = calloc((size_t)max_fds, sizeof *conns);
    if (conns == NULL) die("calloc");

    int listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (listen_fd < 0) die("socket");
    int one = 1;
    setsockopt(listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(listen_fd, (struct sockaddr *)&addr, sizeof addr) != 0) die("bind");
    if (listen(listen_fd, 65535) != 0) die("listen");
    socklen_t addr_len = sizeof addr;
    getsockname(listen_fd, (struct sockaddr *)&addr, &addr_len);
    printf("listening %d\n", ntohs(addr.sin_port));
    fflush(stdout);

    epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    int timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (epoll_fd < 0 || timer_fd < 0) die("epoll/timerfd");
    struct epoll_event ev = {.events = EPOLLIN};
    ev.data.fd = listen_fd;
    epoll_ctl(epoll_fd, EPOLL_CTL_ADD, listen_fd, &ev);
    ev.data.fd = timer_fd;
    epoll_ctl(epoll_fd, EPOLL_CTL_ADD, timer_fd, &ev);

    struct epoll_event events[1024];
    int64_t armed_ns = -1;
    for (;;) {
        int ready = epoll_wait(epoll_fd, events, 1024, -1);
        if (ready < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < ready; i++) {
            int fd = events[i].data.fd;
            if (fd == listen_fd) {
                on_accept(listen_fd);
            } else if (fd == timer_fd) {
                uint64_t expirations;
                if (read(timer_fd, &expirations, sizeof expirations) < 0) { /* spurious */ }
                armed_ns = -1;
            } else if (conns[fd].open) {
                if ((events[i].events & EPOLLOUT) && flush_out(fd) != 0) {
                    close_conn(fd);
                    continue;
                }
                if (events[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
                    on_readable(fd);
            }
        }
        int64_t now = now_ns();
        while (heap_len > 0 && heap[0].due_ns <= now) {
            due_t due = heap_pop();
            conn_t *c = &conns[due.fd];
            if (c->open && c->state == STREAMING && c->generation == due.generation)
                send_chunk(due.fd, due.due_ns);
            if (heap_len > 0 && heap[0].due_ns > now) now = now_ns();
        }
        int64_t next = heap_len > 0 ? heap[0].due_ns : -1;
        if (next != armed_ns) {
            arm_timer(timer_fd, next);
            armed_ns = next;
        }
    }
}
