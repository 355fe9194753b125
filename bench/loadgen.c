/*
 * loadgen.c - the wshub load generator (build/wshub-loadgen).
 *
 * One thread, one epoll set, its own minimal RFC 6455 client.  A run has
 * three phases, each bounded in time:
 *
 *   1. connect: open --conns WebSocket connections (at most --concurrency
 *      handshakes at once), each subscribing to one channel; connection
 *      i goes to server i % nservers and channel (i / nservers) %
 *      --channels.  Past --per-src connections the source address moves
 *      on to 127.0.0.2, 127.0.0.3, ... so that no (source, destination)
 *      pair runs out of ephemeral ports.
 *   2. idle: optionally wait --idle-ms, then read every --pid's VmRSS and,
 *      with --redis, ask Redis for PUBSUB NUMSUB and CLIENT LIST.
 *   3. publish: --msgs messages, message g on channel g % --channels,
 *      through POST /publish over --pub-conns keep-alive connections, each
 *      with at most --window requests in flight.  Every message's data
 *      carries its global index g, its publisher p, the publisher's
 *      sequence number s and the CLOCK_MONOTONIC send time t in ns, padded
 *      to exactly --size bytes of JSON.  At most --max-outstanding
 *      messages may be published and not yet delivered to every
 *      subscriber, which keeps server queues bounded; --rate paces the
 *      publishes instead.  Each delivery is checked: the right channel,
 *      not a duplicate, in order per publisher, and its latency goes into
 *      a log-linear histogram.
 *
 * The server CPU used over the publish phase comes from utime+stime in
 * /proc/PID/stat (the definition, 10 ms ticks) and from the
 * per-thread run time in /proc/PID/task/TID/schedstat (ns).  Output:
 * progress on stderr, one "RESULT key=value ..." line on stdout.
 *
 * --storm-after K (issue 9, a reconnect storm): once the first K messages
 * reached every subscriber, every subscriber connection is closed at
 * once and opened again (--concurrency at a time), subscribing with
 * "since" the offset and epoch it last saw, while publishing goes on.
 * Every message must still reach every subscriber exactly once, in
 * offset order (message frames carry offsets on a history channel:
 * off_gap counts an offset that is not the previous one plus one,
 * gap_rx the gap frames, not_recovered the subscribes answered
 * "recovered":false).  storm_resub_s is the time from the close until
 * every connection holds its subscribed reply again, storm_live_s until
 * also everything published so far has reached all of them.
 *
 * --tls speaks TLS (OpenSSL, no certificate verification: a benchmark,
 * not a client) on every connection: subscribers (a non-blocking
 * handshake before the upgrade), publishers and the /metrics scrape.
 * All socket I/O goes through io_send/io_recv, which are send/recv
 * without it.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <hiredis/hiredis.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#  define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define LG_MAX_SERVERS 8
#define LG_MAX_PIDS 8
#define LG_MAX_PUBS 64
#define LG_RBUF_SIZE (256 * 1024)
#define LG_HIST_BUCKETS (64 + 58 * 32)
#define LG_HANDSHAKE_MAX 8192

/* ------------------------------------------------------------ options */

typedef struct lg_pid {
  char name[32];
  int pid;
  uint64_t ticks0, ticks1; /* utime+stime */
  uint64_t run0_ns, run1_ns;
  uint64_t rss0_kb, rss1_kb;
  uint64_t conn_run0_ns, conn_run1_ns; /* over the connect phase */
} lg_pid;

typedef struct lg_opts {
  struct sockaddr_in servers[LG_MAX_SERVERS];
  int nservers;
  uint32_t conns;
  uint32_t channels;
  const char *chan_prefix;
  uint32_t msgs;
  uint32_t size;
  uint32_t pub_conns;
  uint32_t window;
  uint32_t max_outstanding;
  double rate;
  uint32_t concurrency;
  uint32_t per_src;
  uint32_t idle_ms;
  uint32_t give_up_ms;
  int busy_poll;
  double connect_timeout_s;
  double publish_timeout_s;
  const char *redis_host;
  int redis_port;
  const char *redis_prefix;
  const char *label;
  const char *token; /* sent as ?token= on every upgrade, or NULL */
  lg_pid pids[LG_MAX_PIDS];
  int npids;
  int tls;
  uint32_t storm_after; /* 0: no reconnect storm */
} lg_opts;

static lg_opts opt;

/* ------------------------------------------------------------- helpers */

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "loadgen: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  exit(2);
}

static void *xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (p == NULL) {
    die("out of memory (%zu bytes)", n);
  }
  return p;
}

static void *xcalloc(size_t n, size_t sz) {
  void *p = calloc(n ? n : 1, sz ? sz : 1);
  if (p == NULL) {
    die("out of memory (%zu x %zu bytes)", n, sz);
  }
  return p;
}

static void *xrealloc(void *p, size_t n) {
  p = realloc(p, n);
  if (p == NULL) {
    die("out of memory (%zu bytes)", n);
  }
  return p;
}

/* xorshift64*, seeded from getrandom; only for masking keys. */
static uint64_t rng_state;

static uint64_t rng_next(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * UINT64_C(2685821657736338717);
}

static void random_bytes(uint8_t *buf, size_t n) {
  while (n > 0) {
    ssize_t r = getrandom(buf, n, 0);
    if (r < 0) {
      if (errno == EINTR) {
        continue;
      }
      die("getrandom: %s", strerror(errno));
    }
    buf += r;
    n -= (size_t)r;
  }
}

/* ---------------------------------------------------------- histogram */

/*
 * Log-linear: exact below 64 ns, then 32 buckets per power of two (about
 * 3 % resolution), like HdrHistogram with two significant digits.
 */
static uint64_t hist[LG_HIST_BUCKETS];
static uint64_t hist_n;
static uint64_t hist_max;

static unsigned hist_index(uint64_t v) {
  if (v < 64) {
    return (unsigned)v;
  }
  unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= 6 */
  unsigned mant = (unsigned)(v >> (e - 5)) & 31u;
  return 64u + (e - 6u) * 32u + mant;
}

static uint64_t hist_value(unsigned idx) {
  if (idx < 64) {
    return idx;
  }
  unsigned e = (idx - 64u) / 32u + 6u;
  uint64_t mant = (idx - 64u) % 32u;
  uint64_t lo = (32u + mant) << (e - 5);
  uint64_t hi = ((33u + mant) << (e - 5)) - 1;
  return lo + (hi - lo) / 2;
}

static void hist_add(uint64_t v) {
  hist[hist_index(v)]++;
  hist_n++;
  if (v > hist_max) {
    hist_max = v;
  }
}

static uint64_t hist_quantile(double q) {
  if (hist_n == 0) {
    return 0;
  }
  uint64_t rank = (uint64_t)(q * (double)hist_n);
  if (rank < 1) {
    rank = 1;
  }
  uint64_t seen = 0;
  for (unsigned i = 0; i < LG_HIST_BUCKETS; i++) {
    seen += hist[i];
    if (seen >= rank) {
      return hist_value(i);
    }
  }
  return hist_max;
}

/* --------------------------------------------------------- /proc reads */

static int read_file(const char *path, char *buf, size_t cap) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return -1;
  }
  ssize_t n = read(fd, buf, cap - 1);
  close(fd);
  if (n < 0) {
    return -1;
  }
  buf[n] = '\0';
  return 0;
}

/* utime + stime in clock ticks, fields 14 and 15 of /proc/PID/stat. */
static uint64_t proc_ticks(int pid) {
  char path[64], buf[2048];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  if (read_file(path, buf, sizeof buf) < 0) {
    die("cannot read %s: %s", path, strerror(errno));
  }
  char *p = strrchr(buf, ')');
  if (p == NULL) {
    die("malformed %s", path);
  }
  p += 2; /* now at field 3, the state */
  unsigned long long ut = 0, st = 0;
  int field = 3;
  while (*p && field < 14) {
    if (*p == ' ') {
      field++;
    }
    p++;
  }
  if (sscanf(p, "%llu %llu", &ut, &st) != 2) {
    die("malformed %s", path);
  }
  return ut + st;
}

/* Sum of every thread's run time in ns (first field of schedstat). */
static uint64_t proc_run_ns(int pid) {
  char path[64], buf[256];
  uint64_t sum = 0;
  snprintf(path, sizeof path, "/proc/%d/task", pid);
  DIR *d = opendir(path);
  if (d == NULL) {
    return 0;
  }
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    if (de->d_name[0] == '.') {
      continue;
    }
    char tpath[300];
    snprintf(tpath, sizeof tpath, "/proc/%d/task/%s/schedstat", pid,
             de->d_name);
    unsigned long long ns = 0;
    if (read_file(tpath, buf, sizeof buf) == 0 &&
        sscanf(buf, "%llu", &ns) == 1) {
      sum += ns;
    }
  }
  closedir(d);
  return sum;
}

static uint64_t proc_rss_kb(int pid) {
  char path[64], buf[4096];
  snprintf(path, sizeof path, "/proc/%d/status", pid);
  if (read_file(path, buf, sizeof buf) < 0) {
    die("cannot read %s: %s", path, strerror(errno));
  }
  char *p = strstr(buf, "VmRSS:");
  if (p == NULL) {
    return 0;
  }
  return strtoull(p + 6, NULL, 10);
}

/* ------------------------------------------------------- connections */

