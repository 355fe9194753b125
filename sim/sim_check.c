/*
 * sim_check.c - the explorer's invariants (issue 3), checked after every
 * event while w->check is set.  The first violation is kept in w->viol;
 * the runner stops there.
 *
 * The checkers observe the simulated Redis only through its hooks
 * (sim_check_hooks) and queries; Redis never calls them.  Invariant 4
 * (nothing lost) is checked where the message reaches the instance, in
 * sim_world.c's on_msg (with the Redis time the on_deliver hook gave),
 * because only there is it known who must get it, and at Redis's PUBLISH
 * (the on_publish hook) for the instances it will not reach.  Invariant 9
 * is the core's own hub_check.
 */
#include "sim.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void sim_violate(sim_world *w, int inv, const char *fmt, ...) {
  va_list ap;
  if (w->viol.inv != 0) {
    return;
  }
  w->viol.inv = inv;
  w->viol.evno = w->loop.events;
  w->viol.at = w->loop.now;
  va_start(ap, fmt);
  vsnprintf(w->viol.what, sizeof(w->viol.what), fmt, ap);
  va_end(ap);
  sim_trace(&w->loop, "VIOLATION invariant %d: %s", inv, w->viol.what);
}

/* Invariant 1, for one instance whose commands have all been processed:
   Redis holds its SUBSCRIBE to a channel iff it has a local subscriber. */
static void check_subs(sim_world *w, sim_inst *in, int inv) {
  size_t i;
  for (i = 0; i < w->loop.nnames; i++) {
    const char *name = sim_chan_name(&w->loop, i);
    int redis = sim_redis_subscribed(sim_bp_conn(in->bp), (uint32_t)i);
    size_t local = hub_channel_subscribers(in->h, name, strlen(name));
    if (redis != (local > 0)) {
      sim_violate(w, inv,
                  "instance %s: redis %s %s but it has %zu local "
                  "subscribers",
                  in->id,
                  redis ? "holds a subscription to"
                        : "has no "
                          "subscription to",
                  name, local);
      return;
    }
  }
}

/* The core's own consistency check (reported as invariant 9). */
int sim_check_hub(sim_world *w, sim_inst *in) {
  const char *why = NULL;
  if (in->h != NULL && hub_check(in->h, &why) != 0) {
    sim_violate(w, 9, "instance %s: hub_check: %s", in->id, why ? why : "?");
    return -1;
  }
  return 0;
}

void sim_check_inst(sim_world *w, sim_inst *in) {
  if (sim_check_hub(w, in) != 0) {
    return;
  }
  if (in->h == NULL || in->bp == NULL || !sim_bp_connected(in->bp) ||
      !sim_bp_up_known(in->bp) || !hub_bp_is_up(in->h) ||
      !sim_redis_sub_idle(sim_bp_conn(in->bp))) {
    return;
  }
  check_subs(w, in, 1);
}

/* Invariant 5: the hub's queue for a connection stays within limits. */
void sim_check_queue(sim_world *w, sim_inst *in, sim_conn *k) {
  size_t msgs = k->qlen - k->wfin;
  uint64_t bytes = k->qbytes - k->wpos;
  if (!k->open) {
    return;
  }
  if (msgs > in->q_msgs_max || bytes > in->q_bytes_max) {
    sim_violate(w, 5,
                "client %s on %s: %zu messages / %llu bytes queued, limits "
                "%u / %llu, not evicted",
                w->clients[k->client].name, in->id, msgs,
                (unsigned long long)bytes, in->q_msgs_max,
                (unsigned long long)in->q_bytes_max);
  }
}

