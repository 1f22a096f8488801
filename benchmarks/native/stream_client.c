/* The load side of benchmarks/gateway_streams.py: N concurrent streaming requests from one
 * thread (epoll, one timerfd), every content chunk timed on arrival.
 *
 *   stream_client --port P --streams N --chunks C --ramp-us R --out FILE
 *                 [--start-ns S] [--deadline-ns D] [--path /v1/chat/completions]
 *
 * Stream i starts (connects to 127.0.0.1:P and asks for C chunks, `stream: true`) at
 * S + i * R / N, S and D in CLOCK_MONOTONIC ns (S = 0: now). Reads each response (chunked,
 * Content-Length or until close), splits its `data:` lines, and for each content chunk whose
 * text is "#SEQ:DUE_NS:WRITTEN_NS" (stream_upstream's) records its arrival time, SEQ and the two
 * upstream times. Stops when every stream has ended, or at D (unfinished streams are marked),
 * then writes FILE: a records_header_t, N stream_record_t, and the chunk_record_t in arrival
 * order (stream_common.h). Prints "streams N ended E chunks K". */
#include "stream_common.h" /* first: it defines _GNU_SOURCE */

#include <arpa/inet.h>
#include <signal.h>
#include <sys/epoll.h>

enum phase { WAITING, CONNECTING, HEAD, CHUNK_SIZE, CHUNK_DATA, CHUNK_END, LENGTH, UNTIL_CLOSE,
             ENDED };

typedef struct {
    int fd;
    enum phase phase;
    buf_t head, line;
    uint64_t remaining; /* bytes of the current HTTP chunk, or of a Content-Length body */
    uint64_t chunk_size;
    int size_digits_done; /* past the hex digits of a chunk-size line (extensions follow) */
} conn_t;

static conn_t *conns;
static stream_record_t *streams;
static chunk_record_t *chunks;
static size_t chunk_len, chunk_cap;
static int *stream_of_fd;
static int max_fds, epoll_fd;
static uint32_t stream_count, chunks_per_stream, ended_count;
static struct sockaddr_in target;
static char request[1024];
static size_t request_len;

static void end_stream(uint32_t s, int64_t now, enum stream_error error) {
    conn_t *c = &conns[s];
    if (c->phase == ENDED) return;
    if (c->fd >= 0) {
        close(c->fd);
        stream_of_fd[c->fd] = -1;
        c->fd = -1;
    }
    buf_free(&c->head);
    buf_free(&c->line);
    c->phase = ENDED;
    if (streams[s].error == STREAM_OK) streams[s].error = (uint32_t)error;
    streams[s].done_ns = now;
    ended_count++;
}

static void record_chunk(uint32_t s, const char *text, const char *end, int64_t now) {
    /* text points just past '#': SEQ:DUE_NS:WRITTEN_NS */
    char *after;
    unsigned long seq = strtoul(text, &after, 10);
    if (after >= end || *after != ':') return;
    long long due = strtoll(after + 1, &after, 10);
    if (after >= end || *after != ':') return;
    long long written = strtoll(after + 1, &after, 10);
    if (chunk_len == chunk_cap) {
        chunk_cap = chunk_cap ? chunk_cap * 2 : 4096;
        chunks = realloc(chunks, chunk_cap * sizeof *chunks);
        if (chunks == NULL) die("realloc");
    }
    chunks[chunk_len++] = (chunk_record_t){now, due, written, s, (uint32_t)seq};
    if (streams[s].chunks++ == 0) streams[s].first_chunk_ns = now;
}

/* The value of `"key"` when it is a string starting with '#': a pointer past the '#'. */
static const char *tagged_value(const char *line, size_t len, const char *key) {
    const char *end = line + len;
    size_t key_len = strlen(key);
    const char *at = memmem(line, len, key, key_len);
    if (at == NULL) return NULL;
    at += key_len;
    while (at < end && (*at == ' ' || *at == ':')) at++;
    if (at + 1 >= end || at[0] != '"' || at[1] != '#') return NULL;
    return at + 2;
}

