/*
 * sim_world.c - the virtual clock, the event queue, the PRNG streams,
 * simulated instances (each running the real core) and simulated
 * clients, and the transport between them.
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

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "../backplanes/bp_sim.h"

/* ------------------------------------------------------------ PRNG */

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

void sim_rng_seed(sim_rng *r, uint64_t seed, uint64_t stream) {
  uint64_t x = seed ^ (stream * UINT64_C(0xd1b54a32d192ed03));
  int i;
  for (i = 0; i < 4; i++) {
    r->s[i] = splitmix64(&x);
  }
}

static uint64_t rotl(uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}

uint64_t sim_rng_next(sim_rng *r) {
  uint64_t *s = r->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

uint64_t sim_rng_below(sim_rng *r, uint64_t n) {
  return sim_rng_next(r) % n;
}

/* ---------------------------------------------------------- blobs */

sim_blob *sim_blob_new(const void *data, size_t len) {
  sim_blob *b = malloc(sizeof(*b) + len + 1);
  if (b == NULL) {
    abort();
  }
  b->ref = 1;
  b->len = (uint32_t)len;
  b->t = 0;
  if (len) {
    memcpy(b->data, data, len);
  }
  b->data[len] = '\0';
  return b;
}

void sim_blob_ref(sim_blob *b) {
  b->ref++;
}

void sim_blob_unref(sim_blob *b) {
  if (b != NULL && --b->ref == 0) {
    free(b);
  }
}

/* ---------------------------------------------------- event queue */

static int ev_before(const sim_ev *x, const sim_ev *y) {
  return x->at < y->at || (x->at == y->at && x->seq < y->seq);
}

void sim_schedule(sim_world *w, uint64_t at, uint32_t type, uint32_t a,
                  uint64_t b, uint64_t gen, void *p) {
  sim_ev ev;
  size_t i;
  if (w->nheap == w->capheap) {
    w->capheap = w->capheap ? 2 * w->capheap : 1024;
    w->heap = realloc(w->heap, w->capheap * sizeof(*w->heap));
    if (w->heap == NULL) {
      abort();
    }
  }
  ev.at = at < w->now ? w->now : at;
  ev.seq = w->seq++;
  ev.type = type;
  ev.a = a;
  ev.b = b;
  ev.gen = gen;
  ev.p = p;
  i = w->nheap++;
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!ev_before(&ev, &w->heap[parent])) {
      break;
    }
    w->heap[i] = w->heap[parent];
    i = parent;
  }
  w->heap[i] = ev;
}

static sim_ev heap_pop(sim_world *w) {
  sim_ev top = w->heap[0];
  sim_ev last = w->heap[--w->nheap];
  size_t i = 0, n = w->nheap;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= n) {
      break;
    }
    if (c + 1 < n && ev_before(&w->heap[c + 1], &w->heap[c])) {
      c++;
    }
    if (!ev_before(&w->heap[c], &last)) {
      break;
    }
    w->heap[i] = w->heap[c];
    i = c;
  }
  if (n > 0) {
    w->heap[i] = last;
  }
  return top;
}

uint64_t sim_next_at(const sim_world *w) {
  return w->nheap ? w->heap[0].at : UINT64_MAX;
}

/* Redis links: 100 us to 1 ms.  Client links: 20 us to 300 us. */
uint64_t sim_lat_redis(sim_rng *r) {
  return 100000 + sim_rng_below(r, 900000);
}

uint64_t sim_lat_client(sim_rng *r) {
  return 20000 + sim_rng_below(r, 280000);
}

/* ---------------------------------------------------------- trace */

static char trace_buf[4096];
static size_t trace_len;

void sim_trace(sim_world *w, const char *fmt, ...) {
  va_list ap;
  int n;
  if (w->trace == NULL || trace_len >= sizeof(trace_buf) - 8) {
    return;
  }
  trace_buf[trace_len++] = ' ';
  trace_buf[trace_len++] = '|';
  trace_buf[trace_len++] = ' ';
  va_start(ap, fmt);
  n = vsnprintf(trace_buf + trace_len, sizeof(trace_buf) - trace_len, fmt, ap);
  va_end(ap);
  if (n > 0) {
    trace_len += (size_t)n;
    if (trace_len >= sizeof(trace_buf)) {
      trace_len = sizeof(trace_buf) - 1;
    }
  }
}

