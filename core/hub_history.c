/*
 * hub_history.c - channel history with the embedded backplane: every
 * publish to a history channel gets the next offset of the channel's
 * epoch and is kept in a bounded ring; a subscribe with `since` on the
 * current epoch, not more than history_size behind and with every
 * message after it still kept, is answered "recovered":true and gets the
 * missed messages replayed after its reply, before anything newer.
 *
 * Everything here runs inside one request with the embedded backplane,
 * so a recovery has no race to close: the replay and the live messages
 * are queued by the same thread in offset order.  (The Redis backplane
 * needs a read effect and buffering; hub_config_valid refuses history
 * with an external backplane until that exists.)
 *
 * Records live on two lists ordered by their deadlines: h->hist_rings
 * (records keeping messages, by ring_until) and h->hist_metas (every
 * record, by meta_until).  Both TTLs are constant, so appending at the
 * tail keeps the order.  No effect is ever emitted here beyond a
 * request's own SENDs, so history adds nothing to the fact reserve.
 */
#include "hub_int.h"

#include <string.h>

struct hub_hist {
  hub_hnode hnode;
  hub_buf *name; /* channel, NUL-terminated */
  hub_link ring_link;
  hub_link meta_link;
  hub_tstamp ring_until; /* kept messages dropped at */
  hub_tstamp meta_until; /* record dropped at */
  uint64_t offset;       /* the newest offset (0: none yet) */
  size_t n;              /* kept: offsets offset - n + 1 .. offset */
  hub_buf **ring;        /* history_size slots, by offset % size; lazily */
  char epoch[HUB_HISTORY_EPOCH_LEN + 1];
};

/* ------------------------------------------------------------ config */

int hub_hist_on(const hub *h, const char *ch, size_t len) {
  const char *g = h->cfg.history_channels;

  if (h->cfg.history_size == 0) {
    return 0;
  }
  while (*g != '\0') {
    const char *comma = strchr(g, ',');
    size_t gl = comma != NULL ? (size_t)(comma - g) : strlen(g);
    if (gl > 0 && hub_glob_match(g, gl, "", 0, ch, len)) {
      return 1;
    }
    g += gl;
    if (*g == ',') {
      g++;
    }
  }
  return 0;
}

/* ------------------------------------------------------------ epochs */

/* splitmix64: the epochs come from the hub's seed, never from a clock,
   so the same events give the same epochs. */