enum {
  WS_IDLE = 0,
  WS_CONNECTING,
  WS_TLS, /* the TLS handshake (--tls) */
  WS_HANDSHAKE,
  WS_SUBSCRIBING,
  WS_READY,
  WS_DEAD
};

/*
 * One subscriber.  Buffers are allocated only while partial data waits,
 * so 20,000 idle connections cost the load generator little.
 */
typedef struct wsconn {
  int fd;
  uint8_t state;
  uint8_t want_out;
  uint16_t server;
  uint32_t chan;
  uint8_t *rbuf; /* handshake bytes, or a partial frame */
  uint32_t rlen, rcap;
  uint8_t *wbuf; /* bytes the socket has not taken yet */
  uint32_t wlen, woff;
  char accept[32]; /* expected Sec-WebSocket-Accept */
  uint32_t delivered;
  SSL *ssl;          /* --tls */
  uint64_t last_off; /* the newest offset seen (history channels) */
  char epoch[33];    /* from the subscribed reply */
} wsconn;

typedef struct pubconn {
  int fd;
  int dead;
  uint16_t server;
  uint8_t want_out;
  uint8_t *rbuf;
  size_t rlen, rcap;
  uint8_t *wbuf;
  size_t wlen, woff, wcap;
  uint32_t *inflight; /* ring of message indexes, capacity opt.window */
  uint32_t head, count;
  uint32_t seq;
  SSL *ssl; /* --tls */
} pubconn;

#define LG_PUB_TAG (UINT64_C(1) << 63)

static int epfd;
static wsconn *ws;
static pubconn pubs[LG_MAX_PUBS];
static uint8_t *gbuf; /* shared receive buffer */

/* Counters. */
static struct {
  uint32_t opened, pending, ready, failed;
  uint32_t http_fail, connect_fail, proto_err, closed_ready;
  int first_errno;
  char first_fail[200];
  uint32_t close_codes[8];
  uint16_t close_code_val[8];
  uint64_t deliveries, dup, ooo, misrouted, bad_msg, errors_rx, other_rx;
  uint64_t pings;
  uint64_t published, pub_ok, pub_err, fully_delivered;
  uint64_t expected, outstanding;
  char first_pub_err[200];
  char first_err_rx[200];
  uint64_t last_delivery_ns;
  /* --storm-after */
  uint64_t off_gap, gap_rx, recovered, not_recovered;
  uint64_t storm_t0, storm_resub_ns, storm_live_ns;
  uint32_t storm_next; /* next connection to open again */
  int storm;           /* 1: closed, reopening; 2: all live again */
} st;

static uint32_t *subs_per_chan;
static uint32_t *remaining; /* per message: deliveries still due */
static uint64_t *sent_ns;   /* per message: when it was published */
static uint8_t *abandoned;  /* per message: no longer counted outstanding */
static uint32_t oldest;     /* first message that may still be outstanding */
static int32_t *last_seq;   /* [conn * pub_conns + p] */
static int in_publish;

static void note_fail(const char *fmt, ...) {
  if (st.first_fail[0] != '\0') {
    return;
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(st.first_fail, sizeof st.first_fail, fmt, ap);
  va_end(ap);
}

/* ------------------------------------------------------------- TLS */

static SSL_CTX *tls_ctx;

static void tls_init(void) {
  tls_ctx = SSL_CTX_new(TLS_client_method());
  if (tls_ctx == NULL) {
    die("SSL_CTX_new failed");
  }
  SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL);
  /* Partial writes report progress as send() does; a retry after
     WANT_WRITE may pass the same bytes from a buffer that moved. */
  SSL_CTX_set_mode(tls_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                              SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_session_cache_mode(tls_ctx, SSL_SESS_CACHE_OFF);
}

static SSL *tls_new(int fd) {
  SSL *ssl = SSL_new(tls_ctx);
  if (ssl == NULL || SSL_set_fd(ssl, fd) != 1) {
    die("SSL_new failed");
  }
  SSL_set_connect_state(ssl);
  return ssl;
}

/* send(2) or SSL_write: -1 with errno EAGAIN when it would block. */
static ssize_t io_send(SSL *ssl, int fd, const void *p, size_t n) {
  if (ssl == NULL) {
    return send(fd, p, n, MSG_NOSIGNAL);
  }
  ERR_clear_error();
  int r = SSL_write(ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);
  if (r > 0) {
    return r;
  }
  int e = SSL_get_error(ssl, r);
  errno =
    e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ ? EAGAIN : EPIPE;
  return -1;
}

/* recv(2) or SSL_read: 0 at EOF, -1 with errno EAGAIN when it would
   block. */
static ssize_t io_recv(SSL *ssl, int fd, void *p, size_t n) {
  if (ssl == NULL) {
    return recv(fd, p, n, 0);
  }
  ERR_clear_error();
  int r = SSL_read(ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);
  if (r > 0) {
    return r;
  }
  int e = SSL_get_error(ssl, r);
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
    errno = EAGAIN;
    return -1;
  }
  if (e == SSL_ERROR_ZERO_RETURN || (e == SSL_ERROR_SYSCALL && r == 0)) {
    return 0;
  }
  errno = EPROTO;
  return -1;
}

static void ep_ctl(int op, int fd, uint32_t events, uint64_t data) {
  struct epoll_event ev;
  memset(&ev, 0, sizeof ev);
  ev.events = events;
  ev.data.u64 = data;
  if (epoll_ctl(epfd, op, fd, &ev) < 0) {
    die("epoll_ctl: %s", strerror(errno));
  }
}

static void ws_kill(wsconn *c, uint32_t idx) {
  (void)idx;
  if (c->state == WS_DEAD) {
    return;
  }
  if (c->state == WS_READY) {
    st.closed_ready++;
    st.ready--;
  } else {
    st.pending--;
    st.failed++;
  }
  c->state = WS_DEAD;
  if (c->ssl != NULL) {
    SSL_free(c->ssl);
    c->ssl = NULL;
  }
  close(c->fd); /* also removes it from the epoll set */
  c->fd = -1;
  free(c->rbuf);
  c->rbuf = NULL;
  c->rlen = c->rcap = 0;
  free(c->wbuf);
  c->wbuf = NULL;
  c->wlen = c->woff = 0;
}

static void ws_update_events(wsconn *c, uint32_t idx) {
  int want = c->wlen > c->woff;
  if (want != c->want_out) {
    c->want_out = (uint8_t)want;
    ep_ctl(EPOLL_CTL_MOD, c->fd, EPOLLIN | (want ? EPOLLOUT : 0), idx);
  }
}

static int ws_flush(wsconn *c) {
  while (c->woff < c->wlen) {
    ssize_t n = io_send(c->ssl, c->fd, c->wbuf + c->woff, c->wlen - c->woff);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) {
        return 0;
      }
      return -1;
    }
    c->woff += (uint32_t)n;
  }
  free(c->wbuf);
  c->wbuf = NULL;
  c->wlen = c->woff = 0;
  return 0;
}

static int ws_send(wsconn *c, uint32_t idx, const uint8_t *data, size_t len) {
  if (c->wlen == c->woff) {
    ssize_t n = io_send(c->ssl, c->fd, data, len);
    if (n < 0) {
      if (errno != EAGAIN && errno != EINTR) {
        return -1;
      }
      n = 0;
    }
    data += n;
    len -= (size_t)n;
    if (len == 0) {
      return 0;
    }
  }
  c->wbuf = xrealloc(c->wbuf, c->wlen + len);
  memcpy(c->wbuf + c->wlen, data, len);
  c->wlen += (uint32_t)len;
  ws_update_events(c, idx);
  return 0;
}

/* A masked client frame (RFC 6455 5.3). */
static int ws_send_frame(wsconn *c, uint32_t idx, int opcode,
                         const uint8_t *payload, size_t len) {
  uint8_t frame[256 + 14];
  size_t h = 0;
  if (len > 256) {
    return -1;
  }
  frame[h++] = (uint8_t)(0x80 | opcode);
  if (len < 126) {
    frame[h++] = (uint8_t)(0x80 | len);
  } else {
    frame[h++] = 0x80 | 126;
    frame[h++] = (uint8_t)(len >> 8);
    frame[h++] = (uint8_t)len;
  }
  uint32_t mask = (uint32_t)rng_next();
  uint8_t mk[4] = {(uint8_t)(mask >> 24), (uint8_t)(mask >> 16),
                   (uint8_t)(mask >> 8), (uint8_t)mask};
  memcpy(frame + h, mk, 4);
  h += 4;
  for (size_t i = 0; i < len; i++) {
    frame[h + i] = payload[i] ^ mk[i & 3];
  }
  return ws_send(c, idx, frame, h + len);
}

static void chan_name(char *out, size_t cap, uint32_t chan) {
  snprintf(out, cap, "%s%" PRIu32, opt.chan_prefix, chan);
}

static void ws_open(uint32_t idx) {
  wsconn *c = &ws[idx];
  const struct sockaddr_in *dst = &opt.servers[c->server];
  st.opened++;
  st.pending++;
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd < 0) {
    st.connect_fail++;
    if (!st.first_errno) {
      st.first_errno = errno;
    }
    note_fail("socket: %s", strerror(errno));
    c->state = WS_DEAD;
    st.pending--;
    st.failed++;
    return;
  }
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  uint32_t src_n = idx / opt.per_src;
  if (src_n > 0) {
    struct sockaddr_in src;
    memset(&src, 0, sizeof src);
    src.sin_family = AF_INET;
    src.sin_addr.s_addr = htonl(INADDR_LOOPBACK + src_n);
    setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(c->fd, (struct sockaddr *)&src, sizeof src) < 0) {
      die("bind 127.0.0.%u: %s", 1 + src_n, strerror(errno));
    }
  }
  c->state = WS_CONNECTING;
  c->want_out = 1;
  ep_ctl(EPOLL_CTL_ADD, c->fd, EPOLLOUT, idx);
  if (connect(c->fd, (const struct sockaddr *)dst, sizeof *dst) < 0 &&
      errno != EINPROGRESS) {
    st.connect_fail++;
    if (!st.first_errno) {
      st.first_errno = errno;
    }
    note_fail("connect: %s", strerror(errno));
    ws_kill(c, idx);
  }
}

