/*
 * sim_world.c - simulated instances (each running the real core through
 * the shell, shell/shell.h, with its allocation failures), simulated
 * clients and the shell's transport between them; the loop itself is
 * sim_loop.c, Redis sim_redis.c.
 *
 * The transport models what the hub sees of a TCP peer.  A client that
 * reads at once (the default) takes every frame as soon as it is queued.
 * A client with a finite `read-rate` reads one frame every 1/rate
 * seconds; the instance's kernel send buffer (`config sndbuf N`) holds up
 * to N bytes of frames it has not read yet, and whatever does not fit
 * stays in the hub's queue, where it counts against the hub's limits.
 * hub_on_conn_written reports bytes as they enter the socket.
 */
#include "sim.h"
#include "sim_rec.h"
#include "sh_rec.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ JSON */

char *sim_json_norm(const char *s, size_t len) {
  char *out = malloc(len + 1);
  size_t i, o = 0;
  int in_str = 0;
  if (out == NULL) {
    abort();
  }
  for (i = 0; i < len; i++) {
    char ch = s[i];
    if (in_str) {
      out[o++] = ch;
      if (ch == '\\' && i + 1 < len) {
        out[o++] = s[++i];
      } else if (ch == '"') {
        in_str = 0;
      }
    } else if (ch == '"') {
      in_str = 1;
      out[o++] = ch;
    } else if (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r') {
      out[o++] = ch;
    }
  }
  out[o] = '\0';
  return out;
}