static void on_line(uint32_t s, const char *line, size_t len, int64_t now) {
    if (len > 0 && line[len - 1] == '\r') len--;
    if (len < 5 || memcmp(line, "data:", 5) != 0) return;
    const char *payload = line + 5;
    size_t payload_len = len - 5;
    while (payload_len > 0 && *payload == ' ') payload++, payload_len--;
    if (payload_len == 6 && memcmp(payload, "[DONE]", 6) == 0) {
        streams[s].flags |= FLAG_DONE_EVENT;
        return;
    }
    const char *text = tagged_value(payload, payload_len, "\"content\"");
    if (text == NULL) text = tagged_value(payload, payload_len, "\"text\"");
    if (text != NULL) record_chunk(s, text, payload + payload_len, now);
}

/* Body bytes: split into lines (a line may span reads and HTTP chunks). */
static void on_body(uint32_t s, const char *data, size_t len, int64_t now) {
    conn_t *c = &conns[s];
    while (len > 0) {
        const char *newline = memchr(data, '\n', len);
        if (newline == NULL) {
            buf_append(&c->line, data, len);
            return;
        }
        size_t part = (size_t)(newline - data);
        if (c->line.len > 0) {
            buf_append(&c->line, data, part);
            on_line(s, c->line.data, c->line.len, now);
            c->line.len = 0;
        } else {
            on_line(s, data, part, now);
        }
        data += part + 1;
        len -= part + 1;
    }
}

static void on_head(uint32_t s, int64_t now) {
    conn_t *c = &conns[s];
    const char *head = c->head.data;
    streams[s].headers_ns = now;
    if (c->head.len < 12 || strncmp(head, "HTTP/1.", 7) != 0) {
        end_stream(s, now, STREAM_PARSE);
        return;
    }
    streams[s].status = (uint32_t)atoi(head + 9);
    if (streams[s].status != 200) {
        end_stream(s, now, STREAM_STATUS);
        return;
    }
    c->phase = UNTIL_CLOSE;
    const char *head_end = head + c->head.len;
    for (const char *p = head; p < head_end; p++) {
        if (p[0] != '\n') continue;
        const char *line = p + 1, *line_end = memchr(line, '\n', (size_t)(head_end - line));
        size_t line_len = line_end ? (size_t)(line_end - line) : (size_t)(head_end - line);
        if (line_len > 18 && strncasecmp(line, "transfer-encoding:", 18) == 0 &&
            memmem(line, line_len, "chunked", 7) != NULL)
            c->phase = CHUNK_SIZE;
        else if (line_len > 15 && strncasecmp(line, "content-length:", 15) == 0 &&
                 c->phase != CHUNK_SIZE) {
            c->phase = LENGTH;
            c->remaining = strtoull(line + 15, NULL, 10);
        }
    }
    c->chunk_size = 0;
    c->size_digits_done = 0;
}

static int hex_value(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Bytes read from stream s's socket, through the HTTP framing. */
static void on_bytes(uint32_t s, const char *data, size_t len, int64_t now) {
    conn_t *c = &conns[s];
    while (len > 0 && c->phase != ENDED) {
        switch (c->phase) {
        case HEAD: {
            size_t before = c->head.len;
            buf_append(&c->head, data, len);
            const char *end = memmem(c->head.data, c->head.len, "\r\n\r\n", 4);
            if (end == NULL) {
                if (c->head.len > 65536) end_stream(s, now, STREAM_PARSE);
                return;
            }
            size_t used = (size_t)(end + 4 - c->head.data) - before;
            c->head.len = (size_t)(end + 2 - c->head.data);
            on_head(s, now);
            data += used;
            len -= used;
            break;
        }
        case CHUNK_SIZE: {
            char ch = *data++;
            len--;
            if (ch == '\n') {
                if (c->chunk_size == 0) {
                    streams[s].flags |= FLAG_BODY_END; /* the last chunk: trailers unread */
                    end_stream(s, now, STREAM_OK);
                    return;
                }
                c->remaining = c->chunk_size;
                c->chunk_size = 0;
                c->size_digits_done = 0;
                c->phase = CHUNK_DATA;
            } else if (!c->size_digits_done && hex_value(ch) >= 0) {
                c->chunk_size = c->chunk_size * 16 + (uint64_t)hex_value(ch);
            } else {
                c->size_digits_done = 1; /* ';' extensions, or the '\r' */
            }
            break;
        }
        case CHUNK_DATA:
        case LENGTH: {
            size_t part = len < c->remaining ? len : (size_t)c->remaining;
            on_body(s, data, part, now);
            data += part;
            len -= part;
            c->remaining -= part;
            if (c->remaining == 0 && c->phase == LENGTH) {
                streams[s].flags |= FLAG_BODY_END;
                end_stream(s, now, STREAM_OK);
                return;
            }
            if (c->remaining == 0) c->phase = CHUNK_END;
            break;
        }
        case CHUNK_END: /* the CRLF after a chunk's data */
            if (*data++ == '\n') c->phase = CHUNK_SIZE;
            len--;
            break;
        case UNTIL_CLOSE:
            on_body(s, data, len, now);
            return;
        default:
            return;
        }
    }
}

static void start_stream(uint32_t s, int64_t now) {
    conn_t *c = &conns[s];
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || fd >= max_fds) {
        if (fd >= 0) close(fd);
        end_stream(s, now, STREAM_CONNECT);
        return;
    }
    set_nodelay(fd);
    c->fd = fd;
    stream_of_fd[fd] = (int)s;
    c->phase = CONNECTING;
    if (connect(fd, (struct sockaddr *)&target, sizeof target) != 0 && errno != EINPROGRESS) {
        end_stream(s, now, STREAM_CONNECT);
        return;
    }
    struct epoll_event ev = {.events = EPOLLOUT};
    ev.data.u32 = s;
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) die("epoll_ctl add");
}