static void ws_start_handshake(wsconn *c, uint32_t idx) {
  uint8_t key[16];
  char key64[32];
  char req[LG_HANDSHAKE_MAX];
  random_bytes(key, sizeof key);
  EVP_EncodeBlock((unsigned char *)key64, key, sizeof key);
  /* The accept value is base64(SHA-1(key + GUID)), RFC 6455 4.2.2. */
  char cat[128];
  int n =
    snprintf(cat, sizeof cat, "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key64);
  uint8_t sha[SHA_DIGEST_LENGTH];
  SHA1((const unsigned char *)cat, (size_t)n, sha);
  EVP_EncodeBlock((unsigned char *)c->accept, sha, sizeof sha);
  n = snprintf(req, sizeof req,
               "GET /ws%s%s HTTP/1.1\r\n"
               "Host: %s:%u\r\n"
               "Upgrade: websocket\r\n"
               "Connection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n",
               opt.token ? "?token=" : "", opt.token ? opt.token : "",
               inet_ntoa(opt.servers[c->server].sin_addr),
               ntohs(opt.servers[c->server].sin_port), key64);
  c->state = WS_HANDSHAKE;
  c->want_out = 0;
  ep_ctl(EPOLL_CTL_MOD, c->fd, EPOLLIN, idx);
  if (ws_send(c, idx, (const uint8_t *)req, (size_t)n) < 0) {
    note_fail("send handshake: %s", strerror(errno));
    ws_kill(c, idx);
  }
}

/* Case-insensitive search for a header and its value in [p, end). */
static const char *find_header(const char *p, const char *end, const char *name,
                               size_t *vlen) {
  size_t nl = strlen(name);
  while (p < end) {
    const char *eol = memmem(p, (size_t)(end - p), "\r\n", 2);
    if (eol == NULL) {
      eol = end;
    }
    if ((size_t)(eol - p) > nl && p[nl] == ':' &&
        strncasecmp(p, name, nl) == 0) {
      const char *v = p + nl + 1;
      while (v < eol && (*v == ' ' || *v == '\t')) {
        v++;
      }
      const char *ve = eol;
      while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) {
        ve--;
      }
      *vlen = (size_t)(ve - v);
      return v;
    }
    p = eol + 2;
  }
  return NULL;
}

/*
 * Finds the JSON member name |key| (with its quotes, e.g. "\"g\"") in
 * [p, end) and returns where its value starts (after the colon and any
 * blanks), or NULL.  memchr for the quote and a short compare: glibc's
 * memmem builds a shift table on every call, which cost more than half of
 * the load generator's time.  Our data objects are flat and the
 * envelope's member names differ from ours, so a plain search is exact.
 */
static const uint8_t *json_find(const uint8_t *p, const uint8_t *end,
                                const char *key, size_t keylen) {
  while (p < end) {
    const uint8_t *q = memchr(p, '"', (size_t)(end - p));
    if (q == NULL || (size_t)(end - q) < keylen + 1) {
      return NULL;
    }
    /* The first letter rules out nearly every quote cheaply. */
    if (q[1] == (uint8_t)key[1] && memcmp(q, key, keylen) == 0) {
      const uint8_t *v = q + keylen;
      while (v < end && (*v == ' ' || *v == '\t')) {
        v++;
      }
      if (v < end && *v == ':') {
        v++;
        while (v < end && (*v == ' ' || *v == '\t')) {
          v++;
        }
        return v;
      }
    }
    p = q + 1;
  }
  return NULL;
}

/* The unsigned integer value of member |key| at or after *from; on
   success *from moves past it, so that members in the order we wrote them
   are found in one pass. */
static int json_u64(const uint8_t **from, const uint8_t *end, const char *key,
                    uint64_t *out) {
  const uint8_t *v = json_find(*from, end, key, strlen(key));
  if (v == NULL || v >= end || *v < '0' || *v > '9') {
    return -1;
  }
  uint64_t x = 0;
  while (v < end && *v >= '0' && *v <= '9') {
    x = x * 10 + (uint64_t)(*v - '0');
    v++;
  }
  *out = x;
  *from = v;
  return 0;
}

/* The value of the envelope's "type" member, or NULL. */
static const uint8_t *json_type(const uint8_t *p, size_t n, size_t *tlen) {
  const uint8_t *end = p + n, *v;
  if (n > 9 && memcmp(p, "{\"type\":\"", 9) == 0) {
    v = p + 9; /* wshub's compact envelope */
  } else {
    v = json_find(p, end, "\"type\"", 6);
    if (v == NULL || v >= end || *v != '"') {
      return NULL;
    }
    v++;
  }
  const uint8_t *q = memchr(v, '"', (size_t)(end - v));
  if (q == NULL) {
    return NULL;
  }
  *tlen = (size_t)(q - v);
  return v;
}

static void on_delivery(wsconn *c, uint32_t idx, const uint8_t *p, size_t n,
                        uint64_t now) {
  uint64_t g, pub, seq, t;
  const uint8_t *at = p, *end = p + n;
  /* In the order pub_append writes them; if a server reordered the
     members, search each from the start. */
  int ok = json_u64(&at, end, "\"g\"", &g) == 0 &&
           json_u64(&at, end, "\"p\"", &pub) == 0 &&
           json_u64(&at, end, "\"s\"", &seq) == 0 &&
           json_u64(&at, end, "\"t\"", &t) == 0;
  if (!ok) {
    const uint8_t *a = p, *b = p, *c2 = p, *d = p;
    ok = json_u64(&a, end, "\"g\"", &g) == 0 &&
         json_u64(&b, end, "\"p\"", &pub) == 0 &&
         json_u64(&c2, end, "\"s\"", &seq) == 0 &&
         json_u64(&d, end, "\"t\"", &t) == 0;
  }
  if (!ok || g >= opt.msgs || pub >= opt.pub_conns || !in_publish) {
    st.bad_msg++;
    return;
  }
  {
    /* wshub writes "offset" before "data": search the envelope only. */
    const uint8_t *d = json_find(p, end, "\"data\"", 6), *o = p;
    uint64_t off;
    if (d != NULL && json_u64(&o, d, "\"offset\"", &off) == 0) {
      if (c->last_off != 0 && off != c->last_off + 1) {
        st.off_gap++;
      }
      c->last_off = off;
    }
  }
  st.deliveries++;
  c->delivered++;
  st.last_delivery_ns = now;
  if (g % opt.channels != c->chan) {
    st.misrouted++;
  } else if (remaining[g] == 0) {
    st.dup++;
  } else if (--remaining[g] == 0) {
    st.fully_delivered++;
    if (!abandoned[g]) {
      st.outstanding--;
    }
  }
  int32_t *last = &last_seq[(size_t)idx * opt.pub_conns + pub];
  if ((int64_t)seq <= (int64_t)*last) {
    st.ooo++;
  } else {
    *last = (int32_t)seq;
  }
  hist_add(now >= t ? now - t : 0);
}

static void on_text(wsconn *c, uint32_t idx, const uint8_t *p, size_t n,
                    uint64_t now) {
  size_t tl;
  const uint8_t *t = json_type(p, n, &tl);
  if (t != NULL && tl == 7 && memcmp(t, "message", 7) == 0) {
    on_delivery(c, idx, p, n, now);
  } else if (t != NULL && tl == 10 && memcmp(t, "subscribed", 10) == 0) {
    const uint8_t *end = p + n, *o = p;
    const uint8_t *e = json_find(p, end, "\"epoch\"", 7);
    uint64_t off;
    if (c->epoch[0] != '\0') {
      /* A resubscribe with since. */
      if (memmem(p, n, "\"recovered\":true", 16) != NULL) {
        st.recovered++;
      } else {
        st.not_recovered++; /* what it missed is lost: count from here */
        if (json_u64(&o, end, "\"offset\"", &off) == 0) {
          c->last_off = off;
        }
      }
    } else if (json_u64(&o, end, "\"offset\"", &off) == 0) {
      c->last_off = off;
    }
    if (e != NULL && e < end && *e == '"') {
      const uint8_t *q = memchr(e + 1, '"', (size_t)(end - e - 1));
      if (q != NULL && (size_t)(q - e - 1) < sizeof c->epoch) {
        memcpy(c->epoch, e + 1, (size_t)(q - e - 1));
        c->epoch[q - e - 1] = '\0';
      }
    }
    if (c->state == WS_SUBSCRIBING) {
      c->state = WS_READY;
      st.pending--;
      st.ready++;
    }
  } else if (t != NULL && tl == 3 && memcmp(t, "gap", 3) == 0) {
    st.gap_rx++;
  } else if (t != NULL && tl == 5 && memcmp(t, "error", 5) == 0) {
    st.errors_rx++;
    if (st.first_err_rx[0] == '\0') {
      snprintf(st.first_err_rx, sizeof st.first_err_rx, "%.*s",
               (int)(n < 150 ? n : 150), (const char *)p);
    }
  } else {
    st.other_rx++;
  }
}

