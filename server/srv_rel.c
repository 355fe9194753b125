/*
 * srv_rel.c - admission of sockets, the per-address limit, the spare
 * descriptor for EMFILE, and the Redis backplane's liveness settings
 * (srv_rel.h).
 */
#define _GNU_SOURCE /* accept4 */
#include "srv.h"
#include "srv_rel.h"
#include "bp_redis.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <netinet/in.h>

struct srv_ip {
  srv_ip *next;
  uint64_t count;
  uint8_t len;
  uint8_t key[16]; /* the address bytes (4 for IPv4, 16 for IPv6) */
};

/* Refused sockets waiting for the client's EOF (srv_rel_refuse). */
#define SRV_REFUSING_MAX 16 /* inside the 32 descriptors max_conns leaves */
#define SRV_REFUSING_S 1.0

typedef struct srv_refusing {
  ev_io io;
  ev_timer timer;
  srv *s;
} srv_refusing;

static void srv_refusing_end(struct ev_loop *loop, srv_refusing *f) {
  ev_io_stop(loop, &f->io);
  ev_timer_stop(loop, &f->timer);
  close(f->io.fd);
  f->s->rel.refusing--;
  free(f);
}

static void srv_refusing_io_cb(struct ev_loop *loop, ev_io *w, int revents) {
  srv_refusing *f = w->data;
  char sink[4096];
  ssize_t n;
  (void)revents;
  while ((n = read(w->fd, sink, sizeof(sink))) > 0) {
  }
  if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
    srv_refusing_end(loop, f);
  }
}

static void srv_refusing_timer_cb(struct ev_loop *loop, ev_timer *w,
                                  int revents) {
  (void)revents;
  srv_refusing_end(loop, w->data);
}

/*
 * Answers a refused socket with a 503 in one write (its buffer is new
 * and empty: it takes it) and shuts the write side.  Closing it at once
 * would reset the connection if the client's request is already in, and
 * the reset can overtake the answer; so the socket stays, reading and
 * discarding, until the client's EOF or a second at most, in a bounded
 * pool (past it, and with |s| NULL, it is closed at once: a refusal
 * either way, never a wait in the accept queue).
 */
static void srv_rel_refuse_on(srv *s, int fd, const char *why, int tls) {
  srv_refusing *f = NULL;
  char buf[256];
  size_t blen = strlen(why) + 12; /* {"error":"..."} */
  int n = snprintf(buf, sizeof(buf),
                   "HTTP/1.1 503 Service Unavailable\r\n"
                   "Content-Type: application/json\r\n"
                   "Content-Length: %zu\r\nConnection: close\r\n\r\n"
                   "{\"error\":\"%s\"}",
                   blen, why);
  /* Under --tls-cert the socket is refused before its handshake: a
     plaintext answer means nothing to a TLS client, which sees the
     close. */
  if (!tls && n > 0 && (size_t)n < sizeof(buf)) {
    ssize_t w = write(fd, buf, (size_t)n);
    (void)w; /* best effort: the socket is closed either way */
  }
  (void)shutdown(fd, SHUT_WR);
  if (s != NULL && s->rel.refusing < SRV_REFUSING_MAX) {
    f = malloc(sizeof(*f));
  }
  if (f == NULL) {
    char sink[4096];
    int k;
    for (k = 0; k < 16 && read(fd, sink, sizeof(sink)) > 0; k++) {
    }
    close(fd);
    return;
  }
  f->s = s;
  s->rel.refusing++;
  ev_io_init(&f->io, srv_refusing_io_cb, fd, EV_READ);
  f->io.data = f;
  ev_timer_init(&f->timer, srv_refusing_timer_cb, SRV_REFUSING_S, 0.0);
  f->timer.data = f;
  ev_io_start(s->loop, &f->io);
  ev_timer_start(s->loop, &f->timer);
}

/* Refuses and closes at once (no pool). */
static void srv_rel_refuse(const srv *s, int fd, const char *why) {
  srv_rel_refuse_on(NULL, fd, why, s->tls_ctx != NULL);
}

void srv_rel_config_default(srv_rel_config *rc) {
  memset(rc, 0, sizeof(*rc));
  rc->redis_timeout_ns = SRV_REDIS_TIMEOUT_NS;
  rc->redis_queue_bytes = SRV_REDIS_QUEUE_BYTES;
}