static size_t json_ws(const char *s, size_t len, size_t i) {
  while (i < len &&
         (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) {
    i++;
  }
  return i;
}

/* Returns the index just past the JSON value starting at |i|, or
   len + 1 when it is malformed. */
static size_t json_skip(const char *s, size_t len, size_t i) {
  int depth = 0;
  if (i >= len) {
    return len + 1;
  }
  do {
    char ch;
    if (i >= len) {
      return len + 1;
    }
    ch = s[i];
    if (ch == '"') {
      i++;
      while (i < len && s[i] != '"') {
        i += s[i] == '\\' ? 2 : 1;
      }
      if (i >= len) {
        return len + 1;
      }
      i++;
    } else if (ch == '{' || ch == '[') {
      depth++;
      i++;
    } else if (ch == '}' || ch == ']') {
      depth--;
      i++;
    } else if (ch == ',' || ch == ':' || ch == ' ' || ch == '\t' ||
               ch == '\n' || ch == '\r') {
      if (depth == 0) {
        return i;
      }
      i++;
    } else {
      i++;
    }
  } while (depth > 0 ||
           (i < len && s[i] != ',' && s[i] != '}' && s[i] != ']' &&
            s[i - 1] != '"' && s[i - 1] != '}' && s[i - 1] != ']'));
  return i;
}

int sim_json_fields(const char *s, size_t len, size_t nkeys,
                    const char *const *keys, const char **vals, size_t *vlens) {
  size_t i = json_ws(s, len, 0), found = 0, k;
  for (k = 0; k < nkeys; k++) {
    vals[k] = NULL;
    vlens[k] = 0;
  }
  if (i >= len || s[i] != '{') {
    return -1;
  }
  i++;
  for (;;) {
    size_t ks, ke, vs, ve;
    i = json_ws(s, len, i);
    if (i >= len || s[i] != '"') {
      return (int)found;
    }
    ks = i + 1;
    ke = json_skip(s, len, i);
    if (ke > len) {
      return (int)found;
    }
    i = json_ws(s, len, ke);
    if (i >= len || s[i] != ':') {
      return (int)found;
    }
    vs = json_ws(s, len, i + 1);
    ve = json_skip(s, len, vs);
    if (ve > len) {
      return (int)found;
    }
    for (k = 0; k < nkeys; k++) {
      size_t klen = strlen(keys[k]);
      if (vals[k] == NULL && ke - 1 - ks == klen &&
          memcmp(s + ks, keys[k], klen) == 0) {
        vals[k] = s + vs;
        vlens[k] = ve - vs;
        if (++found == nkeys) {
          return (int)found;
        }
      }
    }
    i = json_ws(s, len, ve);
    if (i >= len || s[i] != ',') {
      return (int)found;
    }
    i++;
  }
}

int sim_json_field(const char *s, size_t len, const char *key, const char **val,
                   size_t *vlen) {
  size_t klen = strlen(key);
  size_t i = json_ws(s, len, 0);
  if (i >= len || s[i] != '{') {
    return -1;
  }
  i++;
  for (;;) {
    size_t ks, ke, vs, ve;
    i = json_ws(s, len, i);
    if (i >= len || s[i] != '"') {
      return -1;
    }
    ks = i + 1;
    ke = json_skip(s, len, i);
    if (ke > len) {
      return -1;
    }
    i = json_ws(s, len, ke);
    if (i >= len || s[i] != ':') {
      return -1;
    }
    vs = json_ws(s, len, i + 1);
    ve = json_skip(s, len, vs);
    if (ve > len) {
      return -1;
    }
    if (ke - 1 - ks == klen && memcmp(s + ks, key, klen) == 0) {
      *val = s + vs;
      *vlen = ve - vs;
      return 0;
    }
    i = json_ws(s, len, ve);
    if (i >= len || s[i] != ',') {
      return -1;
    }
    i++;
  }
}

/* ------------------------------------------------------ transport */

/* Names the caller whose allocations are drawn next, for the trace. */
static void alloc_in(sim_inst *in, const char *call) {
  if (in->alloc != NULL) {
    in->alloc->call = call;
  }
}

/* Every call into the shell starts here: its allocations are named for
   the trace, and hub_check (invariant 9) runs after the event. */
static sim_inst *inst_enter(sim_inst *in, const char *call) {
  alloc_in(in, call);
  in->unchecked = 1;
  return in;
}

static sim_conn *inst_conn(sim_inst *in, hub_conn_id id) {
  return id < in->nconns ? in->conns[id] : NULL;
}

static void conn_q_clear(sim_conn *k) {
  while (k->qlen) {
    hub_buf_unref(k->q[k->qhead]);
    k->qhead = (k->qhead + 1) % k->qcap;
    k->qlen--;
  }
  k->qhead = 0;
  k->qbytes = k->wpos = k->wfin_end = 0;
  k->wfin = 0;
  /* Nothing is owed any more; the write-now list (if it is on it) finds
     the connection closed. */
  k->oq.bytes = 0;
  k->oq.msgs = 0;
}

/* Queues |b| (a reference is taken).  Returns -1 if the queue could not
   grow: the transport's memory is the instance's, and fails with it. */
static int conn_q_push(sim_inst *in, sim_conn *k, hub_buf *b) {
  if (k->qlen == k->qcap) {
    size_t ncap = k->qcap ? 2 * k->qcap : 16, i;
    hub_buf **nq;
    if (sim_alloc_fails(in->alloc)) {
      return -1;
    }
    nq = malloc(ncap * sizeof(*nq));
    if (nq == NULL) {
      abort();
    }
    for (i = 0; i < k->qlen; i++) {
      nq[i] = k->q[(k->qhead + i) % k->qcap];
    }
    free(k->q);
    k->q = nq;
    k->qhead = 0;
    k->qcap = ncap;
  }
  hub_buf_ref(b);
  k->q[(k->qhead + k->qlen) % k->qcap] = b;
  k->qlen++;
  k->qbytes += b->len;
  sh_oq_push(&in->sh, &k->oq, b->len, 1);
  return 0;
}

static hub_buf *conn_q_at(sim_conn *k, size_t i) {
  return k->q[(k->qhead + i) % k->qcap];
}

static void client_frame(sim_world *w, sim_client *c, const hub_buf *b,
                         uint64_t flags);

/* The link state a frame is sent under, for invariant 4: the epoch, and
   whether the link was up and known up. */
static uint64_t link_flags(sim_inst *in) {
  int up = in->bp && sim_bp_connected(in->bp) && sim_bp_up_known(in->bp) &&
           hub_bp_is_up(in->h);
  return (in->bp ? sim_redis_epoch(sim_bp_conn(in->bp)) << 1 : 0) |
         (up ? 1 : 0);
}

static uint64_t client_down_at(sim_world *w, sim_client *c) {
  uint64_t at = w->loop.now + sim_lat_client(&c->lat);
  if (at < c->down_last) {
    at = c->down_last;
  }
  c->down_last = at;
  return at;
}

static uint64_t client_up_at(sim_world *w, sim_client *c) {
  uint64_t at = w->loop.now + sim_lat_client(&c->lat);
  if (at < c->up_last) {
    at = c->up_last;
  }
  c->up_last = at;
  return at;
}

static void schedule_read(sim_world *w, sim_client *c) {
  if (c->read_pending) {
    return;
  }
  c->read_pending = 1;
  sim_schedule(&w->loop,
               c->next_read > w->loop.now ? c->next_read : w->loop.now,
               SIM_EV_CLIENT_READ, (uint32_t)(c - w->clients), 0, c->gen, NULL);
}

/* Moves what the socket takes from the hub's queue into it and takes it
   off the shell's accounting (sh_oq_pop); *msgs and *bytes are the SEND
   frames finished and the bytes written, for the caller to report. */
static void conn_flush(sim_world *w, sim_inst *in, sim_conn *k, size_t *msgs,
                       size_t *bytes) {
  sim_client *c = &w->clients[k->client];
  size_t m = 0;
  uint64_t n = 0;

  *msgs = 0;
  *bytes = 0;
  if (!k->open || k->qlen == 0) {
    return;
  }
  if (c->read_rate == SIM_FAST) {
    uint64_t flags = link_flags(in);
    n = k->qbytes - k->wpos;
    m = k->qlen - k->wfin;
    while (k->qlen) {
      hub_buf *b = k->q[k->qhead];
      k->qhead = (k->qhead + 1) % k->qcap;
      k->qlen--;
      sim_schedule(&w->loop, client_down_at(w, c), SIM_EV_CLIENT_FRAME,
                   k->client, flags, c->gen, b);
    }
    k->qhead = 0;
    k->qbytes = k->wpos = k->wfin_end = 0;
    k->wfin = 0;
  } else {
    uint64_t cap = w->cfg.sndbuf;
    uint64_t room = cap > k->wpos ? cap - k->wpos : 0;
    uint64_t left = k->qbytes - k->wpos;
    n = room < left ? room : left;
    k->wpos += n;
    while (k->wfin < k->qlen &&
           k->wfin_end + conn_q_at(k, k->wfin)->len <= k->wpos) {
      k->wfin_end += conn_q_at(k, k->wfin)->len;
      k->wfin++;
      m++;
    }
    if (c->read_rate > 0 && k->qlen) {
      schedule_read(w, c);
    }
  }
  sh_oq_pop(&k->oq, m, (size_t)n);
  *msgs = m;
  *bytes = (size_t)n;
}

/* |k| has frames to write: at the end of this loop iteration, which is
   an event at the current time after the ones already due (the server
   flushes its dirty connections in ev_prepare, before it blocks). */
static void conn_mark_dirty(sim_world *w, sim_inst *in, sim_conn *k) {
  if (k->dirty) {
    return;
  }
  k->dirty = 1;
  if (in->ndirty == in->capdirty) {
    in->capdirty = in->capdirty ? 2 * in->capdirty : 64;
    in->dirty = realloc(in->dirty, in->capdirty * sizeof(*in->dirty));
    if (in->dirty == NULL) {
      abort();
    }
  }
  in->dirty[in->ndirty++] = k->id;
  if (!in->flush_pending) {
    in->flush_pending = 1;
    sim_schedule(&w->loop, w->loop.now, SIM_EV_INST_FLUSH, (uint32_t)in->idx, 0,
                 in->gen, NULL);
  }
}

static void client_closed(sim_world *w, sim_client *c, int code) {
  if (c->state == SIM_CL_CLOSED) {
    return;
  }
  c->state = SIM_CL_CLOSED;
  c->close_code = code;
  c->gen++;
  sim_trace(&w->loop, "client %s closed %d", c->name, code);
}

/* The hub closed |k|: send the close frame if the socket takes it, else
   drop the connection at once; either way hub_on_conn_closed follows
   (SIM_EV_CONN_CLOSED: the shell's SH_CLOSE_PENDING). */
static void conn_close(sim_world *w, sim_inst *in, sim_conn *k, hub_conn_id id,
                       int code, const char *reason) {
  sim_client *c = &w->clients[k->client];
  uint64_t frame = 4 + (reason ? strlen(reason) : 0);
  int taken;

  /* Frames only partly in the socket are cut off with it. */
  taken = c->read_rate == SIM_FAST ||
          (w->cfg.sndbuf > k->wpos && w->cfg.sndbuf - k->wpos >= frame);
  conn_q_clear(k);
  k->open = 0;
  in->open_conns--;
  in->closing++;
  sim_trace(&w->loop, "close %s:%llu code %d %s", in->id,
            (unsigned long long)id, code, taken ? "sent" : "dropped");
  if (taken && c->state != SIM_CL_CLOSED) {
    sim_schedule(&w->loop, client_down_at(w, c), SIM_EV_CLIENT_CLOSE, k->client,
                 (uint64_t)code, c->gen, NULL);
  } else {
    client_closed(w, c, code);
  }
  sim_schedule(&w->loop, w->loop.now, SIM_EV_CONN_CLOSED, (uint32_t)in->idx, id,
               in->gen, NULL);
}

/* --------------------------------------- the shell's transport */

static int tr_send(void *user, void *conn_user, hub_conn_id id, hub_buf *buf) {
  sim_inst *in = user;
  sim_conn *k = conn_user;
  const char *call = in->alloc != NULL ? in->alloc->call : NULL;
  int rv;
  (void)id;
  if (!k->open) {
    return 0; /* closing: the close report follows */
  }
  alloc_in(in, "the transport queue");
  rv = conn_q_push(in, k, buf);
  alloc_in(in, call);
  if (rv != 0) {
    return -1; /* the shell closes it 1011 */
  }
  k->sends++;
  conn_mark_dirty(in->w, in, k);
  return 0;
}

static void tr_ping(void *user, void *conn_user, hub_conn_id id) {
  sim_inst *in = user;
  sim_world *w = in->w;
  sim_conn *k = conn_user;
  sim_client *c;
  (void)id;
  if (!k->open) {
    return;
  }
  c = &w->clients[k->client];
  /* A client that never reads never sees the ping. */
  if (!c->no_pong && c->read_rate != 0 && c->state == SIM_CL_OPEN) {
    /* The ping travels down, the pong comes back up behind whatever the
       client sent before. */
    uint64_t at = client_down_at(w, c) + sim_lat_client(&c->lat);
    if (at < c->up_last) {
      at = c->up_last;
    }
    c->up_last = at;
    sim_schedule(&w->loop, at, SIM_EV_CONN_PONG, k->client, 0, c->gen, NULL);
  }
}

static int tr_close(void *user, void *conn_user, hub_conn_id id, uint16_t code,
                    const char *reason, hub_close_kind kind) {
  sim_inst *in = user;
  sim_conn *k = conn_user;
  (void)kind;
  if (!k->open) {
    return SH_CLOSE_UNKNOWN; /* gone, or its close is already reported */
  }
  conn_close(in->w, in, k, id, code, reason);
  return SH_CLOSE_PENDING;
}

/* The shell's early write: the connection's backlog reached a quarter
   of a limit while the hub was producing. */
static int tr_write(void *user, sh_oq *q, hub_conn_id *id, size_t *msgs,
                    size_t *bytes) {
  sim_inst *in = user;
  sim_conn *k = (sim_conn *)(void *)((char *)q - offsetof(sim_conn, oq));
  *msgs = 0;
  *bytes = 0;
  *id = k->open ? k->id : 0;
  conn_flush(in->w, in, k, msgs, bytes);
  if (k->open) {
    sim_trace(&in->w->loop, "early write %s:%llu %zu frames %zu bytes", in->id,
              (unsigned long long)k->id, *msgs, *bytes);
  }
  if (in->w->check && k->open) {
    sim_check_queue(in->w, in, k);
  }
  return 0;
}

static void tr_set_timer(void *user, hub_tstamp at) {
  sim_inst *in = user;
  sim_world *w = in->w;
  if (at == HUB_TSTAMP_NONE) {
    in->timer_at = UINT64_MAX; /* the event in flight is stale */
    return;
  }
  if (at <= w->loop.now) {
    at = w->loop.now + 1;
  }
  in->timer_at = at;
  sim_schedule(&w->loop, at, SIM_EV_INST_TIMER, (uint32_t)in->idx, 0, in->gen,
               NULL);
}

/* The shell's forced reconnect (NOMEM from hub_on_bp_msg or
   hub_on_bp_up): both connections dropped without a notice, a reconnect
   after the backoff.  A link epoch change for invariant 4: what was
   published meanwhile is not owed. */
static void tr_bp_reset(void *user) {
  sim_inst *in = user;
  sim_trace(&in->w->loop, "instance %s: %s: out of memory, reconnecting",
            in->id,
            in->alloc != NULL && in->alloc->call ? in->alloc->call : "?");
  sim_bp_reconnect(in->bp);
}

/* The shell's verify hook: a refresh token.  The simulator checks no
   signatures; its tokens name claims the scenario gave (sim_auth.c). */
static int tr_verify(void *user, void *conn_user, hub_conn_id id,
                     const char *token, size_t len, const hub_auth **auth,
                     const char **err) {
  sim_inst *in = user;
  (void)conn_user;
  (void)id;
  *auth = sim_auth_verify(in->w, sim_auth_token_num(token, len), err);
  return *auth != NULL ? 0 : -1;
}

/* A hub call the shell made failed in a way that is the driver's bug. */
static void tr_error(void *user, const char *what, int err) {
  sim_inst *in = user;
  sim_violate(in->w, 9, "instance %s: %s: %s (the simulator's bug)", in->id,
              what, hub_strerror(err));
}

/* The end of a loop iteration: every dirty connection writes what its
   socket takes, and the hub is told. */
static void inst_flush(sim_world *w, sim_inst *in) {
  size_t i, n = in->ndirty;
  in->flush_pending = 0;
  for (i = 0; i < n && in->h != NULL; i++) {
    sim_conn *k = inst_conn(in, in->dirty[i]);
    size_t msgs, bytes;
    if (k == NULL) {
      continue;
    }
    k->dirty = 0;
    conn_flush(w, in, k, &msgs, &bytes);
    if (msgs > 0 || bytes > 0) {
      sh_conn_written(&inst_enter(in, "hub_on_conn_written")->sh, k->id, msgs,
                      bytes, w->loop.now);
    }
    if (w->check && k->open) {
      sim_check_queue(w, in, k);
    }
  }
  /* What the reports queued is flushed by the event they scheduled. */
  if (in->ndirty > n) {
    memmove(in->dirty, in->dirty + n, (in->ndirty - n) * sizeof(*in->dirty));
  }
  in->ndirty -= n;
}

/* The backplane the shell drives: the simulated one, behind a tap that
   traces each command and keeps invariant 7's books. */
typedef struct sim_tap {
  bp base; /* first */
  sim_world *w;
  int idx;
} sim_tap;

/* Traces the command, draws whether its queueing fails (the backplane's
   command queue grows through the instance's allocator, as hiredis's
   does in the server: only while connected, since a disconnected link
   refuses before it allocates) and keeps invariant 7's books.  Returns
   0 and the simulated backplane in *b, or HUB_ERR_NOMEM (nothing
   queued: the shell resets the link after the drain). */
static int tap_begin(bp *base, int type, const char *name, size_t len, bp **b) {
  sim_tap *t = (sim_tap *)base;
  sim_inst *in = &t->w->insts[t->idx];
  int up = sim_bp_connected(in->bp), fail = 0;
  if (t->w->loop.trace && name != NULL) {
    sim_trace(&t->w->loop, "effect %d %.*s", type, (int)len, name);
  }
  if (up) {
    const char *call = in->alloc != NULL ? in->alloc->call : NULL;
    alloc_in(in, "the backplane queue");
    fail = sim_alloc_fails(in->alloc);
    alloc_in(in, call);
  }
  sim_check_reg_effect(t->w, in, type, name, len, up && !fail);
  *b = sim_bp_bp(in->bp);
  return fail ? HUB_ERR_NOMEM : 0;
}

static int tap_subscribe(bp *base, const char *channel, size_t len) {
  bp *b;
  int rc = tap_begin(base, HUB_EFF_BP_SUBSCRIBE, channel, len, &b);
  return rc != 0 ? rc : b->ops->subscribe(b, channel, len);
}

static int tap_unsubscribe(bp *base, const char *channel, size_t len) {
  bp *b;
  int rc = tap_begin(base, HUB_EFF_BP_UNSUBSCRIBE, channel, len, &b);
  return rc != 0 ? rc : b->ops->unsubscribe(b, channel, len);
}

static int tap_publish(bp *base, const char *channel, size_t len,
                       const uint8_t *data, size_t dlen) {
  bp *b;
  int rc = tap_begin(base, HUB_EFF_BP_PUBLISH, channel, len, &b);
  return rc != 0 ? rc : b->ops->publish(b, channel, len, data, dlen);
}

static int tap_set(bp *base, const char *key, size_t len, const uint8_t *val,
                   size_t vlen, uint32_t ttl_s) {
  bp *b;
  int rc = tap_begin(base, HUB_EFF_REG_SET, key, len, &b);
  return rc != 0 ? rc : b->ops->set(b, key, len, val, vlen, ttl_s);
}

static int tap_del(bp *base, const char *key, size_t len) {
  bp *b;
  int rc = tap_begin(base, HUB_EFF_REG_DEL, key, len, &b);
  return rc != 0 ? rc : b->ops->del(b, key, len);
}

static int tap_hpublish(bp *base, uint64_t req, const char *channel, size_t len,
                        const uint8_t *data, size_t dlen, uint32_t size,
                        uint32_t ttl_s, uint32_t meta_ttl_s) {
  bp *b;
  int rc = tap_begin(base, HUB_EFF_BP_HPUBLISH, channel, len, &b);
  return rc != 0 ? rc
                 : b->ops->hpublish(b, req, channel, len, data, dlen, size,
                                    ttl_s, meta_ttl_s);
}

static int tap_hread(bp *base, uint64_t req, const char *channel, size_t len,
                     uint64_t since, uint32_t count, uint32_t meta_ttl_s) {
  bp *b;
  int rc = tap_begin(base, HUB_EFF_BP_HREAD, channel, len, &b);
  return rc != 0
           ? rc
           : b->ops->hread(b, req, channel, len, since, count, meta_ttl_s);
}

static void tap_free(bp *base) {
  free(base);
}

static const bp_ops sim_tap_ops = {.subscribe = tap_subscribe,
                                   .unsubscribe = tap_unsubscribe,
                                   .publish = tap_publish,
                                   .set = tap_set,
                                   .del = tap_del,
                                   .hpublish = tap_hpublish,
                                   .hread = tap_hread,
                                   .free = tap_free};

/* ------------------------------------------------------- instances */

static void on_up(void *user) {
  sim_inst *in = user;
  sh_bp_up(&inst_enter(in, "hub_on_bp_up")->sh, in->w->loop.now);
}

static void on_down(void *user) {
  sim_inst *in = user;
  sh_bp_down(&inst_enter(in, "hub_on_bp_down")->sh, in->w->loop.now);
}

static void on_subscribed(void *user, const char *channel, size_t len) {
  sim_inst *in = user;
  sh_bp_subscribed(&inst_enter(in, "hub_on_bp_subscribed")->sh, channel, len,
                   in->w->loop.now);
}

static void on_hpublished(void *user, uint64_t req, int ok, uint64_t offset,
                          const char *epoch, size_t epoch_len) {
  sim_inst *in = user;
  sh_bp_hpublished(&inst_enter(in, "hub_on_bp_hpublished")->sh, req, ok, offset,
                   epoch, epoch_len, in->w->loop.now);
}

/* bp_hentry and hub_hentry share one layout (the shell's API takes the
   core's). */
_Static_assert(sizeof(bp_hentry) == sizeof(hub_hentry) &&
                 offsetof(bp_hentry, data) == offsetof(hub_hentry, data) &&
                 offsetof(bp_hentry, len) == offsetof(hub_hentry, len),
               "bp_hentry and hub_hentry differ");

static void on_hread(void *user, uint64_t req, int ok, uint64_t offset,
                     const char *epoch, size_t epoch_len,
                     const bp_hentry *entries, size_t n) {
  sim_inst *in = user;
  sh_bp_hread(&inst_enter(in, "hub_on_bp_hread")->sh, req, ok, offset, epoch,
              epoch_len, (const hub_hentry *)(const void *)entries, n,
              in->w->loop.now);
}

static void on_msg(void *user, const char *channel, size_t len,
                   const uint8_t *data, size_t dlen) {
  sim_inst *in = user;
  sim_world *w = in->w;
  size_t nmust = 0, i;
  uint64_t resets;

  if (w->check && !(dlen >= 6 && memcmp(data, "wshub:", 6) == 0)) {
    /* Invariant 4: who must get this message?  (Not for a message with
       history: the hub may hold it back during a read; invariants 10-12
       check those.) */
    uint32_t chan = sim_chan_intern(&w->loop, channel, len);
    uint64_t tr = w->deliver_t;
    uint64_t epoch = sim_redis_epoch(sim_bp_conn(in->bp));
    hub_conn_id id;
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
      if (cs->must_from == UINT64_MAX || cs->must_from > tr ||
          cs->must_epoch != epoch) {
        continue;
      }
      if (nmust == w->capmust) {
        w->capmust = w->capmust ? 2 * w->capmust : 64;
        w->must = realloc(w->must, w->capmust * sizeof(*w->must));
        w->must_sends =
          realloc(w->must_sends, w->capmust * sizeof(*w->must_sends));
        if (w->must == NULL || w->must_sends == NULL) {
          abort();
        }
      }
      w->must[nmust] = id;
      w->must_sends[nmust] = k->sends;
      nmust++;
    }
  }
  resets = in->sh.st.bp_resets;
  sh_bp_msg(&inst_enter(in, "hub_on_bp_msg")->sh, channel, len, data, dlen,
            w->loop.now);
  if (in->sh.st.bp_resets != resets) {
    /* The message is lost with the link: nothing is owed for it. */
    return;
  }
  for (i = 0; i < nmust; i++) {
    sim_conn *k = in->conns[w->must[i]];
    if (k->open && k->sends == w->must_sends[i]) {
      sim_violate(
        w, 4,
        "client %s (conn %s:%llu) acknowledged on %.*s at %llu ns "
        "did not get a message Redis published at %llu ns",
        w->clients[k->client].name, in->id, (unsigned long long)w->must[i],
        (int)len, channel,
        (unsigned long long)sim_client_cstate(
          &w->clients[k->client], sim_chan_intern(&w->loop, channel, len))
          ->must_from,
        (unsigned long long)w->deliver_t);
    }
  }
}

