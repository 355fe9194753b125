/*
 * sim_redis.c - the simulated Redis on the virtual clock.  See
 * sim_redis.h for what is modelled.
 */
#include "sim_redis.h"
#include "sim_stream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { OUT_CONFIRM = 1, OUT_MESSAGE, OUT_HPUBLISHED, OUT_HREAD };

typedef struct sim_key {
  char *key;
  uint64_t expires_at; /* UINT64_MAX: no TTL */
} sim_key;

/* Subscriber connections of one channel, in subscription order. */
typedef struct sim_chan_subs {
  sim_redis_conn **conn;
  size_t len, cap;
} sim_chan_subs;

struct sim_redis {
  sim_loop *loop;
  sim_key *keys;
  size_t nkeys, capkeys;
  sim_chan_subs *chans; /* indexed by channel id */
  size_t nchans;
  sim_redis_conn *conns; /* every client connection pair, newest first */
  sim_redis_hooks hooks[SIM_REDIS_HOOKS_MAX];
  size_t nhooks;
  sim_stream_db *streams; /* history streams and meta hashes */
  uint64_t hreads;        /* wshub_read calls */
};

struct sim_redis_conn {
  sim_redis *r;
  sim_redis_conn *next;
  uint32_t tag;
  sim_rng *lat; /* the client's latency stream, borrowed */
  sim_redis_conn_cbs cb;
  int connected;
  int partitioned;
  uint64_t gen;   /* bumped at every drop: stale events are ignored */
  uint64_t epoch; /* bumped at every connect and drop */
  uint64_t sub_up_last, sub_down_last, cmd_up_last, cmd_down_last;
  uint64_t sub_inflight;  /* commands on the subscriber connection */
  uint64_t conf_inflight; /* confirmations to the client */
  uint64_t cmd_inflight;  /* commands on the command connection */
  uint8_t *subs;          /* Redis's view, indexed by channel id */
  size_t nsubs;
};

/* Calls hook |fn| of every registered hook set that has one. */
#define HOOKS(r, fn, ...)                                                      \
  do {                                                                         \
    size_t hk_;                                                                \
    for (hk_ = 0; hk_ < (r)->nhooks; hk_++) {                                  \
      if ((r)->hooks[hk_].fn != NULL) {                                        \
        (r)->hooks[hk_].fn((r)->hooks[hk_].ctx, __VA_ARGS__);                  \
      }                                                                        \
    }                                                                          \
  } while (0)

int sim_redis_new(sim_redis **out, sim_loop *loop) {
  sim_redis *r = calloc(1, sizeof(*r));
  if (r == NULL) {
    return -1;
  }
  r->loop = loop;
  if (sim_stream_db_new(&r->streams, loop) != 0) {
    free(r);
    return -1;
  }
  *out = r;
  return 0;
}

void sim_redis_del(sim_redis *r) {
  size_t i;
  if (r == NULL) {
    return;
  }
  while (r->conns != NULL) {
    sim_redis_conn_free(r->conns);
  }
  for (i = 0; i < r->nkeys; i++) {
    free(r->keys[i].key);
  }
  free(r->keys);
  for (i = 0; i < r->nchans; i++) {
    free(r->chans[i].conn);
  }
  free(r->chans);
  sim_stream_db_del(r->streams);
  free(r);
}

int sim_redis_hook(sim_redis *r, const sim_redis_hooks *h) {
  if (r->nhooks == SIM_REDIS_HOOKS_MAX) {
    return -1;
  }
  r->hooks[r->nhooks++] = *h;
  return 0;
}

/* ------------------------------------------------------ pub/sub */

static sim_chan_subs *redis_chan(sim_redis *r, uint32_t chan) {
  if (chan >= r->nchans) {
    size_t n = chan + 8;
    sim_chan_subs *c = realloc(r->chans, n * sizeof(*c));
    if (c == NULL) {
      abort();
    }
    memset(c + r->nchans, 0, (n - r->nchans) * sizeof(*c));
    r->chans = c;
    r->nchans = n;
  }
  return &r->chans[chan];
}