static void note_close_code(uint16_t code) {
  for (int i = 0; i < 8; i++) {
    if (st.close_codes[i] == 0 || st.close_code_val[i] == code) {
      st.close_code_val[i] = code;
      st.close_codes[i]++;
      return;
    }
  }
}

/*
 * Parses every complete server frame in [p, p+n) and returns the bytes
 * consumed, or -1 after killing the connection.
 */
static ssize_t ws_parse(wsconn *c, uint32_t idx, const uint8_t *p, size_t n,
                        uint64_t now) {
  size_t off = 0;
  while (n - off >= 2) {
    const uint8_t *f = p + off;
    size_t avail = n - off;
    int fin = f[0] & 0x80, opcode = f[0] & 0x0f;
    uint64_t len = f[1] & 0x7f;
    size_t h = 2;
    if (f[1] & 0x80) {
      st.proto_err++;
      note_fail("server sent a masked frame");
      ws_kill(c, idx);
      return -1;
    }
    if (len == 126) {
      if (avail < 4) {
        break;
      }
      len = ((uint64_t)f[2] << 8) | f[3];
      h = 4;
    } else if (len == 127) {
      if (avail < 10) {
        break;
      }
      len = 0;
      for (int i = 0; i < 8; i++) {
        len = (len << 8) | f[2 + i];
      }
      h = 10;
    }
    if (len > (1u << 24)) {
      st.proto_err++;
      note_fail("frame of %" PRIu64 " bytes", len);
      ws_kill(c, idx);
      return -1;
    }
    if (avail < h + len) {
      break;
    }
    const uint8_t *pl = f + h;
    if (!fin || opcode == 0) {
      /* wshub's messages are small; it never fragments them. */
      st.proto_err++;
      note_fail("fragmented frame (opcode %d)", opcode);
      ws_kill(c, idx);
      return -1;
    }
    if (opcode == 1) {
      on_text(c, idx, pl, (size_t)len, now);
    } else if (opcode == 9) {
      st.pings++;
      if (ws_send_frame(c, idx, 10, pl, (size_t)len) < 0) {
        ws_kill(c, idx);
        return -1;
      }
    } else if (opcode == 8) {
      uint16_t code = len >= 2 ? (uint16_t)((pl[0] << 8) | pl[1]) : 1005;
      note_close_code(code);
      note_fail("server closed with %u: %.*s", code,
                (int)(len > 2 ? len - 2 : 0), (const char *)pl + 2);
      ws_kill(c, idx);
      return -1;
    } else if (opcode != 10) {
      st.proto_err++;
      note_fail("unexpected opcode %d", opcode);
      ws_kill(c, idx);
      return -1;
    }
    off += h + (size_t)len;
  }
  return (ssize_t)off;
}

/* Keeps the |n| unparsed bytes at |p| (in gbuf or in c->rbuf itself). */
static void ws_keep(wsconn *c, const uint8_t *p, size_t n) {
  if (n == 0) {
    free(c->rbuf);
    c->rbuf = NULL;
    c->rlen = c->rcap = 0;
    return;
  }
  if (c->rbuf != NULL && p >= c->rbuf && p < c->rbuf + c->rcap) {
    memmove(c->rbuf, p, n);
  } else {
    if (c->rcap < n) {
      c->rbuf = xrealloc(c->rbuf, n);
      c->rcap = (uint32_t)n;
    }
    memcpy(c->rbuf, p, n);
  }
  c->rlen = (uint32_t)n;
}

static void ws_handshake_input(wsconn *c, uint32_t idx, uint64_t now) {
  const char *b = (const char *)c->rbuf;
  const char *end = memmem(b, c->rlen, "\r\n\r\n", 4);
  if (end == NULL) {
    if (c->rlen > LG_HANDSHAKE_MAX) {
      st.http_fail++;
      note_fail("handshake response too long");
      ws_kill(c, idx);
    }
    return;
  }
  size_t vlen;
  int status = 0;
  if (c->rlen >= 12 && strncmp(b, "HTTP/1.1 ", 9) == 0) {
    status = atoi(b + 9);
  }
  const char *v = find_header(b, end + 2, "Sec-WebSocket-Accept", &vlen);
  if (status != 101 || v == NULL || vlen != strlen(c->accept) ||
      memcmp(v, c->accept, vlen) != 0) {
    st.http_fail++;
    note_fail("handshake failed: status %d, accept %s", status,
              v ? "wrong" : "missing");
    ws_kill(c, idx);
    return;
  }
  size_t hdr = (size_t)(end + 4 - b);
  char chan[160], msg[256];
  chan_name(chan, sizeof chan, c->chan);
  int n = c->epoch[0] != '\0'
            ? snprintf(msg, sizeof msg,
                       "{\"type\":\"subscribe\",\"channel\":\"%s\","
                       "\"since\":{\"offset\":%" PRIu64 ",\"epoch\":\"%s\"}}",
                       chan, c->last_off, c->epoch)
            : snprintf(msg, sizeof msg,
                       "{\"type\":\"subscribe\",\"channel\":\"%s\"}", chan);
  c->state = WS_SUBSCRIBING;
  if (ws_send_frame(c, idx, 1, (const uint8_t *)msg, (size_t)n) < 0) {
    note_fail("send subscribe: %s", strerror(errno));
    ws_kill(c, idx);
    return;
  }
  /* Frames may follow the response in the same read. */
  size_t rest = c->rlen - hdr;
  if (rest > 0) {
    ssize_t used = ws_parse(c, idx, c->rbuf + hdr, rest, now);
    if (used < 0) {
      return;
    }
    ws_keep(c, c->rbuf + hdr + used, rest - (size_t)used);
  } else {
    ws_keep(c, NULL, 0);
  }
}

static void ws_readable(wsconn *c, uint32_t idx, uint64_t now) {
  ssize_t n = io_recv(c->ssl, c->fd, gbuf, LG_RBUF_SIZE);
  if (n < 0) {
    if (errno == EAGAIN || errno == EINTR) {
      return;
    }
    note_fail("recv: %s", strerror(errno));
    ws_kill(c, idx);
    return;
  }
  if (n == 0) {
    note_fail("server closed the connection without a close frame");
    ws_kill(c, idx);
    return;
  }
  if (c->state == WS_HANDSHAKE) {
    c->rbuf = xrealloc(c->rbuf, c->rlen + (size_t)n);
    memcpy(c->rbuf + c->rlen, gbuf, (size_t)n);
    c->rlen += (uint32_t)n;
    c->rcap = c->rlen;
    ws_handshake_input(c, idx, now);
    return;
  }
  const uint8_t *p = gbuf;
  size_t len = (size_t)n;
  if (c->rlen > 0) {
    /* A frame straddles reads: join the pieces. */
    if (c->rcap < c->rlen + (size_t)n) {
      c->rbuf = xrealloc(c->rbuf, c->rlen + (size_t)n);
      c->rcap = c->rlen + (uint32_t)n;
    }
    memcpy(c->rbuf + c->rlen, gbuf, (size_t)n);
    p = c->rbuf;
    len = c->rlen + (size_t)n;
  }
  ssize_t used = ws_parse(c, idx, p, len, now);
  if (used < 0) {
    return;
  }
  ws_keep(c, p + used, len - (size_t)used);
}

static void ws_event(uint32_t idx, uint32_t events, uint64_t now) {
  wsconn *c = &ws[idx];
  if (c->state == WS_DEAD) {
    return;
  }
  if (c->state == WS_CONNECTING) {
    int err = 0;
    socklen_t el = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
    if (err != 0) {
      st.connect_fail++;
      if (!st.first_errno) {
        st.first_errno = err;
      }
      note_fail("connect: %s", strerror(err));
      ws_kill(c, idx);
      return;
    }
    if (!opt.tls) {
      ws_start_handshake(c, idx);
      return;
    }
    c->ssl = tls_new(c->fd);
    c->state = WS_TLS;
  }
  if (c->state == WS_TLS) {
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
      ws_start_handshake(c, idx);
      return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      uint32_t want = e == SSL_ERROR_WANT_READ ? EPOLLIN : EPOLLOUT;
      c->want_out = e == SSL_ERROR_WANT_WRITE;
      ep_ctl(EPOLL_CTL_MOD, c->fd, want, idx);
      return;
    }
    st.connect_fail++;
    note_fail("TLS handshake failed");
    ws_kill(c, idx);
    return;
  }
  if (events & EPOLLOUT) {
    if (ws_flush(c) < 0) {
      note_fail("send: %s", strerror(errno));
      ws_kill(c, idx);
      return;
    }
    ws_update_events(c, idx);
  }
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
    ws_readable(c, idx, now);
  }
}

/* ---------------------------------------------------------- publishers */

static void pub_dead(pubconn *pc, const char *why) {
  if (pc->dead) {
    return;
  }
  pc->dead = 1;
  if (st.first_pub_err[0] == '\0') {
    snprintf(st.first_pub_err, sizeof st.first_pub_err, "publisher: %s", why);
  }
  /* Requests in flight on it are lost as publishes, not as deliveries. */
  while (pc->count > 0) {
    uint32_t g = pc->inflight[pc->head];
    pc->head = (pc->head + 1) % opt.window;
    pc->count--;
    st.pub_err++;
    if (remaining[g] > 0) {
      st.expected -= remaining[g];
      remaining[g] = 0;
      if (!abandoned[g]) {
        st.outstanding--;
      }
    }
  }
  if (pc->ssl != NULL) {
    SSL_free(pc->ssl);
    pc->ssl = NULL;
  }
  close(pc->fd);
  pc->fd = -1;
}