/* ------------------------------------------- allocation failures */

static int alloc_fails(sim_alloc *a) {
  if (a == NULL || !a->armed || a->fail_ppb == 0) {
    return 0;
  }
  a->allocs++;
  if (sim_rng_below(&a->rng, 1000000000) >= a->fail_ppb) {
    return 0;
  }
  a->fails++;
  sim_trace(a->loop, "instance %s: allocation %llu fails (in %s)", a->id,
            (unsigned long long)a->allocs, a->call ? a->call : "?");
  return 1;
}

int sim_alloc_fails(sim_alloc *a) {
  return alloc_fails(a);
}

static void *alloc_malloc(size_t size, void *user) {
  sim_alloc *a = user;
  void *p = alloc_fails(a) ? NULL : malloc(size);
  sh_rec_alloc(a->rec, p == NULL);
  return p;
}

static void alloc_free(void *ptr, void *user) {
  (void)user;
  free(ptr);
}

static void *alloc_realloc(void *ptr, size_t size, void *user) {
  sim_alloc *a = user;
  void *p = alloc_fails(a) ? NULL : realloc(ptr, size);
  sh_rec_alloc(a->rec, p == NULL);
  return p;
}

int sim_parse_rate(const char *s, uint32_t *ppb) {
  uint64_t v = 0, scale = 1000000000;
  int digits = 0;
  if (s[0] == '1' && (s[1] == '\0' || s[1] == '.')) {
    s++;
    if (*s == '.') {
      s++;
    }
    while (*s == '0') {
      s++;
    }
    if (*s != '\0') {
      return -1;
    }
    *ppb = 1000000000;
    return 0;
  }
  if (s[0] != '0') {
    return -1;
  }
  s++;
  if (*s == '.') {
    s++;
    while (*s >= '0' && *s <= '9') {
      if (++digits > 9) {
        return -1;
      }
      scale /= 10;
      v += (uint64_t)(*s - '0') * scale;
      s++;
    }
  }
  if (*s != '\0') {
    return -1;
  }
  *ppb = (uint32_t)v;
  return 0;
}