int srv_rel_set_option(srv_config *cfg, const char *name, const char *val) {
  srv_rel_config *rc = &cfg->rel;
  uint64_t u;
  if (strcmp(name, "redis-timeout") == 0) {
    return hub_parse_duration(val, &rc->redis_timeout_ns) == 0 ? 0 : -1;
  }
  if (strcmp(name, "max-backplane-message-bytes") == 0) {
    if (hub_parse_u64(val, &u) != 0 || u == 0) {
      return -1;
    }
    rc->max_bp_msg_bytes = u;
    return 0;
  }
  if (strcmp(name, "redis-max-queue-bytes") == 0) {
    if (hub_parse_u64(val, &u) != 0) {
      return -1;
    }
    rc->redis_queue_bytes = u;
    return 0;
  }
  if (strcmp(name, "max-connections-per-ip") == 0) {
    if (hub_parse_u64(val, &u) != 0) {
      return -1;
    }
    rc->max_conns_per_ip = u;
    return 0;
  }
  return 1;
}

int srv_rel_init(srv *s) {
  srv_rel *r = &s->rel;
  r->cap = 1024;
  r->tab = calloc(r->cap, sizeof(*r->tab));
  if (r->tab == NULL) {
    return -1;
  }
  /* Held so that at EMFILE one descriptor can be freed to accept (and
     answer) what waits in the listen queue. */
  r->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (s->cfg.rel.max_bp_msg_bytes == 0) {
    uint64_t m = s->cfg.hub.max_message_bytes;
    s->cfg.rel.max_bp_msg_bytes = m > SRV_BP_MSG_MIN ? m : SRV_BP_MSG_MIN;
  }
  return 0;
}

void srv_rel_fini(srv *s) {
  srv_rel *r = &s->rel;
  size_t i;
  for (i = 0; i < r->cap && r->tab != NULL; i++) {
    while (r->tab[i] != NULL) {
      srv_ip *e = r->tab[i];
      r->tab[i] = e->next;
      free(e);
    }
  }
  free(r->tab);
  r->tab = NULL;
  if (r->spare_fd >= 0) {
    close(r->spare_fd);
    r->spare_fd = -1;
  }
}

static void srv_rel_bp_congested(void *user, int congested) {
  srv *s = user;
  sh_bp_congested(&s->sh, congested, srv_now());
}

void srv_rel_bp_config(srv *s, bp_redis_config *bc) {
  bc->timeout_ns = s->cfg.rel.redis_timeout_ns;
  bc->max_msg_bytes = s->cfg.rel.max_bp_msg_bytes;
  bc->queue_bytes_max = s->cfg.rel.redis_queue_bytes;
  bc->on_congested = srv_rel_bp_congested;
}

/* The address bytes of |ss| (the port does not matter). */
static size_t srv_rel_key(const struct sockaddr_storage *ss, uint8_t key[16]) {
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
    memcpy(key, &sin->sin_addr, 4);
    return 4;
  }
  if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
    memcpy(key, &sin6->sin6_addr, 16);
    return 16;
  }
  return 0;
}

static size_t srv_rel_hash(const uint8_t *key, size_t len, size_t cap) {
  uint64_t h = 1469598103934665603u; /* FNV-1a */
  size_t i;
  for (i = 0; i < len; i++) {
    h = (h ^ key[i]) * 1099511628211u;
  }
  return (size_t)(h % cap);
}

int srv_rel_admit(srv *s, int fd, const struct sockaddr_storage *ss,
                  srv_ip **ip) {
  srv_rel *r = &s->rel;
  uint8_t key[16];
  size_t len, b;
  srv_ip *e;
  *ip = NULL;
  /* Every socket counts: HTTP, WebSocket and closing ones alike. */
  if (s->conns_total >= s->max_conns) {
    r->refused_full++;
    srv_rel_refuse_on(s, fd, "too many connections", s->tls_ctx != NULL);
    return -1;
  }
  len = srv_rel_key(ss, key);
  if (s->cfg.rel.max_conns_per_ip == 0 || len == 0) {
    return 0;
  }
  b = srv_rel_hash(key, len, r->cap);
  for (e = r->tab[b]; e != NULL; e = e->next) {
    if (e->len == len && memcmp(e->key, key, len) == 0) {
      break;
    }
  }
  if (e != NULL && e->count >= s->cfg.rel.max_conns_per_ip) {
    r->refused_per_ip++;
    srv_rel_refuse_on(s, fd, "too many connections from this address",
                      s->tls_ctx != NULL);
    return -1;
  }
  if (e == NULL) {
    e = calloc(1, sizeof(*e));
    if (e == NULL) {
      srv_rel_refuse(s, fd, "out of memory");
      return -1;
    }
    e->len = (uint8_t)len;
    memcpy(e->key, key, len);
    e->next = r->tab[b];
    r->tab[b] = e;
    r->n++;
  }
  e->count++;
  *ip = e;
  return 0;
}