static void on_connected(uint32_t s, int64_t now) {
    conn_t *c = &conns[s];
    int error = 0;
    socklen_t error_len = sizeof error;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &error, &error_len);
    if (error != 0) {
        end_stream(s, now, STREAM_CONNECT);
        return;
    }
    streams[s].connected_ns = now;
    if (write(c->fd, request, request_len) != (ssize_t)request_len) {
        end_stream(s, now, STREAM_RESET);
        return;
    }
    streams[s].sent_ns = now_ns();
    c->phase = HEAD;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP};
    ev.data.u32 = s;
    if (epoll_ctl(epoll_fd, EPOLL_CTL_MOD, c->fd, &ev) != 0) die("epoll_ctl mod");
}

static void on_readable(uint32_t s) {
    static char data[65536];
    conn_t *c = &conns[s];
    while (c->phase != ENDED) {
        ssize_t n = read(c->fd, data, sizeof data);
        int64_t now = now_ns();
        if (n > 0) {
            on_bytes(s, data, (size_t)n, now);
            if ((size_t)n < sizeof data) return;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return;
        if (n == 0 && c->phase == UNTIL_CLOSE) {
            streams[s].flags |= FLAG_BODY_END;
            end_stream(s, now, STREAM_OK);
            return;
        }
        end_stream(s, now, STREAM_RESET);
        return;
    }
}

static void write_records(const char *path) {
    FILE *out = fopen(path, "wb");
    if (out == NULL) die(path);
    records_header_t header = {.streams = stream_count, .chunks_per_stream = chunks_per_stream,
                               .chunk_records = chunk_len};
    memcpy(header.magic, RECORDS_MAGIC, sizeof RECORDS_MAGIC);
    if (fwrite(&header, sizeof header, 1, out) != 1 ||
        fwrite(streams, sizeof *streams, stream_count, out) != stream_count ||
        fwrite(chunks, sizeof *chunks, chunk_len, out) != chunk_len || fclose(out) != 0)
        die(path);
}

int main(int argc, char **argv) {
    int port = 0;
    long long ramp_us = 0, start_ns = 0, deadline_ns = 0;
    const char *out_path = NULL, *path = "/v1/chat/completions";
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *flag = argv[i], *value = argv[i + 1];
        if (strcmp(flag, "--port") == 0) port = atoi(value);
        else if (strcmp(flag, "--streams") == 0) stream_count = (uint32_t)atol(value);
        else if (strcmp(flag, "--chunks") == 0) chunks_per_stream = (uint32_t)atol(value);
        else if (strcmp(flag, "--ramp-us") == 0) ramp_us = atoll(value);
        else if (strcmp(flag, "--start-ns") == 0) start_ns = atoll(value);
        else if (strcmp(flag, "--deadline-ns") == 0) deadline_ns = atoll(value);
        else if (strcmp(flag, "--path") == 0) path = value;
        else if (strcmp(flag, "--out") == 0) out_path = value;
        else break;
    }
    if (port <= 0 || stream_count == 0 || chunks_per_stream == 0 || out_path == NULL) {
        fprintf(stderr,
                "usage: %s --port P --streams N --chunks C --ramp-us R --out FILE "
                "[--start-ns S] [--deadline-ns D] [--path PATH]\n",
                argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    max_fds = raise_nofile();
    conns = calloc(stream_count, sizeof *conns);
    streams = calloc(stream_count, sizeof *streams);
    stream_of_fd = malloc((size_t)max_fds * sizeof *stream_of_fd);
    chunk_cap = (size_t)stream_count * chunks_per_stream + 1024;
    chunks = malloc(chunk_cap * sizeof *chunks);
    if (!conns || !streams || !stream_of_fd || !chunks) die("malloc");
    memset(stream_of_fd, 0xff, (size_t)max_fds * sizeof *stream_of_fd);

    int chat = strstr(path, "chat") != NULL;
    char body[256];
    int body_len = snprintf(
        body, sizeof body,
        chat ? "{\"model\":\"bench\",\"messages\":[{\"role\":\"user\",\"content\":\"Count.\"}],"
               "\"max_tokens\":%u,\"stream\":true}"
             : "{\"model\":\"bench\",\"prompt\":\"Count.\",\"max_tokens\":%u,\"stream\":true}",
        chunks_per_stream);
    request_len = (size_t)snprintf(
        request, sizeof request,
        "POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
        "Accept: text/event-stream\r\nAuthorization: Bearer sk-bench\r\n"
        "Content-Length: %d\r\n\r\n%s",
        path, port, body_len, body);
    target = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    if (start_ns == 0) start_ns = now_ns();
    int64_t ramp_ns = ramp_us * 1000;
    for (uint32_t s = 0; s < stream_count; s++) {
        conns[s].fd = -1;
        conns[s].phase = WAITING;
        streams[s].scheduled_ns = start_ns + (int64_t)((double)ramp_ns * s / stream_count);
    }

    epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    int timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (epoll_fd < 0 || timer_fd < 0) die("epoll/timerfd");
    const uint32_t timer_tag = UINT32_MAX;
    struct epoll_event ev = {.events = EPOLLIN};
    ev.data.u32 = timer_tag;
    epoll_ctl(epoll_fd, EPOLL_CTL_ADD, timer_fd, &ev);

    struct epoll_event events[1024];
    uint32_t next_start = 0;
    int64_t armed_ns = -1;
    while (ended_count < stream_count) {
        int64_t now = now_ns();
        while (next_start < stream_count && streams[next_start].scheduled_ns <= now)
            start_stream(next_start++, now);
        if (deadline_ns > 0 && now >= deadline_ns) break;
        int64_t wake = next_start < stream_count ? streams[next_start].scheduled_ns : -1;
        if (deadline_ns > 0 && (wake < 0 || deadline_ns < wake)) wake = deadline_ns;
        if (wake != armed_ns) {
            arm_timer(timer_fd, wake);
            armed_ns = wake;
        }
        int ready = epoll_wait(epoll_fd, events, 1024, -1);
        if (ready < 0 && errno != EINTR) die("epoll_wait");
        for (int i = 0; i < ready; i++) {
            uint32_t s = events[i].data.u32;
            if (s == timer_tag) {
                uint64_t expirations;
                if (read(timer_fd, &expirations, sizeof expirations) > 0) armed_ns = -1;
            } else if (conns[s].phase == CONNECTING) {
                on_connected(s, now_ns());
            } else if (conns[s].phase != ENDED) {
                on_readable(s);
            }
        }
    }
    int64_t stop = now_ns();
    uint32_t ended_in_time = ended_count;
    for (uint32_t s = 0; s < stream_count; s++) end_stream(s, stop, STREAM_DEADLINE);
    write_records(out_path);
    printf("streams %u ended %u chunks %zu\n", stream_count, ended_in_time, chunk_len);
    return 0;
}