void sim_config_default(sim_config *c) {
  memset(c, 0, sizeof(*c));
  hub_config_default(&c->hub);
  c->hub.registry = 1;
  c->shutdown_timeout_ns = 10 * SIM_S;
  c->sndbuf = 0;
  strcpy(c->prefix, "ws:");
}

int sim_inst_start(sim_world *w, sim_inst *in) {
  hub_config hc;
  bp_events ev;
  int rv;

  in->gen++;
  if (in->restarts) {
    snprintf(in->id, sizeof(in->id), "%d.%u", in->idx, in->restarts);
  } else {
    snprintf(in->id, sizeof(in->id), "%d", in->idx);
  }
  hc = w->cfg.hub;
  hc.instance_id = in->id;
  hc.backplane = 1;
  hc.unix_time_s = 1700000000 + (int64_t)(w->loop.now / SIM_S);
  hc.seed =
    w->loop.seed ^ (in->gen * 0x9e3779b97f4a7c15ULL) ^ (uint64_t)in->idx;
  if (in->alloc == NULL) {
    in->alloc = calloc(1, sizeof(*in->alloc));
    if (in->alloc == NULL) {
      abort();
    }
    in->alloc->mem.user = in->alloc;
    in->alloc->mem.malloc = alloc_malloc;
    in->alloc->mem.free = alloc_free;
    in->alloc->mem.realloc = alloc_realloc;
    in->alloc->loop = &w->loop;
  }
  in->alloc->id = in->id;
  in->alloc->fail_ppb = w->cfg.alloc_fail_ppb;
  in->alloc->armed = 0;
  /* A stream of its own per instance and incarnation (disjoint from the
     latency streams), so removing a statement elsewhere does not move
     which of its allocations fail. */
  sim_rng_seed(&in->alloc->rng, w->loop.seed,
               (UINT64_C(0xa110c) << 40) + ((uint64_t)in->idx << 20) + in->gen);
  rv = hub_new(&in->h, &hc, &in->alloc->mem, w->loop.now);
  if (rv != 0) {
    fprintf(stderr, "wshub-sim: hub_new: %s\n", hub_strerror(rv));
    in->h = NULL;
    in->state = SIM_INST_DEAD;
    return rv;
  }
  in->w = w;
  ev.user = in;
  ev.on_up = on_up;
  ev.on_down = on_down;
  ev.on_msg = on_msg;
  ev.on_subscribed = on_subscribed;
  ev.on_hpublished = on_hpublished;
  ev.on_hread = on_hread;
  in->bp = sim_bp_new(&w->loop, w->redis, (uint32_t)in->idx,
                      UINT64_C(0x100000) + ((uint64_t)in->idx << 20) + in->gen,
                      w->cfg.prefix, &ev);
  if (in->bp == NULL) {
    abort();
  }
  {
    sim_tap *tap = calloc(1, sizeof(*tap));
    sh_transport t;
    if (tap == NULL) {
      abort();
    }
    tap->base.ops = &sim_tap_ops;
    tap->w = w;
    tap->idx = in->idx;
    in->tap = &tap->base;
    memset(&t, 0, sizeof(t));
    t.user = in;
    t.send = tr_send;
    t.ping = tr_ping;
    t.close = tr_close;
    t.write = tr_write;
    t.set_timer = tr_set_timer;
    t.bp_reset = tr_bp_reset;
    t.verify = tr_verify;
    t.error = tr_error;
    sh_init(&in->sh, in->h, in->tap, &hc, &t);
    sim_rec_inst_start(w, in, &hc, w->loop.now);
  }
  sim_bp_set_partitioned(in->bp, in->partitioned);
  in->state = SIM_INST_RUNNING;
  in->q_msgs_max = hc.max_queue_msgs;
  in->q_bytes_max = hc.max_queue_bytes;
  in->timer_at = UINT64_MAX;
  in->nconns = 1;
  in->open_conns = 0;
  in->shutdown_clean = 0;
  in->ndirty = 0;
  in->flush_pending = 0;
  sim_strv_clear(&in->lost_dels);
  sim_strv_clear(&in->pending_dels);
  sim_trace(&w->loop, "instance %s starts", in->id);
  /* Start-up allocations do not fail: a process that cannot start is
     not what this explores. */
  in->alloc->armed = 1;
  sim_bp_connect(in->bp);
  alloc_in(in, "hub_new");
  in->unchecked = 1;
  sh_drain(&in->sh, w->loop.now);
  return 0;
}