static int seq_get(sim_seqmap *m, uint64_t key, uint64_t **val) {
  size_t i;
  if (m->len * 2 >= m->cap) {
    size_t ncap = m->cap ? 2 * m->cap : 64, j;
    uint64_t *nk = calloc(ncap, sizeof(*nk));
    uint64_t *nv = calloc(ncap, sizeof(*nv));
    if (nk == NULL || nv == NULL) {
      abort();
    }
    for (j = 0; j < m->cap; j++) {
      if (m->keys[j]) {
        size_t h =
          (size_t)((m->keys[j] * 0x9e3779b97f4a7c15ULL) >> 20) & (ncap - 1);
        while (nk[h]) {
          h = (h + 1) & (ncap - 1);
        }
        nk[h] = m->keys[j];
        nv[h] = m->vals[j];
      }
    }
    free(m->keys);
    free(m->vals);
    m->keys = nk;
    m->vals = nv;
    m->cap = ncap;
  }
  i = (size_t)((key * 0x9e3779b97f4a7c15ULL) >> 20) & (m->cap - 1);
  while (m->keys[i] && m->keys[i] != key) {
    i = (i + 1) & (m->cap - 1);
  }
  if (!m->keys[i]) {
    m->keys[i] = key;
    m->vals[i] = 0;
    m->len++;
    *val = &m->vals[i];
    return 0;
  }
  *val = &m->vals[i];
  return 1;
}

/* Parses the explorer's data {"p":P,"s":S}; returns 0 on success. */
static int parse_ps(const char *d, size_t len, long *p, long *s) {
  const char *v;
  size_t vlen;
  char tmp[24];
  if (sim_json_field(d, len, "p", &v, &vlen) != 0 || vlen >= sizeof(tmp)) {
    return -1;
  }
  memcpy(tmp, v, vlen);
  tmp[vlen] = '\0';
  *p = strtol(tmp, NULL, 10);
  if (sim_json_field(d, len, "s", &v, &vlen) != 0 || vlen >= sizeof(tmp)) {
    return -1;
  }
  memcpy(tmp, v, vlen);
  tmp[vlen] = '\0';
  *s = strtol(tmp, NULL, 10);
  return 0;
}

/* Invariants 2 and 3, for a message frame a client read. */
void sim_check_frame(sim_world *w, sim_client *c, int type, uint32_t chan,
                     const char *data, size_t len, uint64_t bflags) {
  sim_cstate *cs = sim_client_cstate(c, chan);
  long p, s;
  uint64_t *last;
  (void)type;
  (void)bflags;
  if (!cs->acked) {
    sim_violate(w, 2,
                "client %s received a message on %s, which it is not "
                "subscribed to: %.*s",
                c->name, sim_chan_name(&w->loop, chan), (int)len, data);
    return;
  }
  if (parse_ps(data, len, &p, &s) != 0 || p < -1 || s < 0) {
    return;
  }
  if (cs->replay_until > 0 && cs->has_pos && cs->pos <= cs->replay_until) {
    return; /* a replay the client asked for (sim_cstate) */
  }
  seq_get(&c->seqs, ((uint64_t)(p + 2) << 32) | chan, &last);
  if ((uint64_t)s + 1 <= *last) {
    sim_violate(w, 3,
                "client %s received %s #%ld of publisher %ld after "
                "#%llu: %s",
                c->name, sim_chan_name(&w->loop, chan), s, p,
                (unsigned long long)(*last - 1),
                (uint64_t)s + 1 == *last ? "twice" : "out of order");
    return;
  }
  *last = (uint64_t)s + 1;
}

/*
 * Invariants 10-12, history (CONTRACT.md "History and recovery"), as
 * each frame reaches the client, before its position moves:
 *   10: per client and channel, the offsets of message frames are
 *       strictly consecutive from the position its last `subscribed`,
 *       message or `gap` frame gave it;
 *   11: a `recovered:true` reply to a `recover` subscribe names exactly
 *       the since the client sent (so the replay that follows, checked
 *       by 10, is exactly the missed offsets);
 *   12: a `gap` frame within one epoch skips nothing the channel's
 *       history still holds (the hub could have filled it).
 */