static void pub_update_events(pubconn *pc, uint32_t i) {
  int want = pc->wlen > pc->woff;
  if (want != pc->want_out) {
    pc->want_out = (uint8_t)want;
    ep_ctl(EPOLL_CTL_MOD, pc->fd, EPOLLIN | (want ? EPOLLOUT : 0),
           LG_PUB_TAG | i);
  }
}

static void pub_flush(pubconn *pc, uint32_t i) {
  while (pc->woff < pc->wlen) {
    ssize_t n =
      io_send(pc->ssl, pc->fd, pc->wbuf + pc->woff, pc->wlen - pc->woff);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) {
        break;
      }
      pub_dead(pc, strerror(errno));
      return;
    }
    pc->woff += (size_t)n;
  }
  if (pc->woff == pc->wlen) {
    pc->woff = pc->wlen = 0;
  }
  pub_update_events(pc, i);
}

static void pub_connect(uint32_t i) {
  pubconn *pc = &pubs[i];
  pc->server = (uint16_t)(i % (uint32_t)opt.nservers);
  pc->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (pc->fd < 0) {
    die("socket: %s", strerror(errno));
  }
  if (connect(pc->fd, (const struct sockaddr *)&opt.servers[pc->server],
              sizeof opt.servers[0]) < 0) {
    die("publisher connect: %s", strerror(errno));
  }
  int one = 1;
  setsockopt(pc->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (opt.tls) {
    pc->ssl = tls_new(pc->fd);
    if (SSL_connect(pc->ssl) != 1) { /* blocking, before O_NONBLOCK */
      die("publisher TLS handshake failed");
    }
  }
  int fl = fcntl(pc->fd, F_GETFL);
  fcntl(pc->fd, F_SETFL, fl | O_NONBLOCK);
  pc->inflight = xcalloc(opt.window, sizeof *pc->inflight);
  pc->wcap = 4096;
  pc->wbuf = xmalloc(pc->wcap);
  pc->rcap = 4096;
  pc->rbuf = xmalloc(pc->rcap);
  ep_ctl(EPOLL_CTL_ADD, pc->fd, EPOLLIN, LG_PUB_TAG | i);
}

/* Appends the POST for message |g| to publisher |i|'s output. */
static void pub_append(pubconn *pc, uint32_t i, uint32_t g, uint64_t now) {
  char chan[160], data[4096], req[8192];
  chan_name(chan, sizeof chan, g % opt.channels);
  int dl = snprintf(data, sizeof data,
                    "{\"g\":%" PRIu32 ",\"p\":%" PRIu32 ",\"s\":%" PRIu32
                    ",\"t\":%" PRIu64,
                    g, i, pc->seq, now);
  /* Pad with "x" to exactly opt.size bytes when there is room. */
  int pad = (int)opt.size - dl - 8; /* ,"x":"" and } */
  if (pad >= 0) {
    memcpy(data + dl, ",\"x\":\"", 6);
    dl += 6;
    memset(data + dl, 'x', (size_t)pad);
    dl += pad;
    memcpy(data + dl, "\"}", 3);
    dl += 2;
  } else {
    data[dl++] = '}';
    data[dl] = '\0';
  }
  char body[4400];
  int bl =
    snprintf(body, sizeof body, "{\"channel\":\"%s\",\"data\":%s}", chan, data);
  int rl = snprintf(req, sizeof req,
                    "POST /publish HTTP/1.1\r\n"
                    "Host: 127.0.0.1\r\n"
                    "Content-Type: application/json\r\n"
                    "Content-Length: %d\r\n\r\n%s",
                    bl, body);
  if (pc->wlen + (size_t)rl > pc->wcap) {
    pc->wcap = (pc->wlen + (size_t)rl) * 2;
    pc->wbuf = xrealloc(pc->wbuf, pc->wcap);
  }
  memcpy(pc->wbuf + pc->wlen, req, (size_t)rl);
  pc->wlen += (size_t)rl;
  pc->inflight[(pc->head + pc->count) % opt.window] = g;
  pc->count++;
  pc->seq++;
  (void)i;
}

static void pub_readable(pubconn *pc, uint32_t i) {
  if (pc->rlen == pc->rcap) {
    pc->rcap *= 2;
    pc->rbuf = xrealloc(pc->rbuf, pc->rcap);
  }
  ssize_t n =
    io_recv(pc->ssl, pc->fd, pc->rbuf + pc->rlen, pc->rcap - pc->rlen);
  if (n < 0) {
    if (errno != EAGAIN && errno != EINTR) {
      pub_dead(pc, strerror(errno));
    }
    return;
  }
  if (n == 0) {
    pub_dead(pc, "server closed the publish connection");
    return;
  }
  pc->rlen += (size_t)n;
  for (;;) {
    const char *b = (const char *)pc->rbuf;
    const char *end = memmem(b, pc->rlen, "\r\n\r\n", 4);
    if (end == NULL) {
      return;
    }
    size_t hdr = (size_t)(end + 4 - b);
    size_t vlen;
    const char *v = find_header(b, end + 2, "Content-Length", &vlen);
    if (v == NULL) {
      pub_dead(pc, "response without Content-Length");
      return;
    }
    size_t clen = strtoul(v, NULL, 10);
    if (pc->rlen < hdr + clen) {
      return;
    }
    int status = strncmp(b, "HTTP/1.", 7) == 0 ? atoi(b + 9) : 0;
    if (pc->count == 0) {
      pub_dead(pc, "response without a request");
      return;
    }
    uint32_t g = pc->inflight[pc->head];
    pc->head = (pc->head + 1) % opt.window;
    pc->count--;
    if (status == 200) {
      st.pub_ok++;
    } else {
      st.pub_err++;
      if (st.first_pub_err[0] == '\0') {
        snprintf(st.first_pub_err, sizeof st.first_pub_err,
                 "publish answered %d: %.*s", status,
                 (int)(clen < 120 ? clen : 120), b + hdr);
      }
      /* A refused publish is a publish error; its deliveries are not
         expected (some may have arrived if the server delivered and
         still answered an error: those count as duplicates). */
      if (remaining[g] > 0) {
        st.expected -= remaining[g];
        remaining[g] = 0;
        if (!abandoned[g]) {
          st.outstanding--;
        }
      }
    }
    memmove(pc->rbuf, pc->rbuf + hdr + clen, pc->rlen - hdr - clen);
    pc->rlen -= hdr + clen;
    (void)i;
  }
}

static void pub_event(uint32_t i, uint32_t events) {
  pubconn *pc = &pubs[i];
  if (pc->dead) {
    return;
  }
  if (events & EPOLLOUT) {
    pub_flush(pc, i);
    if (pc->dead) {
      return;
    }
  }
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
    pub_readable(pc, i);
  }
}

/*
 * A message still not delivered to every subscriber --give-up-ms after it
 * was published stops counting against --max-outstanding (its missing
 * deliveries will count as lost unless they still arrive), so losses
 * cannot stall the publish phase.
 */
static void expire_outstanding(uint64_t now, uint64_t give_up_ns) {
  while (oldest < st.published) {
    uint32_t g = oldest;
    if (remaining[g] > 0 && !abandoned[g]) {
      if (now - sent_ns[g] < give_up_ns) {
        return;
      }
      abandoned[g] = 1;
      st.outstanding--;
    }
    oldest++;
  }
}

/* The storm: every subscriber connection closed at once (not counted as
   a failure or a close), then opened again from the publish loop. */
static void storm_start(uint64_t now) {
  for (uint32_t i = 0; i < opt.conns; i++) {
    wsconn *c = &ws[i];
    if (c->state != WS_READY) {
      continue;
    }
    st.ready--;
    c->state = WS_DEAD;
    if (c->ssl != NULL) {
      SSL_free(c->ssl);
      c->ssl = NULL;
    }
    close(c->fd);
    c->fd = -1;
    free(c->rbuf);
    c->rbuf = NULL;
    c->rlen = c->rcap = 0;
    free(c->wbuf);
    c->wbuf = NULL;
    c->wlen = c->woff = 0;
  }
  st.storm = 1;
  st.storm_t0 = now;
  st.storm_next = 0;
}

static void storm_step(uint64_t now, uint32_t ready_want) {
  if (st.storm != 1) {
    return;
  }
  while (st.storm_next < opt.conns && st.pending < opt.concurrency) {
    if (ws[st.storm_next].epoch[0] != '\0') {
      ws_open(st.storm_next);
    }
    st.storm_next++;
  }
  if (st.storm_resub_ns == 0 && st.ready >= ready_want) {
    st.storm_resub_ns = now - st.storm_t0;
  }
  if (st.storm_resub_ns != 0 && st.outstanding == 0) {
    st.storm_live_ns = now - st.storm_t0;
    st.storm = 2;
  }
}

/* Every live publisher has its answers (or is dead). */
static int pubs_idle(void) {
  for (uint32_t k = 0; k < opt.pub_conns; k++) {
    if (!pubs[k].dead && pubs[k].count > 0) {
      return 0;
    }
  }
  return 1;
}

/* ---------------------------------------------------------- the loop */

