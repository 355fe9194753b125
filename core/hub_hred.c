/*
 * hub_hred.c - history with an external backplane (Redis): the
 * backplane keeps the messages (HUB_EFF_BP_HPUBLISH, FCALL
 * wshub_publish) and the core keeps, per history channel with local
 * subscribers, the epoch and the newest offset its live subscribers hold
 * (hub_htopic).  See hub_hred.h and core/README.md "History with the
 * Redis backplane".
 *
 * The state machine of one channel:
 *
 *   - A subscribe is a pending subscription with a waiter (hub_hwait:
 *     its `since`, the ids of its requests).  Once the channel's
 *     SUBSCRIBE is confirmed, one read (HUB_EFF_BP_HREAD) serves every
 *     waiter present when it is issued (they are "assigned"), and every
 *     waiter that comes while it is in flight and whose range it covers
 *     (no since, or a since at or above the read's); the others share
 *     the next one.  So a reconnect storm on one channel costs one or
 *     two reads.
 *   - While a read is in flight every live message on the channel is
 *     buffered, not delivered.
 *   - The answer (offset T, epoch E, the kept entries above the read's
 *     since) is merged with the buffer by offset, duplicates dropped
 *     (M).  The live subscribers get what M holds past their offset;
 *     each waiter gets its `subscribed` (recovered when E is its epoch
 *     and M holds every message after its since), then what M holds past
 *     its start.  A hole in M (history no longer holds it) is a `gap`
 *     frame.  Then the waiters are live and the buffer is released.
 *   - Live messages (`wshub:<o>:<e>:<data>`): o == top + 1 is delivered;
 *     o <= top is a duplicate; o > top + 1 is buffered and the hole read
 *     from history (gap fill); another epoch is a `gap` with offset 0
 *     and a read from 0.
 *   - The ring (live channels only): the frames of the newest messages
 *     delivered, offsets contiguous up to top, at most history_size,
 *     emptied on a gap to the live group, an epoch change, the last live
 *     subscriber's leaving, or history_ttl without a new frame.  A new
 *     subscribe with no since, or with a since of the epoch the ring
 *     covers, is answered from it at once when no read is in flight.
 *   - hub_on_bp_down drops the read and the buffer (a later answer is
 *     ignored); the re-SUBSCRIBE's confirmation reads again from the
 *     live subscribers' offset, which fills what the outage lost.
 *
 * Reserve: every history channel may emit one HREAD from a fact (the
 * confirmation), and every waiting publish or API request one reply
 * (its frame built when it was accepted).  hub_on_bp_hread is a request.
 */
#include "hub_int.h"

#include <string.h>

#define EPOCH_MAX 32

typedef struct hub_hmsg {
  uint64_t offset;
  hub_buf *data; /* the message's data, verbatim */
  uint8_t elen;
  char epoch[EPOCH_MAX];
} hub_hmsg;

struct hub_htopic {
  hub_topic *t;
  hub_link read_link; /* in h->hreads while a read is in flight */
  uint64_t read_req;  /* 0: no read in flight */
  uint64_t read_since;
  int read_entries; /* the read in flight asked for entries */
  uint64_t top;     /* the newest offset the live subscribers hold */
  int known;        /* epoch and top come from an answer */
  uint8_t elen;
  char epoch[EPOCH_MAX];
  hub_hmsg *buf; /* live messages buffered during the read */
  size_t nbuf, capbuf;
  hub_link waiters; /* hub_hwait, subscribe order */
  size_t nwait;
  /* The ring: the frames of the newest messages the live subscribers
     got, offsets top - nring + 1..top of |epoch|, ring[(rhead + i) %
     rcap] the i-th oldest (rcap <= history_size, allocated lazily,
     freed when emptied).  In h->hrings while nring > 0, by ring_until:
     emptied then (history_ttl without a live message). */
  hub_buf **ring;
  uint32_t rhead, nring, rcap;
  hub_tstamp ring_until;
  hub_link ring_link;
};

struct hub_hwait {
  hub_link link;
  hub_sub *s;
  uint64_t since;
  int has_since;
  int assigned; /* served by the read in flight */
  uint8_t elen;
  char epoch[EPOCH_MAX];
  /* The raw id JSON of each request waiting on the subscription (NULL:
     none), one per frame pair of s->frames. */
  hub_buf **ids;
  uint32_t nids;
};

enum { OP_PUBLISH = 1, OP_API_PUBLISH, OP_API_HISTORY };

/* A publish or an API request waiting for the backplane's answer. */
typedef struct hub_hop {
  hub_link link; /* h->hops, issue order (answers come in that order) */
  uint64_t req;
  int kind;
  int noreply;      /* hub_publish: no API reply owed */
  hub_conn_id conn; /* OP_PUBLISH */
  uint64_t api_req;
  hub_buf *name;
  hub_buf *ok;    /* OP_PUBLISH: the "published" frame, OP_API_PUBLISH: the
                     body, both with room for any offset */
  hub_buf *fail;  /* the error frame / 503 body */
  uint64_t limit; /* OP_API_HISTORY */
  uint64_t since;
  size_t plen; /* OP_PUBLISH: the reply's payload before its "}" */
} hub_hop;

int hub_hred_on(const hub *h, const char *ch, size_t len) {
  return h->cfg.backplane && hub_hist_on(h, ch, len);
}

size_t hub_hred_fact_cost(const hub *h) {
  return h->nhops + h->nhtopics;
}

static uint32_t meta_ttl_s(const hub *h) {
  uint64_t s = (h->cfg.history_meta_ttl_ns + HUB_NS_PER_S - 1) / HUB_NS_PER_S;
  return s > UINT32_MAX ? UINT32_MAX : (uint32_t)s;
}

static uint32_t ttl_s(const hub *h) {
  uint64_t s = (h->cfg.history_ttl_ns + HUB_NS_PER_S - 1) / HUB_NS_PER_S;
  return s > UINT32_MAX ? UINT32_MAX : (uint32_t)s;
}

static int epoch_ok(const char *e, size_t len) {
  size_t i;
  if (e == NULL || len == 0 || len > EPOCH_MAX) {
    return 0;
  }
  for (i = 0; i < len; i++) {
    char ch = e[i];
    if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
          (ch >= '0' && ch <= '9'))) {
      return 0;
    }
  }
  return 1;
}

/* ------------------------------------------------------------ frames */

/* Writes |payload| (n bytes) as a text frame into |b|, which was
   allocated for a payload at least as long: header, payload, len. */
static void frame_refill(hub_buf *b, const uint8_t *payload, size_t n) {
  size_t hl = hub_frame_header_len(n);
  HUB_ASSERT(hl + n <= b->len);
  b->data[0] = 0x81;
  if (hl == 2) {
    b->data[1] = (uint8_t)n;
  } else {
    HUB_ASSERT(hl == 4);
    b->data[1] = 126;
    b->data[2] = (uint8_t)(n >> 8);
    b->data[3] = (uint8_t)n;
  }
  memmove(b->data + hl, payload, n);
  b->payload_off = (uint32_t)hl;
  b->len = hl + n;
}

/* {"type":"message","channel":C,"offset":N,"data":D}; D that is not JSON
   goes as a JSON string (as hub_topic_on_bp_msg does). */