static void trace_begin(sim_world *w, const char *what, uint32_t a,
                        uint64_t b) {
  int n;
  if (w->trace == NULL) {
    return;
  }
  n = snprintf(trace_buf, sizeof(trace_buf), "%llu.%06llu #%llu %s %u %llu",
               (unsigned long long)(w->now / SIM_MS),
               (unsigned long long)(w->now % SIM_MS),
               (unsigned long long)w->events, what, a, (unsigned long long)b);
  trace_len = n > 0 ? (size_t)n : 0;
}

void sim_trace_stmt(sim_world *w, int line, const char *text) {
  if (w->trace == NULL) {
    return;
  }
  fprintf(w->trace, "%llu.%06llu stmt line %d: %s\n",
          (unsigned long long)(w->now / SIM_MS),
          (unsigned long long)(w->now % SIM_MS), line, text);
}

static void trace_end(sim_world *w) {
  if (w->trace == NULL) {
    return;
  }
  fwrite(trace_buf, 1, trace_len, w->trace);
  fputc('\n', w->trace);
  trace_len = 0;
}

/* -------------------------------------------------------- channels */

int sim_chan_find(const sim_world *w, const char *name, size_t len) {
  size_t i;
  for (i = 0; i < w->nchans; i++) {
    if (strncmp(w->chans[i], name, len) == 0 && w->chans[i][len] == '\0') {
      return (int)i;
    }
  }
  return -1;
}

uint32_t sim_chan_intern(sim_world *w, const char *name, size_t len) {
  int i = sim_chan_find(w, name, len);
  char *s;
  if (i >= 0) {
    return (uint32_t)i;
  }
  if (w->nchans == w->capchans) {
    w->capchans = w->capchans ? 2 * w->capchans : 16;
    w->chans = realloc(w->chans, w->capchans * sizeof(*w->chans));
    if (w->chans == NULL) {
      abort();
    }
  }
  s = malloc(len + 1);
  if (s == NULL) {
    abort();
  }
  memcpy(s, name, len);
  s[len] = '\0';
  w->chans[w->nchans] = s;
  return (uint32_t)w->nchans++;
}

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

static sim_conn *inst_conn(sim_inst *in, hub_conn_id id) {
  return id < in->nconns ? &in->conns[id] : NULL;
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
}

