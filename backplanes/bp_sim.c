/*
 * bp_sim.c - a simulated Redis on the virtual clock, and the backplane
 * (bp_ops) each simulated instance drives it through.  See bp_sim.h for
 * what is modelled.
 */
#include "bp_sim.h"

#include <stdlib.h>
#include <string.h>

enum { CMD_SUBSCRIBE = 1, CMD_UNSUBSCRIBE, CMD_PUBLISH, CMD_SET, CMD_DEL };
enum { OUT_CONFIRM = 1, OUT_MESSAGE };

#define BACKOFF_MIN (100 * SIM_MS)
#define BACKOFF_MAX (1 * SIM_S)

typedef struct sim_key {
  char *key;
  uint64_t expires_at; /* UINT64_MAX: no TTL */
} sim_key;

/* Subscriber instances of one channel, in subscription order. */
typedef struct sim_chan_subs {
  uint32_t *inst;
  size_t len, cap;
} sim_chan_subs;

struct sim_redis {
  sim_world *w;
  sim_key *keys;
  size_t nkeys, capkeys;
  sim_chan_subs *chans; /* indexed by channel id */
  size_t nchans;
};

struct bp_sim {
  bp base; /* first: a bp * is a bp_sim * */
  sim_world *w;
  uint32_t inst;
  int connected;  /* Redis holds the connections */
  int connecting; /* a connect attempt or backoff is under way */
  int up_known;   /* the instance was told on_up */
  int partitioned;
  uint64_t gen;   /* bumped at every drop: stale events are ignored */
  uint64_t epoch; /* bumped at every connect and drop */
  uint64_t backoff;
  uint64_t sub_up_last, sub_down_last, cmd_up_last;
  uint64_t sub_inflight;  /* commands on the subscriber connection */
  uint64_t conf_inflight; /* confirmations to the instance */
  uint64_t cmd_inflight;  /* commands on the command connection */
  uint8_t *subs;          /* Redis's view, indexed by channel id */
  size_t nsubs;
  uint64_t msg_time;
  sim_rng lat;      /* this instance's own latency stream */
  char **lost_dels; /* keys whose DEL was lost (not sent, or dropped in
                       flight) */
  size_t nlost;
  char **pending_dels; /* keys whose DEL is in flight */
  size_t npending;
};

/* ------------------------------------------------------------ Redis */

int sim_redis_new(sim_redis **out, sim_world *w) {
  sim_redis *r = calloc(1, sizeof(*r));
  if (r == NULL) {
    return HUB_ERR_NOMEM;
  }
  r->w = w;
  *out = r;
  return 0;
}

void sim_redis_del(sim_redis *r) {
  size_t i;
  if (r == NULL) {
    return;
  }
  for (i = 0; i < r->nkeys; i++) {
    free(r->keys[i].key);
  }
  free(r->keys);
  for (i = 0; i < r->nchans; i++) {
    free(r->chans[i].inst);
  }
  free(r->chans);
  free(r);
}

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

static void redis_sub_add(sim_redis *r, uint32_t chan, uint32_t inst) {
  sim_chan_subs *c = redis_chan(r, chan);
  size_t i;
  for (i = 0; i < c->len; i++) {
    if (c->inst[i] == inst) {
      return;
    }
  }
  if (c->len == c->cap) {
    c->cap = c->cap ? 2 * c->cap : 4;
    c->inst = realloc(c->inst, c->cap * sizeof(*c->inst));
    if (c->inst == NULL) {
      abort();
    }
  }
  c->inst[c->len++] = inst;
}

static void redis_sub_remove(sim_redis *r, uint32_t chan, uint32_t inst) {
  sim_chan_subs *c = redis_chan(r, chan);
  size_t i;
  for (i = 0; i < c->len; i++) {
    if (c->inst[i] == inst) {
      /* Keep subscription order: deliveries stay deterministic and
         independent of removal history. */
      memmove(c->inst + i, c->inst + i + 1,
              (c->len - i - 1) * sizeof(*c->inst));
      c->len--;
      return;
    }
  }
}