static hub_buf *msg_frame(hub *h, const hub_buf *name, uint64_t off,
                          const uint8_t *data, size_t len) {
  hub_json_kind kind;
  hub_buf *f;
  hub_wr w;
  size_t n;

  if (hub_json_parse((const char *)data, len, &kind, NULL, 0, NULL) != 0) {
    /* Rare: wrap it through the generic encoder, then splice the offset
       in is not worth it; deliver it without an offset instead. */
    return hub_frame_message(h, (const char *)name->data, name->len,
                             (const char *)data, len, 1);
  }
  n = sizeof("{\"type\":\"message\",\"channel\":\"\",\"offset\":,\"data\":}") -
      1 + name->len + hub_u64_len(off) + len;
  f = hub_frame_new_wr(h->mem, n, &w);
  if (f == NULL) {
    return NULL;
  }
  hub_wr_str(&w, "{\"type\":\"message\",\"channel\":\"");
  hub_wr_mem(&w, name->data, name->len);
  hub_wr_str(&w, "\",\"offset\":");
  hub_wr_u64(&w, off);
  hub_wr_str(&w, ",\"data\":");
  hub_wr_mem(&w, data, len);
  hub_wr_str(&w, "}");
  HUB_ASSERT(w.p == w.end);
  return f;
}

/* {"type":"gap","channel":C,"epoch":E,"offset":N} */
static hub_buf *gap_frame(hub *h, const hub_buf *name, const char *epoch,
                          size_t elen, uint64_t off) {
  size_t n = sizeof("{\"type\":\"gap\",\"channel\":\"\",\"epoch\":\"\","
                    "\"offset\":}") -
             1 + name->len + elen + hub_u64_len(off);
  hub_wr w;
  hub_buf *f = hub_frame_new_wr(h->mem, n, &w);

  if (f == NULL) {
    return NULL;
  }
  hub_wr_str(&w, "{\"type\":\"gap\",\"channel\":\"");
  hub_wr_mem(&w, name->data, name->len);
  hub_wr_str(&w, "\",\"epoch\":\"");
  hub_wr_mem(&w, epoch, elen);
  hub_wr_str(&w, "\",\"offset\":");
  hub_wr_u64(&w, off);
  hub_wr_str(&w, "}");
  HUB_ASSERT(w.p == w.end);
  return f;
}

/* {"type":"subscribed","channel":C[,"id":I],"offset":T,"epoch":E
   [,"recovered":b]} (|recovered| -1: no member). */
static hub_buf *sub_reply(hub *h, const hub_buf *name, const hub_buf *id,
                          uint64_t off, const char *epoch, size_t elen,
                          int recovered) {
  size_t n = sizeof("{\"type\":\"subscribed\",\"channel\":\"\",\"offset\":,"
                    "\"epoch\":\"\"}") -
             1 + name->len + hub_u64_len(off) + elen;
  hub_wr w;
  hub_buf *f;

  if (id != NULL) {
    n += sizeof(",\"id\":") - 1 + id->len;
  }
  if (recovered >= 0) {
    n += recovered ? sizeof(",\"recovered\":true") - 1
                   : sizeof(",\"recovered\":false") - 1;
  }
  f = hub_frame_new_wr(h->mem, n, &w);
  if (f == NULL) {
    return NULL;
  }
  hub_wr_str(&w, "{\"type\":\"subscribed\",\"channel\":\"");
  hub_wr_mem(&w, name->data, name->len);
  hub_wr_str(&w, "\"");
  if (id != NULL) {
    hub_wr_str(&w, ",\"id\":");
    hub_wr_mem(&w, id->data, id->len);
  }
  hub_wr_str(&w, ",\"offset\":");
  hub_wr_u64(&w, off);
  hub_wr_str(&w, ",\"epoch\":\"");
  hub_wr_mem(&w, epoch, elen);
  hub_wr_str(&w, "\"");
  if (recovered >= 0) {
    hub_wr_str(&w, recovered ? ",\"recovered\":true" : ",\"recovered\":false");
  }
  hub_wr_str(&w, "}");
  HUB_ASSERT(w.p == w.end);
  return f;
}

/* ------------------------------------------------------- the topic */

int hub_hred_topic_init(hub *h, hub_topic *t) {
  hub_htopic *ht = hub_mem_malloc(h->mem, sizeof(*ht));
  if (ht == NULL) {
    return HUB_ERR_NOMEM;
  }
  memset(ht, 0, sizeof(*ht));
  hub_link_init(&ht->read_link);
  hub_link_init(&ht->waiters);
  hub_link_init(&ht->ring_link);
  ht->t = t;
  t->ht = ht;
  h->nhtopics++;
  return 0;
}

/* ---------------------------------------------------------- the ring */

static void ring_clear(hub *h, hub_htopic *ht) {
  uint32_t i;
  for (i = 0; i < ht->nring; i++) {
    hub_buf_unref(ht->ring[(ht->rhead + i) % ht->rcap]);
  }
  hub_mem_free(h->mem, ht->ring);
  ht->ring = NULL;
  ht->rhead = ht->nring = ht->rcap = 0;
  if (hub_link_linked(&ht->ring_link)) {
    hub_link_remove(&ht->ring_link);
  }
}

/* The capacity for |n| frames: a power of two from 8, at most
   history_size. */
static uint32_t ring_cap_for(const hub *h, size_t n) {
  size_t cap = 8;
  while (cap < n && cap < h->cfg.history_size) {
    cap *= 2;
  }
  return cap < h->cfg.history_size ? (uint32_t)cap : h->cfg.history_size;
}

/* Room for one more frame (at history_size the oldest makes room).
   Changes nothing the ring holds.  0 or HUB_ERR_NOMEM. */
static int ring_room(hub *h, hub_htopic *ht) {
  uint32_t cap, i;
  hub_buf **r;
  if (ht->nring < ht->rcap || ht->rcap == h->cfg.history_size) {
    return 0;
  }
  cap = ring_cap_for(h, (size_t)ht->rcap + 1);
  r = hub_mem_malloc(h->mem, cap * sizeof(*r));
  if (r == NULL) {
    return HUB_ERR_NOMEM;
  }
  for (i = 0; i < ht->nring; i++) {
    r[i] = ht->ring[(ht->rhead + i) % ht->rcap];
  }
  hub_mem_free(h->mem, ht->ring);
  ht->ring = r;
  ht->rhead = 0;
  ht->rcap = cap;
  return 0;
}

/* The ring was filled: history_ttl from now. */
static void ring_touch(hub *h, hub_htopic *ht) {
  ht->ring_until = h->now + h->cfg.history_ttl_ns;
  if (hub_link_linked(&ht->ring_link)) {
    hub_link_move_tail(&h->hrings, &ht->ring_link);
  } else {
    hub_link_push_tail(&h->hrings, &ht->ring_link);
  }
}

/* Keeps |f| (the frame of offset top + 1, the new top); ring_room
   first. */
static void ring_push(hub *h, hub_htopic *ht, hub_buf *f) {
  HUB_ASSERT(ht->rcap > 0);
  hub_buf_ref(f);
  if (ht->nring == ht->rcap) {
    hub_buf_unref(ht->ring[ht->rhead]);
    ht->ring[ht->rhead] = f;
    ht->rhead = (ht->rhead + 1) % ht->rcap;
  } else {
    ht->ring[(ht->rhead + ht->nring) % ht->rcap] = f;
    ht->nring++;
  }
  ring_touch(h, ht);
}

hub_tstamp hub_hred_get_expiry(const hub *h) {
  if (h->hrings.next == NULL || hub_link_empty(&h->hrings)) {
    return HUB_TSTAMP_NONE;
  }
  return CONTAINER_OF(h->hrings.next, hub_htopic, ring_link)->ring_until;
}

