/*
 * sh_rec.c - the flight recorder's writer, digest and reader.
 *
 * The format is in docs/recording.md.  In short: a 20-byte header, then
 * records of a type byte, a LEB128 payload length and the payload;
 * integers in payloads are LEB128 varints, times are zigzag deltas from
 * the previous record's time, byte strings are a length and the bytes.
 * An event record is written before its call; the RESULT record after it
 * (the call's result, the effects drained since, the running digest) is
 * written when the next event starts, or left out when it would say
 * "0, no effects, queue empty".
 */
#include "sh_rec.h"

#include <string.h>

/* ------------------------------------------------------------ digest */

static uint64_t sh_load64(const uint8_t *p) {
  uint64_t v;
  memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  v = __builtin_bswap64(v);
#endif
  return v;
}

uint64_t sh_hash(const void *p, size_t len) {
  const uint8_t *b = p;
  uint64_t h = SH_DIGEST_SEED ^ (uint64_t)len;
  uint64_t tail = 0;
  size_t i = 0;
  for (; i + 8 <= len; i += 8) {
    h = sh_mix(h, sh_load64(b + i));
  }
  for (; i < len; i++) {
    tail |= (uint64_t)b[i] << (8 * (i & 7));
  }
  return sh_mix(h, tail);
}

void sh_digest_init(sh_digest *g) {
  g->d = SH_DIGEST_SEED;
  g->last = NULL;
  g->last_hash = 0;
}

void sh_digest_fini(sh_digest *g) {
  hub_buf_unref(g->last);
  g->last = NULL;
}

uint64_t sh_digest_buf(sh_digest *g, hub_buf *b) {
  /* The reference keeps the buffer, so its address cannot be reused by
     another one while the hash is cached under it. */
  hub_buf_unref(g->last);
  hub_buf_ref(b);
  g->last = b;
  g->last_hash = sh_hash(b->data, b->len);
  return g->last_hash;
}

/* ------------------------------------------------------------ encoding */