void sim_check_hist(sim_world *w, sim_client *c, int type, uint32_t chan,
                    uint64_t off, const char *epoch, size_t elen,
                    int recovered) {
  sim_cstate *cs = sim_client_cstate(c, chan);
  const char *name = sim_chan_name(&w->loop, chan);
  if (type == SIM_R_MESSAGE) {
    if (cs->has_pos && off != cs->pos + 1) {
      sim_violate(w, 10,
                  "client %s received offset %llu on %s after %llu "
                  "without a gap frame (%s)",
                  c->name, (unsigned long long)off, name,
                  (unsigned long long)cs->pos,
                  off <= cs->pos ? "a duplicate" : "messages lost");
    }
    return;
  }
  if (type == SIM_R_SUBSCRIBED) {
    if (recovered == 1 && cs->rec_sent &&
        (off != cs->rec_since || epoch == NULL ||
         strlen(cs->rec_epoch) != elen ||
         memcmp(cs->rec_epoch, epoch, elen) != 0)) {
      sim_violate(w, 11,
                  "client %s recovered on %s from offset %llu, but it asked "
                  "for %llu",
                  c->name, name, (unsigned long long)off,
                  (unsigned long long)cs->rec_since);
    }
    if (recovered == 1 && !cs->rec_sent) {
      sim_violate(w, 11, "client %s got recovered:true on %s without since",
                  c->name, name);
    }
    return;
  }
  if (type == SIM_R_GAP && cs->has_pos && epoch != NULL &&
      strlen(cs->epoch) == elen && memcmp(cs->epoch, epoch, elen) == 0 &&
      off > cs->pos) {
    char hkey[256], mkey[256];
    snprintf(hkey, sizeof(hkey), "%shistory:%s", w->cfg.prefix, name);
    snprintf(mkey, sizeof(mkey), "%smeta:%s", w->cfg.prefix, name);
    if (sim_redis_history_holds(w->redis, hkey, mkey, cs->epoch, cs->pos + 1)) {
      sim_violate(w, 12,
                  "client %s got a gap on %s from %llu to %llu, but history "
                  "still holds offset %llu",
                  c->name, name, (unsigned long long)cs->pos,
                  (unsigned long long)off, (unsigned long long)cs->pos + 1);
    }
  }
}

/* Invariant 4 at the source: Redis is publishing on |chan| now; a client
   that holds `subscribed` on an instance whose link stayed up must be
   reached, so its instance must hold the Redis subscription. */
static void check_publish(sim_world *w, uint32_t chan) {
  size_t i;
  hub_conn_id id;
  for (i = 0; i < w->ninsts; i++) {
    sim_inst *in = &w->insts[i];
    uint64_t epoch;
    if (in->state != SIM_INST_RUNNING || in->bp == NULL ||
        !sim_bp_connected(in->bp) ||
        sim_redis_subscribed(sim_bp_conn(in->bp), chan)) {
      continue;
    }
    epoch = sim_redis_epoch(sim_bp_conn(in->bp));
    for (id = 1; id < in->nconns; id++) {
      sim_conn *k = in->conns[id];
      sim_client *c;
      sim_cstate *cs;
      if (k == NULL || !k->open) {
        continue;
      }
      c = &w->clients[k->client];
      if (c->read_rate != SIM_FAST || c->state != SIM_CL_OPEN) {
        continue;
      }
      cs = sim_client_cstate(c, chan);
      if (cs->must_from != UINT64_MAX && cs->must_from <= w->loop.now &&
          cs->must_epoch == epoch) {
        sim_violate(w, 4,
                    "Redis publishes on %s while instance %s holds no "
                    "subscription, but client %s got `subscribed` at "
                    "%llu ns: the message is lost for it",
                    sim_chan_name(&w->loop, chan), in->id, c->name,
                    (unsigned long long)cs->must_from);
        return;
      }
    }
  }
}

typedef struct key_scan {
  sim_world *w;
  const char *prefix;
  size_t plen;
  const char *found;
  const sim_strv *skip_lost; /* ignore keys whose DEL was lost */
} key_scan;

static void scan_prefix(void *arg, const char *key) {
  key_scan *ks = arg;
  if (ks->skip_lost != NULL && sim_strv_has(ks->skip_lost, key)) {
    return;
  }
  if (ks->found == NULL && strncmp(key, ks->prefix, ks->plen) == 0) {
    /* "ws:instance:0" must not match "ws:instance:0.1". */
    if (ks->prefix[ks->plen - 1] == ':' || key[ks->plen] == '\0') {
      ks->found = key;
    }
  }
}

/* Invariant 6: no key of a crashed instance outlives its TTL. */
void sim_check_keys_gone(sim_world *w, const char *prefix) {
  key_scan ks;
  memset(&ks, 0, sizeof(ks));
  ks.w = w;
  ks.prefix = prefix;
  ks.plen = strlen(prefix);
  sim_redis_foreach_key(w->redis, scan_prefix, &ks);
  if (ks.found != NULL) {
    sim_violate(w, 6, "key %s of a crashed instance outlived its TTL",
                ks.found);
  }
}