void hub_hred_expire(hub *h) {
  while (h->hrings.next != NULL && !hub_link_empty(&h->hrings)) {
    hub_htopic *ht = CONTAINER_OF(h->hrings.next, hub_htopic, ring_link);
    if (ht->ring_until > h->now) {
      break;
    }
    ring_clear(h, ht);
  }
}

void hub_hred_idle(hub *h, hub_topic *t) {
  ring_clear(h, t->ht);
}

static void buf_clear(hub *h, hub_htopic *ht) {
  size_t i;
  (void)h;
  for (i = 0; i < ht->nbuf; i++) {
    hub_buf_unref(ht->buf[i].data);
  }
  ht->nbuf = 0;
}

/* Forgets the read in flight (its answer will be ignored) and the
   buffer; the waiters wait for the next read. */
static void read_drop(hub *h, hub_htopic *ht) {
  hub_link *l;
  if (ht->read_req != 0) {
    hub_link_remove(&ht->read_link);
    ht->read_req = 0;
  }
  buf_clear(h, ht);
  for (l = ht->waiters.next; l != &ht->waiters; l = l->next) {
    CONTAINER_OF(l, hub_hwait, link)->assigned = 0;
  }
}

void hub_hred_topic_free(hub *h, hub_topic *t) {
  hub_htopic *ht = t->ht;
  if (ht == NULL) {
    return;
  }
  HUB_ASSERT(ht->nwait == 0);
  read_drop(h, ht);
  ring_clear(h, ht);
  hub_mem_free(h->mem, ht->buf);
  hub_mem_free(h->mem, ht);
  t->ht = NULL;
  h->nhtopics--;
}

/* Issues the read for every waiter not yet assigned and for the live
   subscribers' gap fill.  One effect (from the topic's reserve term or
   the caller's reservation). */
static void read_start(hub *h, hub_topic *t) {
  hub_htopic *ht = t->ht;
  uint64_t since = UINT64_MAX;
  int entries = 0;
  hub_link *l;
  hub_effect *e;

  HUB_ASSERT(ht->read_req == 0 && h->bp_up);
  if (ht->known && t->nacked > 0) {
    since = ht->top;
    entries = 1;
  }
  for (l = ht->waiters.next; l != &ht->waiters; l = l->next) {
    hub_hwait *w = CONTAINER_OF(l, hub_hwait, link);
    w->assigned = 1;
    if (w->has_since) {
      entries = 1;
      since = w->since < since ? w->since : since;
    }
  }
  if (!entries) {
    since = 0;
  } else if (ht->known && t->nacked > 0 && ht->top > h->cfg.history_size &&
             since < ht->top - h->cfg.history_size) {
    /* A waiter further behind than history_size is not recovered (the
       answer's T is at least top), so its since must not shorten the
       range the others need. */
    since = ht->top - h->cfg.history_size;
  }
  ht->read_req = ++h->next_hreq;
  ht->read_since = since;
  ht->read_entries = entries;
  hub_link_push_tail(&h->hreads, &ht->read_link);
  e = hub_effq_push(h, HUB_EFF_BP_HREAD);
  e->name = t->name;
  hub_buf_ref(t->name);
  e->req = ht->read_req;
  e->since = since;
  e->count = entries ? h->cfg.history_size : 0;
  e->meta_ttl_s = meta_ttl_s(h);
  h->st.hist_reads++;
}

/* Whether |t| needs a read now: up, confirmed, none in flight, and
   someone to serve. */
static int read_due(const hub *h, const hub_topic *t) {
  const hub_htopic *ht = t->ht;
  return h->bp_up && t->confirmed && ht->read_req == 0 && ht->nwait > 0;
}

/* hub_on_bp_subscribed for a history channel: the subscription is in
   force, so the read can start (from the fact reserve). */
void hub_hred_confirmed(hub *h, hub_topic *t) {
  hub_htopic *ht = t->ht;
  hub_effq_spend(h, 1);
  if (h->bp_up && ht->read_req == 0 &&
      (ht->nwait > 0 || (ht->known && t->nacked > 0))) {
    /* After an outage the live subscribers' read fills what it lost. */
    read_start(h, t);
  }
}

void hub_hred_bp_down(hub *h, hub_topic *t) {
  read_drop(h, t->ht);
}

/* ----------------------------------------------------- subscriptions */

void hub_hred_wait_free(hub *h, hub_sub *s) {
  hub_hwait *w = s->hw;
  uint32_t i;
  hub_htopic *ht;
  if (w == NULL) {
    return;
  }
  ht = s->topic->ht;
  hub_link_remove(&w->link);
  ht->nwait--;
  for (i = 0; i < w->nids; i++) {
    hub_buf_unref(w->ids[i]);
  }
  hub_mem_free(h->mem, w->ids);
  hub_mem_free(h->mem, w);
  s->hw = NULL;
}

hub_hwait *hub_hred_wait_new(hub *h, const hub_req *req) {
  hub_hwait *w = hub_mem_malloc(h->mem, sizeof(*w));
  if (w == NULL) {
    return NULL;
  }
  memset(w, 0, sizeof(*w));
  hub_link_init(&w->link);
  w->ids = hub_mem_malloc(h->mem, sizeof(*w->ids));
  if (w->ids == NULL) {
    hub_mem_free(h->mem, w);
    return NULL;
  }
  w->ids[0] = NULL;
  if (req->id != NULL) {
    w->ids[0] = hub_buf_new_copy(h->mem, req->id, req->id_len);
    if (w->ids[0] == NULL) {
      hub_mem_free(h->mem, w->ids);
      hub_mem_free(h->mem, w);
      return NULL;
    }
  }
  w->nids = 1;
  if (req->has_since && epoch_ok(req->since_epoch, req->since_epoch_len)) {
    w->has_since = 1;
    w->since = req->since_offset;
    w->elen = (uint8_t)req->since_epoch_len;
    memcpy(w->epoch, req->since_epoch, w->elen);
  } else if (req->has_since) {
    w->has_since = 1; /* answered recovered:false */
    w->since = UINT64_MAX;
  }
  return w;
}

void hub_hred_wait_abort(hub *h, hub_hwait *w) {
  uint32_t i;
  if (w == NULL) {
    return;
  }
  for (i = 0; i < w->nids; i++) {
    hub_buf_unref(w->ids[i]);
  }
  hub_mem_free(h->mem, w->ids);
  hub_mem_free(h->mem, w);
}

void hub_hred_wait_link(hub *h, hub_sub *s, hub_hwait *w) {
  hub_htopic *ht = s->topic->ht;
  (void)h;
  w->s = s;
  s->hw = w;
  hub_link_push_tail(&ht->waiters, &w->link);
  ht->nwait++;
  /* A read in flight (the channel is confirmed, and every live message
     since the read was issued is in the buffer) also serves a waiter
     whose range it covers: a reconnect storm shares one read instead of
     one per wave of arrivals. */
  if (ht->read_req != 0 &&
      (!w->has_since || (ht->read_entries && w->since >= ht->read_since))) {
    w->assigned = 1;
  }
}

int hub_hred_wait_repeat(hub *h, hub_sub *s, const hub_req *req) {
  hub_hwait *w = s->hw;
  hub_buf **ids, *id = NULL;
  if (req->id != NULL) {
    id = hub_buf_new_copy(h->mem, req->id, req->id_len);
    if (id == NULL) {
      return HUB_ERR_NOMEM;
    }
  }
  ids = hub_mem_realloc(h->mem, w->ids, (w->nids + 1) * sizeof(*ids));
  if (ids == NULL) {
    hub_buf_unref(id);
    return HUB_ERR_NOMEM;
  }
  w->ids = ids;
  w->ids[w->nids++] = id;
  return 0;
}