static size_t sh_put_uv(uint8_t *p, size_t n, uint64_t v) {
  while (v >= 0x80) {
    p[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  p[n++] = (uint8_t)v;
  return n;
}

static size_t sh_put_zz(uint8_t *p, size_t n, int64_t v) {
  uint64_t u = ((uint64_t)v << 1) ^ (v < 0 ? UINT64_MAX : 0);
  return sh_put_uv(p, n, u);
}

static size_t sh_put_u64le(uint8_t *p, size_t n, uint64_t v) {
  int i;
  for (i = 0; i < 8; i++) {
    p[n++] = (uint8_t)(v >> (8 * i));
  }
  return n;
}

/* ------------------------------------------------------------ writer */

void sh_rec_init(sh_rec *r, uint8_t *buf, size_t cap, uint64_t max_bytes,
                 const sh_rec_sink *sink) {
  memset(r, 0, sizeof(*r));
  r->buf = buf;
  r->cap = cap;
  r->max_bytes = max_bytes;
  r->sink = *sink;
  r->stopped = SH_REC_ON;
  sh_digest_init(&r->dg);
}

static void sh_rec_stopped_cb(sh_rec *r, int why) {
  if (r->sink.stopped != NULL) {
    r->sink.stopped(r->sink.user, why);
  }
}

static int sh_rec_sink_write(sh_rec *r, const uint8_t *p, size_t n) {
  if (n == 0) {
    return 0;
  }
  if (r->sink.write(r->sink.user, p, n) != 0) {
    r->stopped = SH_REC_STOP_WRITE;
    sh_rec_stopped_cb(r, SH_REC_STOP_WRITE);
    return -1;
  }
  return 0;
}

int sh_rec_flush(sh_rec *r) {
  size_t n = r->len;
  if (r->stopped == SH_REC_STOP_WRITE) {
    return -1;
  }
  if (sh_rec_sink_write(r, r->buf, n) != 0) {
    return -1;
  }
  /* In this order, for sh_rec_unwritten: a signal between the two sees
     no records to write. */
  r->len = 0;
  atomic_signal_fence(memory_order_seq_cst);
  r->file_off += n;
  return 0;
}

/* Appends one record: |small| (the encoded fields) then up to two byte
   strings.  A record larger than the buffer goes to the sink directly. */
static int sh_rec_put(sh_rec *r, int type, const uint8_t *small, size_t sn,
                      const void *b1, size_t l1, const void *b2, size_t l2) {
  uint8_t hdr[11 + 192];
  size_t hn = 0, plen = sn + l1 + l2, total;
  if (r->stopped == SH_REC_STOP_WRITE) {
    return -1;
  }
  hdr[hn++] = (uint8_t)type;
  hn = sh_put_uv(hdr, hn, plen);
  total = hn + plen;
  if (total > r->cap - r->len && sh_rec_flush(r) != 0) {
    return -1;
  }
  if (total <= r->cap - r->len) {
    uint8_t *w = r->buf + r->len;
    memcpy(w, hdr, hn);
    memcpy(w + hn, small, sn);
    if (l1 > 0) {
      memcpy(w + hn + sn, b1, l1);
    }
    if (l2 > 0) {
      memcpy(w + hn + sn + l1, b2, l2);
    }
    /* The record is whole before it counts (a signal handler may write
       buf[0..len) at any moment). */
    atomic_signal_fence(memory_order_seq_cst);
    r->len += total;
    return 0;
  }
  memcpy(hdr + hn, small, sn); /* sn <= 192: the callers' encodings */
  if (sh_rec_sink_write(r, hdr, hn + sn) != 0 ||
      sh_rec_sink_write(r, b1, l1) != 0 || sh_rec_sink_write(r, b2, l2) != 0) {
    return -1;
  }
  r->file_off += total;
  return 0;
}

/* Writes the open event's RESULT, unless it says nothing: result 0, no
   effects, the queue empty (most written and pong reports). */
static void sh_rec_close_event(sh_rec *r) {
  uint8_t sm[SH_REC_RESULT_MAX];
  size_t n = 0;
  if (!r->seg_open) {
    return;
  }
  r->seg_open = 0;
  if (r->seg_rc == 0 && r->seg_count == 0 && r->qempty) {
    return;
  }
  n = sh_put_zz(sm, n, r->seg_rc);
  n = sh_put_uv(sm, n, r->seg_count);
  sm[n++] = (uint8_t)(r->qempty ? SH_REC_QEMPTY : 0);
  n = sh_put_u64le(sm, n, r->dg.d);
  (void)sh_rec_put(r, SH_REC_RESULT, sm, n, NULL, 0, NULL, 0);
}

/* Ends the file: the open event's RESULT, END with |why|, flush. */
static int sh_rec_stop(sh_rec *r, int why) {
  uint8_t sm[SH_REC_END_MAX];
  size_t n = 0;
  int rc;
  if (r->stopped != SH_REC_ON) {
    return r->stopped == SH_REC_STOP_WRITE ? -1 : 0;
  }
  sh_rec_close_event(r);
  sm[n++] = (uint8_t)why;
  n = sh_put_uv(sm, n, r->events);
  rc = sh_rec_put(r, SH_REC_END, sm, n, NULL, 0, NULL, 0);
  if (rc == 0) {
    rc = sh_rec_flush(r);
  }
  if (r->stopped == SH_REC_ON) {
    r->stopped = why;
    if (why != SH_REC_STOP_END) {
      sh_rec_stopped_cb(r, why);
    }
  }
  return rc;
}

/* Whether a record of |total| bytes still leaves room for a RESULT and
   the END under the limit; if not, recording stops here. */
static int sh_rec_room(sh_rec *r, size_t total) {
  if (r->max_bytes == 0 ||
      r->file_off + r->len + total + SH_REC_RESULT_MAX + SH_REC_END_MAX <=
        r->max_bytes) {
    return 1;
  }
  (void)sh_rec_stop(r, SH_REC_STOP_LIMIT);
  return 0;
}

static size_t sh_rec_total(size_t plen) {
  uint8_t t[10];
  return 1 + sh_put_uv(t, 0, plen) + plen;
}

void sh_rec_event(sh_rec *r, int type, hub_tstamp now, uint64_t id, uint64_t a,
                  uint64_t b, const void *p1, size_t l1, const void *p2,
                  size_t l2) {
  uint8_t sm[64];
  size_t n = 0;
  if (r->stopped != SH_REC_ON) {
    return;
  }
  if (r->stop_pending) {
    (void)sh_rec_stop(r, SH_REC_STOP_LIMIT);
    return;
  }
  sh_rec_close_event(r);
  n = sh_put_zz(sm, n, (int64_t)(now - r->last_now));
  switch (type) {
  case SH_REC_CONN_MSG:
    n = sh_put_uv(sm, n, id);
    n = sh_put_uv(sm, n, a);
    n = sh_put_uv(sm, n, b);
    break;
  case SH_REC_CONN_WRITTEN:
    n = sh_put_uv(sm, n, id);
    n = sh_put_uv(sm, n, a);
    n = sh_put_uv(sm, n, b);
    break;
  case SH_REC_CONN_PONG:
  case SH_REC_CONN_CLOSED:
    n = sh_put_uv(sm, n, id);
    break;
  case SH_REC_BP_CONGESTED:
    n = sh_put_uv(sm, n, a);
    break;
  case SH_REC_BP_MSG:
    n = sh_put_uv(sm, n, l1);
    n = sh_put_uv(sm, n, l2);
    break;
  case SH_REC_BP_HPUBLISHED:
    n = sh_put_uv(sm, n, id);
    n = sh_put_uv(sm, n, a);
    n = sh_put_uv(sm, n, b);
    n = sh_put_uv(sm, n, l1);
    break;
  case SH_REC_API_PUBLISH:
    n = sh_put_uv(sm, n, id);
    n = sh_put_uv(sm, n, l1);
    break;
  case SH_REC_API_HISTORY:
    n = sh_put_uv(sm, n, id);
    n = sh_put_uv(sm, n, a);
    n = sh_put_uv(sm, n, b);
    n = sh_put_uv(sm, n, l1);
    break;
  case SH_REC_CONN_OPEN:
  case SH_REC_BP_SUBSCRIBED:
  case SH_REC_PUBLISH:
    n = sh_put_uv(sm, n, l1);
    break;
  default:
    break;
  }
  if (!sh_rec_room(r, sh_rec_total(n + l1 + l2))) {
    return;
  }
  if (sh_rec_put(r, type, sm, n, p1, l1, p2, l2) != 0) {
    return;
  }
  r->last_now = now;
  r->events++;
  r->seg_open = 1;
  r->seg_rc = 0;
  r->seg_count = 0;
  r->qempty = 0;
  r->in_call = 1;
  r->call_allocs = 0;
}

/* ------------------------------------------------------------ claims */

/* Writes the encoding of a hub_auth: counting only (|dst| NULL and not
   |sink|), into |dst|, or straight to the sink (a record larger than the
   buffer), its varints staged. */
typedef struct sh_em {
  sh_rec *r;
  uint8_t *dst;
  int sink;
  size_t n; /* bytes so far */
  uint8_t st[64];
  size_t sn;
  int err;
} sh_em;

static void sh_em_flush(sh_em *m) {
  if (m->sink && m->sn > 0 && !m->err &&
      sh_rec_sink_write(m->r, m->st, m->sn) != 0) {
    m->err = 1;
  }
  m->sn = 0;
}

static void sh_em_bytes(sh_em *m, const void *p, size_t l) {
  if (l == 0) {
    return;
  }
  if (m->dst != NULL) {
    memcpy(m->dst + m->n, p, l);
  } else if (m->sink) {
    sh_em_flush(m);
    if (!m->err && sh_rec_sink_write(m->r, p, l) != 0) {
      m->err = 1;
    }
  }
  m->n += l;
}

static void sh_em_uv(sh_em *m, uint64_t v) {
  uint8_t t[10];
  size_t l = sh_put_uv(t, 0, v);
  if (m->sink) {
    if (m->sn + l > sizeof(m->st)) {
      sh_em_flush(m);
    }
    memcpy(m->st + m->sn, t, l);
    m->sn += l;
    m->n += l;
  } else {
    sh_em_bytes(m, t, l);
  }
}

static void sh_em_str(sh_em *m, const char *p, size_t l) {
  sh_em_uv(m, l);
  sh_em_bytes(m, p, l);
}

static void sh_em_globs(sh_em *m, const char *const *g, size_t n) {
  size_t i;
  if (g == NULL) {
    n = 0;
  }
  sh_em_uv(m, n);
  for (i = 0; i < n; i++) {
    sh_em_str(m, g[i] != NULL ? g[i] : "", g[i] != NULL ? strlen(g[i]) : 0);
  }
}

/* The claims block (docs/recording.md): expires, sub, the subscribe
   globs, the publish globs. */
static void sh_em_auth(sh_em *m, const hub_auth *a) {
  sh_em_uv(m, a->expires);
  sh_em_str(m, a->sub != NULL ? a->sub : "", a->sub != NULL ? a->sub_len : 0);
  sh_em_globs(m, a->subscribe, a->nsubscribe);
  sh_em_globs(m, a->publish, a->npublish);
}

/* The part of an event record after its fixed fields: type, length,
   |sm| (n bytes), |text| (tl bytes), then the block |emit| writes
   (called once to count, once to write; NULL: none), into the buffer or
   straight to the sink when it does not fit.  Opens the event's segment
   as sh_rec_event does. */
static void sh_rec_put_event(sh_rec *r, int type, hub_tstamp now,
                             const uint8_t *sm, size_t n, const char *text,
                             size_t tl, void (*emit)(sh_em *, const void *),
                             const void *arg) {
  uint8_t hdr[11];
  size_t hn = 0, plen, total;
  sh_em m;
  memset(&m, 0, sizeof(m));
  m.r = r;
  if (emit != NULL) {
    emit(&m, arg); /* counts */
  }
  plen = n + tl + m.n;
  total = sh_rec_total(plen);
  if (!sh_rec_room(r, total) || r->stopped == SH_REC_STOP_WRITE) {
    return;
  }
  hdr[hn++] = (uint8_t)type;
  hn = sh_put_uv(hdr, hn, plen);
  if (total > r->cap - r->len && sh_rec_flush(r) != 0) {
    return;
  }
  memset(&m, 0, sizeof(m));
  m.r = r;
  if (total <= r->cap - r->len) {
    uint8_t *w = r->buf + r->len;
    memcpy(w, hdr, hn);
    memcpy(w + hn, sm, n);
    if (tl > 0) {
      memcpy(w + hn + n, text, tl);
    }
    m.dst = w + hn + n + tl;
    if (emit != NULL) {
      emit(&m, arg);
    }
    atomic_signal_fence(memory_order_seq_cst);
    r->len += total;
  } else {
    m.sink = 1;
    if (sh_rec_sink_write(r, hdr, hn) != 0 ||
        sh_rec_sink_write(r, sm, n) != 0 ||
        sh_rec_sink_write(r, (const uint8_t *)text, tl) != 0) {
      return;
    }
    if (emit != NULL) {
      emit(&m, arg);
    }
    sh_em_flush(&m);
    if (m.err) {
      return;
    }
    r->file_off += total;
  }
  r->last_now = now;
  r->events++;
  r->seg_open = 1;
  r->seg_rc = 0;
  r->seg_count = 0;
  r->qempty = 0;
  r->in_call = 1;
  r->call_allocs = 0;
}

static void sh_emit_auth(sh_em *m, const void *arg) {
  sh_em_auth(m, arg);
}

void sh_rec_event_auth(sh_rec *r, int type, hub_tstamp now, uint64_t id,
                       const char *text, const hub_auth *auth) {
  uint8_t sm[64];
  size_t n = 0, tl = text != NULL ? strlen(text) : 0;
  uint64_t fl = auth != NULL ? SH_REC_AUTH_CLAIMS : 0;
  if (r->stopped != SH_REC_ON) {
    return;
  }
  if (r->stop_pending) {
    (void)sh_rec_stop(r, SH_REC_STOP_LIMIT);
    return;
  }
  sh_rec_close_event(r);
  if (type == SH_REC_CONN_VERIFIED && text != NULL) {
    fl |= SH_REC_AUTH_ERR;
  }
  n = sh_put_zz(sm, n, (int64_t)(now - r->last_now));
  if (type == SH_REC_CONN_VERIFIED) {
    n = sh_put_uv(sm, n, id);
  }
  n = sh_put_uv(sm, n, fl);
  n = sh_put_uv(sm, n, tl);
  sh_rec_put_event(r, type, now, sm, n, text, tl,
                   auth != NULL ? sh_emit_auth : NULL, auth);
}

/* The entries block of a BP_HREAD record: n, then per entry its offset
   and its data (string). */
static void sh_em_entries(sh_em *m, const hub_hentry *e, size_t n) {
  size_t i;
  sh_em_uv(m, n);
  for (i = 0; i < n; i++) {
    sh_em_uv(m, e[i].offset);
    sh_em_str(m, (const char *)e[i].data, e[i].len);
  }
}

typedef struct sh_hentries {
  const hub_hentry *e;
  size_t n;
} sh_hentries;

static void sh_emit_entries(sh_em *m, const void *arg) {
  const sh_hentries *he = arg;
  sh_em_entries(m, he->e, he->n);
}

void sh_rec_event_hread(sh_rec *r, hub_tstamp now, uint64_t req, int ok,
                        uint64_t offset, const char *epoch, size_t epoch_len,
                        const hub_hentry *e, size_t ne) {
  uint8_t sm[64];
  size_t n = 0;
  sh_hentries he;
  if (r->stopped != SH_REC_ON) {
    return;
  }
  if (r->stop_pending) {
    (void)sh_rec_stop(r, SH_REC_STOP_LIMIT);
    return;
  }
  sh_rec_close_event(r);
  if (epoch == NULL) {
    epoch_len = 0;
  }
  n = sh_put_zz(sm, n, (int64_t)(now - r->last_now));
  n = sh_put_uv(sm, n, req);
  n = sh_put_uv(sm, n, ok != 0);
  n = sh_put_uv(sm, n, offset);
  n = sh_put_uv(sm, n, epoch_len);
  he.e = e;
  he.n = ne;
  sh_rec_put_event(r, SH_REC_BP_HREAD, now, sm, n, epoch, epoch_len,
                   sh_emit_entries, &he);
}

void sh_rec_alloc_failed(sh_rec *r) {
  uint8_t sm[10];
  size_t n;
  if (r->stopped != SH_REC_ON || !r->seg_open) {
    return;
  }
  n = sh_put_uv(sm, 0, r->call_allocs);
  /* Under the limit only, keeping the room for the RESULT and the END;
     past it, recording stops at the next event (whose replay may then
     differ: its failure is not in the file). */
  if (r->max_bytes != 0 && r->file_off + r->len + sh_rec_total(n) +
                               SH_REC_RESULT_MAX + SH_REC_END_MAX >
                             r->max_bytes) {
    r->stop_pending = 1;
    return;
  }
  (void)sh_rec_put(r, SH_REC_ALLOC_FAIL, sm, n, NULL, 0, NULL, 0);
}

int sh_record(sh *s, sh_rec *r, const hub_config *cfg, hub_tstamp now) {
  uint8_t h[SH_REC_HEADER_LEN], sm[224 + sizeof(cfg->history_channels) + 32];
  const char *iid = cfg->instance_id != NULL ? cfg->instance_id : "";
  size_t ilen = strlen(iid), n = 0;
  const struct {
    uint8_t tag;
    uint64_t v;
  } f[] = {{2, (uint64_t)cfg->backplane},
           {3, (uint64_t)cfg->registry},
           {4, cfg->max_queue_msgs},
           {5, cfg->max_queue_bytes},
           {6, cfg->max_message_bytes},
           {7, cfg->max_subs_per_conn},
           {8, cfg->ping_interval_ns},
           {9, cfg->pong_timeout_ns},
           {10, cfg->write_timeout_ns},
           {11, cfg->heartbeat_interval_ns},
           {12, cfg->instance_ttl_s},
           {13, cfg->conn_ttl_s},
           {15, cfg->seed}};
  size_t i;

  memcpy(h, SH_REC_MAGIC, 8);
  h[8] = SH_REC_VERSION & 0xff;
  h[9] = SH_REC_VERSION >> 8;
  h[10] = 0x02; /* 0x0102, little-endian */
  h[11] = 0x01;
  h[12] = (uint8_t)sizeof(hub_tstamp);
  h[13] = (uint8_t)sizeof(hub_conn_id);
  h[14] = 8; /* digest bytes */
  h[15] = 0;
  h[16] = SH_REC_HEADER_LEN;
  h[17] = h[18] = h[19] = 0;

  n = sh_put_uv(sm, n, now);
  for (i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
    sm[n++] = f[i].tag;
    n = sh_put_uv(sm, n, f[i].v);
  }
  sm[n++] = 14;
  n = sh_put_zz(sm, n, cfg->unix_time_s);
  if (cfg->auth != 0) {
    /* Only when on: a recording without authentication stays readable
       by a build that does not know the tag (absent means 0). */
    sm[n++] = 16;
    n = sh_put_uv(sm, n, (uint64_t)cfg->auth);
  }
  if (cfg->max_publish_rate != 0) {
    /* Likewise only when set (absent means 0: no limit). */
    sm[n++] = 17;
    n = sh_put_uv(sm, n, cfg->max_publish_rate);
  }
  if (cfg->history_size > 0) {
    /* Only with history on, so that a recording without it keeps the
       bytes it always had. */
    size_t cl = strlen(cfg->history_channels);
    sm[n++] = 18;
    n = sh_put_uv(sm, n, cfg->history_size);
    sm[n++] = 19;
    n = sh_put_uv(sm, n, cfg->history_ttl_ns);
    sm[n++] = 20;
    n = sh_put_uv(sm, n, cfg->history_meta_ttl_ns);
    sm[n++] = 21; /* the channel globs: length, then the bytes */
    n = sh_put_uv(sm, n, cl);
    memcpy(sm + n, cfg->history_channels, cl);
    n += cl;
  }
  sm[n++] = 1; /* the instance id, last: its bytes follow */
  n = sh_put_uv(sm, n, ilen);

  if (r->stopped != SH_REC_ON) {
    return -1;
  }
  if (r->max_bytes != 0 && SH_REC_HEADER_LEN + sh_rec_total(n + ilen) +
                               SH_REC_RESULT_MAX + SH_REC_END_MAX >
                             r->max_bytes) {
    r->stopped = SH_REC_STOP_LIMIT;
    sh_rec_stopped_cb(r, SH_REC_STOP_LIMIT);
    return -1;
  }
  if (r->cap - r->len < SH_REC_HEADER_LEN) {
    return -1;
  }
  memcpy(r->buf + r->len, h, SH_REC_HEADER_LEN);
  r->len += SH_REC_HEADER_LEN;
  if (sh_rec_put(r, SH_REC_CONFIG, sm, n, iid, ilen, NULL, 0) != 0) {
    return -1;
  }
  r->last_now = now;
  r->seg_open = 1; /* hub_new's effects */
  r->seg_rc = 0;
  r->seg_count = 0;
  r->qempty = 0;
  s->rec = r;
  return 0;
}

int sh_rec_end(sh_rec *r) {
  return sh_rec_stop(r, SH_REC_STOP_END);
}

void sh_rec_fini(sh_rec *r) {
  sh_digest_fini(&r->dg);
}

size_t sh_rec_unwritten(const sh_rec *r, uint64_t file_pos, const uint8_t **p) {
  size_t len = r->len;
  uint64_t off = r->file_off, done;
  if (file_pos < off) {
    return 0;
  }
  done = file_pos - off;
  if (done >= len) {
    return 0;
  }
  *p = r->buf + done;
  return len - (size_t)done;
}

/* ------------------------------------------------------------ reader */

typedef struct sh_cur {
  const uint8_t *p;
  size_t n, off;
  int bad;
} sh_cur;

static uint64_t sh_get_uv(sh_cur *c) {
  uint64_t v = 0;
  unsigned shift = 0;
  for (;;) {
    uint8_t b;
    if (c->off >= c->n || shift > 63) {
      c->bad = 1;
      return 0;
    }
    b = c->p[c->off++];
    if (shift == 63 && (b & 0x7e) != 0) {
      c->bad = 1;
      return 0;
    }
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      return v;
    }
    shift += 7;
  }
}

static int64_t sh_get_zz(sh_cur *c) {
  uint64_t u = sh_get_uv(c);
  return (int64_t)(u >> 1) ^ -(int64_t)(u & 1);
}

static const uint8_t *sh_get_bytes(sh_cur *c, size_t n) {
  const uint8_t *p;
  if (c->bad || n > c->n - c->off) {
    c->bad = 1;
    return NULL;
  }
  p = c->p + c->off;
  c->off += n;
  return p;
}

static size_t sh_get_len(sh_cur *c) {
  uint64_t v = sh_get_uv(c);
  if (v > c->n - c->off) {
    c->bad = 1;
    return 0;
  }
  return (size_t)v;
}

int sh_rec_open(sh_rec_reader *rd, const uint8_t *data, size_t len,
                const char **why) {
  memset(rd, 0, sizeof(*rd));
  if (len == 0) {
    *why = "empty file: not a wshub recording";
    return SH_REC_BAD;
  }
  if (len < 8 || memcmp(data, SH_REC_MAGIC, 8) != 0) {
    *why = "not a wshub recording (no WSHUBREC magic)";
    return SH_REC_BAD;
  }
  if (len < SH_REC_HEADER_LEN) {
    *why = "the recording's header is cut off";
    return SH_REC_BAD;
  }
  if (data[8] != (SH_REC_VERSION & 0xff) || data[9] != SH_REC_VERSION >> 8) {
    *why = "unsupported recording version (this build reads version 1)";
    return SH_REC_BAD;
  }
  if (data[10] != 0x02 || data[11] != 0x01) {
    *why = "wrong byte order mark (the file is not little-endian)";
    return SH_REC_BAD;
  }
  if (data[12] != sizeof(hub_tstamp) || data[13] != sizeof(hub_conn_id) ||
      data[14] != 8) {
    *why = "field sizes differ from this build's";
    return SH_REC_BAD;
  }
  if (data[16] < SH_REC_HEADER_LEN || data[17] || data[18] || data[19] ||
      data[16] > len) {
    *why = "bad header length";
    return SH_REC_BAD;
  }
  rd->data = data;
  rd->len = len;
  rd->off = data[16];
  return 0;
}

static int sh_rec_config(sh_rec_reader *rd, sh_cur *c, sh_rec_record *o) {
  hub_config *cfg = &o->cfg;
  hub_config_default(cfg);
  rd->instance_id[0] = '\0';
  cfg->instance_id = rd->instance_id;
  cfg->auth = 0;             /* absent: off */
  cfg->max_publish_rate = 0; /* absent: no limit */
  o->now = sh_get_uv(c);
  while (!c->bad && c->off < c->n) {
    uint8_t tag = c->p[c->off++];
    uint64_t v = 0;
    if (tag == 1) {
      size_t l = sh_get_len(c);
      const uint8_t *s = sh_get_bytes(c, l);
      if (s == NULL || l >= sizeof(rd->instance_id) || memchr(s, 0, l)) {
        return -1;
      }
      memcpy(rd->instance_id, s, l);
      rd->instance_id[l] = '\0';
      continue;
    }
    if (tag == 14) {
      cfg->unix_time_s = sh_get_zz(c);
      continue;
    }
    if (tag == 21) {
      size_t l = sh_get_len(c);
      const uint8_t *s = sh_get_bytes(c, l);
      if (s == NULL || l >= sizeof(cfg->history_channels) || memchr(s, 0, l)) {
        return -1;
      }
      memcpy(cfg->history_channels, s, l);
      cfg->history_channels[l] = '\0';
      continue;
    }
    v = sh_get_uv(c);
    switch (tag) {
    case 2:
      cfg->backplane = v != 0;
      break;
    case 3:
      cfg->registry = v != 0;
      break;
    case 4:
      if (v > UINT32_MAX) {
        return -1;
      }
      cfg->max_queue_msgs = (uint32_t)v;
      break;
    case 5:
      cfg->max_queue_bytes = v;
      break;
    case 6:
      cfg->max_message_bytes = v;
      break;
    case 7:
      if (v > UINT32_MAX) {
        return -1;
      }
      cfg->max_subs_per_conn = (uint32_t)v;
      break;
    case 8:
      cfg->ping_interval_ns = v;
      break;
    case 9:
      cfg->pong_timeout_ns = v;
      break;
    case 10:
      cfg->write_timeout_ns = v;
      break;
    case 11:
      cfg->heartbeat_interval_ns = v;
      break;
    case 12:
      if (v > UINT32_MAX) {
        return -1;
      }
      cfg->instance_ttl_s = (uint32_t)v;
      break;
    case 13:
      if (v > UINT32_MAX) {
        return -1;
      }
      cfg->conn_ttl_s = (uint32_t)v;
      break;
    case 15:
      cfg->seed = v;
      break;
    case 16:
      cfg->auth = v != 0;
      break;
    case 17:
      if (v > UINT32_MAX) {
        return -1;
      }
      cfg->max_publish_rate = (uint32_t)v;
      break;
    case 18:
      if (v > UINT32_MAX) {
        return -1;
      }
      cfg->history_size = (uint32_t)v;
      break;
    case 19:
      cfg->history_ttl_ns = v;
      break;
    case 20:
      cfg->history_meta_ttl_ns = v;
      break;
    default:
      return -1; /* a field this build does not know */
    }
  }
  return c->bad ? -1 : 0;
}

/* Walks a claims block over |c| to its end; with |out|, decodes it into
   the given space.  Returns 0, or -1 (bad, or the space is too small). */
static int sh_auth_walk(sh_cur *c, hub_auth *out, char *chars, size_t nchars,
                        const char **globs, size_t nglobs) {
  size_t co = 0, go = 0, k, i;
  uint64_t exp = sh_get_uv(c);
  size_t l = sh_get_len(c);
  const uint8_t *sub = sh_get_bytes(c, l);
  if (c->bad) {
    return -1;
  }
  if (out != NULL) {
    if (l + 1 > nchars) {
      return -1;
    }
    memcpy(chars, sub, l);
    chars[l] = '\0';
    memset(out, 0, sizeof(*out));
    out->sub = chars;
    out->sub_len = l;
    out->expires = exp;
    co = l + 1;
  }
  for (k = 0; k < 2; k++) {
    uint64_t ng = sh_get_uv(c);
    if (c->bad || ng > c->n - c->off) { /* each glob takes a byte */
      return -1;
    }
    if (out != NULL) {
      if (ng > nglobs - go) {
        return -1;
      }
      if (k == 0) {
        out->subscribe = globs + go;
        out->nsubscribe = (size_t)ng;
      } else {
        out->publish = globs + go;
        out->npublish = (size_t)ng;
      }
    }
    for (i = 0; i < (size_t)ng; i++) {
      const uint8_t *g;
      l = sh_get_len(c);
      g = sh_get_bytes(c, l);
      if (c->bad || memchr(g, 0, l) != NULL) {
        return -1;
      }
      if (out != NULL) {
        if (l + 1 > nchars - co) {
          return -1;
        }
        memcpy(chars + co, g, l);
        chars[co + l] = '\0';
        globs[go++] = chars + co;
        co += l + 1;
      }
    }
  }
  return c->bad || c->off != c->n ? -1 : 0;
}

int sh_rec_auth(const sh_rec_record *o, hub_auth *out, char *chars,
                size_t nchars, const char **globs, size_t nglobs) {
  sh_cur c;
  if ((o->type != SH_REC_CONN_OPEN_AUTH && o->type != SH_REC_CONN_VERIFIED) ||
      !(o->a & SH_REC_AUTH_CLAIMS) || nchars == 0) {
    return -1;
  }
  c.p = o->p2;
  c.n = o->l2;
  c.off = 0;
  c.bad = 0;
  return sh_auth_walk(&c, out, chars, nchars, globs, nglobs);
}

int sh_rec_next(sh_rec_reader *rd, sh_rec_record *o, const char **why) {
  for (;;) {
    sh_cur h, c;
    uint64_t plen;
    int type;
    if (rd->off >= rd->len) {
      return SH_REC_EOF;
    }
    memset(o, 0, sizeof(*o));
    o->offset = rd->off;
    h.p = rd->data;
    h.n = rd->len;
    h.off = rd->off + 1;
    h.bad = 0;
    type = rd->data[rd->off];
    o->type = type; /* also for a cut-off record: what it was */
    plen = sh_get_uv(&h);
    if (h.bad) {
      if (h.off >= rd->len) {
        return SH_REC_TRUNCATED;
      }
      *why = "bad record length";
      return SH_REC_BAD;
    }
    if (plen > rd->len - h.off) {
      return SH_REC_TRUNCATED;
    }
    c.p = rd->data + h.off;
    c.n = (size_t)plen;
    c.off = 0;
    c.bad = 0;
    rd->off = h.off + (size_t)plen;
    o->type = type;
    if (type >= 0x80) {
      continue; /* an annotation: skipped by readers */
    }
    if (type == SH_REC_CONFIG) {
      if (sh_rec_config(rd, &c, o) != 0) {
        *why = "bad config record (an unknown field or a value out of range)";
        return SH_REC_BAD;
      }
      rd->now = o->now;
      return SH_REC_RECORD;
    }
    if (type == SH_REC_RESULT) {
      int64_t rc = sh_get_zz(&c);
      const uint8_t *d;
      o->count = sh_get_uv(&c);
      d = sh_get_bytes(&c, 1);
      o->flags = d != NULL ? d[0] : 0;
      d = sh_get_bytes(&c, 8);
      if (d != NULL) {
        o->digest = sh_load64(d);
      }
      if (rc < -1000 || rc > 1000) {
        c.bad = 1;
      }
      o->rc = (int)rc;
    } else if (type == SH_REC_ALLOC_FAIL) {
      o->count = sh_get_uv(&c);
    } else if (type == SH_REC_END) {
      const uint8_t *d = sh_get_bytes(&c, 1);
      o->flags = d != NULL ? d[0] : 0;
      o->count = sh_get_uv(&c);
    } else if (type > SH_REC_CONFIG && type < SH_REC_EVENT_MAX) {
      o->now = rd->now + (uint64_t)sh_get_zz(&c);
      switch (type) {
      case SH_REC_CONN_MSG:
        o->id = sh_get_uv(&c);
        o->a = sh_get_uv(&c);
        o->b = sh_get_uv(&c);
        if (o->a > 3) {
          c.bad = 1;
        } else if (!(o->a & SH_REC_MSG_NODATA)) {
          if (o->b > c.n - c.off) {
            c.bad = 1;
          } else {
            o->l1 = (size_t)o->b;
            o->p1 = sh_get_bytes(&c, o->l1);
          }
        }
        break;
      case SH_REC_CONN_WRITTEN:
        o->id = sh_get_uv(&c);
        o->a = sh_get_uv(&c);
        o->b = sh_get_uv(&c);
        break;
      case SH_REC_CONN_PONG:
      case SH_REC_CONN_CLOSED:
        o->id = sh_get_uv(&c);
        break;
      case SH_REC_BP_CONGESTED:
        o->a = sh_get_uv(&c);
        if (o->a > 1) {
          c.bad = 1;
        }
        break;
      case SH_REC_BP_MSG:
        o->l1 = sh_get_len(&c);
        o->l2 = sh_get_len(&c);
        o->p1 = sh_get_bytes(&c, o->l1);
        o->p2 = sh_get_bytes(&c, o->l2);
        break;
      case SH_REC_BP_HPUBLISHED:
      case SH_REC_API_HISTORY:
        o->id = sh_get_uv(&c);
        o->a = sh_get_uv(&c);
        o->b = sh_get_uv(&c);
        o->l1 = sh_get_len(&c);
        o->p1 = sh_get_bytes(&c, o->l1);
        if (type == SH_REC_BP_HPUBLISHED && o->a > 1) {
          c.bad = 1;
        }
        break;
      case SH_REC_API_PUBLISH:
        o->id = sh_get_uv(&c);
        o->l1 = sh_get_len(&c);
        o->p1 = sh_get_bytes(&c, o->l1);
        break;
      case SH_REC_BP_HREAD:
        o->id = sh_get_uv(&c);
        o->a = sh_get_uv(&c);
        o->b = sh_get_uv(&c);
        o->l1 = sh_get_len(&c);
        o->p1 = sh_get_bytes(&c, o->l1);
        if (o->a > 1) {
          c.bad = 1;
        } else if (!c.bad) {
          /* The entries: the rest of the record, checked whole. */
          sh_cur ec = {c.p + c.off, c.n - c.off, 0, 0};
          uint64_t ne = sh_get_uv(&ec), i;
          o->p2 = ec.p;
          o->l2 = ec.n;
          for (i = 0; i < ne && !ec.bad; i++) {
            size_t l;
            (void)sh_get_uv(&ec);
            l = sh_get_len(&ec);
            if (sh_get_bytes(&ec, l) == NULL && l > 0) {
              ec.bad = 1;
            }
          }
          if (ec.bad || ec.off != ec.n || ne > ec.n) {
            c.bad = 1;
          }
          o->count = ne;
          c.off = c.n;
        }
        break;
      case SH_REC_CONN_OPEN:
      case SH_REC_BP_SUBSCRIBED:
      case SH_REC_PUBLISH:
        o->l1 = sh_get_len(&c);
        o->p1 = sh_get_bytes(&c, o->l1);
        break;
      case SH_REC_CONN_OPEN_AUTH:
      case SH_REC_CONN_VERIFIED:
        if (type == SH_REC_CONN_VERIFIED) {
          o->id = sh_get_uv(&c);
        }
        o->a = sh_get_uv(&c);
        o->l1 = sh_get_len(&c);
        o->p1 = sh_get_bytes(&c, o->l1);
        if (o->a > (type == SH_REC_CONN_VERIFIED ? 3u : 1u) ||
            (o->p1 != NULL && memchr(o->p1, 0, o->l1) != NULL) ||
            (!(o->a & SH_REC_AUTH_ERR) && type == SH_REC_CONN_VERIFIED &&
             o->l1 != 0)) {
          c.bad = 1;
        } else if (!c.bad) {
          /* The claims: the rest of the record, checked whole. */
          sh_cur ac = {c.p + c.off, c.n - c.off, 0, 0};
          o->p2 = ac.p;
          o->l2 = ac.n;
          if ((o->a & SH_REC_AUTH_CLAIMS)
                ? sh_auth_walk(&ac, NULL, NULL, 0, NULL, 0) != 0
                : ac.n != 0) {
            c.bad = 1;
          }
          c.off = c.n;
        }
        break;
      default:
        break;
      }
      rd->now = o->now;
    } else {
      *why = "unknown record type";
      return SH_REC_BAD;
    }
    if (c.bad || c.off != c.n) {
      *why = "a record's fields do not match its length";
      return SH_REC_BAD;
    }
    return SH_REC_RECORD;
  }
}

const char *sh_rec_type_name(int type) {
  static const char *const names[] = {"?",
                                      "hub_new",
                                      "conn_open",
                                      "conn_msg",
                                      "conn_pong",
                                      "conn_written",
                                      "conn_closed",
                                      "bp_msg",
                                      "bp_subscribed",
                                      "bp_up",
                                      "bp_down",
                                      "publish",
                                      "expiry",
                                      "shutdown",
                                      "conn_open_auth",
                                      "conn_verified",
                                      "bp_congested",
                                      "bp_hpublished",
                                      "bp_hread",
                                      "api_publish",
                                      "api_history"};
  if (type > 0 && type < SH_REC_EVENT_MAX) {
    return names[type];
  }
  if (type == SH_REC_RESULT) {
    return "result";
  }
  if (type == SH_REC_END) {
    return "end";
  }
  if (type == SH_REC_ALLOC_FAIL) {
    return "alloc_fail";
  }
  return "?";
}

size_t sh_rec_hentries(const sh_rec_record *o, hub_hentry *out, size_t cap) {
  sh_cur c = {o->p2, o->l2, 0, 0};
  uint64_t n = sh_get_uv(&c), i;
  for (i = 0; i < n && !c.bad; i++) {
    uint64_t off = sh_get_uv(&c);
    size_t l = sh_get_len(&c);
    const uint8_t *d = sh_get_bytes(&c, l);
    if (i < cap) {
      out[i].offset = off;
      out[i].data = d;
      out[i].len = l;
    }
  }
  return (size_t)n;
}