static void redis_sub_add(sim_redis *r, uint32_t chan, sim_redis_conn *conn) {
  sim_chan_subs *c = redis_chan(r, chan);
  size_t i;
  for (i = 0; i < c->len; i++) {
    if (c->conn[i] == conn) {
      return;
    }
  }
  if (c->len == c->cap) {
    c->cap = c->cap ? 2 * c->cap : 4;
    c->conn = realloc(c->conn, c->cap * sizeof(*c->conn));
    if (c->conn == NULL) {
      abort();
    }
  }
  c->conn[c->len++] = conn;
}

static void redis_sub_remove(sim_redis *r, uint32_t chan,
                             sim_redis_conn *conn) {
  sim_chan_subs *c = redis_chan(r, chan);
  size_t i;
  for (i = 0; i < c->len; i++) {
    if (c->conn[i] == conn) {
      /* Keep subscription order: deliveries stay deterministic and
         independent of removal history. */
      memmove(c->conn + i, c->conn + i + 1,
              (c->len - i - 1) * sizeof(*c->conn));
      c->len--;
      return;
    }
  }
}

static void conn_subs_set(sim_redis_conn *c, uint32_t chan, int on) {
  if (chan >= c->nsubs) {
    size_t n = chan + 8;
    uint8_t *s = realloc(c->subs, n);
    if (s == NULL) {
      abort();
    }
    memset(s + c->nsubs, 0, n - c->nsubs);
    c->subs = s;
    c->nsubs = n;
  }
  c->subs[chan] = (uint8_t)on;
}

/* When a message from Redis reaches |c|'s client: FIFO after the last. */
static uint64_t fifo_at(sim_redis_conn *c, uint64_t *last) {
  uint64_t at = c->r->loop->now + sim_lat_redis(c->lat);
  if (at < *last) {
    at = *last;
  }
  *last = at;
  return at;
}

void sim_redis_publish(sim_redis *r, uint32_t chan, sim_blob *data) {
  sim_chan_subs *c = redis_chan(r, chan);
  size_t i;
  data->t = r->loop->now;
  HOOKS(r, on_publish, chan, data, c->len);
  sim_trace(r->loop, "redis PUBLISH %s %.*s -> %zu",
            sim_chan_name(r->loop, chan), (int)data->len, data->data, c->len);
  for (i = 0; i < c->len; i++) {
    sim_redis_conn *k = c->conn[i];
    sim_blob_ref(data);
    sim_schedule(r->loop, fifo_at(k, &k->sub_down_last), SIM_EV_BP_DELIVER,
                 k->tag, ((uint64_t)OUT_MESSAGE << 32) | chan, k->gen, data);
  }
}

/* --------------------------------------------------------- keys */

static void key_expire_at(sim_redis *r, size_t i) {
  HOOKS(r, on_key_expired, r->keys[i].key);
  free(r->keys[i].key);
}

static sim_key *redis_key_find(sim_redis *r, const char *key) {
  size_t i;
  for (i = 0; i < r->nkeys; i++) {
    if (strcmp(r->keys[i].key, key) == 0) {
      if (r->keys[i].expires_at <= r->loop->now) {
        /* Expired: remove it, like Redis's lazy expiry. */
        key_expire_at(r, i);
        r->keys[i] = r->keys[--r->nkeys];
        return NULL;
      }
      return &r->keys[i];
    }
  }
  return NULL;
}

static void redis_expire_all(sim_redis *r) {
  size_t i = 0;
  while (i < r->nkeys) {
    if (r->keys[i].expires_at <= r->loop->now) {
      key_expire_at(r, i);
      /* Shift instead of swapping so the order stays the insertion
         order, whatever expired. */
      memmove(r->keys + i, r->keys + i + 1,
              (r->nkeys - i - 1) * sizeof(*r->keys));
      r->nkeys--;
    } else {
      i++;
    }
  }
}

void sim_redis_flush(sim_redis *r) {
  while (r->nkeys > 0) {
    free(r->keys[--r->nkeys].key);
  }
  sim_stream_flush(r->streams);
  sim_trace(r->loop, "redis loses all its data");
}

