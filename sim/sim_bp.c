/*
 * sim_bp.c - the simulated instance's backplane.  See sim_bp.h; the
 * structure follows bp_redis.c (connect, lost, retry with backoff).
 */
#include "sim_bp.h"

#include <stdlib.h>
#include <string.h>

#include "shell.h"

struct sim_bp {
  bp base; /* first: a bp * is a sim_bp * */
  sim_loop *loop;
  sim_redis_conn *conn;
  uint32_t tag;
  int connecting; /* a connect attempt or backoff is under way */
  int up_known;   /* the instance was told on_up */
  uint64_t gen;   /* bumped at every drop: a stale retry is ignored */
  sh_link link;   /* the shell's backoff, as bp_redis.c uses it */
  sim_rng lat;    /* this link's own latency stream, lent to the model */
  char prefix[64];
  /* History commands sent and not yet answered (req << 1 | is-read), in
     command order: each is answered exactly once, ok=0 when the link
     goes first (bp.h). */
  uint64_t *hout;
  size_t nhout, caphout;
  /* ... and those whose link went with a forced reconnect, answered
     ok=0 from the loop at the retry. */
  uint64_t *hfail;
  size_t nhfail, caphfail;
};

static void hq_push(uint64_t **v, size_t *n, size_t *cap, uint64_t x) {
  if (*n == *cap) {
    *cap = *cap ? 2 * *cap : 16;
    *v = realloc(*v, *cap * sizeof(**v));
    if (*v == NULL) {
      abort();
    }
  }
  (*v)[(*n)++] = x;
}

/* Takes |req| off the outstanding list; 0 if it was not there. */
static int hq_take(sim_bp *b, uint64_t req) {
  size_t i;
  for (i = 0; i < b->nhout; i++) {
    if ((b->hout[i] >> 1) == req) {
      memmove(b->hout + i, b->hout + i + 1,
              (b->nhout - i - 1) * sizeof(*b->hout));
      b->nhout--;
      return 1;
    }
  }
  return 0;
}

/* Answers ok=0 every command in |v| (from the loop). */
static void hq_fail(sim_bp *b, uint64_t *v, size_t *n) {
  size_t i, k = *n;
  uint64_t *c;
  if (k == 0) {
    return;
  }
  c = malloc(k * sizeof(*c));
  if (c == NULL) {
    abort();
  }
  memcpy(c, v, k * sizeof(*c));
  *n = 0;
  for (i = 0; i < k; i++) {
    if (c[i] & 1) {
      if (b->base.ev.on_hread) {
        b->base.ev.on_hread(b->base.ev.user, c[i] >> 1, 0, 0, NULL, 0, NULL, 0);
      }
    } else if (b->base.ev.on_hpublished) {
      b->base.ev.on_hpublished(b->base.ev.user, c[i] >> 1, 0, 0, NULL, 0);
    }
  }
  free(c);
}

/* The link went: what was outstanding will never be answered by Redis. */
static void hq_lost(sim_bp *b) {
  size_t i;
  for (i = 0; i < b->nhout; i++) {
    hq_push(&b->hfail, &b->nhfail, &b->caphfail, b->hout[i]);
  }
  b->nhout = 0;
}

static int sim_bp_subscribe(bp *base, const char *channel, size_t len) {
  sim_bp *b = (sim_bp *)base;
  if (!sim_redis_connected(b->conn)) {
    return HUB_ERR_SHUT_DOWN;
  }
  (void)sim_redis_send(b->conn, SIM_REDIS_SUBSCRIBE,
                       sim_chan_intern(b->loop, channel, len), NULL);
  return 0;
}

static int sim_bp_unsubscribe(bp *base, const char *channel, size_t len) {
  sim_bp *b = (sim_bp *)base;
  if (!sim_redis_connected(b->conn)) {
    return HUB_ERR_SHUT_DOWN;
  }
  (void)sim_redis_send(b->conn, SIM_REDIS_UNSUBSCRIBE,
                       sim_chan_intern(b->loop, channel, len), NULL);
  return 0;
}