static void inst_teardown(sim_world *w, sim_inst *in) {
  size_t i;
  for (i = 1; i < in->nconns; i++) {
    sim_conn *k = in->conns[i];
    if (k == NULL) {
      continue;
    }
    if (k->open) {
      client_closed(w, &w->clients[k->client], 0);
    }
    conn_q_clear(k);
    free(k->q);
    free(k);
    in->conns[i] = NULL;
  }
  in->nconns = 1;
  in->open_conns = 0;
  in->closing = 0;
  in->ndirty = 0;
  in->flush_pending = 0;
  if (in->bp != NULL) {
    sim_bp_bp(in->bp)->ops->free(sim_bp_bp(in->bp));
    in->bp = NULL;
  }
  if (in->tap != NULL) {
    in->tap->ops->free(in->tap);
    in->tap = NULL;
  }
  sim_rec_inst_end(w, in);
  hub_del(in->h);
  in->h = NULL;
  in->state = SIM_INST_DEAD;
  in->timer_at = UINT64_MAX;
}

void sim_inst_crash(sim_world *w, sim_inst *in) {
  char buf[160];
  if (in->state != SIM_INST_RUNNING && in->state != SIM_INST_SHUTTING) {
    return;
  }
  sim_trace(&w->loop, "instance %s crashes", in->id);
  if (w->check) {
    /* Invariant 6: its keys must expire by their TTLs. */
    snprintf(buf, sizeof(buf), "%sinstance:%s", w->cfg.prefix, in->id);
    sim_schedule(&w->loop,
                 w->loop.now + (uint64_t)w->cfg.hub.instance_ttl_s * SIM_S +
                   SIM_MS,
                 SIM_EV_CHECK_KEYS, 0, 0, 0, sim_blob_new(buf, strlen(buf)));
    snprintf(buf, sizeof(buf), "%sconn:%s:", w->cfg.prefix, in->id);
    sim_schedule(&w->loop,
                 w->loop.now + (uint64_t)w->cfg.hub.conn_ttl_s * SIM_S + SIM_MS,
                 SIM_EV_CHECK_KEYS, 0, 0, 0, sim_blob_new(buf, strlen(buf)));
  }
  inst_teardown(w, in);
}

static void inst_exit(sim_world *w, sim_inst *in) {
  sim_trace(&w->loop, "instance %s exits", in->id);
  if (w->check) {
    sim_check_exit(w, in);
  }
  inst_teardown(w, in);
}

/* A shutting-down instance exits once every connection is closed and
   every command it sent has been processed. */
static void inst_maybe_exit(sim_world *w, sim_inst *in) {
  if (in->state != SIM_INST_SHUTTING || in->open_conns > 0 || in->closing > 0) {
    return;
  }
  if (in->bp != NULL && sim_bp_connected(in->bp) &&
      !sim_redis_idle(sim_bp_conn(in->bp))) {
    return;
  }
  inst_exit(w, in);
}

void sim_inst_shutdown(sim_world *w, sim_inst *in) {
  size_t i;
  if (in->state != SIM_INST_RUNNING) {
    return;
  }
  in->state = SIM_INST_SHUTTING;
  in->shutdown_at = w->loop.now;
  in->shutdown_clean = in->bp != NULL && sim_bp_connected(in->bp) &&
                       sim_bp_up_known(in->bp) && hub_bp_is_up(in->h);
  for (i = 1; i < in->nconns; i++) {
    if (in->conns[i] != NULL && in->conns[i]->open) {
      sim_client *c = &w->clients[in->conns[i]->client];
      c->shutdown_seen = !c->self_closed;
    }
  }
  sim_trace(&w->loop, "instance %s shuts down", in->id);
  sh_shutdown(&inst_enter(in, "hub_shutdown")->sh, w->loop.now);
  sim_schedule(&w->loop, w->loop.now + w->cfg.shutdown_timeout_ns,
               SIM_EV_INST_EXIT, (uint32_t)in->idx, 0, in->gen, NULL);
  inst_maybe_exit(w, in);
}

void sim_inst_partition(sim_world *w, sim_inst *in) {
  in->partitioned = 1;
  if (in->state == SIM_INST_SHUTTING) {
    in->shutdown_clean = 0;
  }
  if (in->bp != NULL) {
    sim_bp_set_partitioned(in->bp, 1);
    sim_bp_drop(in->bp, 1);
  }
  sim_trace(&w->loop, "instance %d partitioned from redis", in->idx);
}

void sim_inst_heal(sim_world *w, sim_inst *in) {
  in->partitioned = 0;
  if (in->bp != NULL) {
    sim_bp_set_partitioned(in->bp, 0);
  }
  sim_trace(&w->loop, "instance %d healed", in->idx);
}

/* `redis restart`: Redis drops every connection (each instance sees its
   link go down, as in a partition, but its reconnects succeed) and
   loses all its data: keys, and with them any subscription state. */
void sim_redis_restart(sim_world *w) {
  size_t i;
  sim_trace(&w->loop, "redis restarts");
  for (i = 0; i < w->ninsts; i++) {
    sim_inst *in = &w->insts[i];
    if (in->bp == NULL) {
      continue;
    }
    if (in->state == SIM_INST_SHUTTING) {
      in->shutdown_clean = 0;
    }
    sim_bp_drop(in->bp, 1);
  }
  sim_redis_flush(w->redis);
}

int sim_instances(sim_world *w, size_t n) {
  size_t i;
  if (n > w->ninsts) {
    sim_inst *ni = realloc(w->insts, n * sizeof(*ni));
    if (ni == NULL) {
      abort();
    }
    memset(ni + w->ninsts, 0, (n - w->ninsts) * sizeof(*ni));
    w->insts = ni;
    /* The instances moved: their backplanes' callbacks and their shells'
       transports must find them. */
    for (i = 0; i < w->ninsts; i++) {
      if (ni[i].bp != NULL) {
        sim_bp_bp(ni[i].bp)->ev.user = &ni[i];
      }
      if (ni[i].h != NULL) {
        sh_set_user(&ni[i].sh, &ni[i]);
      }
    }
    for (i = w->ninsts; i < n; i++) {
      w->insts[i].idx = (int)i;
      w->insts[i].timer_at = UINT64_MAX;
      w->insts[i].nconns = 1;
    }
    i = w->ninsts;
    w->ninsts = n;
    for (; i < n; i++) {
      if (sim_inst_start(w, &w->insts[i]) != 0) {
        return -1;
      }
    }
  }
  return 0;
}

/* --------------------------------------------------------- clients */

sim_cstate *sim_client_cstate(sim_client *c, uint32_t chan) {
  if (chan >= c->nch) {
    size_t n = chan + 8, i;
    sim_cstate *ns = realloc(c->ch, n * sizeof(*ns));
    if (ns == NULL) {
      abort();
    }
    memset(ns + c->nch, 0, (n - c->nch) * sizeof(*ns));
    for (i = c->nch; i < n; i++) {
      ns[i].must_from = UINT64_MAX;
      ns[i].recovered = -1;
    }
    c->ch = ns;
    c->nch = n;
  }
  return &c->ch[chan];
}