uint64_t sim_redis_fcall_publish(sim_redis *r, uint32_t chan, const char *hkey,
                                 const char *mkey, const char *data, size_t len,
                                 uint32_t size, uint32_t ttl_s,
                                 uint32_t meta_ttl_s) {
  const char *epoch;
  uint64_t off = sim_stream_publish(r->streams, hkey, mkey, data, len, size,
                                    ttl_s, meta_ttl_s, &epoch);
  size_t n = len + 64;
  char *payload = malloc(n);
  int pl;
  sim_blob *b;

  if (payload == NULL) {
    abort();
  }
  pl = snprintf(payload, n, "wshub:%llu:%s:%.*s", (unsigned long long)off,
                epoch, (int)len, data);
  sim_trace(r->loop, "redis FCALL wshub_publish %s -> [%llu, %s]", hkey,
            (unsigned long long)off, epoch);
  b = sim_blob_new(payload, (size_t)pl);
  free(payload);
  sim_redis_publish(r, chan, b);
  sim_blob_unref(b);
  return off;
}

uint64_t sim_redis_hreads(const sim_redis *r) {
  return r->hreads;
}

uint64_t sim_redis_cmd_pending(const sim_redis_conn *c) {
  return c->cmd_inflight;
}

/* Appends |n| bytes to a growing buffer. */
static void gb_put(char **b, size_t *len, size_t *cap, const void *p,
                   size_t n) {
  if (*len + n > *cap) {
    *cap = (*len + n) * 2 + 64;
    *b = realloc(*b, *cap);
    if (*b == NULL) {
      abort();
    }
  }
  memcpy(*b + *len, p, n);
  *len += n;
}

/* An FCALL from |c|: wshub_publish or wshub_read, then the answer on the
   command connection.  The answer blob: req, offset, epoch (17 bytes),
   n, then n times (offset, len, data). */
static void redis_fcall(sim_redis *r, sim_redis_conn *c, uint32_t cmd,
                        uint32_t chan, const sim_blob *p) {
  sim_loop *l = r->loop;
  sim_redis_hcmd hc;
  const char *hkey, *mkey, *data, *epoch = "";
  size_t hl, ml, dl;
  uint64_t off, n64 = 0;
  char *out = NULL, ep[17];
  size_t olen = 0, ocap = 0;
  sim_blob *b;

  memcpy(&hc, p->data, sizeof(hc));
  hkey = p->data + sizeof(hc);
  hl = strlen(hkey);
  mkey = hkey + hl + 1;
  ml = strlen(mkey);
  data = mkey + ml + 1;
  dl = p->len - sizeof(hc) - hl - ml - 2;
  memset(ep, 0, sizeof(ep));
  gb_put(&out, &olen, &ocap, &hc.req, sizeof(hc.req));
  if (cmd == SIM_REDIS_HPUBLISH) {
    off = sim_redis_fcall_publish(r, chan, hkey, mkey, data, dl, hc.size,
                                  hc.ttl_s, hc.meta_ttl_s);
    (void)sim_stream_read(r->streams, hkey, mkey, 0, 0, hc.meta_ttl_s, &epoch,
                          &(sim_stream_entry *){NULL}, &(size_t){0});
    strncpy(ep, epoch, 16);
    gb_put(&out, &olen, &ocap, &off, sizeof(off));
    gb_put(&out, &olen, &ocap, ep, sizeof(ep));
  } else {
    sim_stream_entry *e;
    size_t n, i;
    r->hreads++;
    off = sim_stream_read(r->streams, hkey, mkey, hc.since, hc.size,
                          hc.meta_ttl_s, &epoch, &e, &n);
    sim_trace(l, "redis FCALL wshub_read %s %llu %u -> [%llu, %s, %zu entries]",
              hkey, (unsigned long long)hc.since, (unsigned)hc.size,
              (unsigned long long)off, epoch, n);
    strncpy(ep, epoch, 16);
    n64 = n;
    gb_put(&out, &olen, &ocap, &off, sizeof(off));
    gb_put(&out, &olen, &ocap, ep, sizeof(ep));
    gb_put(&out, &olen, &ocap, &n64, sizeof(n64));
    for (i = 0; i < n; i++) {
      uint64_t eo = e[i].offset, el = e[i].len;
      gb_put(&out, &olen, &ocap, &eo, sizeof(eo));
      gb_put(&out, &olen, &ocap, &el, sizeof(el));
      gb_put(&out, &olen, &ocap, e[i].data, e[i].len);
    }
    free(e);
  }
  b = sim_blob_new(out, olen);
  free(out);
  sim_schedule(
    l, fifo_at(c, &c->cmd_down_last), SIM_EV_BP_DELIVER, c->tag,
    ((uint64_t)(cmd == SIM_REDIS_HPUBLISH ? OUT_HPUBLISHED : OUT_HREAD) << 32) |
      chan,
    c->gen, b);
}