static int sim_bp_publish(bp *base, const char *channel, size_t len,
                          const uint8_t *data, size_t dlen) {
  sim_bp *b = (sim_bp *)base;
  if (!sim_redis_connected(b->conn)) {
    return HUB_ERR_SHUT_DOWN;
  }
  (void)sim_redis_send(b->conn, SIM_REDIS_PUBLISH,
                       sim_chan_intern(b->loop, channel, len),
                       sim_blob_new(data, dlen));
  return 0;
}

/* The full key name, as bp_redis_prefixed builds it. */
static sim_blob *full_key(sim_bp *b, const char *key, size_t len) {
  size_t plen = strlen(b->prefix);
  char *buf = malloc(plen + len + 1);
  sim_blob *p;
  if (buf == NULL) {
    abort();
  }
  memcpy(buf, b->prefix, plen);
  memcpy(buf + plen, key, len);
  p = sim_blob_new(buf, plen + len);
  free(buf);
  return p;
}

static int sim_bp_set(bp *base, const char *key, size_t len, const uint8_t *val,
                      size_t vlen, uint32_t ttl_s) {
  sim_bp *b = (sim_bp *)base;
  (void)val;
  (void)vlen;
  if (!sim_redis_connected(b->conn)) {
    return HUB_ERR_SHUT_DOWN;
  }
  (void)sim_redis_send(b->conn, SIM_REDIS_SET, ttl_s, full_key(b, key, len));
  return 0;
}

static int sim_bp_del(bp *base, const char *key, size_t len) {
  sim_bp *b = (sim_bp *)base;
  if (!sim_redis_connected(b->conn)) {
    /* Lost: the key stays until its TTL. */
    return HUB_ERR_SHUT_DOWN;
  }
  (void)sim_redis_send(b->conn, SIM_REDIS_DEL, 0, full_key(b, key, len));
  return 0;
}

/* The FCALL's blob: sim_redis_hcmd, history key, NUL, meta key, NUL,
   data. */
static sim_blob *hcmd_blob(sim_bp *b, const sim_redis_hcmd *hc,
                           const char *channel, size_t len, const uint8_t *data,
                           size_t dlen) {
  size_t pl = strlen(b->prefix);
  size_t n = sizeof(*hc) + 2 * (pl + 8 + len + 1) + dlen;
  char *buf = malloc(n), *w;
  sim_blob *p;
  if (buf == NULL) {
    abort();
  }
  memcpy(buf, hc, sizeof(*hc));
  w = buf + sizeof(*hc);
  w += sprintf(w, "%shistory:%.*s", b->prefix, (int)len, channel) + 1;
  w += sprintf(w, "%smeta:%.*s", b->prefix, (int)len, channel) + 1;
  if (dlen > 0) {
    memcpy(w, data, dlen);
  }
  w += dlen;
  p = sim_blob_new(buf, (size_t)(w - buf));
  free(buf);
  return p;
}

static int sim_bp_hpublish(bp *base, uint64_t req, const char *channel,
                           size_t len, const uint8_t *data, size_t dlen,
                           uint32_t size, uint32_t ttl_s, uint32_t meta_ttl_s) {
  sim_bp *b = (sim_bp *)base;
  sim_redis_hcmd hc;
  if (!sim_redis_connected(b->conn)) {
    return HUB_ERR_SHUT_DOWN;
  }
  memset(&hc, 0, sizeof(hc));
  hc.req = req;
  hc.size = size;
  hc.ttl_s = ttl_s;
  hc.meta_ttl_s = meta_ttl_s;
  hq_push(&b->hout, &b->nhout, &b->caphout, req << 1);
  (void)sim_redis_send(b->conn, SIM_REDIS_HPUBLISH,
                       sim_chan_intern(b->loop, channel, len),
                       hcmd_blob(b, &hc, channel, len, data, dlen));
  return 0;
}