hub_buf *hub_hred_live_reply(hub *h, hub_topic *t, const hub_req *req) {
  hub_htopic *ht = t->ht;
  hub_buf *id = NULL, *f;
  if (req->id != NULL) {
    id = hub_buf_new_copy(h->mem, req->id, req->id_len);
    if (id == NULL) {
      return NULL;
    }
  }
  f = sub_reply(h, t->name, id, ht->top, ht->epoch, ht->elen,
                req->has_since ? 0 : -1);
  hub_buf_unref(id);
  return f;
}

int hub_hred_ready(hub *h, hub_topic *t, const hub_req *req, size_t *nreplay) {
  hub_htopic *ht = t->ht;
  uint32_t nring;
  *nreplay = 0;
  if (ht == NULL || !ht->known || t->nacked == 0 || !h->bp_up ||
      !t->confirmed || ht->read_req != 0) {
    return 0;
  }
  if (!req->has_since) {
    return 1;
  }
  /* A ring past its deadline holds nothing (its timer frees it). */
  nring = ht->nring > 0 && ht->ring_until > h->now ? ht->nring : 0;
  if (!epoch_ok(req->since_epoch, req->since_epoch_len) ||
      req->since_epoch_len != ht->elen ||
      memcmp(req->since_epoch, ht->epoch, ht->elen) != 0 ||
      req->since_offset > ht->top || ht->top - req->since_offset > nring) {
    return 0;
  }
  *nreplay = (size_t)(ht->top - req->since_offset);
  return 1;
}

hub_buf *hub_hred_ready_reply(hub *h, hub_topic *t, const hub_req *req) {
  hub_htopic *ht = t->ht;
  hub_buf *id = NULL, *f;
  if (req->id != NULL) {
    id = hub_buf_new_copy(h->mem, req->id, req->id_len);
    if (id == NULL) {
      return NULL;
    }
  }
  f = sub_reply(h, t->name, id, req->has_since ? req->since_offset : ht->top,
                ht->epoch, ht->elen, req->has_since ? 1 : -1);
  hub_buf_unref(id);
  return f;
}

void hub_hred_ready_send(hub *h, hub_topic *t, hub_conn *c, hub_buf *reply,
                         size_t nreplay) {
  hub_htopic *ht = t->ht;
  hub_conn *deferred = NULL;
  uint32_t x;
  HUB_ASSERT(nreplay <= ht->nring);
  hub_conn_send(h, c, reply, &deferred);
  for (x = ht->nring - (uint32_t)nreplay; x < ht->nring; x++) {
    hub_conn_send(h, c, ht->ring[(ht->rhead + x) % ht->rcap], &deferred);
    if (!c->evict && !c->closing) {
      h->st.msgs_out++;
    }
  }
  hub_buf_unref(reply);
  hub_conn_evict_deferred(h, deferred);
}

int hub_hred_maybe_read(hub *h, hub_topic *t) {
  if (read_due(h, t)) {
    read_start(h, t);
    return 1;
  }
  return 0;
}

/* ----------------------------------------------------- live messages */

/* "wshub:<offset>:<epoch>:<data>" */
static int payload_parse(const uint8_t *p, size_t len, uint64_t *off,
                         const char **epoch, size_t *elen, const uint8_t **data,
                         size_t *dlen) {
  size_t i = 6, j;
  uint64_t v = 0;
  if (len < 6 || memcmp(p, "wshub:", 6) != 0) {
    return -1;
  }
  for (j = i; j < len && p[j] >= '0' && p[j] <= '9'; j++) {
    if (v > (UINT64_MAX - 9) / 10) {
      return -1;
    }
    v = v * 10 + (uint64_t)(p[j] - '0');
  }
  if (j == i || j >= len || p[j] != ':' || v == 0) {
    return -1;
  }
  i = j + 1;
  for (j = i; j < len && p[j] != ':'; j++) {
  }
  if (j >= len || !epoch_ok((const char *)p + i, j - i)) {
    return -1;
  }
  *off = v;
  *epoch = (const char *)p + i;
  *elen = j - i;
  *data = p + j + 1;
  *dlen = len - j - 1;
  return 0;
}

static int buf_push(hub *h, hub_htopic *ht, uint64_t off, const char *epoch,
                    size_t elen, const uint8_t *data, size_t dlen) {
  hub_buf *d;
  if (ht->nbuf == ht->capbuf) {
    size_t cap = ht->capbuf ? 2 * ht->capbuf : 8;
    hub_hmsg *b = hub_mem_realloc(h->mem, ht->buf, cap * sizeof(*b));
    if (b == NULL) {
      return HUB_ERR_NOMEM;
    }
    ht->buf = b;
    ht->capbuf = cap;
  }
  d = hub_buf_new_copy(h->mem, data, dlen);
  if (d == NULL) {
    return HUB_ERR_NOMEM;
  }
  ht->buf[ht->nbuf].offset = off;
  ht->buf[ht->nbuf].data = d;
  ht->buf[ht->nbuf].elen = (uint8_t)elen;
  memcpy(ht->buf[ht->nbuf].epoch, epoch, elen);
  ht->nbuf++;
  return 0;
}

/* Sends |f| to every live subscriber of |t| (counted as messages when
   |msg|). */
static void group_send(hub *h, hub_topic *t, hub_buf *f, int msg,
                       hub_conn **deferred) {
  hub_link *l;
  for (l = t->acked.next; l != &t->acked; l = l->next) {
    hub_sub *s = CONTAINER_OF(l, hub_sub, topic_link);
    hub_conn_send(h, s->conn, f, deferred);
    if (!s->conn->evict && !s->conn->closing) {
      if (msg) {
        h->st.msgs_out++;
      } else {
        h->st.hist_gaps++;
      }
    }
  }
}

int hub_hred_on_msg(hub *h, hub_topic *t, const uint8_t *data, size_t len,
                    int *plain) {
  hub_htopic *ht = t->ht;
  uint64_t off;
  const char *epoch;
  size_t elen, dlen;
  const uint8_t *d;
  hub_buf *f = NULL, *gap = NULL;
  hub_conn *deferred = NULL;
  int same;

  *plain = 0;
  if (payload_parse(data, len, &off, &epoch, &elen, &d, &dlen) != 0) {
    *plain = 1; /* a message without an offset: not kept, delivered */
    return 0;
  }
  if (ht->read_req != 0) {
    /* A read is in flight: its answer decides (merge, dedupe). */
    return buf_push(h, ht, off, epoch, elen, d, dlen);
  }
  if (!ht->known || t->nacked == 0) {
    ring_clear(h, ht);
    return 0; /* no live subscriber: the next read says where it is */
  }
  same = elen == ht->elen && memcmp(epoch, ht->epoch, elen) == 0;
  if (same && off <= ht->top) {
    return 0; /* a duplicate (the read delivered it already) */
  }
  if (same && off == ht->top + 1) {
    if (hub_effq_reserve(h, hub_topic_deliver_cost(h, t->nacked)) != 0) {
      return HUB_ERR_NOMEM;
    }
    if (ht->nring > 0 && ht->ring_until <= h->now) {
      ring_clear(h, ht); /* due: its timer has not run yet (frees only) */
    }
    f = msg_frame(h, t->name, off, d, dlen);
    if (f == NULL || ring_room(h, ht) != 0) {
      hub_buf_unref(f);
      return HUB_ERR_NOMEM;
    }
    ht->top = off;
    ring_push(h, ht, f);
    group_send(h, t, f, 1, &deferred);
    hub_buf_unref(f);
    hub_conn_evict_deferred(h, deferred);
    return 0;
  }
  /* A hole (o > top + 1) or another epoch: buffer it, read what is
     missing.  Another epoch first tells the live subscribers (gap, offset
     0): their offsets start over. */
  if (hub_effq_reserve(
        h, 1 + (same ? 0 : hub_topic_deliver_cost(h, t->nacked))) != 0) {
    return HUB_ERR_NOMEM;
  }
  if (!same) {
    gap = gap_frame(h, t->name, epoch, elen, 0);
    if (gap == NULL) {
      return HUB_ERR_NOMEM;
    }
  }
  if (buf_push(h, ht, off, epoch, elen, d, dlen) != 0) {
    hub_buf_unref(gap);
    return HUB_ERR_NOMEM;
  }
  if (!same) {
    ht->elen = (uint8_t)elen;
    memcpy(ht->epoch, epoch, elen);
    ht->top = 0;
    ring_clear(h, ht);
    group_send(h, t, gap, 0, &deferred);
    hub_buf_unref(gap);
  }
  if (h->bp_up && t->confirmed) {
    read_start(h, t);
  }
  hub_conn_evict_deferred(h, deferred);
  return 0;
}