/* Hands an FCALL's answer to the client. */
static void redis_fcall_answer(sim_redis_conn *c, uint32_t kind,
                               const sim_blob *b) {
  const char *p = b->data;
  uint64_t req, off, n, i;
  const char *epoch;
  memcpy(&req, p, 8);
  memcpy(&off, p + 8, 8);
  epoch = p + 16;
  c->cmd_inflight--;
  if (kind == OUT_HPUBLISHED) {
    if (c->cb.on_hpublished) {
      c->cb.on_hpublished(c->cb.user, req, off, epoch);
    }
    return;
  }
  memcpy(&n, p + 33, 8);
  {
    uint64_t *offs = calloc(n + 1, sizeof(*offs));
    const char **data = calloc(n + 1, sizeof(*data));
    size_t *lens = calloc(n + 1, sizeof(*lens));
    size_t at = 41;
    if (offs == NULL || data == NULL || lens == NULL) {
      abort();
    }
    for (i = 0; i < n; i++) {
      uint64_t el;
      memcpy(&offs[i], p + at, 8);
      memcpy(&el, p + at + 8, 8);
      lens[i] = (size_t)el;
      data[i] = p + at + 16;
      at += 16 + (size_t)el;
    }
    if (c->cb.on_hread) {
      c->cb.on_hread(c->cb.user, req, off, epoch, offs, data, lens, (size_t)n);
    }
    free(offs);
    free(data);
    free(lens);
  }
}

int sim_redis_history_holds(sim_redis *r, const char *hkey, const char *mkey,
                            const char *epoch, uint64_t offset) {
  return sim_stream_holds(r->streams, hkey, mkey, epoch, offset);
}

size_t sim_redis_history_len(sim_redis *r, const char *hkey) {
  return sim_stream_len(r->streams, hkey);
}

int sim_redis_key_present(sim_redis *r, const char *key) {
  return redis_key_find(r, key) != NULL;
}

void sim_redis_foreach_key(sim_redis *r, void (*cb)(void *arg, const char *key),
                           void *arg) {
  size_t i;
  redis_expire_all(r);
  for (i = 0; i < r->nkeys; i++) {
    cb(arg, r->keys[i].key);
  }
}

static void redis_set(sim_redis *r, const char *key, uint32_t ttl_s) {
  sim_key *k = redis_key_find(r, key);
  uint64_t exp = ttl_s ? r->loop->now + (uint64_t)ttl_s * SIM_S : UINT64_MAX;
  if (k != NULL) {
    k->expires_at = exp;
    return;
  }
  if (r->nkeys == r->capkeys) {
    r->capkeys = r->capkeys ? 2 * r->capkeys : 16;
    r->keys = realloc(r->keys, r->capkeys * sizeof(*r->keys));
    if (r->keys == NULL) {
      abort();
    }
  }
  r->keys[r->nkeys].key = strdup(key);
  if (r->keys[r->nkeys].key == NULL) {
    abort();
  }
  r->keys[r->nkeys].expires_at = exp;
  r->nkeys++;
}

static void redis_del(sim_redis *r, const char *key) {
  size_t i;
  for (i = 0; i < r->nkeys; i++) {
    if (strcmp(r->keys[i].key, key) == 0) {
      free(r->keys[i].key);
      memmove(r->keys + i, r->keys + i + 1,
              (r->nkeys - i - 1) * sizeof(*r->keys));
      r->nkeys--;
      return;
    }
  }
}

/* -------------------------------------------------- connections */

sim_redis_conn *sim_redis_conn_new(sim_redis *r, uint32_t tag, sim_rng *lat,
                                   const sim_redis_conn_cbs *cbs) {
  sim_redis_conn *c = calloc(1, sizeof(*c));
  if (c == NULL) {
    return NULL;
  }
  c->r = r;
  c->tag = tag;
  c->lat = lat;
  c->cb = *cbs;
  /* Events of an earlier connection with the same tag must not match. */
  c->gen = sim_loop_unique(r->loop);
  c->next = r->conns;
  r->conns = c;
  return c;
}