int sim_client_find(const sim_world *w, const char *name) {
  size_t i = w->nclients;
  while (i-- > 0) {
    if (strcmp(w->clients[i].name, name) == 0) {
      return (int)i;
    }
  }
  return -1;
}

int sim_client_new(sim_world *w, const char *name, int inst, uint32_t read_rate,
                   int no_pong) {
  sim_client *c;
  uint32_t idx;
  if (inst < 0 || (size_t)inst >= w->ninsts || strlen(name) >= 48) {
    return -1;
  }
  if (w->nclients == w->capclients) {
    w->capclients = w->capclients ? 2 * w->capclients : 64;
    w->clients = realloc(w->clients, w->capclients * sizeof(*w->clients));
    if (w->clients == NULL) {
      abort();
    }
  }
  idx = (uint32_t)w->nclients++;
  c = &w->clients[idx];
  memset(c, 0, sizeof(*c));
  strcpy(c->name, name);
  c->inst = inst;
  c->inst_gen = w->insts[inst].gen;
  c->read_rate = read_rate;
  c->no_pong = no_pong;
  c->state = SIM_CL_CONNECTING;
  c->gen = (uint64_t)idx << 32;
  {
    /* The client's own latency stream, keyed by its name (FNV-1a), so
       statements about other clients do not move its timing. */
    uint64_t hsh = UINT64_C(0xcbf29ce484222325);
    const char *q;
    for (q = name; *q; q++) {
      hsh = (hsh ^ (uint8_t)*q) * UINT64_C(0x100000001b3);
    }
    sim_rng_seed(&c->lat, w->loop.seed, hsh);
  }
  /* Connects reach an instance in the order they were made, so
     connection ids follow statement order. */
  c->up_last = w->insts[inst].accept_last;
  sim_schedule(&w->loop, client_up_at(w, c), SIM_EV_CONN_OPEN, idx, 0, c->gen,
               NULL);
  w->insts[inst].accept_last = c->up_last;
  return (int)idx;
}

void sim_client_send(sim_world *w, sim_client *c, const void *data, size_t len,
                     int binary) {
  if (c->state == SIM_CL_CLOSED) {
    return;
  }
  sim_schedule(&w->loop, client_up_at(w, c), SIM_EV_CONN_MSG,
               (uint32_t)(c - w->clients), (uint64_t)binary, c->gen,
               sim_blob_new(data, len));
}

void sim_client_disconnect(sim_world *w, sim_client *c) {
  if (c->state == SIM_CL_CLOSED) {
    return;
  }
  /* It goes away on its own: a close the hub sends meanwhile may never
     reach it (invariant 7 does not ask it to see 1001). */
  c->shutdown_seen = 0;
  c->self_closed = 1;
  sim_schedule(&w->loop, client_up_at(w, c), SIM_EV_CONN_GONE,
               (uint32_t)(c - w->clients), 0, c->gen, NULL);
}

/* The new connection of `X reconnect on I`: what the client received is
   kept (its log, counts and order books); its subscriptions went with
   the old connection. */
static void client_reopen(sim_world *w, sim_client *c, int inst) {
  size_t i;
  for (i = 0; i < c->nch; i++) {
    c->ch[i].acked = 0;
    c->ch[i].pending_unsubs = 0;
    c->ch[i].must_from = UINT64_MAX;
  }
  c->inst = inst;
  c->inst_gen = w->insts[inst].gen;
  c->state = SIM_CL_CONNECTING;
  c->conn = 0;
  c->close_code = 0;
  c->was_open = 0;
  c->shutdown_seen = 0;
  c->self_closed = 0;
  c->read_pending = 0; /* a read still scheduled is for the old gen */
  c->reopen_to = 0;
  c->up_last = w->insts[inst].accept_last;
  sim_trace(&w->loop, "client %s reconnects to instance %d", c->name, inst);
  sim_schedule(&w->loop, client_up_at(w, c), SIM_EV_CONN_OPEN,
               (uint32_t)(c - w->clients), 0, c->gen, NULL);
  w->insts[inst].accept_last = c->up_last;
}

void sim_client_reconnect(sim_world *w, sim_client *c, int inst) {
  if (c->state == SIM_CL_CLOSED) {
    client_reopen(w, c, inst);
    return;
  }
  c->shutdown_seen = 0;
  c->self_closed = 1;
  /* The old connection goes as with `disconnect`; a GONE with b = 1
     then opens the new one on the latest instance asked for (a second
     reconnect before the first took effect only changes where). */
  c->reopen_to = inst + 1;
  sim_schedule(&w->loop, client_up_at(w, c), SIM_EV_CONN_GONE,
               (uint32_t)(c - w->clients), 1, c->gen, NULL);
}

void sim_redis_publish_text(sim_world *w, const char *chan, size_t chan_len,
                            const char *data, size_t len) {
  sim_blob *b = sim_blob_new(data, len);
  sim_redis_publish(w->redis, sim_chan_intern(&w->loop, chan, chan_len), b);
  sim_blob_unref(b);
}

static int reply_type(const char *t, size_t n) {
  static const char *names[] = {
    "\"message\"", "\"subscribed\"", "\"unsubscribed\"", "\"published\"",
    "\"error\"",   "\"refreshed\"",  "\"gap\""};
  int i;
  for (i = 0; i < 7; i++) {
    if (strlen(names[i]) == n && memcmp(names[i], t, n) == 0) {
      return i;
    }
  }
  return SIM_R_OTHER;
}