/* ------------------------------------------------------- the answer */

/* One element of the merge. */
typedef struct mel {
  uint64_t offset;
  const uint8_t *data;
  size_t len;
  hub_buf *frame;
  hub_buf *gap; /* gap frame for a hole before it, when needed */
  int need_gap;
} mel;

/* Sorts |m| by offset (insertion sort: entries come sorted, the buffer
   mostly so). */
static void mel_sort(mel *m, size_t n) {
  size_t i, j;
  for (i = 1; i < n; i++) {
    mel x = m[i];
    for (j = i; j > 0 && m[j - 1].offset > x.offset; j--) {
      m[j] = m[j - 1];
    }
    m[j] = x;
  }
}

/* Whether waiter |w| is recovered by the answer (T, E, and M's
   entries |e| from the read). */
static int wait_recovered(const hub *h, const hub_hwait *w, uint64_t T,
                          const char *E, size_t elen, const hub_hentry *e,
                          size_t ne) {
  uint64_t s = w->since;
  size_t i;
  if (!w->has_since || s == UINT64_MAX || w->elen != elen ||
      memcmp(w->epoch, E, elen) != 0 || s > T || T - s > h->cfg.history_size) {
    return 0;
  }
  if (s == T) {
    return 1;
  }
  /* Every offset s+1..T among the entries. */
  for (i = 0; i < ne; i++) {
    if (e[i].offset == s + 1) {
      break;
    }
  }
  if (i == ne) {
    return 0;
  }
  for (; i + 1 < ne && e[i + 1].offset == e[i].offset + 1; i++) {
  }
  return e[i].offset >= T;
}

/* Walks |m| from position |pos|: which holes need a gap frame (mark), or
   sends (|send|: to |c|, or to the live group when |c| is NULL).
   Returns the position after the walk. */
static uint64_t walk(hub *h, hub_topic *t, hub_conn *c, mel *m, size_t n,
                     uint64_t pos, int send, hub_conn **deferred) {
  size_t i;
  for (i = 0; i < n; i++) {
    if (m[i].offset <= pos) {
      continue;
    }
    if (m[i].offset > pos + 1) {
      if (!send) {
        m[i].need_gap = 1;
      } else if (c == NULL) {
        group_send(h, t, m[i].gap, 0, deferred);
      } else {
        hub_conn_send(h, c, m[i].gap, deferred);
        h->st.hist_gaps++;
      }
    }
    if (send) {
      if (c == NULL) {
        group_send(h, t, m[i].frame, 1, deferred);
      } else {
        hub_conn_send(h, c, m[i].frame, deferred);
        if (!c->evict && !c->closing) {
          h->st.msgs_out++;
        }
      }
    }
    pos = m[i].offset;
  }
  return pos;
}