/* Invariant 7: after a graceful shutdown every client saw 1001 and the
   instance left no keys and no subscriptions. */
void sim_check_exit(sim_world *w, sim_inst *in) {
  size_t i;
  char buf[160];
  key_scan ks;
  for (i = 0; i < w->nclients; i++) {
    sim_client *c = &w->clients[i];
    if (c->inst == in->idx && c->inst_gen == in->gen && c->shutdown_seen &&
        c->state == SIM_CL_CLOSED && c->close_code != 1001) {
      sim_violate(w, 7,
                  "client %s of instance %s closed with %d, not 1001, "
                  "at shutdown",
                  c->name, in->id, c->close_code);
      return;
    }
  }
  if (!in->shutdown_clean || in->bp == NULL || !sim_bp_connected(in->bp)) {
    return; /* Redis was unreachable: keys expire by TTL instead. */
  }
  for (i = 0; i < w->loop.nnames; i++) {
    if (sim_redis_subscribed(sim_bp_conn(in->bp), (uint32_t)i)) {
      sim_violate(w, 7, "instance %s exited holding a subscription to %s",
                  in->id, sim_chan_name(&w->loop, i));
      return;
    }
  }
  memset(&ks, 0, sizeof(ks));
  /* A DEL sent while Redis was unreachable is lost (at-most-once); that
     key expires by its TTL, which invariant 8 checks. */
  ks.skip_lost = &in->lost_dels;
  snprintf(buf, sizeof(buf), "%sinstance:%s", w->cfg.prefix, in->id);
  ks.prefix = buf;
  ks.plen = strlen(buf);
  sim_redis_foreach_key(w->redis, scan_prefix, &ks);
  if (ks.found == NULL) {
    snprintf(buf, sizeof(buf), "%sconn:%s:", w->cfg.prefix, in->id);
    ks.plen = strlen(buf);
    sim_redis_foreach_key(w->redis, scan_prefix, &ks);
  }
  if (ks.found != NULL) {
    sim_violate(w, 7, "instance %s shut down but left key %s", in->id,
                ks.found);
  }
}

/* Invariant 8, part two: every key belongs to a live instance or to an
   open connection of one. */
static void scan_live(void *arg, const char *key) {
  key_scan *ks = arg;
  sim_world *w = ks->w;
  size_t plen = strlen(w->cfg.prefix);
  const char *rest, *id;
  size_t i;
  if (ks->found != NULL || strncmp(key, w->cfg.prefix, plen) != 0) {
    return;
  }
  rest = key + plen;
  if (strncmp(rest, "instance:", 9) == 0) {
    id = rest + 9;
    for (i = 0; i < w->ninsts; i++) {
      if (w->insts[i].state == SIM_INST_RUNNING &&
          strcmp(w->insts[i].id, id) == 0) {
        return;
      }
    }
    ks->found = key;
  } else if (strncmp(rest, "conn:", 5) == 0) {
    const char *colon;
    id = rest + 5;
    colon = strrchr(id, ':');
    if (colon == NULL) {
      ks->found = key;
      return;
    }
    for (i = 0; i < w->ninsts; i++) {
      sim_inst *in = &w->insts[i];
      if (in->state == SIM_INST_RUNNING &&
          strlen(in->id) == (size_t)(colon - id) &&
          memcmp(in->id, id, (size_t)(colon - id)) == 0) {
        unsigned long n = strtoul(colon + 1, NULL, 10);
        if (n < in->nconns && in->conns[n] != NULL && in->conns[n]->open) {
          return;
        }
        /* Its DEL was lost (not queued for want of memory, or dropped in
           flight by a reconnect) and no SET was sent since: at-most-once
           leaves it to its TTL, which Redis enforces. */
        if (sim_strv_has(&in->lost_dels, key)) {
          return;
        }
      }
    }
    ks->found = key;
  }
}

