/*
 * fuzz_srv.c - libFuzzer target: the server's HTTP request path and
 * WebSocket frame path (server/srv_upgrade.c, server/srv_conn.c and
 * wslay's frame parser under them), driven through a real loopback
 * socket without srv_main's loop.
 *
 * Built twice: fuzz_http (FZ_MODE 0) and fuzz_frame (FZ_MODE 1) force
 * the mode below; without FZ_MODE the first byte picks it.
 *
 * The seam is the server's own entry points: a listening socket whose
 * accept callback (srv_accept_cb) is invoked by hand, a libev loop run
 * with EVRUN_NOWAIT after each chunk, and a prepare watcher that flushes
 * as srv_main's does.  The first input byte picks the mode:
 *   even: the rest is raw bytes (HTTP requests, maybe an upgrade and
 *         frames after it), written in chunks the input sizes;
 *   odd:  a valid upgrade first, then frames built from the input (an
 *         opcode/flags byte, a length, that many payload bytes), masked
 *         as a client must, with an occasional raw byte run.
 * Each input gets a fresh hub, shell and loop; the client closes at the
 * end and the loop runs until the server holds no socket, so a leak is a
 * leak.
 */
#include "srv.h"
#include "srv_auth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/un.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A Unix socket (abstract name): no ports to run out of, no TIME_WAIT
   after a hundred thousand inputs. */
static int fz_listen_fd = -1;
static struct sockaddr_un fz_addr;
static socklen_t fz_addr_len;

static void fz_set_timer(void *user, hub_tstamp at) {
  (void)user;
  (void)at; /* expiry is not fuzzed here (fuzz_client covers it) */
}

static void fz_prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents) {
  srv *s = ev_userdata(loop);
  (void)w;
  (void)revents;
  srv_flush_all(s);
  srv_reap(s);
}

static int fz_listen(void) {
  int n;
  signal(SIGPIPE, SIG_IGN); /* as srv_main does */
  fz_listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (fz_listen_fd < 0) {
    return -1;
  }
  memset(&fz_addr, 0, sizeof(fz_addr));
  fz_addr.sun_family = AF_UNIX;
  n = snprintf(fz_addr.sun_path + 1, sizeof(fz_addr.sun_path) - 1,
               "wshub-fuzz-%d", (int)getpid());
  fz_addr_len =
    (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
  if (bind(fz_listen_fd, (struct sockaddr *)&fz_addr, fz_addr_len) != 0 ||
      listen(fz_listen_fd, 64) != 0) {
    close(fz_listen_fd);
    fz_listen_fd = -1;
    return -1;
  }
  return 0;
}

/* Reads and drops what the server sent. */
static void fz_sink(int fd) {
  uint8_t buf[65536];
  while (read(fd, buf, sizeof(buf)) > 0) {
  }
}

static void fz_spin(srv *s, int cfd, int n) {
  int i;
  for (i = 0; i < n; i++) {
    ev_run(s->loop, EVRUN_NOWAIT);
    fz_sink(cfd);
  }
}

static void fz_write(srv *s, int cfd, const uint8_t *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(cfd, p, n);
    if (w < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        fz_spin(s, cfd, 1);
        continue;
      }
      return; /* the server closed it */
    }
    p += w;
    n -= (size_t)w;
  }
}

static const char fz_upgrade[] =
  "GET /ws HTTP/1.1\r\nHost: fuzz\r\nUpgrade: websocket\r\n"
  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
  "Sec-WebSocket-Version: 13\r\n\r\n";