static int topic_answer(hub *h, hub_topic *t, uint64_t T, const char *E,
                        size_t elen, const hub_hentry *e, size_t ne) {
  hub_htopic *ht = t->ht;
  size_t n = 0, i, k, nw = 0, nreq = 0, nb = 0;
  mel *m = NULL;
  hub_buf *tailgap = NULL, **replies = NULL;
  hub_conn *deferred = NULL;
  hub_link *l, *next;
  uint64_t live_pos = 0, P, top0;
  int live = ht->known && t->nacked > 0, rc = HUB_ERR_NOMEM, other = 0;
  int *rec = NULL, echange;
  hub_buf *gap0 = NULL, **ring = NULL;
  size_t run = n, keep = 0, drop = 0, nring = 0;

  /* The live subscribers' epoch changed: gap (offset 0), and they need
     the new epoch from its start. */
  echange = live && (elen != ht->elen || memcmp(E, ht->epoch, elen) != 0);
  if (echange && ht->read_since != 0) {
    hub_buf *g;
    if (hub_effq_reserve(h, 1 + hub_topic_deliver_cost(h, t->nacked)) != 0) {
      return HUB_ERR_NOMEM;
    }
    g = gap_frame(h, t->name, E, elen, 0);
    if (g == NULL) {
      return HUB_ERR_NOMEM;
    }
    ht->elen = (uint8_t)elen;
    memcpy(ht->epoch, E, elen);
    ht->top = 0;
    ring_clear(h, ht);
    group_send(h, t, g, 0, &deferred);
    hub_buf_unref(g);
    hub_link_remove(&ht->read_link);
    ht->read_req = 0;
    /* Read the new epoch from its start, for everyone assigned (the
       buffer stays). */
    read_start(h, t);
    hub_conn_evict_deferred(h, deferred);
    return 0;
  }
  top0 = echange ? 0 : ht->top;
  if (echange) {
    gap0 = gap_frame(h, t->name, E, elen, 0);
    if (gap0 == NULL) {
      return HUB_ERR_NOMEM;
    }
  }

  /* M: the entries above the read's since, and the buffered messages of
     epoch E, by offset, without duplicates. */
  for (i = 0; i < ht->nbuf; i++) {
    if (ht->buf[i].elen == elen && memcmp(ht->buf[i].epoch, E, elen) == 0) {
      nb++;
    } else {
      other = 1;
    }
  }
  if (ne + nb > 0) {
    m = hub_mem_malloc(h->mem, (ne + nb) * sizeof(*m));
    if (m == NULL) {
      goto out;
    }
  }
  for (i = 0; i < ne; i++) {
    m[n].offset = e[i].offset;
    m[n].data = e[i].data;
    m[n].len = e[i].len;
    n++;
  }
  for (i = 0; i < ht->nbuf; i++) {
    if (ht->buf[i].elen == elen && memcmp(ht->buf[i].epoch, E, elen) == 0) {
      m[n].offset = ht->buf[i].offset;
      m[n].data = ht->buf[i].data->data;
      m[n].len = ht->buf[i].data->len;
      n++;
    }
  }
  mel_sort(m, n);
  for (i = 0, k = 0; i < n; i++) {
    if (k > 0 && m[k - 1].offset == m[i].offset) {
      continue; /* the same message from history and from the buffer */
    }
    m[k] = m[i];
    m[k].frame = NULL;
    m[k].gap = NULL;
    m[k].need_gap = 0;
    k++;
  }
  n = k;

  /* Who starts where. */
  for (l = ht->waiters.next; l != &ht->waiters; l = l->next) {
    hub_hwait *w = CONTAINER_OF(l, hub_hwait, link);
    if (w->assigned) {
      nw++;
      nreq += w->nids;
    }
  }
  if (nw > 0) {
    rec = hub_mem_malloc(h->mem, nw * sizeof(*rec));
    replies = hub_mem_malloc(h->mem, (nreq > 0 ? nreq : 1) * sizeof(*replies));
    if (replies != NULL) {
      memset(replies, 0, (nreq > 0 ? nreq : 1) * sizeof(*replies));
    }
    if (rec == NULL || replies == NULL) {
      goto out;
    }
  }
  P = T;
  if (live) {
    live_pos = walk(h, t, NULL, m, n, top0, 0, NULL);
    if (live_pos < T) {
      tailgap = gap_frame(h, t->name, E, elen, T);
      if (tailgap == NULL) {
        goto out;
      }
    }
    P = live_pos > T ? live_pos : T;
  }
  i = 0;
  k = 0;
  for (l = ht->waiters.next; l != &ht->waiters; l = l->next) {
    hub_hwait *w = CONTAINER_OF(l, hub_hwait, link);
    uint32_t j;
    uint64_t start, pos;
    if (!w->assigned) {
      continue;
    }
    rec[i] = wait_recovered(h, w, T, E, elen, e, ne);
    start = rec[i] ? w->since : T;
    pos = walk(h, t, NULL, m, n, start, 0, NULL);
    P = pos > P ? pos : P;
    for (j = 0; j < w->nids; j++) {
      replies[k] = sub_reply(h, t->name, w->ids[j], start, E, elen,
                             w->has_since ? (j == 0 ? rec[i] : 0) : -1);
      if (replies[k] == NULL) {
        goto out;
      }
      k++;
    }
    i++;
  }
  for (i = 0; i < n; i++) {
    m[i].frame = msg_frame(h, t->name, m[i].offset, m[i].data, m[i].len);
    if (m[i].frame == NULL) {
      goto out;
    }
    if (m[i].need_gap) {
      m[i].gap = gap_frame(h, t->name, E, elen, m[i].offset - 1);
      if (m[i].gap == NULL) {
        goto out;
      }
    }
  }
  /* The ring from now on: the run of M that ends at P (every offset up
     to P), after what the old one holds below the run when the live
     subscribers keep their epoch and the run joins it; at most
     history_size. */
  run = n;
  if (live || nw > 0) {
    uint64_t low = P + 1; /* the run's first offset */
    if (n > 0 && m[n - 1].offset == P) {
      run = n - 1;
      while (run > 0 && m[run - 1].offset + 1 == m[run].offset) {
        run--;
      }
      low = m[run].offset;
    }
    if (live && !echange && ht->nring > 0 && ht->ring_until > h->now &&
        low <= top0 + 1 && low + ht->nring > top0 + 1) {
      keep = (size_t)(low + ht->nring - top0 - 1);
    }
    nring = keep + (n - run);
  }
  if (nring > 0) {
    if (nring > h->cfg.history_size) {
      drop = nring - h->cfg.history_size;
      nring = h->cfg.history_size;
    }
    ring = hub_mem_malloc(h->mem, ring_cap_for(h, nring) * sizeof(*ring));
    if (ring == NULL) {
      goto out;
    }
  }
  /* Sends: the live group's and each waiter's replies, messages and
     gaps, an eviction each connection at most, the re-read. */
  if (hub_effq_reserve(h, (t->nacked + nw) * (2 * n + 2) + nreq +
                            2 * h->nconns_open + h->nsubs + h->ntopics + 4) !=
      0) {
    goto out;
  }

  /* Everything is built: deliver. */
  if (live) {
    if (gap0 != NULL) {
      group_send(h, t, gap0, 0, &deferred);
    }
    (void)walk(h, t, NULL, m, n, top0, 1, &deferred);
    if (tailgap != NULL) {
      group_send(h, t, tailgap, 0, &deferred);
    }
  }
  ht->known = 1;
  ht->elen = (uint8_t)elen;
  memcpy(ht->epoch, E, elen);
  i = 0;
  k = 0;
  for (l = ht->waiters.next; l != &ht->waiters; l = next) {
    hub_hwait *w = CONTAINER_OF(l, hub_hwait, link);
    hub_sub *s = w->s;
    uint32_t j;
    uint64_t start;
    next = l->next;
    if (!w->assigned) {
      continue;
    }
    start = rec[i] ? w->since : T;
    for (j = 0; j < w->nids; j++) {
      hub_conn_send(h, s->conn, replies[k], &deferred);
      k++;
    }
    (void)walk(h, t, s->conn, m, n, start, 1, &deferred);
    i++;
    /* Live from now on. */
    hub_hred_wait_free(h, s);
    hub_topic_ack_one(h, s);
  }
  ht->top = P;
  {
    size_t q = 0, dk = drop < keep ? drop : keep;
    uint32_t x;
    for (x = 0; x < ht->nring; x++) {
      hub_buf *f = ht->ring[(ht->rhead + x) % ht->rcap];
      if (x >= dk && x < keep) {
        ring[q++] = f; /* its reference moves */
      } else {
        hub_buf_unref(f);
      }
    }
    for (i = run + (drop - dk); i < n; i++) {
      hub_buf_ref(m[i].frame);
      ring[q++] = m[i].frame;
    }
    HUB_ASSERT(q == nring);
    hub_mem_free(h->mem, ht->ring);
    ht->ring = ring;
    ht->rhead = 0;
    ht->nring = (uint32_t)nring;
    ht->rcap = ring != NULL ? ring_cap_for(h, nring) : 0;
    ring = NULL;
    if (nring > 0) {
      ring_touch(h, ht);
    } else if (hub_link_linked(&ht->ring_link)) {
      hub_link_remove(&ht->ring_link);
    }
  }
  hub_link_remove(&ht->read_link);
  ht->read_req = 0;
  buf_clear(h, ht);
  if (other && h->bp_up && t->confirmed) {
    read_start(h, t); /* messages of another epoch came meanwhile */
  } else if (ht->nwait > 0 && h->bp_up && t->confirmed) {
    read_start(h, t); /* waiters that came during the read */
  }
  hub_conn_evict_deferred(h, deferred);
  rc = 0;

out:
  for (i = 0; i < n && m != NULL; i++) {
    hub_buf_unref(m[i].frame);
    hub_buf_unref(m[i].gap);
  }
  hub_mem_free(h->mem, m);
  for (i = 0; replies != NULL && i < nreq; i++) {
    hub_buf_unref(replies[i]);
  }
  hub_mem_free(h->mem, replies);
  hub_mem_free(h->mem, rec);
  hub_mem_free(h->mem, ring);
  hub_buf_unref(tailgap);
  hub_buf_unref(gap0);
  return rc;
}

/* ------------------------------------------------------ publishes */

static hub_hop *hop_find(hub *h, uint64_t req) {
  hub_link *l;
  for (l = h->hops.next; l != &h->hops; l = l->next) {
    hub_hop *o = CONTAINER_OF(l, hub_hop, link);
    if (o->req == req) {
      return o;
    }
  }
  return NULL;
}

static void hop_free(hub *h, hub_hop *o) {
  hub_link_remove(&o->link);
  h->nhops--;
  hub_buf_unref(o->name);
  hub_buf_unref(o->ok);
  hub_buf_unref(o->fail);
  hub_mem_free(h->mem, o);
}