static int sim_bp_hread(bp *base, uint64_t req, const char *channel, size_t len,
                        uint64_t since, uint32_t count, uint32_t meta_ttl_s) {
  sim_bp *b = (sim_bp *)base;
  sim_redis_hcmd hc;
  if (!sim_redis_connected(b->conn)) {
    return HUB_ERR_SHUT_DOWN;
  }
  memset(&hc, 0, sizeof(hc));
  hc.req = req;
  hc.since = since;
  hc.size = count;
  hc.meta_ttl_s = meta_ttl_s;
  hq_push(&b->hout, &b->nhout, &b->caphout, req << 1 | 1);
  (void)sim_redis_send(b->conn, SIM_REDIS_HREAD,
                       sim_chan_intern(b->loop, channel, len),
                       hcmd_blob(b, &hc, channel, len, NULL, 0));
  return 0;
}

static void sim_bp_free(bp *base) {
  sim_bp *b = (sim_bp *)base;
  if (b == NULL) {
    return;
  }
  sim_redis_conn_free(b->conn);
  free(b->hout);
  free(b->hfail);
  free(b);
}

static const bp_ops sim_bp_ops = {.subscribe = sim_bp_subscribe,
                                  .unsubscribe = sim_bp_unsubscribe,
                                  .publish = sim_bp_publish,
                                  .set = sim_bp_set,
                                  .del = sim_bp_del,
                                  .hpublish = sim_bp_hpublish,
                                  .hread = sim_bp_hread,
                                  .free = sim_bp_free};

/* ------------------------------------------- what the model reports */

static void sim_bp_connected_cb(void *user) {
  sim_bp *b = user;
  b->connecting = 0;
  b->up_known = 1;
  sh_link_up(&b->link);
  if (b->base.ev.on_up) {
    b->base.ev.on_up(b->base.ev.user);
  }
}

/* The link is lost (or an attempt failed) at |at|: retry after the
   shell's backoff (sh_link_lost; in its WAIT state the retry already
   scheduled stands, rescheduled under the current generation). */
static void sim_bp_schedule(sim_bp *b, uint64_t at) {
  sim_schedule(b->loop, sh_link_lost(&b->link, at), SIM_EV_BP_RETRY, b->tag, 0,
               b->gen, NULL);
}

/* The refusal arrives after |transit|; the retry timer runs from then. */
static void sim_bp_refused_cb(void *user, uint64_t transit) {
  sim_bp *b = user;
  sim_bp_schedule(b, b->loop->now + transit);
}

/* Like bp_redis_lost: report down once, then retry after the backoff. */
static void sim_bp_lost_cb(void *user) {
  sim_bp *b = user;
  int was_up = b->up_known;
  hq_lost(b);
  hq_fail(b, b->hfail, &b->nhfail);
  b->up_known = 0;
  if (was_up && b->base.ev.on_down) {
    b->base.ev.on_down(b->base.ev.user);
  }
  sim_bp_schedule(b, b->loop->now);
}

static void sim_bp_subscribed_cb(void *user, const char *chan, size_t len) {
  sim_bp *b = user;
  if (b->up_known && b->base.ev.on_subscribed) {
    b->base.ev.on_subscribed(b->base.ev.user, chan, len);
  }
}

static void sim_bp_hpublished_cb(void *user, uint64_t req, uint64_t offset,
                                 const char *epoch) {
  sim_bp *b = user;
  if (hq_take(b, req) && b->base.ev.on_hpublished) {
    b->base.ev.on_hpublished(b->base.ev.user, req, 1, offset, epoch,
                             strlen(epoch));
  }
}

static void sim_bp_hread_cb(void *user, uint64_t req, uint64_t offset,
                            const char *epoch, const uint64_t *offsets,
                            const char *const *data, const size_t *lens,
                            size_t n) {
  sim_bp *b = user;
  bp_hentry *e;
  size_t i;
  if (!hq_take(b, req)) {
    return;
  }
  e = calloc(n + 1, sizeof(*e));
  if (e == NULL) {
    abort();
  }
  for (i = 0; i < n; i++) {
    e[i].offset = offsets[i];
    e[i].data = (const uint8_t *)data[i];
    e[i].len = lens[i];
  }
  if (b->base.ev.on_hread) {
    b->base.ev.on_hread(b->base.ev.user, req, 1, offset, epoch, strlen(epoch),
                        e, n);
  }
  free(e);
}