static void conn_q_push(sim_conn *k, hub_buf *b) {
  if (k->qlen == k->qcap) {
    size_t ncap = k->qcap ? 2 * k->qcap : 16, i;
    hub_buf **nq = malloc(ncap * sizeof(*nq));
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
  k->q[(k->qhead + k->qlen) % k->qcap] = b;
  k->qlen++;
  k->qbytes += b->len;
}

static hub_buf *conn_q_at(sim_conn *k, size_t i) {
  return k->q[(k->qhead + i) % k->qcap];
}

static void client_frame(sim_world *w, sim_client *c, const hub_buf *b,
                         uint64_t flags);
static void inst_drain(sim_world *w, sim_inst *in);

/* The link state a frame is sent under, for invariant 4: the epoch, and
   whether the link was up and known up. */
static uint64_t link_flags(sim_inst *in) {
  int up = in->bp && bp_sim_connected(in->bp) && bp_sim_up_known(in->bp) &&
           hub_bp_is_up(in->h);
  return (in->bp ? bp_sim_epoch(in->bp) << 1 : 0) | (up ? 1 : 0);
}

static uint64_t client_down_at(sim_world *w, sim_client *c) {
  uint64_t at = w->now + sim_lat_client(&c->lat);
  if (at < c->down_last) {
    at = c->down_last;
  }
  c->down_last = at;
  return at;
}

static uint64_t client_up_at(sim_world *w, sim_client *c) {
  uint64_t at = w->now + sim_lat_client(&c->lat);
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
  sim_schedule(w, c->next_read > w->now ? c->next_read : w->now,
               SIM_EV_CLIENT_READ, (uint32_t)(c - w->clients), 0, c->gen, NULL);
}

/* Moves what the socket takes from the hub's queue into it, and reports
   it to the hub.  Returns 1 if the hub was called. */
static int conn_flush(sim_world *w, sim_inst *in, sim_conn *k) {
  sim_client *c = &w->clients[k->client];
  size_t msgs = 0;
  uint64_t bytes = 0;

  if (!k->open || k->qlen == 0) {
    return 0;
  }
  if (c->read_rate == SIM_FAST) {
    uint64_t flags = link_flags(in);
    bytes = k->qbytes - k->wpos;
    msgs = k->qlen - k->wfin;
    while (k->qlen) {
      hub_buf *b = k->q[k->qhead];
      k->qhead = (k->qhead + 1) % k->qcap;
      k->qlen--;
      sim_schedule(w, client_down_at(w, c), SIM_EV_CLIENT_FRAME, k->client,
                   flags, c->gen, b);
    }
    k->qhead = 0;
    k->qbytes = k->wpos = k->wfin_end = 0;
    k->wfin = 0;
  } else {
    uint64_t cap = w->cfg.sndbuf;
    uint64_t room = cap > k->wpos ? cap - k->wpos : 0;
    uint64_t left = k->qbytes - k->wpos;
    bytes = room < left ? room : left;
    k->wpos += bytes;
    while (k->wfin < k->qlen &&
           k->wfin_end + conn_q_at(k, k->wfin)->len <= k->wpos) {
      k->wfin_end += conn_q_at(k, k->wfin)->len;
      k->wfin++;
      msgs++;
    }
    if (c->read_rate > 0 && k->qlen) {
      schedule_read(w, c);
    }
  }
  if (msgs == 0 && bytes == 0) {
    return 0;
  }
  hub_on_conn_written(in->h, c->conn, msgs, (size_t)bytes, w->now);
  return 1;
}

static void conn_mark_dirty(sim_inst *in, hub_conn_id id);

static hub_conn_id *dirty;
static size_t ndirty, capdirty;

static void conn_mark_dirty(sim_inst *in, hub_conn_id id) {
  (void)in;
  if (ndirty == capdirty) {
    capdirty = capdirty ? 2 * capdirty : 64;
    dirty = realloc(dirty, capdirty * sizeof(*dirty));
    if (dirty == NULL) {
      abort();
    }
  }
  dirty[ndirty++] = id;
}

static void client_closed(sim_world *w, sim_client *c, int code) {
  if (c->state == SIM_CL_CLOSED) {
    return;
  }
  c->state = SIM_CL_CLOSED;
  c->close_code = code;
  c->gen++;
  sim_trace(w, "client %s closed %d", c->name, code);
}

/* The hub closed |k|: send the close frame if the socket takes it, else
   drop the connection at once; either way hub_on_conn_closed follows. */
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
  sim_trace(w, "close %s:%llu code %d %s", in->id, (unsigned long long)id, code,
            taken ? "sent" : "dropped");
  if (taken && c->state != SIM_CL_CLOSED) {
    sim_schedule(w, client_down_at(w, c), SIM_EV_CLIENT_CLOSE, k->client,
                 (uint64_t)code, c->gen, NULL);
  } else {
    client_closed(w, c, code);
  }
  sim_schedule(w, w->now, SIM_EV_CONN_CLOSED, (uint32_t)in->idx, id, in->gen,
               NULL);
}

static void inst_timer(sim_world *w, sim_inst *in) {
  hub_tstamp exp = hub_get_expiry(in->h);
  if (exp == HUB_TSTAMP_NONE) {
    return;
  }
  if (exp <= w->now) {
    exp = w->now + 1;
  }
  if (in->timer_at != UINT64_MAX && in->timer_at <= exp) {
    return;
  }
  in->timer_at = exp;
  sim_schedule(w, exp, SIM_EV_INST_TIMER, (uint32_t)in->idx, 0, in->gen, NULL);
}