static sim_key *redis_key_find(sim_redis *r, const char *key) {
  size_t i;
  for (i = 0; i < r->nkeys; i++) {
    if (strcmp(r->keys[i].key, key) == 0) {
      if (r->keys[i].expires_at <= r->w->now) {
        /* Expired: remove it, like Redis's lazy expiry. */
        free(r->keys[i].key);
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
    if (r->keys[i].expires_at <= r->w->now) {
      free(r->keys[i].key);
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
  uint64_t exp = ttl_s ? r->w->now + (uint64_t)ttl_s * SIM_S : UINT64_MAX;
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

static uint64_t fifo_at(bp_sim *b, uint64_t *last) {
  uint64_t at = b->w->now + sim_lat_redis(&b->lat);
  if (at < *last) {
    at = *last;
  }
  *last = at;
  return at;
}

void sim_redis_publish(sim_redis *r, uint32_t chan, sim_blob *data) {
  sim_chan_subs *c = redis_chan(r, chan);
  size_t i;
  data->t = r->w->now;
  if (r->w->check) {
    sim_check_publish(r->w, chan);
  }
  sim_trace(r->w, "redis PUBLISH %s %.*s -> %zu", r->w->chans[chan],
            (int)data->len, data->data, c->len);
  for (i = 0; i < c->len; i++) {
    bp_sim *b = r->w->insts[c->inst[i]].bp;
    sim_blob_ref(data);
    sim_schedule(r->w, fifo_at(b, &b->sub_down_last), SIM_EV_BP_DELIVER,
                 b->inst, ((uint64_t)OUT_MESSAGE << 32) | chan, b->gen, data);
  }
}

/* ---------------------------------------------------------- the bp */

static void link_subs_set(bp_sim *b, uint32_t chan, int on) {
  if (chan >= b->nsubs) {
    size_t n = chan + 8;
    uint8_t *s = realloc(b->subs, n);
    if (s == NULL) {
      abort();
    }
    memset(s + b->nsubs, 0, n - b->nsubs);
    b->subs = s;
    b->nsubs = n;
  }
  b->subs[chan] = (uint8_t)on;
}

static void send_cmd(bp_sim *b, uint64_t *last, uint64_t *inflight,
                     uint32_t cmd, uint32_t arg, sim_blob *p) {
  (*inflight)++;
  sim_schedule(b->w, fifo_at(b, last), SIM_EV_REDIS_CMD, b->inst,
               ((uint64_t)cmd << 32) | arg, b->gen, p);
}

static int op_subscribe(bp *base, const char *channel, size_t len) {
  bp_sim *b = (bp_sim *)base;
  if (!b->connected) {
    return HUB_ERR_SHUT_DOWN;
  }
  send_cmd(b, &b->sub_up_last, &b->sub_inflight, CMD_SUBSCRIBE,
           sim_chan_intern(b->w, channel, len), NULL);
  return 0;
}

static int op_unsubscribe(bp *base, const char *channel, size_t len) {
  bp_sim *b = (bp_sim *)base;
  if (!b->connected) {
    return HUB_ERR_SHUT_DOWN;
  }
  send_cmd(b, &b->sub_up_last, &b->sub_inflight, CMD_UNSUBSCRIBE,
           sim_chan_intern(b->w, channel, len), NULL);
  return 0;
}

static int op_publish(bp *base, const char *channel, size_t len,
                      const uint8_t *data, size_t dlen) {
  bp_sim *b = (bp_sim *)base;
  sim_blob *p;
  if (!b->connected) {
    return HUB_ERR_SHUT_DOWN;
  }
  p = sim_blob_new(data, dlen);
  send_cmd(b, &b->cmd_up_last, &b->cmd_inflight, CMD_PUBLISH,
           sim_chan_intern(b->w, channel, len), p);
  return 0;
}

static sim_blob *full_key(bp_sim *b, const char *key, size_t len) {
  size_t plen = strlen(b->w->cfg.prefix);
  char *buf = malloc(plen + len + 1);
  sim_blob *p;
  if (buf == NULL) {
    abort();
  }
  memcpy(buf, b->w->cfg.prefix, plen);
  memcpy(buf + plen, key, len);
  p = sim_blob_new(buf, plen + len);
  free(buf);
  return p;
}

static void strv_add(char ***v, size_t *n, const char *key) {
  size_t i;
  char **nv;
  for (i = 0; i < *n; i++) {
    if (strcmp((*v)[i], key) == 0) {
      return;
    }
  }
  nv = realloc(*v, (*n + 1) * sizeof(*nv));
  if (nv == NULL) {
    abort();
  }
  *v = nv;
  nv[*n] = strdup(key);
  if (nv[*n] == NULL) {
    abort();
  }
  (*n)++;
}

static void strv_remove(char **v, size_t *n, const char *key) {
  size_t i;
  for (i = 0; i < *n; i++) {
    if (strcmp(v[i], key) == 0) {
      free(v[i]);
      v[i] = v[--*n];
      return;
    }
  }
}

static void lost_del_forget(bp_sim *b, const char *key) {
  strv_remove(b->lost_dels, &b->nlost, key);
}

int bp_sim_del_lost(const bp_sim *b, const char *key) {
  size_t i;
  for (i = 0; i < b->nlost; i++) {
    if (strcmp(b->lost_dels[i], key) == 0) {
      return 1;
    }
  }
  return 0;
}

static int op_set(bp *base, const char *key, size_t len, const uint8_t *val,
                  size_t vlen, uint32_t ttl_s) {
  bp_sim *b = (bp_sim *)base;
  sim_blob *k;
  (void)val;
  (void)vlen;
  if (!b->connected) {
    return HUB_ERR_SHUT_DOWN;
  }
  k = full_key(b, key, len);
  lost_del_forget(b, k->data);
  send_cmd(b, &b->cmd_up_last, &b->cmd_inflight, CMD_SET, ttl_s, k);
  return 0;
}

static int op_del(bp *base, const char *key, size_t len) {
  bp_sim *b = (bp_sim *)base;
  sim_blob *k = full_key(b, key, len);
  if (!b->connected) {
    /* Lost: the key stays until its TTL.  Remembered so invariant 7 can
       tell a lost DEL from a DEL never sent. */
    strv_add(&b->lost_dels, &b->nlost, k->data);
    sim_blob_unref(k);
    return HUB_ERR_SHUT_DOWN;
  }
  strv_add(&b->pending_dels, &b->npending, k->data);
  send_cmd(b, &b->cmd_up_last, &b->cmd_inflight, CMD_DEL, 0, k);
  return 0;
}

static void op_free(bp *base) {
  bp_sim *b = (bp_sim *)base;
  if (b == NULL) {
    return;
  }
  bp_sim_drop(b, 0);
  while (b->nlost > 0) {
    free(b->lost_dels[--b->nlost]);
  }
  free(b->lost_dels);
  while (b->npending > 0) {
    free(b->pending_dels[--b->npending]);
  }
  free(b->pending_dels);
  free(b->subs);
  free(b);
}

static const bp_ops bp_sim_ops = {op_subscribe, op_unsubscribe, op_publish,
                                  op_set,       op_del,         op_free};

bp_sim *bp_sim_new(sim_world *w, uint32_t inst, const bp_events *ev) {
  bp_sim *b = calloc(1, sizeof(*b));
  if (b == NULL) {
    return NULL;
  }
  b->base.ops = &bp_sim_ops;
  b->base.ev = *ev;
  b->w = w;
  b->inst = inst;
  /* Events of an earlier incarnation of this instance must not match. */
  b->gen = w->insts[inst].gen << 32;
  /* Each instance draws its latencies from its own stream, so adding or
     removing traffic elsewhere does not move its timing (this keeps
     shrunk reproducers faithful). */
  sim_rng_seed(&b->lat, w->seed,
               UINT64_C(0x100000) + ((uint64_t)inst << 20) +
                 w->insts[inst].gen);
  b->backoff = BACKOFF_MIN;
  return b;
}

bp *bp_sim_bp(bp_sim *b) {
  return &b->base;
}

void bp_sim_connect(bp_sim *b) {
  if (b->connected || b->connecting) {
    return;
  }
  b->connecting = 1;
  sim_schedule(b->w, b->w->now + sim_lat_redis(&b->lat), SIM_EV_BP_CONNECT,
               b->inst, 0, b->gen, NULL);
}

void bp_sim_drop(bp_sim *b, int notify) {
  size_t i;
  int had = b->connected || b->connecting || b->up_known;
  if (b->connected) {
    for (i = 0; i < b->nsubs; i++) {
      if (b->subs[i]) {
        redis_sub_remove(b->w->redis, (uint32_t)i, b->inst);
        b->subs[i] = 0;
      }
    }
    sim_trace(b->w, "redis drops the connections of instance %u", b->inst);
  }
  /* DELs in flight die with the connection. */
  while (b->npending > 0) {
    char *k = b->pending_dels[--b->npending];
    strv_add(&b->lost_dels, &b->nlost, k);
    free(k);
  }
  b->connected = 0;
  b->connecting = 0;
  b->gen++;
  b->epoch++;
  b->sub_inflight = b->conf_inflight = b->cmd_inflight = 0;
  if (notify && had) {
    b->connecting = 1; /* the notice, then the backoff, then a connect */
    sim_schedule(b->w, b->w->now + sim_lat_redis(&b->lat), SIM_EV_BP_DOWN,
                 b->inst, 0, b->gen, NULL);
  }
  if (!notify) {
    b->up_known = 0;
  }
}

void bp_sim_set_partitioned(bp_sim *b, int on) {
  b->partitioned = on;
}

int bp_sim_connected(const bp_sim *b) {
  return b->connected;
}

int bp_sim_up_known(const bp_sim *b) {
  return b->up_known;
}

int bp_sim_sub_idle(const bp_sim *b) {
  return b->sub_inflight == 0 && b->conf_inflight == 0;
}

int bp_sim_idle(const bp_sim *b) {
  return b->sub_inflight == 0 && b->conf_inflight == 0 && b->cmd_inflight == 0;
}

uint64_t bp_sim_epoch(const bp_sim *b) {
  return b->epoch;
}

int bp_sim_subscribed(const bp_sim *b, uint32_t chan) {
  return chan < b->nsubs && b->subs[chan];
}

uint64_t bp_sim_msg_time(const bp_sim *b) {
  return b->msg_time;
}

/* A command reaches Redis. */
static void redis_cmd(sim_world *w, bp_sim *b, const sim_ev *ev) {
  uint32_t cmd = (uint32_t)(ev->b >> 32);
  uint32_t arg = (uint32_t)ev->b;
  sim_blob *p = ev->p;
  sim_redis *r = w->redis;

  switch (cmd) {
  case CMD_SUBSCRIBE:
    b->sub_inflight--;
    redis_sub_add(r, arg, b->inst);
    link_subs_set(b, arg, 1);
    sim_trace(w, "redis SUBSCRIBE %s from %u", w->chans[arg], b->inst);
    b->conf_inflight++;
    sim_schedule(w, fifo_at(b, &b->sub_down_last), SIM_EV_BP_DELIVER, b->inst,
                 ((uint64_t)OUT_CONFIRM << 32) | arg, b->gen, NULL);
    break;
  case CMD_UNSUBSCRIBE:
    b->sub_inflight--;
    redis_sub_remove(r, arg, b->inst);
    link_subs_set(b, arg, 0);
    sim_trace(w, "redis UNSUBSCRIBE %s from %u", w->chans[arg], b->inst);
    break;
  case CMD_PUBLISH:
    b->cmd_inflight--;
    sim_redis_publish(r, arg, p);
    break;
  case CMD_SET:
    b->cmd_inflight--;
    redis_set(r, p->data, arg);
    sim_trace(w, "redis SET %s EX %u", p->data, arg);
    break;
  case CMD_DEL:
    b->cmd_inflight--;
    strv_remove(b->pending_dels, &b->npending, p->data);
    redis_del(r, p->data);
    sim_trace(w, "redis DEL %s", p->data);
    break;
  default:
    break;
  }
}

int bp_sim_event(sim_world *w, const sim_ev *ev) {
  bp_sim *b;
  const char *name;

  switch (ev->type) {
  case SIM_EV_REDIS_CMD:
  case SIM_EV_BP_DELIVER:
  case SIM_EV_BP_CONNECT:
  case SIM_EV_BP_UP:
  case SIM_EV_BP_DOWN:
  case SIM_EV_BP_RETRY:
    break;
  default:
    return 0;
  }
  b = w->insts[ev->a].bp;
  if (b == NULL || ev->gen != b->gen) {
    /* Lost with a dropped connection (at-most-once). */
    sim_blob_unref(ev->p);
    return 1;
  }
  switch (ev->type) {
  case SIM_EV_REDIS_CMD:
    redis_cmd(w, b, ev);
    break;
  case SIM_EV_BP_DELIVER: {
    uint32_t kind = (uint32_t)(ev->b >> 32);
    uint32_t chan = (uint32_t)ev->b;
    name = w->chans[chan];
    if (kind == OUT_CONFIRM) {
      b->conf_inflight--;
      if (b->up_known && b->base.ev.on_subscribed) {
        b->base.ev.on_subscribed(b->base.ev.user, name, strlen(name));
      }
    } else if (b->up_known && b->base.ev.on_msg) {
      sim_blob *p = ev->p;
      b->msg_time = p->t;
      b->base.ev.on_msg(b->base.ev.user, name, strlen(name),
                        (const uint8_t *)p->data, p->len);
    }
    break;
  }
  case SIM_EV_BP_CONNECT:
    if (b->partitioned) {
      sim_trace(w, "redis refuses instance %u (partitioned)", b->inst);
      sim_schedule(w, w->now + sim_lat_redis(&b->lat) + b->backoff,
                   SIM_EV_BP_RETRY, b->inst, 0, b->gen, NULL);
      b->backoff = b->backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : b->backoff * 2;
      break;
    }
    b->connected = 1;
    b->epoch++;
    b->sub_up_last = b->sub_down_last = b->cmd_up_last = w->now;
    sim_trace(w, "redis accepts instance %u", b->inst);
    sim_schedule(w, w->now + sim_lat_redis(&b->lat), SIM_EV_BP_UP, b->inst, 0,
                 b->gen, NULL);
    break;
  case SIM_EV_BP_UP:
    b->connecting = 0;
    b->up_known = 1;
    b->backoff = BACKOFF_MIN;
    if (b->base.ev.on_up) {
      b->base.ev.on_up(b->base.ev.user);
    }
    break;
  case SIM_EV_BP_DOWN: {
    int was_up = b->up_known;
    b->up_known = 0;
    if (was_up && b->base.ev.on_down) {
      b->base.ev.on_down(b->base.ev.user);
    }
    sim_schedule(w, w->now + b->backoff, SIM_EV_BP_RETRY, b->inst, 0, b->gen,
                 NULL);
    break;
  }
  case SIM_EV_BP_RETRY:
    sim_schedule(w, w->now + sim_lat_redis(&b->lat), SIM_EV_BP_CONNECT, b->inst,
                 0, b->gen, NULL);
    break;
  default:
    break;
  }
  sim_blob_unref(ev->p);
  return 1;
}