static void sim_bp_message_cb(void *user, const char *chan, size_t len,
                              const uint8_t *data, size_t dlen) {
  sim_bp *b = user;
  if (b->up_known && b->base.ev.on_msg) {
    b->base.ev.on_msg(b->base.ev.user, chan, len, data, dlen);
  }
}

sim_bp *sim_bp_new(sim_loop *loop, sim_redis *r, uint32_t tag, uint64_t stream,
                   const char *prefix, const bp_events *ev) {
  sim_bp *b = calloc(1, sizeof(*b));
  sim_redis_conn_cbs cbs;
  if (b == NULL || strlen(prefix) >= sizeof(b->prefix)) {
    free(b);
    return NULL;
  }
  b->base.ops = &sim_bp_ops;
  b->base.ev = *ev;
  b->loop = loop;
  b->tag = tag;
  strcpy(b->prefix, prefix);
  /* Each instance draws its latencies from its own stream, so adding or
     removing traffic elsewhere does not move its timing (this keeps
     shrunk reproducers faithful). */
  sim_rng_seed(&b->lat, loop->seed, stream);
  b->gen = sim_loop_unique(loop);
  {
    /* The backoff's jitter: its own stream of the seed (per instance
       and incarnation, beside the latencies'). */
    sim_rng jr;
    sim_rng_seed(&jr, loop->seed, stream ^ (UINT64_C(0xbac0ff) << 40));
    sh_link_init(&b->link, sim_rng_next(&jr));
  }
  cbs.user = b;
  cbs.on_connected = sim_bp_connected_cb;
  cbs.on_refused = sim_bp_refused_cb;
  cbs.on_lost = sim_bp_lost_cb;
  cbs.on_subscribed = sim_bp_subscribed_cb;
  cbs.on_message = sim_bp_message_cb;
  cbs.on_hpublished = sim_bp_hpublished_cb;
  cbs.on_hread = sim_bp_hread_cb;
  b->conn = sim_redis_conn_new(r, tag, &b->lat, &cbs);
  if (b->conn == NULL) {
    free(b);
    return NULL;
  }
  return b;
}

bp *sim_bp_bp(sim_bp *b) {
  return &b->base;
}

void sim_bp_connect(sim_bp *b) {
  if (sim_redis_connected(b->conn) || b->connecting) {
    return;
  }
  b->connecting = 1;
  (void)sh_link_connect(&b->link);
  sim_redis_connect(b->conn);
}

void sim_bp_drop(sim_bp *b, int notify) {
  int had = sim_redis_connected(b->conn) || b->connecting || b->up_known;
  if (!notify) {
    /* The process is gone: nobody is waiting for the answers. */
    b->nhout = b->nhfail = 0;
  }
  b->connecting = 0;
  b->gen++;
  sim_redis_drop(b->conn, notify && had);
  if (notify && had) {
    b->connecting = 1; /* the notice, then the backoff, then a connect */
  }
  if (!notify) {
    b->up_known = 0;
  }
}

void sim_bp_reconnect(sim_bp *b) {
  hq_lost(b); /* answered ok=0 at the retry, from the loop */
  b->gen++;
  sim_redis_drop(b->conn, 0);
  b->up_known = 0;
  b->connecting = 1;
  sim_bp_schedule(b, b->loop->now);
}

void sim_bp_set_partitioned(sim_bp *b, int on) {
  sim_redis_set_partitioned(b->conn, on);
}

int sim_bp_connected(const sim_bp *b) {
  return sim_redis_connected(b->conn);
}

int sim_bp_up_known(const sim_bp *b) {
  return b->up_known;
}

const sim_redis_conn *sim_bp_conn(const sim_bp *b) {
  return b->conn;
}

int sim_bp_event(sim_bp *b, const sim_ev *ev) {
  if (ev->type != SIM_EV_BP_RETRY) {
    return 0;
  }
  hq_fail(b, b->hfail, &b->nhfail);
  if (ev->gen == b->gen && sh_link_connect(&b->link) == 0) {
    sim_redis_connect(b->conn);
  }
  return 1;
}