static void inst_drain(sim_world *w, sim_inst *in) {
  const hub_effect *e;
  size_t i;
  if (in->h == NULL) {
    return;
  }
  for (;;) {
    while ((e = hub_effect_peek(in->h)) != NULL) {
      sim_conn *k;
      switch (e->type) {
      case HUB_EFF_SEND:
        k = inst_conn(in, e->conn);
        if (k != NULL && k->open) {
          hub_buf_ref(e->buf);
          conn_q_push(k, e->buf);
          k->sends++;
          conn_mark_dirty(in, e->conn);
        }
        break;
      case HUB_EFF_PING:
        k = inst_conn(in, e->conn);
        if (k != NULL && k->open) {
          sim_client *c = &w->clients[k->client];
          /* A client that never reads never sees the ping. */
          if (!c->no_pong && c->read_rate != 0 && c->state == SIM_CL_OPEN) {
            /* The ping travels down, the pong comes back up behind
               whatever the client sent before. */
            uint64_t at = client_down_at(w, c) + sim_lat_client(&c->lat);
            if (at < c->up_last) {
              at = c->up_last;
            }
            c->up_last = at;
            sim_schedule(w, at, SIM_EV_CONN_PONG, k->client, 0, c->gen, NULL);
          }
        }
        break;
      case HUB_EFF_CLOSE:
        k = inst_conn(in, e->conn);
        if (k != NULL && k->open) {
          conn_close(w, in, k, e->conn, e->close_code, e->reason);
        }
        break;
      default:
        if (in->bp != NULL) {
          if (w->trace && e->name) {
            sim_trace(w, "effect %d %.*s", (int)e->type, (int)e->name->len,
                      (const char *)e->name->data);
          }
          bp_apply(bp_sim_bp(in->bp), e);
        }
        break;
      }
      hub_effect_pop(in->h);
    }
    {
      int called = 0;
      size_t n = ndirty;
      for (i = 0; i < n; i++) {
        sim_conn *k = inst_conn(in, dirty[i]);
        if (k != NULL && conn_flush(w, in, k)) {
          called = 1;
        }
        if (w->check && k != NULL) {
          sim_check_queue(w, in, k);
        }
      }
      if (ndirty > n) {
        memmove(dirty, dirty + n, (ndirty - n) * sizeof(*dirty));
      }
      ndirty -= n;
      if (!called && hub_effect_peek(in->h) == NULL) {
        break;
      }
    }
  }
  inst_timer(w, in);
}

/* ------------------------------------------------------- instances */

/* The bp_events callbacks get the instance; the world is global to one
   run, so it is reached through this pointer. */
static sim_world *cur_world;

static void on_up(void *user) {
  sim_inst *in = user;
  hub_on_bp_up(in->h, cur_world->now);
  inst_drain(cur_world, in);
}

static void on_down(void *user) {
  sim_inst *in = user;
  hub_on_bp_down(in->h, cur_world->now);
  inst_drain(cur_world, in);
}

static void on_subscribed(void *user, const char *channel, size_t len) {
  sim_inst *in = user;
  hub_on_bp_subscribed(in->h, channel, len, cur_world->now);
  inst_drain(cur_world, in);
}

static hub_conn_id *must;
static uint64_t *must_sends;
static size_t capmust;