/* A frame reached the client and it read it. */
static void client_frame(sim_world *w, sim_client *c, const hub_buf *b,
                         uint64_t flags) {
  const char *s = (const char *)hub_buf_payload(b);
  size_t len = hub_buf_payload_len(b);
  static const char *const keys[6] = {"type",   "channel", "data",
                                      "offset", "epoch",   "recovered"};
  const char *v[6], *ch, *data;
  size_t vl[6], chlen, dlen;
  int type;
  uint32_t chan = 0;
  uint64_t off = 0;
  const char *ep = NULL;
  size_t elen = 0;

  sim_json_fields(s, len, 6, keys, v, vl);
  if (v[0] == NULL) {
    c->types[SIM_R_OTHER]++;
    return;
  }
  type = reply_type(v[0], vl[0]);
  c->types[type]++;
  ch = v[1];
  chlen = vl[1];
  if (ch != NULL && chlen >= 2 && ch[0] == '"') {
    chan = sim_chan_intern(&w->loop, ch + 1, chlen - 2);
  } else {
    ch = NULL;
  }
  if (w->loop.trace) {
    sim_trace(&w->loop, "client %s reads %.*s", c->name, (int)len, s);
  }
  if (ch == NULL) {
    return;
  }
  if (v[3] != NULL) {
    size_t i;
    for (i = 0; i < vl[3] && v[3][i] >= '0' && v[3][i] <= '9'; i++) {
      off = off * 10 + (uint64_t)(v[3][i] - '0');
    }
  }
  if (v[4] != NULL && vl[4] >= 2 && vl[4] - 2 < 33) {
    ep = v[4] + 1;
    elen = vl[4] - 2;
  }
  if (v[3] != NULL && (type == SIM_R_SUBSCRIBED || type == SIM_R_GAP ||
                       (type == SIM_R_MESSAGE && off > 0))) {
    sim_cstate *cs = sim_client_cstate(c, chan);
    int rec = v[5] == NULL ? -1 : v[5][0] == 't';
    int same = ep != NULL && cs->has_pos && strlen(cs->epoch) == elen &&
               memcmp(cs->epoch, ep, elen) == 0;
    uint64_t prev = cs->pos;
    if (w->check) {
      sim_check_hist(w, c, type, chan, off, ep, elen, rec);
    }
    if (type == SIM_R_MESSAGE) {
      if (cs->noffs == cs->capoffs) {
        cs->capoffs = cs->capoffs ? 2 * cs->capoffs : 16;
        cs->offs = realloc(cs->offs, cs->capoffs * sizeof(*cs->offs));
        if (cs->offs == NULL) {
          abort();
        }
      }
      cs->offs[cs->noffs++] = off;
    } else {
      if (ep != NULL) {
        memcpy(cs->epoch, ep, elen);
        cs->epoch[elen] = '\0';
      }
      if (type == SIM_R_GAP) {
        cs->gaps++;
        cs->replay_until = 0;
      } else {
        cs->recovered = rec;
        cs->rec_sent = 0;
        cs->replay_until = rec == 1 && same && prev > off ? prev : 0;
      }
    }
    cs->has_pos = 1;
    cs->pos = off;
  }
  if (type == SIM_R_MESSAGE) {
    sim_cstate *cs;
    data = v[2] ? v[2] : "";
    dlen = vl[2];
    if (w->check) {
      sim_check_frame(w, c, type, chan, data, dlen, flags);
    }
    cs = sim_client_cstate(c, chan);
    cs->recv++;
    if (w->keep_log) {
      if (c->nlog == c->caplog) {
        c->caplog = c->caplog ? 2 * c->caplog : 16;
        c->log = realloc(c->log, c->caplog * sizeof(*c->log));
        if (c->log == NULL) {
          abort();
        }
      }
      c->log[c->nlog].chan = chan;
      c->log[c->nlog].data = sim_json_norm(data, dlen);
      c->nlog++;
    }
  } else if (type == SIM_R_SUBSCRIBED) {
    sim_cstate *cs = sim_client_cstate(c, chan);
    sim_inst *in = &w->insts[c->inst];
    cs->acked = 1;
    /* The window of invariant 4 opens with an acknowledgement sent while
       the link was up: the first one, or the answer to a repeat subscribe
       when the first came while Redis was down (the core holds that
       answer until Redis confirms the re-subscribe).  An open window is
       not reopened. */
    if (cs->pending_unsubs == 0 && cs->must_from == UINT64_MAX && (flags & 1) &&
        in->gen == c->inst_gen && in->bp != NULL && sim_bp_connected(in->bp) &&
        (flags >> 1) == sim_redis_epoch(sim_bp_conn(in->bp))) {
      cs->must_from = w->loop.now;
      cs->must_epoch = flags >> 1;
    }
  } else if (type == SIM_R_UNSUBSCRIBED) {
    sim_cstate *cs = sim_client_cstate(c, chan);
    cs->acked = 0;
    if (cs->pending_unsubs > 0) {
      cs->pending_unsubs--;
    }
    cs->must_from = UINT64_MAX;
  }
}

/* ---------------------------------------------------------- events */

static sim_inst *client_inst(sim_world *w, sim_client *c) {
  sim_inst *in = &w->insts[c->inst];
  if (in->gen != c->inst_gen || in->h == NULL) {
    return NULL;
  }
  return in;
}

static void ev_conn_open(sim_world *w, sim_client *c) {
  sim_inst *in = client_inst(w, c);
  sim_conn *k;
  char addr[48];
  int rv;
  if (c->state != SIM_CL_CONNECTING) {
    return;
  }
  if (in == NULL || in->state != SIM_INST_RUNNING) {
    client_closed(w, c, 0);
    return;
  }
  snprintf(addr, sizeof(addr), "127.0.0.1:%u",
           40000u + (unsigned)(c - w->clients));
  /* The connection exists before its id does: the open's effects are
     applied (through it) before sh_conn_open returns. */
  if (in->spare == NULL) {
    in->spare = calloc(1, sizeof(*in->spare));
    if (in->spare == NULL) {
      abort();
    }
  }
  k = in->spare;
  k->client = (uint32_t)(c - w->clients);
  k->open = 1;
  k->sends = 0;
  k->id = 0;
  in->open_conns++;
  if (w->cfg.hub.auth) {
    /* The server verifies the token on the upgrade: a client without a
       good one is answered 401 and never reaches the hub. */
    const char *err;
    const hub_auth *a = sim_auth_verify(w, c->auth_tok, &err);
    rv = a != NULL ? sh_conn_open_auth(&inst_enter(in, "hub_on_conn_open")->sh,
                                       &k->id, addr, a, k, w->loop.now)
                   : SH_BAD_REQUEST;
  } else {
    rv = sh_conn_open(&inst_enter(in, "hub_on_conn_open")->sh, &k->id, addr, k,
                      w->loop.now);
  }
  if (rv != SH_OK) {
    /* Policy: refused; the client sees its connection closed without a
       code. */
    k->open = 0;
    in->open_conns--;
    client_closed(w, c, 0);
    return;
  }
  in->spare = NULL;
  if (k->id >= in->capconns) {
    size_t n = 2 * k->id + 16;
    in->conns = realloc(in->conns, n * sizeof(*in->conns));
    if (in->conns == NULL) {
      abort();
    }
    memset(in->conns + in->capconns, 0,
           (n - in->capconns) * sizeof(*in->conns));
    in->capconns = n;
  }
  if (k->id >= in->nconns) {
    in->nconns = k->id + 1;
  }
  in->conns[k->id] = k;
  c->conn = k->id;
  if (!k->open) {
    return; /* closed by the open's own effects */
  }
  c->state = SIM_CL_OPEN;
  c->was_open = 1;
  sim_trace(&w->loop, "client %s is %s:%llu", c->name, in->id,
            (unsigned long long)k->id);
}

static void ev_conn_msg(sim_world *w, sim_client *c, const sim_ev *ev) {
  sim_inst *in = client_inst(w, c);
  sim_blob *p = ev->p;
  sim_conn *k;
  if (in == NULL || c->state != SIM_CL_OPEN) {
    return;
  }
  k = inst_conn(in, c->conn);
  if (k == NULL || !k->open) {
    return;
  }
  if (w->check && !ev->b && p->len > 20) {
    /* Invariant 4's window ends when the instance processes an
       unsubscribe. */
    const char *t, *ch;
    size_t tlen, chlen;
    if (sim_json_field(p->data, p->len, "type", &t, &tlen) == 0 && tlen == 13 &&
        memcmp(t, "\"unsubscribe\"", 13) == 0 &&
        sim_json_field(p->data, p->len, "channel", &ch, &chlen) == 0 &&
        chlen >= 2) {
      sim_client_cstate(c, sim_chan_intern(&w->loop, ch + 1, chlen - 2))
        ->must_from = UINT64_MAX;
    }
  }
  sh_conn_msg(&inst_enter(in, "hub_on_conn_msg")->sh, c->conn, k, (int)ev->b,
              (const uint8_t *)p->data, p->len, w->loop.now);
}

static void ev_client_read(sim_world *w, sim_client *c) {
  sim_inst *in = client_inst(w, c);
  sim_conn *k;
  hub_buf *b;
  uint64_t extra = 0;
  size_t fin = 0, msgs, bytes;

  c->read_pending = 0;
  if (in == NULL || c->state != SIM_CL_OPEN) {
    return;
  }
  k = inst_conn(in, c->conn);
  if (k == NULL || !k->open || k->qlen == 0) {
    return;
  }
  b = k->q[k->qhead];
  if (k->wfin > 0) {
    k->wfin--;
    k->wfin_end -= b->len;
    k->wpos -= b->len;
  } else {
    /* The rest of a frame the socket held only in part, or all of one it
       did not hold (no kernel buffer), goes straight to the reader. */
    extra = b->len - k->wpos;
    fin = 1;
    k->wpos = 0;
    k->wfin_end = 0;
  }
  k->qhead = (k->qhead + 1) % k->qcap;
  k->qlen--;
  k->qbytes -= b->len;
  c->next_read = w->loop.now + SIM_S / c->read_rate;
  sh_oq_pop(&k->oq, fin, (size_t)extra);
  client_frame(w, c, b, 0);
  hub_buf_unref(b);
  /* Room in the socket: the next frames go in now. */
  conn_flush(w, in, k, &msgs, &bytes);
  msgs += fin;
  bytes += (size_t)extra;
  if (msgs > 0 || bytes > 0) {
    sh_conn_written(&inst_enter(in, "hub_on_conn_written")->sh, c->conn, msgs,
                    bytes, w->loop.now);
  }
  if (k->open && k->qlen) {
    schedule_read(w, c);
  }
}