static void loop_once(int timeout_ms) {
  struct epoll_event evs[1024];
  int n;
  if (opt.busy_poll && timeout_ms > 0) {
    /* Spin instead of sleeping, so that no delivery has to wake us: this
       separates the server's fan-out time from the wake-up cost a client
       on the same host adds (bounded by timeout_ms like the sleep). */
    uint64_t until = now_ns() + (uint64_t)timeout_ms * 1000000u;
    do {
      n = epoll_wait(epfd, evs, 1024, 0);
    } while (n == 0 && now_ns() < until);
  } else {
    n = epoll_wait(epfd, evs, 1024, timeout_ms);
  }
  if (n < 0) {
    if (errno == EINTR) {
      return;
    }
    die("epoll_wait: %s", strerror(errno));
  }
  uint64_t now = now_ns();
  for (int i = 0; i < n; i++) {
    uint64_t d = evs[i].data.u64;
    if (d & LG_PUB_TAG) {
      pub_event((uint32_t)(d & ~LG_PUB_TAG), evs[i].events);
    } else {
      ws_event((uint32_t)d, evs[i].events, now);
    }
  }
}

/* ----------------------------------------------------------- redis check */

static void redis_check(char *out, size_t cap) {
  redisContext *rc = redisConnect(opt.redis_host, opt.redis_port);
  if (rc == NULL || rc->err) {
    die("redis connect %s:%d: %s", opt.redis_host, opt.redis_port,
        rc ? rc->errstr : "no memory");
  }
  /* PUBSUB NUMSUB over every channel the subscribers use. */
  uint64_t numsub_total = 0, numsub_max = 0;
  size_t argc = 2 + opt.channels;
  const char **argv = xcalloc(argc, sizeof *argv);
  char **names = xcalloc(opt.channels, sizeof *names);
  argv[0] = "PUBSUB";
  argv[1] = "NUMSUB";
  for (uint32_t c = 0; c < opt.channels; c++) {
    char chan[160];
    chan_name(chan, sizeof chan, c);
    size_t l = strlen(opt.redis_prefix) + 5 + strlen(chan) + 1;
    names[c] = xmalloc(l);
    snprintf(names[c], l, "%schan:%s", opt.redis_prefix, chan);
    argv[2 + c] = names[c];
  }
  redisReply *r = redisCommandArgv(rc, (int)argc, argv, NULL);
  if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
    die("PUBSUB NUMSUB failed");
  }
  for (size_t i = 1; i < r->elements; i += 2) {
    uint64_t v = (uint64_t)r->element[i]->integer;
    numsub_total += v;
    if (v > numsub_max) {
      numsub_max = v;
    }
  }
  freeReplyObject(r);
  for (uint32_t c = 0; c < opt.channels; c++) {
    free(names[c]);
  }
  free(names);
  free(argv);
  /* CLIENT LIST: connections holding channel or pattern subscriptions. */
  r = redisCommand(rc, "CLIENT LIST");
  if (r == NULL || r->type != REDIS_REPLY_STRING) {
    die("CLIENT LIST failed");
  }
  unsigned sub_clients = 0, psub_total = 0;
  char subs_list[256] = "";
  size_t sl = 0;
  char *line = r->str;
  while (line && *line) {
    char *eol = strchr(line, '\n');
    if (eol) {
      *eol = '\0';
    }
    char *s = strstr(line, " sub=");
    char *ps = strstr(line, " psub=");
    long sub = s ? strtol(s + 5, NULL, 10) : 0;
    long psub = ps ? strtol(ps + 6, NULL, 10) : 0;
    psub_total += (unsigned)psub;
    if (sub > 0 || psub > 0) {
      sub_clients++;
      if (sl < sizeof subs_list - 16) {
        sl += (size_t)snprintf(subs_list + sl, sizeof subs_list - sl, "%s%ld",
                               sl ? "," : "", sub);
      }
    }
    line = eol ? eol + 1 : NULL;
  }
  freeReplyObject(r);
  redisFree(rc);
  snprintf(out, cap,
           "redis_numsub_total=%" PRIu64 " redis_numsub_max=%" PRIu64
           " redis_sub_clients=%u redis_psub=%u redis_subs_per_client=%s",
           numsub_total, numsub_max, sub_clients, psub_total,
           sl ? subs_list : "none");
}

/* ------------------------------------------------------------ metrics */

/*
 * The server's own counters of writev calls and frames written (GET
 * /metrics; these names are wshub's, not the contract's: absent counters
 * read as -1).  Summed over every server.  Blocking; only called outside
 * the measured loop work.
 */
static void scrape_metrics(int64_t *writevs, int64_t *frames) {
  *writevs = *frames = 0;
  for (int k = 0; k < opt.nservers; k++) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct timeval tv = {2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (fd < 0 || connect(fd, (const struct sockaddr *)&opt.servers[k],
                          sizeof opt.servers[k]) < 0) {
      if (fd >= 0) {
        close(fd);
      }
      *writevs = *frames = -1;
      return;
    }
    static const char req[] =
      "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    SSL *ssl = NULL;
    if (opt.tls) {
      ssl = tls_new(fd);
      if (SSL_connect(ssl) != 1) {
        SSL_free(ssl);
        close(fd);
        *writevs = *frames = -1;
        return;
      }
    }
    if (io_send(ssl, fd, req, sizeof req - 1) < 0) {
      SSL_free(ssl);
      close(fd);
      *writevs = *frames = -1;
      return;
    }
    size_t len = 0, cap = 65536;
    char *buf = xmalloc(cap + 1);
    for (;;) {
      if (len == cap) {
        cap *= 2;
        buf = xrealloc(buf, cap + 1);
      }
      ssize_t n = io_recv(ssl, fd, buf + len, cap - len);
      if (n <= 0) {
        break;
      }
      len += (size_t)n;
      /* Stop once the whole body is in, if the server keeps it open. */
      const char *he = memmem(buf, len, "\r\n\r\n", 4);
      size_t vl;
      const char *cl =
        he ? find_header(buf, he + 2, "Content-Length", &vl) : NULL;
      if (cl && len >= (size_t)(he + 4 - buf) + strtoul(cl, NULL, 10)) {
        break;
      }
    }
    SSL_free(ssl);
    close(fd);
    buf[len] = '\0';
    static const char wk[] = "\nwshub_writev_calls_total ";
    static const char fk[] = "\nwshub_frames_written_total ";
    const char *w = strstr(buf, wk);
    const char *f = strstr(buf, fk);
    if (w == NULL || f == NULL) {
      *writevs = *frames = -1;
    } else if (*writevs >= 0) {
      *writevs += strtoll(w + sizeof wk - 1, NULL, 10);
      *frames += strtoll(f + sizeof fk - 1, NULL, 10);
    }
    free(buf);
  }
}

/* ------------------------------------------------------------ main */

static void usage(void) {
  fprintf(stderr,
          "usage: wshub-loadgen --server HOST:PORT [--server ...] [options]\n"
          "  --conns N            subscriber connections (1000)\n"
          "  --channels C         channels; connection i subscribes\n"
          "                       (i / nservers) %% C (1)\n"
          "  --chan-prefix S      channel name prefix (bench)\n"
          "  --msgs M             messages to publish; message g goes to\n"
          "                       channel g %% C (0 = no publish phase)\n"
          "  --size B             bytes of each message's data JSON (64)\n"
          "  --pub-conns P        keep-alive POST /publish connections, "
          "spread\n"
          "                       over the servers (4)\n"
          "  --window W           requests in flight per publisher (1)\n"
          "  --max-outstanding O  messages published and not yet fully\n"
          "                       delivered (64)\n"
          "  --rate R             messages/s (0 = as fast as allowed)\n"
          "  --concurrency K      handshakes in progress at once (500)\n"
          "  --per-src N          connections per source address (10000)\n"
          "  --idle-ms T          pause after subscribing, before RSS (0)\n"
          "  --give-up-ms T       a message undelivered this long after "
          "its\n"
          "                       publish stops holding the window (3000)\n"
          "  --connect-timeout S  (60)   --publish-timeout S (60)\n"
          "  --busy-poll          poll epoll without sleeping (no wake-ups)\n"
          "  --tls                TLS on every connection (no verification)\n"
          "  --pid NAME=PID       measure CPU and RSS of PID (repeatable; "
          "same\n"
          "                       NAME sums)\n"
          "  --redis HOST:PORT    after subscribing, report PUBSUB NUMSUB "
          "and\n"
          "                       CLIENT LIST subscriber connections\n"
          "  --redis-prefix P     (ws:)\n"
          "  --label TEXT         copied to the start of the RESULT line\n"
          "  --token JWT          sent as ?token= on every upgrade\n"
          "  --storm-after K      once K messages reached everyone, close "
          "every\n"
          "                       subscriber and resubscribe with since\n");
  exit(2);
}

static void parse_hostport(const char *s, struct sockaddr_in *sa) {
  char host[64];
  const char *colon = strrchr(s, ':');
  if (colon == NULL || (size_t)(colon - s) >= sizeof host) {
    die("bad HOST:PORT '%s'", s);
  }
  memcpy(host, s, (size_t)(colon - s));
  host[colon - s] = '\0';
  memset(sa, 0, sizeof *sa);
  sa->sin_family = AF_INET;
  sa->sin_port = htons((uint16_t)atoi(colon + 1));
  if (inet_pton(AF_INET, host, &sa->sin_addr) != 1) {
    die("bad IPv4 address '%s' (loopback only)", host);
  }
  if ((ntohl(sa->sin_addr.s_addr) >> 24) != 127) {
    die("%s is not a loopback address", host);
  }
}