static void on_msg(void *user, const char *channel, size_t len,
                   const uint8_t *data, size_t dlen) {
  sim_inst *in = user;
  sim_world *w = cur_world;
  size_t nmust = 0, i;

  if (w->check) {
    /* Invariant 4: who must get this message? */
    uint32_t chan = sim_chan_intern(w, channel, len);
    uint64_t tr = bp_sim_msg_time(in->bp);
    uint64_t epoch = bp_sim_epoch(in->bp);
    hub_conn_id id;
    for (id = 1; id < in->nconns; id++) {
      sim_conn *k = &in->conns[id];
      sim_client *c;
      sim_cstate *cs;
      if (!k->open) {
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
      if (nmust == capmust) {
        capmust = capmust ? 2 * capmust : 64;
        must = realloc(must, capmust * sizeof(*must));
        must_sends = realloc(must_sends, capmust * sizeof(*must_sends));
        if (must == NULL || must_sends == NULL) {
          abort();
        }
      }
      must[nmust] = id;
      must_sends[nmust] = k->sends;
      nmust++;
    }
  }
  hub_on_bp_msg(in->h, channel, len, data, dlen, w->now);
  inst_drain(w, in);
  for (i = 0; i < nmust; i++) {
    sim_conn *k = &in->conns[must[i]];
    if (k->open && k->sends == must_sends[i]) {
      sim_violate(w, 4,
                  "client %s (conn %s:%llu) acknowledged on %.*s at %llu ns "
                  "did not get a message Redis published at %llu ns",
                  w->clients[k->client].name, in->id,
                  (unsigned long long)must[i], (int)len, channel,
                  (unsigned long long)sim_client_cstate(
                    &w->clients[k->client], sim_chan_intern(w, channel, len))
                    ->must_from,
                  (unsigned long long)bp_sim_msg_time(in->bp));
    }
  }
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
  hc.unix_time_s = 1700000000 + (int64_t)(w->now / SIM_S);
  hc.seed = w->seed ^ (in->gen * 0x9e3779b97f4a7c15ULL) ^ (uint64_t)in->idx;
  rv = hub_new(&in->h, &hc, NULL, w->now);
  if (rv != 0) {
    fprintf(stderr, "wshub-sim: hub_new: %s\n", hub_strerror(rv));
    in->h = NULL;
    in->state = SIM_INST_DEAD;
    return rv;
  }
  ev.user = in;
  ev.on_up = on_up;
  ev.on_down = on_down;
  ev.on_msg = on_msg;
  ev.on_subscribed = on_subscribed;
  in->bp = bp_sim_new(w, (uint32_t)in->idx, &ev);
  if (in->bp == NULL) {
    abort();
  }
  bp_sim_set_partitioned(in->bp, in->partitioned);
  in->state = SIM_INST_RUNNING;
  in->q_msgs_max = hc.max_queue_msgs;
  in->q_bytes_max = hc.max_queue_bytes;
  in->timer_at = UINT64_MAX;
  in->nconns = 1;
  in->open_conns = 0;
  in->shutdown_clean = 0;
  sim_trace(w, "instance %s starts", in->id);
  bp_sim_connect(in->bp);
  inst_drain(w, in);
  return 0;
}

static void inst_teardown(sim_world *w, sim_inst *in) {
  size_t i;
  for (i = 1; i < in->nconns; i++) {
    sim_conn *k = &in->conns[i];
    if (k->open) {
      client_closed(w, &w->clients[k->client], 0);
    }
    conn_q_clear(k);
    free(k->q);
    memset(k, 0, sizeof(*k));
  }
  in->nconns = 1;
  in->open_conns = 0;
  in->closing = 0;
  if (in->bp != NULL) {
    bp_sim_bp(in->bp)->ops->free(bp_sim_bp(in->bp));
    in->bp = NULL;
  }
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
  sim_trace(w, "instance %s crashes", in->id);
  if (w->check) {
    /* Invariant 6: its keys must expire by their TTLs. */
    snprintf(buf, sizeof(buf), "%sinstance:%s", w->cfg.prefix, in->id);
    sim_schedule(w, w->now + 30 * SIM_S + SIM_MS, SIM_EV_CHECK_KEYS, 0, 0, 0,
                 sim_blob_new(buf, strlen(buf)));
    snprintf(buf, sizeof(buf), "%sconn:%s:", w->cfg.prefix, in->id);
    sim_schedule(w, w->now + 120 * SIM_S + SIM_MS, SIM_EV_CHECK_KEYS, 0, 0, 0,
                 sim_blob_new(buf, strlen(buf)));
  }
  inst_teardown(w, in);
}

static void inst_exit(sim_world *w, sim_inst *in) {
  sim_trace(w, "instance %s exits", in->id);
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
  if (in->bp != NULL && bp_sim_connected(in->bp) && !bp_sim_idle(in->bp)) {
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
  in->shutdown_at = w->now;
  in->shutdown_clean = in->bp != NULL && bp_sim_connected(in->bp) &&
                       bp_sim_up_known(in->bp) && hub_bp_is_up(in->h);
  for (i = 1; i < in->nconns; i++) {
    if (in->conns[i].open) {
      sim_client *c = &w->clients[in->conns[i].client];
      c->shutdown_seen = !c->self_closed;
    }
  }
  sim_trace(w, "instance %s shuts down", in->id);
  hub_shutdown(in->h, w->now);
  inst_drain(w, in);
  sim_schedule(w, w->now + w->cfg.shutdown_timeout_ns, SIM_EV_INST_EXIT,
               (uint32_t)in->idx, 0, in->gen, NULL);
  inst_maybe_exit(w, in);
}

void sim_inst_partition(sim_world *w, sim_inst *in) {
  in->partitioned = 1;
  if (in->state == SIM_INST_SHUTTING) {
    in->shutdown_clean = 0;
  }
  if (in->bp != NULL) {
    bp_sim_set_partitioned(in->bp, 1);
    bp_sim_drop(in->bp, 1);
  }
  sim_trace(w, "instance %d partitioned from redis", in->idx);
}

void sim_inst_heal(sim_world *w, sim_inst *in) {
  in->partitioned = 0;
  if (in->bp != NULL) {
    bp_sim_set_partitioned(in->bp, 0);
  }
  sim_trace(w, "instance %d healed", in->idx);
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
    sim_rng_seed(&c->lat, w->seed, hsh);
  }
  /* Connects reach an instance in the order they were made, so
     connection ids follow statement order. */
  c->up_last = w->insts[inst].accept_last;
  sim_schedule(w, client_up_at(w, c), SIM_EV_CONN_OPEN, idx, 0, c->gen, NULL);
  w->insts[inst].accept_last = c->up_last;
  return (int)idx;
}

void sim_client_send(sim_world *w, sim_client *c, const void *data, size_t len,
                     int binary) {
  if (c->state == SIM_CL_CLOSED) {
    return;
  }
  sim_schedule(w, client_up_at(w, c), SIM_EV_CONN_MSG,
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
  sim_schedule(w, client_up_at(w, c), SIM_EV_CONN_GONE,
               (uint32_t)(c - w->clients), 0, c->gen, NULL);
}

void sim_redis_publish_text(sim_world *w, const char *chan, size_t chan_len,
                            const char *data, size_t len) {
  sim_blob *b = sim_blob_new(data, len);
  sim_redis_publish(w->redis, sim_chan_intern(w, chan, chan_len), b);
  sim_blob_unref(b);
}

static int reply_type(const char *t, size_t n) {
  static const char *names[] = {"\"message\"", "\"subscribed\"",
                                "\"unsubscribed\"", "\"published\"",
                                "\"error\""};
  int i;
  for (i = 0; i < 5; i++) {
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
  static const char *const keys[3] = {"type", "channel", "data"};
  const char *v[3], *ch, *data;
  size_t vl[3], chlen, dlen;
  int type;
  uint32_t chan = 0;

  sim_json_fields(s, len, 3, keys, v, vl);
  if (v[0] == NULL) {
    c->types[SIM_R_OTHER]++;
    return;
  }
  type = reply_type(v[0], vl[0]);
  c->types[type]++;
  ch = v[1];
  chlen = vl[1];
  if (ch != NULL && chlen >= 2 && ch[0] == '"') {
    chan = sim_chan_intern(w, ch + 1, chlen - 2);
  } else {
    ch = NULL;
  }
  if (w->trace) {
    sim_trace(w, "client %s reads %.*s", c->name, (int)len, s);
  }
  if (ch == NULL) {
    return;
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
        in->gen == c->inst_gen && in->bp != NULL && bp_sim_connected(in->bp) &&
        (flags >> 1) == bp_sim_epoch(in->bp)) {
      cs->must_from = w->now;
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
  hub_conn_id id;
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
  rv = hub_on_conn_open(in->h, &id, addr, NULL, w->now);
  if (rv != 0) {
    client_closed(w, c, 0);
    inst_drain(w, in);
    return;
  }
  if (id >= in->capconns) {
    size_t n = 2 * id + 16;
    in->conns = realloc(in->conns, n * sizeof(*in->conns));
    if (in->conns == NULL) {
      abort();
    }
    memset(in->conns + in->capconns, 0,
           (n - in->capconns) * sizeof(*in->conns));
    in->capconns = n;
  }
  if (id >= in->nconns) {
    in->nconns = id + 1;
  }
  in->conns[id].client = (uint32_t)(c - w->clients);
  in->conns[id].open = 1;
  in->conns[id].sends = 0;
  in->open_conns++;
  c->conn = id;
  c->state = SIM_CL_OPEN;
  c->was_open = 1;
  sim_trace(w, "client %s is %s:%llu", c->name, in->id, (unsigned long long)id);
  inst_drain(w, in);
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
      sim_client_cstate(c, sim_chan_intern(w, ch + 1, chlen - 2))->must_from =
        UINT64_MAX;
    }
  }
  hub_on_conn_msg(in->h, c->conn, (int)ev->b, (const uint8_t *)p->data, p->len,
                  w->now);
  inst_drain(w, in);
}

static void ev_client_read(sim_world *w, sim_client *c) {
  sim_inst *in = client_inst(w, c);
  sim_conn *k;
  hub_buf *b;
  uint64_t extra = 0;
  size_t fin = 0;

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
  c->next_read = w->now + SIM_S / c->read_rate;
  client_frame(w, c, b, 0);
  hub_buf_unref(b);
  if (fin) {
    hub_on_conn_written(in->h, c->conn, fin, (size_t)extra, w->now);
  }
  conn_flush(w, in, k);
  inst_drain(w, in);
  if (k->open && k->qlen) {
    schedule_read(w, c);
  }
}

static const char *ev_names[SIM_EV_TYPE_MAX] = {
  "?",         "stmt",      "timer",       "conn-open",  "conn-msg",
  "conn-pong", "conn-gone", "conn-closed", "frame",      "close",
  "read",      "redis-cmd", "bp-deliver",  "bp-connect", "bp-up",
  "bp-down",   "bp-retry",  "inst-exit",   "check-keys"};

int sim_step(sim_world *w, uint64_t until) {
  sim_ev ev;
  sim_inst *touched = NULL;
  if (w->nheap == 0 || w->heap[0].at > until) {
    return 0;
  }
  ev = heap_pop(w);
  w->now = ev.at;
  w->events++;
  cur_world = w;
  trace_begin(w, ev.type < SIM_EV_TYPE_MAX ? ev_names[ev.type] : "?", ev.a,
              ev.b);

  if (bp_sim_event(w, &ev)) {
    touched = &w->insts[ev.a];
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
      in->timer_at = UINT64_MAX;
      hub_handle_expiry(in->h, w->now);
      inst_drain(w, in);
      touched = in;
      break;
    }
    case SIM_EV_CONN_CLOSED: {
      sim_inst *in = &w->insts[ev.a];
      if (in->gen != ev.gen || in->h == NULL) {
        break;
      }
      in->closing--;
      hub_on_conn_closed(in->h, (hub_conn_id)ev.b, w->now);
      inst_drain(w, in);
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
          hub_on_conn_pong(touched->h, c->conn, w->now);
          inst_drain(w, touched);
        }
        break;
      case SIM_EV_CONN_GONE:
        if (touched && c->state == SIM_CL_OPEN) {
          sim_conn *k = inst_conn(touched, c->conn);
          if (k && k->open) {
            conn_q_clear(k);
            k->open = 0;
            touched->open_conns--;
            hub_on_conn_closed(touched->h, c->conn, w->now);
          }
          client_closed(w, c, 0);
          inst_drain(w, touched);
        } else {
          client_closed(w, c, 0);
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
    }
  }
  trace_end(w);
  return 1;
}

int sim_world_init(sim_world *w, uint64_t seed) {
  memset(w, 0, sizeof(*w));
  w->seed = seed;
  sim_config_default(&w->cfg);
  cur_world = w;
  return sim_redis_new(&w->redis, w);
}

void sim_world_fini(sim_world *w) {
  size_t i, j;
  cur_world = w;
  for (i = 0; i < w->ninsts; i++) {
    sim_inst *in = &w->insts[i];
    if (in->h != NULL) {
      inst_teardown(w, in);
    }
    for (j = 0; j < in->capconns; j++) {
      conn_q_clear(&in->conns[j]);
      free(in->conns[j].q);
    }
    free(in->conns);
  }
  free(w->insts);
  while (w->nheap) {
    sim_ev ev = heap_pop(w);
    if (ev.type == SIM_EV_CLIENT_FRAME) {
      hub_buf_unref(ev.p);
    } else if (ev.type != SIM_EV_STMT) {
      sim_blob_unref(ev.p);
    }
  }
  free(w->heap);
  for (i = 0; i < w->nclients; i++) {
    sim_client *c = &w->clients[i];
    for (j = 0; j < c->nlog; j++) {
      free(c->log[j].data);
    }
    free(c->log);
    free(c->ch);
    free(c->seqs.keys);
    free(c->seqs.vals);
  }
  free(w->clients);
  for (i = 0; i < w->nchans; i++) {
    free(w->chans[i]);
  }
  free(w->chans);
  sim_redis_del(w->redis);
  ndirty = 0;
  memset(w, 0, sizeof(*w));
}