/* An instance event: the hub timer (the shell retries a NOMEM after
   10 ms, arming the timer at the retry). */
static void ev_inst_timer(sim_world *w, sim_inst *in) {
  uint64_t retries = in->sh.st.expiry_retries;
  in->timer_at = UINT64_MAX;
  sh_expiry(&inst_enter(in, "hub_handle_expiry")->sh, w->loop.now);
  if (in->sh.st.expiry_retries != retries) {
    sim_trace(&w->loop, "instance %s: expiry: out of memory, retry at +10ms",
              in->id);
  }
}

int sim_step(sim_world *w, uint64_t until) {
  sim_ev ev;
  sim_inst *touched = NULL;
  size_t i;
  if (!sim_loop_pop(&w->loop, until, &ev)) {
    return 0;
  }
  sim_trace_begin(&w->loop, &ev);

  if (sim_redis_event(w->redis, &ev)) {
    /* Its tag is the instance index (sim_inst_start). */
    touched = &w->insts[ev.a];
  } else if (ev.type == SIM_EV_BP_RETRY) {
    touched = &w->insts[ev.a];
    if (touched->bp != NULL) {
      sim_bp_event(touched->bp, &ev);
    }
  } else {
    switch (ev.type) {
    case SIM_EV_STMT:
      if (w->stmt_cb) {
        w->stmt_cb(w, ev.p);
      }
      break;
    case SIM_EV_INST_TIMER: {
      sim_inst *in = &w->insts[ev.a];
      if (in->gen != ev.gen || in->h == NULL || in->timer_at != ev.at) {
        break;
      }
      ev_inst_timer(w, in);
      touched = in;
      break;
    }
    case SIM_EV_CONN_CLOSED: {
      sim_inst *in = &w->insts[ev.a];
      if (in->gen != ev.gen || in->h == NULL) {
        break;
      }
      in->closing--;
      sh_conn_closed(&inst_enter(in, "hub_on_conn_closed")->sh,
                     (hub_conn_id)ev.b, w->loop.now);
      touched = in;
      break;
    }
    case SIM_EV_INST_FLUSH: {
      sim_inst *in = &w->insts[ev.a];
      if (in->gen != ev.gen || in->h == NULL) {
        break;
      }
      inst_flush(w, in);
      touched = in;
      break;
    }
    case SIM_EV_INST_EXIT: {
      sim_inst *in = &w->insts[ev.a];
      if (in->gen == ev.gen && in->state == SIM_INST_SHUTTING) {
        inst_exit(w, in);
      }
      break;
    }
    case SIM_EV_CHECK_KEYS: {
      sim_blob *p = ev.p;
      sim_check_keys_gone(w, p->data);
      sim_blob_unref(p);
      break;
    }
    case SIM_EV_CLIENT_FRAME: {
      sim_client *c = &w->clients[ev.a];
      hub_buf *b = ev.p;
      if (c->gen == ev.gen && c->state == SIM_CL_OPEN) {
        client_frame(w, c, b, ev.b);
      }
      hub_buf_unref(b);
      break;
    }
    case SIM_EV_CLIENT_CLOSE: {
      sim_client *c = &w->clients[ev.a];
      if (c->gen == ev.gen) {
        client_closed(w, c, (int)ev.b);
      }
      break;
    }
    default: {
      sim_client *c = &w->clients[ev.a];
      if (c->gen != ev.gen) {
        if (ev.type == SIM_EV_CONN_MSG) {
          sim_blob_unref(ev.p);
        } else if (ev.type == SIM_EV_CONN_GONE && ev.b != 0 &&
                   c->state == SIM_CL_CLOSED && c->reopen_to != 0) {
          /* Closed meanwhile (by the hub, or its instance died): the
             reconnect still happens. */
          client_reopen(w, c, c->reopen_to - 1);
        }
        break;
      }
      touched = client_inst(w, c);
      switch (ev.type) {
      case SIM_EV_CONN_OPEN:
        ev_conn_open(w, c);
        break;
      case SIM_EV_CONN_MSG:
        ev_conn_msg(w, c, &ev);
        sim_blob_unref(ev.p);
        break;
      case SIM_EV_CONN_PONG:
        if (touched && c->state == SIM_CL_OPEN) {
          sh_conn_pong(&inst_enter(touched, "hub_on_conn_pong")->sh, c->conn,
                       w->loop.now);
        }
        break;
      case SIM_EV_CONN_GONE:
        if (touched && c->state == SIM_CL_OPEN) {
          sim_conn *k = inst_conn(touched, c->conn);
          if (k && k->open) {
            conn_q_clear(k);
            k->open = 0;
            touched->open_conns--;
            client_closed(w, c, 0);
            sh_conn_closed(&inst_enter(touched, "hub_on_conn_closed")->sh,
                           c->conn, w->loop.now);
          }
          client_closed(w, c, 0);
        } else {
          client_closed(w, c, 0);
        }
        if (ev.b != 0 && c->reopen_to != 0) {
          client_reopen(w, c, c->reopen_to - 1);
        }
        break;
      case SIM_EV_CLIENT_READ:
        ev_client_read(w, c);
        break;
      default:
        break;
      }
      break;
    }
    }
  }
  if (touched != NULL) {
    if (touched->state == SIM_INST_SHUTTING) {
      inst_maybe_exit(w, touched);
    }
    if (w->check && touched->state == SIM_INST_RUNNING) {
      sim_check_inst(w, touched);
      touched->unchecked = 0;
    }
  }
  /* hub_check (invariant 9) for every other hub called since it last ran:
     a shutting-down one, or one a statement called between events. */
  for (i = 0; w->check && i < w->ninsts; i++) {
    sim_inst *in = &w->insts[i];
    if (in->unchecked && in->h != NULL) {
      sim_check_hub(w, in);
    }
    in->unchecked = 0;
  }
  sim_trace_end(&w->loop);
  return 1;
}

int sim_world_init(sim_world *w, uint64_t seed) {
  memset(w, 0, sizeof(*w));
  sim_loop_init(&w->loop, seed);
  sim_config_default(&w->cfg);
  if (sim_redis_new(&w->redis, &w->loop) != 0) {
    return HUB_ERR_NOMEM;
  }
  return sim_check_hooks(w);
}

/* Releases what a queued event holds. */
static void ev_drop(sim_ev *ev) {
  if (ev->type == SIM_EV_CLIENT_FRAME) {
    hub_buf_unref(ev->p);
  } else if (ev->type != SIM_EV_STMT) {
    sim_blob_unref(ev->p);
  }
}

void sim_world_fini(sim_world *w) {
  size_t i, j;
  for (i = 0; i < w->ninsts; i++) {
    sim_inst *in = &w->insts[i];
    if (in->h != NULL) {
      inst_teardown(w, in);
    }
    for (j = 0; j < in->capconns; j++) {
      if (in->conns[j] != NULL) {
        conn_q_clear(in->conns[j]);
        free(in->conns[j]->q);
        free(in->conns[j]);
      }
    }
    free(in->conns);
    free(in->spare);
    free(in->dirty);
    sim_strv_clear(&in->lost_dels);
    sim_strv_clear(&in->pending_dels);
  }
  /* Frames still in flight point at their instance's allocator. */
  sim_loop_fini(&w->loop, ev_drop);
  sim_auth_fini(w);
  for (i = 0; i < w->ninsts; i++) {
    free(w->insts[i].alloc);
  }
  free(w->insts);
  for (i = 0; i < w->nclients; i++) {
    sim_client *c = &w->clients[i];
    for (j = 0; j < c->nlog; j++) {
      free(c->log[j].data);
    }
    free(c->log);
    for (j = 0; j < c->nch; j++) {
      free(c->ch[j].offs);
    }
    free(c->ch);
    free(c->seqs.keys);
    free(c->seqs.vals);
  }
  free(w->clients);
  sim_redis_del(w->redis);
  free(w->must);
  free(w->must_sends);
  memset(w, 0, sizeof(*w));
}