static void parse_args(int argc, char **argv) {
  opt.conns = 1000;
  opt.channels = 1;
  opt.chan_prefix = "bench";
  opt.size = 64;
  opt.pub_conns = 4;
  opt.window = 1;
  opt.max_outstanding = 64;
  opt.concurrency = 500;
  opt.per_src = 10000;
  opt.connect_timeout_s = 60;
  opt.give_up_ms = 3000;
  opt.publish_timeout_s = 60;
  opt.redis_prefix = "ws:";
  opt.label = "";
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (strcmp(a, name) == 0 && v != NULL && (i++, 1))
    if (ARG("--server")) {
      if (opt.nservers == LG_MAX_SERVERS) {
        die("too many servers");
      }
      parse_hostport(v, &opt.servers[opt.nservers++]);
    } else if (ARG("--conns")) {
      opt.conns = (uint32_t)strtoul(v, NULL, 10);
    } else if (ARG("--channels")) {
      opt.channels = (uint32_t)strtoul(v, NULL, 10);
    } else if (ARG("--chan-prefix")) {
      opt.chan_prefix = v;
    } else if (ARG("--msgs")) {
      opt.msgs = (uint32_t)strtoul(v, NULL, 10);
    } else if (ARG("--size")) {
      opt.size = (uint32_t)strtoul(v, NULL, 10);
    } else if (ARG("--pub-conns")) {
      opt.pub_conns = (uint32_t)strtoul(v, NULL, 10);
    } else if (ARG("--window")) {
      opt.window = (uint32_t)strtoul(v, NULL, 10);
    } else if (ARG("--max-outstanding")) {
      opt.max_outstanding = (uint32_t)strtoul(v, NULL, 10);
    } else if (ARG("--storm-after")) {
      opt.storm_after = (uint32_t)strtoul(v, NULL, 10);
    } else if (ARG("--rate")) {
      opt.rate = strtod(v, NULL);
    } else if (ARG("--concurrency")) {
      opt.concurrency = (uint32_t)strtoul(v, NULL, 10);
    } else if (ARG("--per-src")) {
      opt.per_src = (uint32_t)strtoul(v, NULL, 10);
    } else if (ARG("--idle-ms")) {
      opt.idle_ms = (uint32_t)strtoul(v, NULL, 10);
    } else if (strcmp(a, "--busy-poll") == 0) {
      opt.busy_poll = 1;
    } else if (strcmp(a, "--tls") == 0) {
      opt.tls = 1;
    } else if (ARG("--give-up-ms")) {
      opt.give_up_ms = (uint32_t)strtoul(v, NULL, 10);
    } else if (ARG("--connect-timeout")) {
      opt.connect_timeout_s = strtod(v, NULL);
    } else if (ARG("--publish-timeout")) {
      opt.publish_timeout_s = strtod(v, NULL);
    } else if (ARG("--pid")) {
      const char *eq = strchr(v, '=');
      if (eq == NULL || opt.npids == LG_MAX_PIDS ||
          (size_t)(eq - v) >= sizeof opt.pids[0].name) {
        die("bad --pid '%s' (NAME=PID)", v);
      }
      lg_pid *lp = &opt.pids[opt.npids++];
      memcpy(lp->name, v, (size_t)(eq - v));
      lp->pid = atoi(eq + 1);
    } else if (ARG("--redis")) {
      static struct sockaddr_in rsa;
      static char rhost[INET_ADDRSTRLEN];
      parse_hostport(v, &rsa);
      inet_ntop(AF_INET, &rsa.sin_addr, rhost, sizeof rhost);
      opt.redis_host = rhost;
      opt.redis_port = ntohs(rsa.sin_port);
    } else if (ARG("--redis-prefix")) {
      opt.redis_prefix = v;
    } else if (ARG("--label")) {
      opt.label = v;
    } else if (ARG("--token")) {
      opt.token = v;
    } else {
      usage();
    }
#undef ARG
  }
  if (opt.nservers == 0 || opt.channels == 0 || opt.conns == 0 ||
      opt.pub_conns == 0 || opt.pub_conns > LG_MAX_PUBS || opt.window == 0 ||
      opt.concurrency == 0 || opt.per_src == 0 || opt.max_outstanding == 0 ||
      opt.conns / opt.per_src > 250 || opt.size > 4000) {
    usage();
  }
}

static void raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  getrlimit(RLIMIT_NOFILE, &rl);
  uint64_t need = (uint64_t)opt.conns + opt.pub_conns + 16;
  if (rl.rlim_cur < need) {
    die("need %" PRIu64 " open files, RLIMIT_NOFILE allows %llu", need,
        (unsigned long long)rl.rlim_cur);
  }
}

/* Sums a per-pid figure over the pids that share |name|. */
static void group_sum(const char *name, uint64_t *ticks, uint64_t *run_ns,
                      int64_t *rss_kb) {
  *ticks = *run_ns = 0;
  *rss_kb = 0;
  for (int i = 0; i < opt.npids; i++) {
    lg_pid *lp = &opt.pids[i];
    if (strcmp(lp->name, name) == 0) {
      *ticks += lp->ticks1 - lp->ticks0;
      *run_ns += lp->run1_ns - lp->run0_ns;
      *rss_kb += (int64_t)lp->rss1_kb - (int64_t)lp->rss0_kb;
    }
  }
}