void sim_redis_conn_free(sim_redis_conn *c) {
  sim_redis_conn **pp;
  if (c == NULL) {
    return;
  }
  sim_redis_drop(c, 0);
  for (pp = &c->r->conns; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == c) {
      *pp = c->next;
      break;
    }
  }
  free(c->subs);
  free(c);
}

void sim_redis_connect(sim_redis_conn *c) {
  sim_loop *l = c->r->loop;
  sim_schedule(l, l->now + sim_lat_redis(c->lat), SIM_EV_BP_CONNECT, c->tag, 0,
               c->gen, NULL);
}

void sim_redis_drop(sim_redis_conn *c, int notify) {
  sim_redis *r = c->r;
  size_t i;
  if (c->connected) {
    for (i = 0; i < c->nsubs; i++) {
      if (c->subs[i]) {
        redis_sub_remove(r, (uint32_t)i, c);
        c->subs[i] = 0;
      }
    }
    sim_trace(r->loop, "redis drops the connections of instance %u", c->tag);
    HOOKS(r, on_conn_dropped, c->tag);
  }
  c->connected = 0;
  c->gen++;
  c->epoch++;
  c->sub_inflight = c->conf_inflight = c->cmd_inflight = 0;
  if (notify) {
    sim_schedule(r->loop, r->loop->now + sim_lat_redis(c->lat), SIM_EV_BP_DOWN,
                 c->tag, 0, c->gen, NULL);
  }
}

void sim_redis_set_partitioned(sim_redis_conn *c, int on) {
  c->partitioned = on;
}

int sim_redis_send(sim_redis_conn *c, int cmd, uint32_t arg, sim_blob *p) {
  int sub = cmd == SIM_REDIS_SUBSCRIBE || cmd == SIM_REDIS_UNSUBSCRIBE;
  if (!c->connected) {
    sim_blob_unref(p);
    return -1;
  }
  if (sub) {
    c->sub_inflight++;
  } else {
    c->cmd_inflight++;
  }
  sim_schedule(c->r->loop, fifo_at(c, sub ? &c->sub_up_last : &c->cmd_up_last),
               SIM_EV_REDIS_CMD, c->tag, ((uint64_t)cmd << 32) | arg, c->gen,
               p);
  return 0;
}

int sim_redis_connected(const sim_redis_conn *c) {
  return c->connected;
}

int sim_redis_sub_idle(const sim_redis_conn *c) {
  return c->sub_inflight == 0 && c->conf_inflight == 0;
}

int sim_redis_idle(const sim_redis_conn *c) {
  return c->sub_inflight == 0 && c->conf_inflight == 0 && c->cmd_inflight == 0;
}

uint64_t sim_redis_epoch(const sim_redis_conn *c) {
  return c->epoch;
}

int sim_redis_subscribed(const sim_redis_conn *c, uint32_t chan) {
  return chan < c->nsubs && c->subs[chan];
}

/* ------------------------------------------------------- events */