/* Answers |o| with its prebuilt |f| (ok or fail) and frees it. */
static void hop_answer(hub *h, hub_hop *o, hub_buf *f, uint16_t status) {
  if (o->kind == OP_PUBLISH) {
    hub_conn *c = hub_conn_find(h, o->conn);
    if (c != NULL && !c->closing) {
      hub_buf_ref(f);
      hub_conn_reply(h, c, f);
    }
  } else if (!o->noreply) {
    hub_buf_ref(f);
    hub_api_reply(h, o->api_req, status, f);
  }
  hop_free(h, o);
}

int hub_hred_publish(hub *h, hub_conn *c, uint64_t api_req, const hub_req *r) {
  hub_hop *o;
  hub_buf *data;
  hub_effect *e;
  hub_topic *t = hub_topic_find(h, r->channel, r->channel_len);
  char tail[32];
  size_t tl;
  hub_wr w;

  if (!h->bp_up || h->bp_congested) {
    /* Nothing to keep it in: refused, never delivered locally. */
    h->st.bp_refused++;
    if (hub_effq_reserve(h, 1 + (c ? hub_conn_close_cost(c) : 0)) != 0) {
      h->st.bp_refused--;
      return HUB_ERR_NOMEM;
    }
    if (c != NULL) {
      hub_buf *f =
        hub_frame_error(h, r->id, r->id_len, "backplane unavailable");
      if (f == NULL) {
        h->st.bp_refused--;
        return HUB_ERR_NOMEM;
      }
      hub_conn_reply(h, c, f);
    } else if (api_req != UINT64_MAX) {
      hub_buf *b = hub_api_error_body(h, "backplane unavailable");
      if (b == NULL) {
        h->st.bp_refused--;
        return HUB_ERR_NOMEM;
      }
      hub_api_reply(h, api_req, 503, b);
    } else {
      return HUB_ERR_UNAVAILABLE;
    }
    return 0;
  }
  /* The HPUBLISH, and the reply's term of the reserve. */
  if (hub_effq_reserve(h, 2) != 0) {
    return HUB_ERR_NOMEM;
  }
  o = hub_mem_malloc(h->mem, sizeof(*o));
  if (o == NULL) {
    return HUB_ERR_NOMEM;
  }
  memset(o, 0, sizeof(*o));
  hub_link_init(&o->link);
  if (t != NULL) {
    o->name = t->name;
    hub_buf_ref(o->name);
  } else {
    o->name = hub_buf_new_copy(h->mem, r->channel, r->channel_len);
  }
  data = hub_buf_new_copy(h->mem, r->data, r->data_len);
  w.p = (uint8_t *)tail;
  w.end = (uint8_t *)tail + sizeof(tail);
  hub_wr_str(&w, ",\"offset\":");
  hub_wr_u64(&w, UINT64_MAX);
  tl = (size_t)(w.p - (uint8_t *)tail);
  if (c != NULL) {
    hub_buf *reply = hub_frame_reply(h, "published", r->channel, r->channel_len,
                                     r->id, r->id_len);
    /* Room for the offset: the frame is rewritten when it is known. */
    o->ok = reply != NULL
              ? hub_frame_new(h->mem, hub_buf_payload_len(reply) + tl)
              : NULL;
    if (o->ok != NULL) {
      /* Keep the reply's payload, without its closing brace, in front. */
      size_t pl = hub_buf_payload_len(reply) - 1;
      memcpy(o->ok->data + o->ok->payload_off, hub_buf_payload(reply), pl);
      o->plen = pl; /* the prefix, kept for the rewrite */
    }
    hub_buf_unref(reply);
    o->fail = hub_frame_error(h, r->id, r->id_len, "backplane unavailable");
    o->kind = OP_PUBLISH;
    o->conn = c->id;
  } else {
    o->ok = hub_api_ok_body(h, UINT64_MAX);
    o->fail = api_req != UINT64_MAX
                ? hub_api_error_body(h, "backplane unavailable")
                : hub_buf_new(h->mem, 0);
    o->kind = OP_API_PUBLISH;
    o->api_req = api_req;
    o->noreply = api_req == UINT64_MAX;
  }
  if (o->name == NULL || data == NULL || o->ok == NULL || o->fail == NULL) {
    hub_buf_unref(data);
    hub_buf_unref(o->name);
    hub_buf_unref(o->ok);
    hub_buf_unref(o->fail);
    hub_mem_free(h->mem, o);
    return HUB_ERR_NOMEM;
  }
  o->req = ++h->next_hreq;
  hub_link_push_tail(&h->hops, &o->link);
  h->nhops++;
  e = hub_effq_push(h, HUB_EFF_BP_HPUBLISH);
  e->name = o->name;
  hub_buf_ref(o->name);
  e->buf = data;
  e->req = o->req;
  e->count = h->cfg.history_size;
  e->ttl_s = ttl_s(h);
  e->meta_ttl_s = meta_ttl_s(h);
  return 0;
}

int hub_hred_on_hpublished(hub *h, uint64_t req, int ok, uint64_t offset,
                           const char *epoch, size_t epoch_len) {
  hub_hop *o = hop_find(h, req);
  uint8_t scratch[600];
  hub_wr w;

  (void)epoch;
  (void)epoch_len;
  if (o == NULL || (o->kind != OP_PUBLISH && o->kind != OP_API_PUBLISH)) {
    return 0; /* not waited for (any more) */
  }
  /* The reply's term of the reserve, and the publisher's eviction from
     its connection's. */
  hub_effq_spend(h, 1);
  if (!ok || offset == 0) {
    hop_answer(h, o, o->fail, 503);
    return 0;
  }
  h->st.publishes++;
  if (o->kind == OP_PUBLISH) {
    size_t pl = o->plen;
    HUB_ASSERT(pl + 32 <= sizeof(scratch));
    memcpy(scratch, o->ok->data + o->ok->payload_off, pl);
    w.p = scratch + pl;
    w.end = scratch + sizeof(scratch);
    hub_wr_str(&w, ",\"offset\":");
    hub_wr_u64(&w, offset);
    hub_wr_str(&w, "}");
    frame_refill(o->ok, scratch, (size_t)(w.p - scratch));
  } else {
    w.p = o->ok->data;
    w.end = o->ok->data + o->ok->len;
    hub_wr_str(&w, "{\"ok\":true,\"offset\":");
    hub_wr_u64(&w, offset);
    hub_wr_str(&w, "}");
    o->ok->len = (size_t)(w.p - o->ok->data);
  }
  hop_answer(h, o, o->ok, 200);
  return 0;
}

/* ------------------------------------------------------ GET /history */