/* One client frame from the input: returns its length in |out|. */
static size_t fz_frame(const uint8_t **in, size_t *left, uint8_t *out) {
  const uint8_t *p = *in;
  size_t n = *left, len, hl = 0, i;
  uint8_t b0, mask[4] = {0x12, 0x34, 0x56, 0x78};
  if (n < 2) {
    *left = 0;
    return 0;
  }
  b0 = p[0];
  len = p[1];
  p += 2;
  n -= 2;
  if (len > n) {
    len = n;
  }
  out[hl++] = b0;
  if (len < 126) {
    out[hl++] = (uint8_t)(0x80 | len);
  } else {
    out[hl++] = 0x80 | 126;
    out[hl++] = (uint8_t)(len >> 8);
    out[hl++] = (uint8_t)len;
  }
  memcpy(out + hl, mask, 4);
  hl += 4;
  for (i = 0; i < len; i++) {
    out[hl + i] = p[i] ^ mask[i & 3];
  }
  *in = p + len;
  *left = n - len;
  return hl + len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  srv *s;
  sh_transport t;
  hub_config hc;
  ev_prepare prep;
  int cfd, i, framed;

  if (size < 1 || (fz_listen_fd < 0 && fz_listen() != 0)) {
    return 0;
  }
#ifdef FZ_MODE
  framed = FZ_MODE;
#else
  framed = data[0] & 1;
#endif
  data++;
  size--;
  s = calloc(1, sizeof(*s));
  if (s == NULL) {
    return 0;
  }
  s->listen_fd = fz_listen_fd;
  hub_config_default(&s->cfg.hub);
  s->cfg.hub.max_message_bytes = 4096;
  s->cfg.hub.max_queue_msgs = 16;
  s->cfg.handshake_timeout_ns = 10 * HUB_NS_PER_S;
  s->cfg.shutdown_timeout_ns = 10 * HUB_NS_PER_S;
  srv_rel_config_default(&s->cfg.rel);
  {
    /* No tokens, no API key, any origin: as srv_main without those
       flags (srv_upgrade asks it on every upgrade and POST). */
    static srv_auth auth;
    static int auth_ok;
    char err[256];
    if (!auth_ok &&
        srv_auth_init(&auth, NULL, NULL, NULL, NULL, err, sizeof(err)) != 0) {
      abort();
    }
    auth_ok = 1;
    s->auth = &auth;
  }
  s->max_conns = 64;
  s->loop = ev_loop_new(EVFLAG_AUTO);
  if (s->loop == NULL) {
    free(s);
    return 0;
  }
  ev_set_userdata(s->loop, s);
  srv_conn_init(s);
  if (srv_rel_init(s) != 0) {
    abort();
  }
  hc = s->cfg.hub;
  hc.instance_id = "fz";
  if (hub_new(&s->h, &hc, NULL, srv_now()) != 0) {
    abort();
  }
  srv_transport(s, &t);
  t.set_timer = fz_set_timer;
  sh_init(&s->sh, s->h, NULL, &hc, &t);
  sh_drain(&s->sh, srv_now());
  ev_prepare_init(&prep, fz_prepare_cb);
  ev_prepare_start(s->loop, &prep);
  ev_io_init(&s->listen_io, srv_accept_cb, fz_listen_fd, EV_READ);

  cfd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (cfd < 0 || connect(cfd, (struct sockaddr *)&fz_addr, fz_addr_len) != 0) {
    abort();
  }
  (void)fcntl(cfd, F_SETFL, fcntl(cfd, F_GETFL) | O_NONBLOCK);
  ev_invoke(s->loop, &s->listen_io, EV_READ); /* srv_accept_cb */
  if (!framed) {
    while (size > 0) {
      size_t n = (size_t)(data[0] % 64) + 1;
      data++;
      size--;
      if (n > size) {
        n = size;
      }
      fz_write(s, cfd, data, n);
      data += n;
      size -= n;
      fz_spin(s, cfd, 2);
    }
  } else {
    static uint8_t frame[300];
    fz_write(s, cfd, (const uint8_t *)fz_upgrade, sizeof(fz_upgrade) - 1);
    fz_spin(s, cfd, 2);
    while (size > 0) {
      size_t n = fz_frame(&data, &size, frame);
      fz_write(s, cfd, frame, n);
      fz_spin(s, cfd, 1);
    }
  }
  close(cfd);
  for (i = 0; i < 100 && s->conns_total > 0; i++) {
    ev_run(s->loop, EVRUN_NOWAIT);
    srv_tick(s);
  }
  srv_close_http_conns(s);
  while (s->cw_list.next != &s->cw_list) {
    srv_conn_drop(s, s->cw_list.next);
  }
  if (s->conns_total > 0) {
    abort(); /* a socket the server never let go of */
  }
  /* A dead connection still on the flush list is freed once off it. */
  srv_flush_all(s);
  sh_drain(&s->sh, srv_now());
  srv_reap(s);
  ev_prepare_stop(s->loop, &prep);
  hub_del(s->h);
  srv_conn_fini(s);
  srv_rel_fini(s);
  ev_loop_destroy(s->loop);
  free(s);
  return 0;
}