/* A command reaches Redis. */
static void redis_cmd(sim_redis *r, sim_redis_conn *c, const sim_ev *ev) {
  uint32_t cmd = (uint32_t)(ev->b >> 32);
  uint32_t arg = (uint32_t)ev->b;
  sim_blob *p = ev->p;
  sim_loop *l = r->loop;

  switch (cmd) {
  case SIM_REDIS_SUBSCRIBE:
    c->sub_inflight--;
    redis_sub_add(r, arg, c);
    conn_subs_set(c, arg, 1);
    HOOKS(r, on_subscribe, c->tag, arg, 1);
    sim_trace(l, "redis SUBSCRIBE %s from %u", sim_chan_name(l, arg), c->tag);
    c->conf_inflight++;
    sim_schedule(l, fifo_at(c, &c->sub_down_last), SIM_EV_BP_DELIVER, c->tag,
                 ((uint64_t)OUT_CONFIRM << 32) | arg, c->gen, NULL);
    break;
  case SIM_REDIS_UNSUBSCRIBE:
    c->sub_inflight--;
    redis_sub_remove(r, arg, c);
    conn_subs_set(c, arg, 0);
    HOOKS(r, on_subscribe, c->tag, arg, 0);
    sim_trace(l, "redis UNSUBSCRIBE %s from %u", sim_chan_name(l, arg), c->tag);
    break;
  case SIM_REDIS_PUBLISH:
    c->cmd_inflight--;
    sim_redis_publish(r, arg, p);
    break;
  case SIM_REDIS_SET:
    c->cmd_inflight--;
    redis_set(r, p->data, arg);
    HOOKS(r, on_key_set, c->tag, p->data, arg);
    sim_trace(l, "redis SET %s EX %u", p->data, arg);
    break;
  case SIM_REDIS_DEL:
    c->cmd_inflight--;
    redis_del(r, p->data);
    HOOKS(r, on_key_del, c->tag, p->data);
    sim_trace(l, "redis DEL %s", p->data);
    break;
  case SIM_REDIS_HPUBLISH:
  case SIM_REDIS_HREAD:
    /* Still in flight until its answer arrives. */
    redis_fcall(r, c, cmd, arg, p);
    break;
  default:
    break;
  }
}

static sim_redis_conn *conn_of(sim_redis *r, const sim_ev *ev) {
  sim_redis_conn *c;
  for (c = r->conns; c != NULL; c = c->next) {
    if (c->tag == ev->a && c->gen == ev->gen) {
      return c;
    }
  }
  return NULL;
}

int sim_redis_event(sim_redis *r, const sim_ev *ev) {
  sim_redis_conn *c;
  sim_loop *l = r->loop;

  switch (ev->type) {
  case SIM_EV_REDIS_CMD:
  case SIM_EV_BP_DELIVER:
  case SIM_EV_BP_CONNECT:
  case SIM_EV_BP_UP:
  case SIM_EV_BP_DOWN:
    break;
  default:
    return 0;
  }
  c = conn_of(r, ev);
  if (c == NULL) {
    /* Lost with a dropped connection (at-most-once). */
    sim_blob_unref(ev->p);
    return 1;
  }
  switch (ev->type) {
  case SIM_EV_REDIS_CMD:
    redis_cmd(r, c, ev);
    break;
  case SIM_EV_BP_DELIVER: {
    uint32_t kind = (uint32_t)(ev->b >> 32);
    uint32_t chan = (uint32_t)ev->b;
    const char *name = sim_chan_name(l, chan);
    if (kind == OUT_HPUBLISHED || kind == OUT_HREAD) {
      redis_fcall_answer(c, kind, ev->p);
    } else if (kind == OUT_CONFIRM) {
      c->conf_inflight--;
      if (c->cb.on_subscribed) {
        c->cb.on_subscribed(c->cb.user, name, strlen(name));
      }
    } else {
      sim_blob *p = ev->p;
      HOOKS(r, on_deliver, c->tag, chan, p->t);
      if (c->cb.on_message) {
        c->cb.on_message(c->cb.user, name, strlen(name),
                         (const uint8_t *)p->data, p->len);
      }
    }
    break;
  }
  case SIM_EV_BP_CONNECT:
    if (c->partitioned) {
      sim_trace(l, "redis refuses instance %u (partitioned)", c->tag);
      if (c->cb.on_refused) {
        c->cb.on_refused(c->cb.user, sim_lat_redis(c->lat));
      }
      break;
    }
    c->connected = 1;
    c->epoch++;
    c->sub_up_last = c->sub_down_last = c->cmd_up_last = c->cmd_down_last =
      l->now;
    sim_trace(l, "redis accepts instance %u", c->tag);
    HOOKS(r, on_conn_accepted, c->tag);
    sim_schedule(l, l->now + sim_lat_redis(c->lat), SIM_EV_BP_UP, c->tag, 0,
                 c->gen, NULL);
    break;
  case SIM_EV_BP_UP:
    if (c->cb.on_connected) {
      c->cb.on_connected(c->cb.user);
    }
    break;
  case SIM_EV_BP_DOWN:
    if (c->cb.on_lost) {
      c->cb.on_lost(c->cb.user);
    }
    break;
  default:
    break;
  }
  sim_blob_unref(ev->p);
  return 1;
}