void sim_check_liveness(sim_world *w) {
  size_t i;
  key_scan ks;
  for (i = 0; i < w->ninsts; i++) {
    sim_inst *in = &w->insts[i];
    if (in->state != SIM_INST_RUNNING) {
      continue;
    }
    if (!sim_bp_connected(in->bp) || !sim_bp_up_known(in->bp) ||
        !hub_bp_is_up(in->h) || !sim_redis_sub_idle(sim_bp_conn(in->bp))) {
      sim_violate(w, 8, "instance %s has not settled on its Redis link",
                  in->id);
      return;
    }
    check_subs(w, in, 8);
    if (w->viol.inv) {
      return;
    }
  }
  memset(&ks, 0, sizeof(ks));
  ks.w = w;
  sim_redis_foreach_key(w->redis, scan_live, &ks);
  if (ks.found != NULL) {
    sim_violate(w, 8, "key %s belongs to no live instance or connection",
                ks.found);
  }
}

/* ------------------------------------------ invariant 7's bookkeeping */

int sim_strv_has(const sim_strv *v, const char *key) {
  size_t i;
  for (i = 0; i < v->n; i++) {
    if (strcmp(v->v[i], key) == 0) {
      return 1;
    }
  }
  return 0;
}

static void strv_add(sim_strv *v, const char *key) {
  char **nv;
  if (sim_strv_has(v, key)) {
    return;
  }
  nv = realloc(v->v, (v->n + 1) * sizeof(*nv));
  if (nv == NULL) {
    abort();
  }
  v->v = nv;
  nv[v->n] = strdup(key);
  if (nv[v->n] == NULL) {
    abort();
  }
  v->n++;
}

static void strv_remove(sim_strv *v, const char *key) {
  size_t i;
  for (i = 0; i < v->n; i++) {
    if (strcmp(v->v[i], key) == 0) {
      free(v->v[i]);
      v->v[i] = v->v[--v->n];
      return;
    }
  }
}

void sim_strv_clear(sim_strv *v) {
  while (v->n > 0) {
    free(v->v[--v->n]);
  }
  free(v->v);
  v->v = NULL;
}

/* A DEL the instance hands its backplane while Redis does not hold its
   connections is lost (at-most-once; the key stays until its TTL); one
   sent is in flight until Redis processes it.  A SET sent since makes
   the key the instance's again. */
void sim_check_reg_effect(sim_world *w, sim_inst *in, int type,
                          const char *name, size_t len, int sent) {
  char key[256];
  int up = sent;
  if ((type != HUB_EFF_REG_SET && type != HUB_EFF_REG_DEL) || name == NULL) {
    return;
  }
  snprintf(key, sizeof(key), "%s%.*s", w->cfg.prefix, (int)len, name);
  if (type == HUB_EFF_REG_SET) {
    if (up) {
      strv_remove(&in->lost_dels, key);
    }
  } else if (up) {
    strv_add(&in->pending_dels, key);
  } else {
    strv_add(&in->lost_dels, key);
  }
}

static sim_inst *tag_inst(sim_world *w, uint32_t tag) {
  return tag < w->ninsts ? &w->insts[tag] : NULL;
}

static void on_key_del(void *ctx, uint32_t tag, const char *key) {
  sim_inst *in = tag_inst(ctx, tag);
  if (in != NULL) {
    strv_remove(&in->pending_dels, key);
  }
}

/* DELs in flight die with the connection. */
static void on_conn_dropped(void *ctx, uint32_t tag) {
  sim_inst *in = tag_inst(ctx, tag);
  if (in == NULL) {
    return;
  }
  while (in->pending_dels.n > 0) {
    char *k = in->pending_dels.v[--in->pending_dels.n];
    strv_add(&in->lost_dels, k);
    free(k);
  }
}

static void on_deliver(void *ctx, uint32_t tag, uint32_t chan,
                       uint64_t published_at) {
  sim_world *w = ctx;
  (void)tag;
  (void)chan;
  w->deliver_t = published_at;
}

static void on_publish(void *ctx, uint32_t chan, const sim_blob *data,
                       size_t receivers) {
  sim_world *w = ctx;
  (void)data;
  (void)receivers;
  if (w->check) {
    check_publish(w, chan);
  }
}

int sim_check_hooks(sim_world *w) {
  sim_redis_hooks h;
  memset(&h, 0, sizeof(h));
  h.ctx = w;
  h.on_publish = on_publish;
  h.on_deliver = on_deliver;
  h.on_key_del = on_key_del;
  h.on_conn_dropped = on_conn_dropped;
  return sim_redis_hook(w->redis, &h);
}