int main(int argc, char **argv) {
  parse_args(argc, argv);
  if (opt.tls) {
    tls_init();
  }
  signal(SIGPIPE, SIG_IGN);
  raise_nofile();
  random_bytes((uint8_t *)&rng_state, sizeof rng_state);
  rng_state |= 1;
  epfd = epoll_create1(EPOLL_CLOEXEC);
  if (epfd < 0) {
    die("epoll_create1: %s", strerror(errno));
  }
  gbuf = xmalloc(LG_RBUF_SIZE);
  ws = xcalloc(opt.conns, sizeof *ws);
  subs_per_chan = xcalloc(opt.channels, sizeof *subs_per_chan);
  for (uint32_t i = 0; i < opt.conns; i++) {
    ws[i].fd = -1;
    ws[i].server = (uint16_t)(i % (uint32_t)opt.nservers);
    /* Spread every channel over every server: consecutive connections
       go to different servers, and the channel advances per round. */
    ws[i].chan = (i / (uint32_t)opt.nservers) % opt.channels;
    subs_per_chan[ws[i].chan]++;
  }
  long clk_tck = sysconf(_SC_CLK_TCK);

  /* Phase 1: connect and subscribe. */
  for (int i = 0; i < opt.npids; i++) {
    opt.pids[i].rss0_kb = proc_rss_kb(opt.pids[i].pid);
    opt.pids[i].conn_run0_ns = proc_run_ns(opt.pids[i].pid);
  }
  uint64_t t0 = now_ns();
  uint64_t deadline = t0 + (uint64_t)(opt.connect_timeout_s * 1e9);
  uint32_t next = 0;
  while (st.ready + st.failed < opt.conns && now_ns() < deadline) {
    while (next < opt.conns && st.pending < opt.concurrency) {
      ws_open(next++);
    }
    loop_once(10);
  }
  uint64_t t1 = now_ns();
  double connect_s = (double)(t1 - t0) / 1e9;
  for (int i = 0; i < opt.npids; i++) {
    opt.pids[i].conn_run1_ns = proc_run_ns(opt.pids[i].pid);
  }
  fprintf(stderr,
          "loadgen: %u of %u subscribed in %.2f s (%u failed, %u still "
          "pending)%s%s\n",
          st.ready, opt.conns, connect_s, st.failed, st.pending,
          st.first_fail[0] ? "; first failure: " : "", st.first_fail);

  /* Phase 2: idle, then memory and Redis's view. */
  if (opt.idle_ms > 0) {
    uint64_t until = now_ns() + (uint64_t)opt.idle_ms * 1000000u;
    while (now_ns() < until) {
      loop_once((int)((until - now_ns()) / 1000000u) + 1);
    }
  }
  for (int i = 0; i < opt.npids; i++) {
    opt.pids[i].rss1_kb = proc_rss_kb(opt.pids[i].pid);
  }
  char redis_out[512] = "";
  if (opt.redis_host != NULL) {
    redis_check(redis_out, sizeof redis_out);
  }
  uint32_t ready_before_publish = st.ready;

  /* Phase 3: publish. */
  double publish_s = 0;
  int64_t writevs0 = -1, frames0 = -1, writevs1 = -1, frames1 = -1;
  int timed_out = 0;
  if (opt.msgs > 0) {
    remaining = xcalloc(opt.msgs, sizeof *remaining);
    sent_ns = xcalloc(opt.msgs, sizeof *sent_ns);
    abandoned = xcalloc(opt.msgs, sizeof *abandoned);
    last_seq = xmalloc((size_t)opt.conns * opt.pub_conns * sizeof *last_seq);
    memset(last_seq, 0xff,
           (size_t)opt.conns * opt.pub_conns * sizeof *last_seq); /* -1 */
    for (uint32_t i = 0; i < opt.pub_conns; i++) {
      pub_connect(i);
    }
    /* Only connections that are subscribed now are expected to receive:
       count the ready subscribers per channel. */
    memset(subs_per_chan, 0, opt.channels * sizeof *subs_per_chan);
    for (uint32_t i = 0; i < opt.conns; i++) {
      if (ws[i].state == WS_READY) {
        subs_per_chan[ws[i].chan]++;
      }
    }
    in_publish = 1;
    for (int i = 0; i < opt.npids; i++) {
      opt.pids[i].ticks0 = proc_ticks(opt.pids[i].pid);
      opt.pids[i].run0_ns = proc_run_ns(opt.pids[i].pid);
    }
    scrape_metrics(&writevs0, &frames0);
    uint64_t p0 = now_ns();
    st.last_delivery_ns = p0;
    uint64_t pdeadline = p0 + (uint64_t)(opt.publish_timeout_s * 1e9);
    uint32_t rr = 0;
    for (;;) {
      uint64_t now = now_ns();
      if (now >= pdeadline) {
        break;
      }
      expire_outstanding(now, (uint64_t)opt.give_up_ms * 1000000u);
      if (opt.storm_after > 0 && st.storm == 0 &&
          st.fully_delivered >= opt.storm_after) {
        storm_start(now);
      }
      storm_step(now, ready_before_publish);
      if (st.published == opt.msgs && st.outstanding == 0 && pubs_idle() &&
          st.storm != 1) {
        break;
      }
      /* Issue what the window, the outstanding bound and the rate allow. */
      int timeout = 50;
      uint32_t alive = 0;
      for (uint32_t k = 0; k < opt.pub_conns; k++) {
        alive += !pubs[k].dead;
      }
      if (alive == 0) {
        break;
      }
      while (st.published < opt.msgs && st.outstanding < opt.max_outstanding) {
        if (opt.rate > 0) {
          uint64_t allowed =
            (uint64_t)((double)(now - p0) * opt.rate / 1e9) + 1;
          if (st.published >= allowed) {
            double due_ns = (double)st.published * 1e9 / opt.rate;
            double wait_ms = (due_ns - (double)(now - p0)) / 1e6;
            timeout = wait_ms < 1 ? 1 : (int)wait_ms;
            break;
          }
        }
        uint32_t k = 0, tried;
        for (tried = 0; tried < opt.pub_conns; tried++) {
          k = (rr + tried) % opt.pub_conns;
          if (!pubs[k].dead && pubs[k].count < opt.window) {
            break;
          }
        }
        if (tried == opt.pub_conns) {
          break; /* every window is full */
        }
        rr = (k + 1) % opt.pub_conns;
        uint32_t g = (uint32_t)st.published++;
        uint32_t subs = subs_per_chan[g % opt.channels];
        remaining[g] = subs;
        sent_ns[g] = now;
        st.expected += subs;
        if (subs > 0) {
          st.outstanding++;
        }
        pub_append(&pubs[k], k, g, now);
      }
      for (uint32_t k = 0; k < opt.pub_conns; k++) {
        if (!pubs[k].dead && pubs[k].wlen > pubs[k].woff) {
          pub_flush(&pubs[k], k);
        }
      }
      loop_once(timeout);
    }
    /* Past the deadline nothing more is published; what is in flight
       gets --give-up-ms to arrive before it counts as lost. */
    timed_out = now_ns() >= pdeadline;
    uint64_t drain_until = now_ns() + (uint64_t)opt.give_up_ms * 1000000u;
    while ((st.outstanding > 0 || !pubs_idle() || st.storm == 1) &&
           now_ns() < drain_until) {
      loop_once(10);
      storm_step(now_ns(), ready_before_publish);
    }
    uint64_t p1 = st.last_delivery_ns > p0 ? st.last_delivery_ns : now_ns();
    for (int i = 0; i < opt.npids; i++) {
      opt.pids[i].ticks1 = proc_ticks(opt.pids[i].pid);
      opt.pids[i].run1_ns = proc_run_ns(opt.pids[i].pid);
    }
    in_publish = 0;
    scrape_metrics(&writevs1, &frames1);
    publish_s = (double)(p1 - p0) / 1e9;
    if (st.published < opt.msgs || st.outstanding > 0) {
      fprintf(stderr,
              "loadgen: publish phase ended with %" PRIu64 " of %u "
              "published, %" PRIu64 " messages not fully delivered\n",
              st.published, opt.msgs, st.outstanding);
    }
  }

  /* Every delivery not made is lost. */
  uint64_t lost = 0;
  if (remaining != NULL) {
    for (uint32_t g = 0; g < opt.msgs; g++) {
      lost += remaining[g];
    }
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  double self_cpu_s =
    (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
    ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;

  printf("RESULT %s%sconns=%u ready=%u failed=%u connect_s=%.3f "
         "conns_per_s=%.0f",
         opt.label, opt.label[0] ? " " : "", opt.conns, ready_before_publish,
         st.failed, connect_s,
         connect_s > 0 ? (double)ready_before_publish / connect_s : 0.0);
  if (opt.msgs > 0) {
    printf(
      " channels=%u msgs=%u size=%u published=%" PRIu64 " pub_ok=%" PRIu64
      " pub_err=%" PRIu64 " expected=%" PRIu64 " deliveries=%" PRIu64
      " lost=%" PRIu64 " dup=%" PRIu64 " ooo=%" PRIu64 " misrouted=%" PRIu64
      " bad=%" PRIu64
      " timed_out=%d publish_s=%.3f deliv_per_s=%.0f p50_us=%.1f p99_us=%.1f "
      "max_us=%.1f",
      opt.channels, opt.msgs, opt.size, st.published, st.pub_ok, st.pub_err,
      st.expected, st.deliveries, lost, st.dup, st.ooo, st.misrouted,
      st.bad_msg, timed_out, publish_s,
      publish_s > 0 ? (double)st.deliveries / publish_s : 0.0,
      (double)hist_quantile(0.50) / 1e3, (double)hist_quantile(0.99) / 1e3,
      (double)hist_max / 1e3);
  }
  /* Per process group: CPU over the publish phase, RSS growth. */
  for (int i = 0; i < opt.npids; i++) {
    int first = 1;
    for (int j = 0; j < i; j++) {
      if (strcmp(opt.pids[j].name, opt.pids[i].name) == 0) {
        first = 0;
      }
    }
    if (!first) {
      continue;
    }
    uint64_t ticks, run_ns;
    int64_t rss_kb;
    const char *nm = opt.pids[i].name;
    group_sum(nm, &ticks, &run_ns, &rss_kb);
    printf(" rss_growth_kb_%s=%" PRId64 " rss_per_conn_bytes_%s=%.0f", nm,
           rss_kb, nm,
           ready_before_publish
             ? (double)rss_kb * 1024.0 / (double)ready_before_publish
             : 0.0);
    {
      /* Connection set-up: accept, upgrade (and token), subscribe. */
      uint64_t cns = 0;
      for (int j = 0; j < opt.npids; j++) {
        if (strcmp(opt.pids[j].name, nm) == 0) {
          cns += opt.pids[j].conn_run1_ns - opt.pids[j].conn_run0_ns;
        }
      }
      printf(" connect_run_us_per_conn_%s=%.2f", nm,
             ready_before_publish
               ? (double)cns / 1e3 / (double)ready_before_publish
               : 0.0);
    }
    if (opt.msgs > 0) {
      double cpu_s = (double)ticks / (double)clk_tck;
      printf(" cpu_s_%s=%.2f cpu_us_per_deliv_%s=%.3f run_s_%s=%.3f "
             "run_us_per_deliv_%s=%.3f",
             nm, cpu_s, nm,
             st.deliveries ? cpu_s * 1e6 / (double)st.deliveries : 0.0, nm,
             (double)run_ns / 1e9, nm,
             st.deliveries ? (double)run_ns / 1e3 / (double)st.deliveries
                           : 0.0);
    }
  }
  if (redis_out[0]) {
    printf(" %s", redis_out);
  }
  if (writevs0 >= 0 && writevs1 > writevs0) {
    printf(" srv_writevs=%" PRId64 " srv_frames=%" PRId64
           " frames_per_writev=%.2f",
           writevs1 - writevs0, frames1 - frames0,
           (double)(frames1 - frames0) / (double)(writevs1 - writevs0));
  }
  printf(" closed=%u http_fail=%u connect_fail=%u proto_err=%u "
         "errors_rx=%" PRIu64 " loadgen_cpu_s=%.2f",
         st.closed_ready, st.http_fail, st.connect_fail, st.proto_err,
         st.errors_rx, self_cpu_s);
  for (int i = 0; i < 8 && st.close_codes[i]; i++) {
    printf(" close_%u=%u", st.close_code_val[i], st.close_codes[i]);
  }
  if (opt.storm_after > 0) {
    printf(" storm=%d storm_ready=%u storm_resub_s=%.3f storm_live_s=%.3f "
           "recovered=%" PRIu64 " not_recovered=%" PRIu64 " off_gap=%" PRIu64
           " gap_rx=%" PRIu64,
           st.storm, st.ready, (double)st.storm_resub_ns / 1e9,
           (double)st.storm_live_ns / 1e9, st.recovered, st.not_recovered,
           st.off_gap, st.gap_rx);
  }
  printf("\n");
  fflush(stdout);
  if (st.first_pub_err[0]) {
    fprintf(stderr, "loadgen: %s\n", st.first_pub_err);
  }
  if (st.first_err_rx[0]) {
    fprintf(stderr, "loadgen: first error reply: %s\n", st.first_err_rx);
  }
  if (st.first_fail[0] && st.closed_ready) {
    fprintf(stderr, "loadgen: first failure: %s\n", st.first_fail);
  }
  return 0;
}