void srv_rel_release(srv *s, srv_ip *ip) {
  srv_rel *r = &s->rel;
  srv_ip **pp;
  if (ip == NULL || --ip->count > 0) {
    return;
  }
  for (pp = &r->tab[srv_rel_hash(ip->key, ip->len, r->cap)]; *pp != NULL;
       pp = &(*pp)->next) {
    if (*pp == ip) {
      *pp = ip->next;
      free(ip);
      r->n--;
      return;
    }
  }
}

int srv_rel_shed(srv *s, int listen_fd) {
  srv_rel *r = &s->rel;
  int fd;
  if (r->spare_fd < 0) {
    return -1;
  }
  close(r->spare_fd);
  r->spare_fd = -1;
  fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd >= 0) {
    r->emfile_shed++;
    srv_rel_refuse(s, fd, "out of file descriptors");
  }
  r->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  return fd >= 0 && r->spare_fd >= 0 ? 0 : -1;
}

void srv_rel_metrics(srv *s, char *buf, size_t cap, size_t *n) {
  bp_redis_stats bs;
  hub_stats st;
  size_t i;
  memset(&bs, 0, sizeof(bs));
  if (s->bp != NULL) {
    bp_redis_get_stats(s->bp, &bs);
  }
  hub_get_stats(s->h, &st);
  {
    const struct {
      const char *name;
      const char *type;
      const char *help;
      unsigned long long value;
    } ms[] = {
      {"wshub_publishes_rate_limited_total", "counter",
       "WebSocket publishes refused by --max-publish-rate.", st.rate_limited},
      {"wshub_publishes_refused_total", "counter",
       "Publishes refused while the backplane was congested.", st.bp_refused},
      {"wshub_backplane_dropped_oversize_total", "counter",
       "Backplane payloads over --max-backplane-message-bytes, dropped.",
       bs.dropped_big},
      {"wshub_backplane_timeouts_total", "counter",
       "Backplane links dropped for the --redis-timeout read deadline.",
       bs.timeouts},
      {"wshub_backplane_congested_total", "counter",
       "Times the backplane queue passed --redis-max-queue-bytes.",
       bs.congested},
      {"wshub_backplane_congested", "gauge",
       "1 while publishes are refused for a full backplane queue.",
       (unsigned long long)bs.is_congested},
      {"wshub_backplane_queue_bytes", "gauge",
       "Bytes of commands queued for Redis, not yet written.", bs.queue_bytes},
      {"wshub_connections_refused_total", "counter",
       "Sockets refused at accept: --max-connections.", s->rel.refused_full},
      {"wshub_connections_refused_per_ip_total", "counter",
       "Sockets refused at accept: --max-connections-per-ip.",
       s->rel.refused_per_ip},
      {"wshub_connections_shed_emfile_total", "counter",
       "Sockets accepted with the spare descriptor at EMFILE and refused.",
       s->rel.emfile_shed},
    };
    for (i = 0; i < sizeof(ms) / sizeof(ms[0]); i++) {
      int w = snprintf(
        buf + *n, cap - *n, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", ms[i].name,
        ms[i].help, ms[i].name, ms[i].type, ms[i].name, ms[i].value);
      if (w > 0 && (size_t)w < cap - *n) {
        *n += (size_t)w;
      }
    }
  }
}

/* ------------------------------------------------------------ checks */

int srv_utf8_valid(const uint8_t *s, size_t len) {
  size_t i = 0;
  while (i < len) {
    uint8_t b = s[i];
    size_t n, k;
    uint32_t cp;
    if (b < 0x80) {
      i++;
      continue;
    }
    if (b >= 0xc2 && b <= 0xdf) {
      n = 1;
      cp = b & 0x1fu;
    } else if (b >= 0xe0 && b <= 0xef) {
      n = 2;
      cp = b & 0x0fu;
    } else if (b >= 0xf0 && b <= 0xf4) {
      n = 3;
      cp = b & 0x07u;
    } else {
      return 0;
    }
    if (len - i <= n) {
      return 0;
    }
    for (k = 1; k <= n; k++) {
      if ((s[i + k] & 0xc0) != 0x80) {
        return 0;
      }
      cp = (cp << 6) | (s[i + k] & 0x3fu);
    }
    /* Overlong forms, surrogates, past U+10FFFF. */
    if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
        (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff) {
      return 0;
    }
    i += n + 1;
  }
  return 1;
}

int srv_ws_key_valid(const char *key, size_t len) {
  size_t i;
  /* base64 of 16 bytes: 22 characters of the alphabet and "==". */
  if (len != 24 || key[22] != '=' || key[23] != '=') {
    return 0;
  }
  for (i = 0; i < 22; i++) {
    char ch = key[i];
    if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
          (ch >= '0' && ch <= '9') || ch == '+' || ch == '/')) {
      return 0;
    }
  }
  return 1;
}