int hub_hred_api_history(hub *h, uint64_t api_req, const char *ch, size_t len,
                         uint64_t since, uint64_t limit) {
  hub_hop *o;
  hub_effect *e;
  hub_topic *t;

  if (!h->bp_up) {
    hub_buf *b;
    if (hub_effq_reserve(h, 1) != 0) {
      return HUB_ERR_NOMEM;
    }
    b = hub_api_error_body(h, "backplane unavailable");
    if (b == NULL) {
      return HUB_ERR_NOMEM;
    }
    hub_api_reply(h, api_req, 503, b);
    return 0;
  }
  if (hub_effq_reserve(h, 2) != 0) {
    return HUB_ERR_NOMEM;
  }
  o = hub_mem_malloc(h->mem, sizeof(*o));
  if (o == NULL) {
    return HUB_ERR_NOMEM;
  }
  memset(o, 0, sizeof(*o));
  hub_link_init(&o->link);
  t = hub_topic_find(h, ch, len);
  if (t != NULL) {
    o->name = t->name;
    hub_buf_ref(o->name);
  } else {
    o->name = hub_buf_new_copy(h->mem, ch, len);
  }
  o->fail = hub_api_error_body(h, "backplane unavailable");
  if (o->name == NULL || o->fail == NULL) {
    hub_buf_unref(o->name);
    hub_buf_unref(o->fail);
    hub_mem_free(h->mem, o);
    return HUB_ERR_NOMEM;
  }
  if (limit == 0 || limit > h->cfg.history_size) {
    limit = h->cfg.history_size;
  }
  o->kind = OP_API_HISTORY;
  o->api_req = api_req;
  o->limit = limit;
  o->since = since;
  o->req = ++h->next_hreq;
  hub_link_push_tail(&h->hops, &o->link);
  h->nhops++;
  e = hub_effq_push(h, HUB_EFF_BP_HREAD);
  e->name = o->name;
  hub_buf_ref(o->name);
  e->req = o->req;
  e->since = since;
  e->count = (uint32_t)limit;
  e->meta_ttl_s = meta_ttl_s(h);
  return 0;
}

static int api_history_answer(hub *h, hub_hop *o, uint64_t T, const char *E,
                              size_t elen, const hub_hentry *e, size_t ne) {
  size_t n, i, k = 0;
  hub_buf *b;
  hub_wr w;

  n = sizeof("{\"channel\":\"\",\"epoch\":\"\",\"offset\":,\"messages\":[]}") -
      1 + o->name->len + elen + hub_u64_len(T);
  for (i = 0; i < ne && k < o->limit; i++) {
    if (e[i].offset <= o->since) {
      continue;
    }
    n += sizeof("{\"offset\":,\"data\":},") - 1 + hub_u64_len(e[i].offset) +
         e[i].len;
    k++;
  }
  if (k > 0) {
    n--;
  }
  b = hub_buf_new(h->mem, n);
  if (b == NULL) {
    return HUB_ERR_NOMEM;
  }
  b->payload_off = 0;
  w.p = b->data;
  w.end = b->data + n;
  hub_wr_str(&w, "{\"channel\":\"");
  hub_wr_mem(&w, o->name->data, o->name->len);
  hub_wr_str(&w, "\",\"epoch\":\"");
  hub_wr_mem(&w, E, elen);
  hub_wr_str(&w, "\",\"offset\":");
  hub_wr_u64(&w, T);
  hub_wr_str(&w, ",\"messages\":[");
  for (i = 0, k = 0; i < ne && k < o->limit; i++) {
    if (e[i].offset <= o->since) {
      continue;
    }
    if (k > 0) {
      hub_wr_str(&w, ",");
    }
    hub_wr_str(&w, "{\"offset\":");
    hub_wr_u64(&w, e[i].offset);
    hub_wr_str(&w, ",\"data\":");
    hub_wr_mem(&w, e[i].data, e[i].len);
    hub_wr_str(&w, "}");
    k++;
  }
  hub_wr_str(&w, "]}");
  HUB_ASSERT(w.p == w.end);
  hub_effq_spend(h, 1);
  hub_api_reply(h, o->api_req, 200, b);
  hop_free(h, o);
  return 0;
}

/* ------------------------------------------------------ the read */

int hub_hred_on_hread(hub *h, uint64_t req, int ok, uint64_t offset,
                      const char *epoch, size_t epoch_len,
                      const hub_hentry *entries, size_t n) {
  hub_link *l;
  hub_hop *o;

  if (ok && !epoch_ok(epoch, epoch_len)) {
    ok = 0; /* not an answer the function gives */
  }
  for (l = h->hreads.next; l != &h->hreads; l = l->next) {
    hub_htopic *ht = CONTAINER_OF(l, hub_htopic, read_link);
    if (ht->read_req == req) {
      hub_topic *t = ht->t;
      if (!ok) {
        /* The command failed without the link going (the down fails the
           rest): the waiters wait for the next confirmation. */
        read_drop(h, ht);
        return 0;
      }
      return topic_answer(h, t, offset, epoch, epoch_len, entries, n);
    }
  }
  o = hop_find(h, req);
  if (o == NULL || o->kind != OP_API_HISTORY) {
    return 0;
  }
  if (!ok) {
    hub_effq_spend(h, 1);
    hop_answer(h, o, o->fail, 503);
    return 0;
  }
  return api_history_answer(h, o, offset, epoch, epoch_len, entries, n);
}

/* ------------------------------------------------------ down, end */

void hub_hred_fail_all(hub *h) {
  hub_effq_spend(h, h->nhops);
  while (!hub_link_empty(&h->hops)) {
    hub_hop *o = CONTAINER_OF(h->hops.next, hub_hop, link);
    hop_answer(h, o, o->fail, 503);
  }
}

void hub_hred_free(hub *h) {
  if (h->hops.next == NULL) {
    return;
  }
  while (!hub_link_empty(&h->hops)) {
    hop_free(h, CONTAINER_OF(h->hops.next, hub_hop, link));
  }
}

void hub_hred_init(hub *h) {
  hub_link_init(&h->hops);
  hub_link_init(&h->hreads);
  hub_link_init(&h->hrings);
}

int hub_hred_check(const hub *h, const char **why) {
  const hub_link *l;
  size_t n = 0;
  for (l = h->hops.next; l != &h->hops; l = l->next) {
    n++;
  }
  if (n != h->nhops) {
    *why = "history request count";
    return -1;
  }
  for (l = h->topics.next; l != &h->topics; l = l->next) {
    const hub_topic *t = CONTAINER_OF(l, hub_topic, all);
    const hub_htopic *ht = t->ht;
    const hub_link *m;
    size_t nw = 0;
    uint32_t i;
    if (ht == NULL) {
      continue;
    }
    for (m = ht->waiters.next; m != &ht->waiters; m = m->next) {
      const hub_hwait *w = CONTAINER_OF(m, hub_hwait, link);
      if (w->s->hw != w || w->s->acked || w->s->topic != t ||
          w->nids != w->s->nframes / 2) {
        *why = "history waiter";
        return -1;
      }
      nw++;
    }
    if (nw != ht->nwait) {
      *why = "history waiter count";
      return -1;
    }
    if (ht->read_req == 0 && ht->nbuf > 0) {
      *why = "history buffer without a read";
      return -1;
    }
    if (ht->nring > ht->rcap || ht->rcap > h->cfg.history_size ||
        (ht->nring > 0 &&
         (!ht->known || t->nacked == 0 || ht->top < ht->nring ||
          !hub_link_linked(&ht->ring_link))) ||
        (ht->nring == 0 && hub_link_linked(&ht->ring_link))) {
      *why = "history ring";
      return -1;
    }
    for (i = 0; i < ht->nring; i++) {
      if (ht->ring[(ht->rhead + i) % ht->rcap] == NULL) {
        *why = "history ring frame";
        return -1;
      }
    }
  }
  for (l = h->hrings.next; l != &h->hrings; l = l->next) {
    const hub_htopic *ht = CONTAINER_OF(l, hub_htopic, ring_link);
    if (ht->nring == 0 || ht->t->ht != ht ||
        (l->next != &h->hrings &&
         CONTAINER_OF(l->next, hub_htopic, ring_link)->ring_until <
           ht->ring_until)) {
      *why = "history ring list";
      return -1;
    }
  }
  return 0;
}