static uint64_t mix(uint64_t *state) {
  uint64_t z = (*state += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

static void epoch_next(uint64_t *state, char out[HUB_HISTORY_EPOCH_LEN + 1]) {
  static const char b62[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  uint64_t a = mix(state), b = mix(state);
  size_t i;

  for (i = 0; i < HUB_HISTORY_EPOCH_LEN; i++) {
    uint64_t *v = i < 8 ? &a : &b;
    out[i] = b62[*v % 62];
    *v /= 62;
  }
  out[HUB_HISTORY_EPOCH_LEN] = '\0';
}

/* ----------------------------------------------------------- records */

static hub_hist *hist_find(const hub *h, const char *ch, size_t len) {
  uint64_t hash;
  hub_hnode *p;

  if (h->hist_tab.b == NULL) {
    return NULL;
  }
  hash = hub_hash_str(h->cfg.seed, ch, len);
  for (p = hub_htab_chain(&h->hist_tab, hash); p != NULL; p = p->next) {
    hub_hist *r = CONTAINER_OF(p, hub_hist, hnode);
    if (p->hash == hash && r->name->len == len &&
        memcmp(r->name->data, ch, len) == 0) {
      return r;
    }
  }
  return NULL;
}

/* A new record (offset 0, the next epoch), not linked.  The epoch is
   drawn at link time (hist_link), so a record made for a request that
   then fails draws nothing. */
static hub_hist *hist_new(hub *h, const char *ch, size_t len) {
  hub_hist *r = hub_mem_malloc(h->mem, sizeof(*r));

  if (r == NULL) {
    return NULL;
  }
  memset(r, 0, sizeof(*r));
  r->name = hub_buf_new_copy(h->mem, ch, len);
  if (r->name == NULL) {
    hub_mem_free(h->mem, r);
    return NULL;
  }
  hub_link_init(&r->ring_link);
  hub_link_init(&r->meta_link);
  r->hnode.hash = hub_hash_str(h->cfg.seed, ch, len);
  return r;
}

static void ring_clear(hub *h, hub_hist *r) {
  size_t size = h->cfg.history_size;
  size_t i;

  for (i = 0; i < r->n; i++) {
    uint64_t off = r->offset - i;
    hub_buf_unref(r->ring[off % size]);
    r->ring[off % size] = NULL;
  }
  r->n = 0;
  if (hub_link_linked(&r->ring_link)) {
    hub_link_remove(&r->ring_link);
  }
}

static void hist_free(hub *h, hub_hist *r) {
  if (r->ring != NULL) {
    ring_clear(h, r);
    hub_mem_free(h->mem, r->ring);
  }
  hub_buf_unref(r->name);
  hub_mem_free(h->mem, r);
}

static void hist_link(hub *h, hub_hist *r) {
  epoch_next(&h->hist_rng, r->epoch);
  r->meta_until = h->now + h->cfg.history_meta_ttl_ns;
  hub_htab_insert(h->mem, &h->hist_tab, &r->hnode);
  hub_link_push_tail(&h->hist_metas, &r->meta_link);
  h->nhist++;
}

static void hist_unlink(hub *h, hub_hist *r) {
  hub_htab_remove(&h->hist_tab, &r->hnode);
  hub_link_remove(&r->meta_link);
  h->nhist--;
  hist_free(h, r);
}

int hub_hist_init(hub *h) {
  hub_link_init(&h->hist_rings);
  hub_link_init(&h->hist_metas);
  h->hist_rng = h->cfg.seed ^ UINT64_C(0x68697374); /* "hist" */
  if (h->cfg.history_size == 0) {
    return 0; /* no allocation: a hub without history is unchanged */
  }
  return hub_htab_init(h->mem, &h->hist_tab);
}

void hub_hist_free(hub *h) {
  while (h->hist_metas.next != NULL && !hub_link_empty(&h->hist_metas)) {
    hub_hist *r = CONTAINER_OF(h->hist_metas.next, hub_hist, meta_link);
    hub_link_remove(&r->meta_link);
    hist_free(h, r);
  }
  if (h->hist_tab.b != NULL) {
    hub_htab_free(h->mem, &h->hist_tab);
  }
}

/* ------------------------------------------------------------ frames */

/* {"type":|type|,"channel":|ch|[,"id":|id|]|tail|}: hub_frame_reply's
   bytes with |tail| (raw JSON members) before the closing brace. */
static hub_buf *reply_tail(hub *h, const char *type, const hub_req *req,
                           const char *tail, size_t tail_len) {
  size_t n = sizeof("{\"type\":\"") - 1 + strlen(type) +
             sizeof("\",\"channel\":\"") - 1 + req->channel_len + 2 + tail_len;
  hub_buf *b;
  hub_wr w;

  if (req->id != NULL) {
    n += sizeof(",\"id\":") - 1 + req->id_len;
  }
  b = hub_frame_new_wr(h->mem, n, &w);
  if (b == NULL) {
    return NULL;
  }
  hub_wr_str(&w, "{\"type\":\"");
  hub_wr_str(&w, type);
  hub_wr_str(&w, "\",\"channel\":\"");
  hub_wr_mem(&w, req->channel, req->channel_len);
  hub_wr_str(&w, "\"");
  if (req->id != NULL) {
    hub_wr_str(&w, ",\"id\":");
    hub_wr_mem(&w, req->id, req->id_len);
  }
  hub_wr_mem(&w, tail, tail_len);
  hub_wr_str(&w, "}");
  HUB_ASSERT(w.p == w.end);
  return b;
}

/* {"type":"message","channel":|ch|,"offset":|off|,"data":|data|} */
static hub_buf *message_frame(hub *h, const char *ch, size_t ch_len,
                              uint64_t off, const hub_buf *data) {
  size_t n =
    sizeof("{\"type\":\"message\",\"channel\":\"\",\"offset\":,\"data\":}") -
    1 + ch_len + hub_u64_len(off) + data->len;
  hub_wr w;
  hub_buf *b = hub_frame_new_wr(h->mem, n, &w);

  if (b == NULL) {
    return NULL;
  }
  hub_wr_str(&w, "{\"type\":\"message\",\"channel\":\"");
  hub_wr_mem(&w, ch, ch_len);
  hub_wr_str(&w, "\",\"offset\":");
  hub_wr_u64(&w, off);
  hub_wr_str(&w, ",\"data\":");
  hub_wr_mem(&w, data->data, data->len);
  hub_wr_str(&w, "}");
  HUB_ASSERT(w.p == w.end);
  return b;
}

/* ",\"offset\":T,\"epoch\":\"E\"[,\"recovered\":b]" into |tail|. */
static size_t sub_tail(char *tail, size_t cap, const hub_hist *r,
                       const char *epoch, uint64_t off, int recovered) {
  hub_wr w;

  w.p = (uint8_t *)tail;
  w.end = (uint8_t *)tail + cap;
  if (r != NULL || epoch != NULL) {
    hub_wr_str(&w, ",\"offset\":");
    hub_wr_u64(&w, off);
    hub_wr_str(&w, ",\"epoch\":\"");
    hub_wr_str(&w, epoch);
    hub_wr_str(&w, "\"");
  }
  if (recovered >= 0) {
    hub_wr_str(&w, recovered ? ",\"recovered\":true" : ",\"recovered\":false");
  }
  return (size_t)(w.p - (uint8_t *)tail);
}

/* --------------------------------------------------------- subscribe */

int hub_hist_sub_prepare(hub *h, const hub_req *req, int repeat,
                         hub_hist_sub *hs) {
  char tail[96];
  char epoch[HUB_HISTORY_EPOCH_LEN + 1];
  const hub_hist *r;
  uint64_t off, first, k;
  int recovered = req->has_since ? 0 : -1;
  size_t tl;

  memset(hs, 0, sizeof(*hs));
  if (!hub_hist_on(h, req->channel, req->channel_len)) {
    /* `since` on a channel without history: "recovered":false and no
       offset or epoch.  Without it, hub_frame_reply's bytes. */
    tl = sub_tail(tail, sizeof(tail), NULL, NULL, 0, recovered);
    hs->reply = tl > 0
                  ? reply_tail(h, "subscribed", req, tail, tl)
                  : hub_frame_reply(h, "subscribed", req->channel,
                                    req->channel_len, req->id, req->id_len);
    return hs->reply != NULL ? 0 : HUB_ERR_NOMEM;
  }
  r = hist_find(h, req->channel, req->channel_len);
  if (r == NULL) {
    uint64_t rng = h->hist_rng;
    hs->fresh = hist_new(h, req->channel, req->channel_len);
    if (hs->fresh == NULL) {
      return HUB_ERR_NOMEM;
    }
    epoch_next(&rng, epoch); /* what hist_link will draw */
  } else {
    memcpy(epoch, r->epoch, sizeof(epoch));
  }
  /* A record not made yet has offset 0 and the epoch GET /history
     named for it, so a since of {0, that epoch} is recovered too. */
  off = r != NULL ? r->offset : 0;
  if (req->has_since && !repeat &&
      req->since_epoch_len == HUB_HISTORY_EPOCH_LEN &&
      memcmp(req->since_epoch, epoch, HUB_HISTORY_EPOCH_LEN) == 0 &&
      req->since_offset <= off) {
    first = r != NULL && r->n > 0 ? r->offset - r->n + 1 : off + 1;
    if (req->since_offset + 1 >= first) {
      recovered = 1;
      off = req->since_offset;
    }
  }
  tl = sub_tail(tail, sizeof(tail), r != NULL ? r : hs->fresh, epoch, off,
                recovered);
  hs->reply = reply_tail(h, "subscribed", req, tail, tl);
  if (hs->reply == NULL) {
    goto nomem;
  }
  if (recovered == 1 && r != NULL && r->offset > off) {
    size_t n = (size_t)(r->offset - off);
    hs->replay = hub_mem_malloc(h->mem, n * sizeof(*hs->replay));
    if (hs->replay == NULL) {
      goto nomem;
    }
    for (k = off + 1; k <= r->offset; k++) {
      hub_buf *f = message_frame(h, req->channel, req->channel_len, k,
                                 r->ring[k % h->cfg.history_size]);
      if (f == NULL) {
        goto nomem;
      }
      hs->replay[hs->nreplay++] = f;
    }
  }
  return 0;

nomem:
  hub_hist_sub_abort(h, hs);
  return HUB_ERR_NOMEM;
}

void hub_hist_sub_commit(hub *h, hub_conn *c, hub_hist_sub *hs) {
  size_t i;

  HUB_ASSERT(hs->reply == NULL);
  if (hs->fresh != NULL) {
    hist_link(h, hs->fresh);
    hs->fresh = NULL;
  }
  for (i = 0; i < hs->nreplay; i++) {
    hub_conn_send(h, c, hs->replay[i], NULL);
    if (!c->closing) {
      h->st.msgs_out++;
    }
  }
  hub_hist_sub_abort(h, hs);
}

void hub_hist_sub_abort(hub *h, hub_hist_sub *hs) {
  size_t i;

  if (hs->fresh != NULL) {
    hist_free(h, hs->fresh);
  }
  hub_buf_unref(hs->reply);
  for (i = 0; i < hs->nreplay; i++) {
    hub_buf_unref(hs->replay[i]);
  }
  hub_mem_free(h->mem, hs->replay);
  memset(hs, 0, sizeof(*hs));
}

/* ----------------------------------------------------------- publish */

int hub_hist_publish(hub *h, hub_conn *c, const hub_req *req) {
  hub_hist *r = hist_find(h, req->channel, req->channel_len);
  hub_hist *fresh = NULL;
  hub_topic *t = hub_topic_find(h, req->channel, req->channel_len);
  size_t n = t ? t->nacked : 0, size = h->cfg.history_size;
  hub_buf *data, *frame = NULL, *reply = NULL, **ring = NULL;
  uint64_t off;
  char tail[32];
  hub_wr w;

  HUB_ASSERT(!h->cfg.backplane);
  hub_hist_expire(h);
  r = hist_find(h, req->channel, req->channel_len);
  /* The fan-out, and the reply with an eviction by it. */
  if (hub_effq_reserve(h, hub_topic_deliver_cost(h, n) +
                            (c ? 1 + hub_conn_close_cost(c) : 0)) != 0) {
    return HUB_ERR_NOMEM;
  }
  if (r == NULL) {
    r = fresh = hist_new(h, req->channel, req->channel_len);
    if (fresh == NULL) {
      return HUB_ERR_NOMEM;
    }
  }
  off = r->offset + 1;
  data = hub_buf_new_copy(h->mem, req->data, req->data_len);
  if (data == NULL) {
    goto nomem;
  }
  if (r->ring == NULL) {
    ring = hub_mem_malloc(h->mem, size * sizeof(*ring));
    if (ring == NULL) {
      goto nomem;
    }
    memset(ring, 0, size * sizeof(*ring));
  }
  if (n > 0) {
    frame = message_frame(h, req->channel, req->channel_len, off, data);
    if (frame == NULL) {
      goto nomem;
    }
  }
  if (c != NULL) {
    w.p = (uint8_t *)tail;
    w.end = (uint8_t *)tail + sizeof(tail);
    hub_wr_str(&w, ",\"offset\":");
    hub_wr_u64(&w, off);
    reply =
      reply_tail(h, "published", req, tail, (size_t)(w.p - (uint8_t *)tail));
    if (reply == NULL) {
      goto nomem;
    }
  }

  /* Everything is allocated: keep the message, then deliver. */
  if (fresh != NULL) {
    hist_link(h, fresh);
  }
  if (ring != NULL) {
    r->ring = ring;
  }
  if (r->n == size) {
    hub_buf_unref(r->ring[(off - size) % size]);
    r->n--;
  }
  r->ring[off % size] = data;
  r->n++;
  r->offset = off;
  r->ring_until = h->now + h->cfg.history_ttl_ns;
  r->meta_until = h->now + h->cfg.history_meta_ttl_ns;
  if (hub_link_linked(&r->ring_link)) {
    hub_link_remove(&r->ring_link);
  }
  hub_link_push_tail(&h->hist_rings, &r->ring_link);
  hub_link_move_tail(&h->hist_metas, &r->meta_link);
  h->hist_last_offset = off;
  h->st.publishes++;
  if (c != NULL) {
    hub_conn_reply(h, c, reply);
  }
  /* The reply may have evicted the publisher and so emptied the topic:
     look it up again. */
  t = hub_topic_find(h, req->channel, req->channel_len);
  if (t != NULL && frame != NULL) {
    hub_topic_deliver(h, t, frame);
  }
  hub_buf_unref(frame);
  return 0;

nomem:
  hub_buf_unref(data);
  hub_buf_unref(frame);
  hub_mem_free(h->mem, ring);
  if (fresh != NULL) {
    hist_free(h, fresh);
  }
  return HUB_ERR_NOMEM;
}

/* ------------------------------------------------------------ expiry */

hub_tstamp hub_hist_get_expiry(const hub *h) {
  hub_tstamp t = HUB_TSTAMP_NONE;

  if (h->cfg.history_size == 0) {
    return t;
  }
  if (!hub_link_empty(&h->hist_rings)) {
    t = CONTAINER_OF(h->hist_rings.next, hub_hist, ring_link)->ring_until;
  }
  if (!hub_link_empty(&h->hist_metas)) {
    hub_tstamp x =
      CONTAINER_OF(h->hist_metas.next, hub_hist, meta_link)->meta_until;
    t = x < t ? x : t;
  }
  return t;
}

void hub_hist_expire(hub *h) {
  if (h->cfg.history_size == 0) {
    return;
  }
  while (!hub_link_empty(&h->hist_rings)) {
    hub_hist *r = CONTAINER_OF(h->hist_rings.next, hub_hist, ring_link);
    if (r->ring_until > h->now) {
      break;
    }
    ring_clear(h, r);
  }
  while (!hub_link_empty(&h->hist_metas)) {
    hub_hist *r = CONTAINER_OF(h->hist_metas.next, hub_hist, meta_link);
    const hub_topic *t;
    if (r->meta_until > h->now) {
      break;
    }
    t = hub_topic_find(h, (const char *)r->name->data, r->name->len);
    if (t != NULL && t->nsubs > 0) {
      /* Its subscribers hold this epoch: dropping it would leave them a
         gap the embedded backplane has no way to tell them about. */
      r->meta_until = h->now + h->cfg.history_meta_ttl_ns;
      hub_link_move_tail(&h->hist_metas, &r->meta_link);
      continue;
    }
    hist_unlink(h, r);
  }
}

/* ------------------------------------------------------------- query */

int hub_history_get(const hub *h, const char *channel, size_t len,
                    uint64_t since, uint64_t limit, hub_tstamp now,
                    hub_buf **out, const char **errmsg) {
  const hub_hist *r;
  char epoch[HUB_HISTORY_EPOCH_LEN + 1];
  uint64_t off = 0, first = 1, k, last;
  size_t n, size = h->cfg.history_size;
  hub_buf *b;
  hub_wr w;

  *out = NULL;
  if (!hub_channel_valid(channel, len)) {
    *errmsg = "invalid channel name";
    return HUB_ERR_BAD_REQUEST;
  }
  if (!hub_hist_on(h, channel, len)) {
    *errmsg = "channel has no history";
    return HUB_ERR_BAD_REQUEST;
  }
  if (now < h->now) {
    now = h->now;
  }
  r = hist_find(h, channel, len);
  if (r != NULL && r->meta_until <= now) {
    const hub_topic *t = hub_topic_find(h, channel, len);
    if (t == NULL || t->nsubs == 0) {
      r = NULL; /* due to be dropped */
    }
  }
  if (r == NULL) {
    /* No record: offset 0 and the epoch the next record will get. */
    uint64_t rng = h->hist_rng;
    epoch_next(&rng, epoch);
  } else {
    memcpy(epoch, r->epoch, sizeof(epoch));
    off = r->offset;
    if (r->n > 0 && r->ring_until > now) {
      first = r->offset - r->n + 1;
    } else {
      first = r->offset + 1;
    }
  }
  if (limit == 0 || limit > size) {
    limit = size;
  }
  if (since >= off) {
    first = off + 1; /* nothing newer (and no overflow of since + 1) */
  } else if (since + 1 > first) {
    first = since + 1;
  }
  last = off;
  if (first <= last && last - first + 1 > limit) {
    last = first + limit - 1;
  }
  n = sizeof("{\"channel\":\"\",\"epoch\":\"\",\"offset\":,\"messages\":[]}") -
      1 + len + HUB_HISTORY_EPOCH_LEN + hub_u64_len(off);
  for (k = first; r != NULL && k <= last; k++) {
    n += sizeof("{\"offset\":,\"data\":},") - 1 + hub_u64_len(k) +
         r->ring[k % size]->len;
  }
  if (first <= last && r != NULL) {
    n--; /* no comma after the last */
  }
  b = hub_buf_new(h->mem, n);
  if (b == NULL) {
    return HUB_ERR_NOMEM;
  }
  w.p = b->data;
  w.end = b->data + b->len;
  hub_wr_str(&w, "{\"channel\":\"");
  hub_wr_mem(&w, channel, len);
  hub_wr_str(&w, "\",\"epoch\":\"");
  hub_wr_str(&w, epoch);
  hub_wr_str(&w, "\",\"offset\":");
  hub_wr_u64(&w, off);
  hub_wr_str(&w, ",\"messages\":[");
  for (k = first; r != NULL && k <= last; k++) {
    const hub_buf *d = r->ring[k % size];
    if (k > first) {
      hub_wr_str(&w, ",");
    }
    hub_wr_str(&w, "{\"offset\":");
    hub_wr_u64(&w, k);
    hub_wr_str(&w, ",\"data\":");
    hub_wr_mem(&w, d->data, d->len);
    hub_wr_str(&w, "}");
  }
  hub_wr_str(&w, "]}");
  HUB_ASSERT(w.p == w.end);
  *out = b;
  return 0;
}

uint64_t hub_last_publish_offset(const hub *h) {
  return h->hist_last_offset;
}

/* ------------------------------------------------------------- check */

int hub_hist_check(const hub *h, const char **why) {
  const hub_link *l;
  size_t nmeta = 0;
  hub_tstamp prev = 0;

  if (h->cfg.history_size == 0) {
    if (h->nhist != 0) {
      *why = "history records without history";
      return -1;
    }
    return 0;
  }
  for (l = h->hist_metas.next; l != &h->hist_metas; l = l->next) {
    const hub_hist *r = CONTAINER_OF(l, hub_hist, meta_link);
    nmeta++;
    if (r->n > h->cfg.history_size || r->n > r->offset ||
        (r->n > 0) != hub_link_linked(&r->ring_link)) {
      *why = "history ring count";
      return -1;
    }
    if (hist_find(h, (const char *)r->name->data, r->name->len) != r) {
      *why = "history record not in its table";
      return -1;
    }
  }
  if (nmeta != h->nhist) {
    *why = "history record count";
    return -1;
  }
  for (l = h->hist_rings.next; l != &h->hist_rings; l = l->next) {
    const hub_hist *r = CONTAINER_OF(l, hub_hist, ring_link);
    if (r->ring_until < prev) {
      *why = "history rings out of deadline order";
      return -1;
    }
    prev = r->ring_until;
  }
  return 0;
}
