/*
 * hub.c - the hub state machine: connections, channels ("topics"), the
 * backplane subscription state, slow-consumer eviction, timers, the
 * registry and graceful shutdown.  See README.md beside this file for the
 * rules, and hub.h for the API.
 *
 * Every event first reserves the effect-queue space it can need and
 * allocates what it needs, and only then changes state, so an allocation
 * failure leaves nothing half done.  Iteration order is always a list
 * order (open order, creation order, subscribe order), never a hash
 * order, so effects are deterministic.
 */
#include "hub_int.h"

#include <string.h>

/* ------------------------------------------------------------ lists */

typedef struct hub_link {
  struct hub_link *prev;
  struct hub_link *next;
} hub_link;

#define CONTAINER_OF(ptr, type, field)                                         \
  ((type *)(void *)((char *)(ptr)-offsetof(type, field)))

static void link_init(hub_link *l) {
  l->prev = l->next = l;
}

static int link_empty(const hub_link *l) {
  return l->next == l;
}

/* A node that is in no list points at itself. */
static int link_linked(const hub_link *n) {
  return n->next != n;
}

static void link_remove(hub_link *n) {
  n->prev->next = n->next;
  n->next->prev = n->prev;
  link_init(n);
}

static void link_push_tail(hub_link *head, hub_link *n) {
  HUB_ASSERT(!link_linked(n));
  n->prev = head->prev;
  n->next = head;
  head->prev->next = n;
  head->prev = n;
}

static void link_move_tail(hub_link *head, hub_link *n) {
  if (link_linked(n)) {
    link_remove(n);
  }
  link_push_tail(head, n);
}

/* ----------------------------------------------------- hash tables */

typedef struct hub_hnode {
  struct hub_hnode *next;
  uint64_t hash;
} hub_hnode;

typedef struct hub_htab {
  hub_hnode **b;
  size_t nb; /* a power of two */
  size_t n;
} hub_htab;

#define HTAB_INIT_BUCKETS 64

static int htab_init(const hub_mem *mem, hub_htab *t) {
  t->b = hub_mem_malloc(mem, HTAB_INIT_BUCKETS * sizeof(*t->b));
  if (t->b == NULL) {
    return HUB_ERR_NOMEM;
  }
  memset(t->b, 0, HTAB_INIT_BUCKETS * sizeof(*t->b));
  t->nb = HTAB_INIT_BUCKETS;
  t->n = 0;
  return 0;
}

/* Grows the table when it is full; if that allocation fails the table
   just stays longer-chained, so insertion itself never fails. */
static void htab_insert(const hub_mem *mem, hub_htab *t, hub_hnode *node) {
  size_t i;

  if (t->n >= t->nb) {
    size_t nb = t->nb * 2;
    hub_hnode **b = hub_mem_malloc(mem, nb * sizeof(*b));
    if (b != NULL) {
      memset(b, 0, nb * sizeof(*b));
      for (i = 0; i < t->nb; i++) {
        hub_hnode *p = t->b[i];
        while (p != NULL) {
          hub_hnode *next = p->next;
          size_t j = (size_t)(p->hash & (nb - 1));
          p->next = b[j];
          b[j] = p;
          p = next;
        }
      }
      hub_mem_free(mem, t->b);
      t->b = b;
      t->nb = nb;
    }
  }
  i = (size_t)(node->hash & (t->nb - 1));
  node->next = t->b[i];
  t->b[i] = node;
  t->n++;
}

static void htab_remove(hub_htab *t, hub_hnode *node) {
  hub_hnode **pp = &t->b[node->hash & (t->nb - 1)];
  while (*pp != node) {
    HUB_ASSERT(*pp != NULL);
    pp = &(*pp)->next;
  }
  *pp = node->next;
  t->n--;
}

static uint64_t mix64(uint64_t x) {
  /* splitmix64's finaliser */
  x ^= x >> 30;
  x *= UINT64_C(0xbf58476d1ce4e5b9);
  x ^= x >> 27;
  x *= UINT64_C(0x94d049bb133111eb);
  x ^= x >> 31;
  return x;
}

static uint64_t hash_str(uint64_t seed, const char *s, size_t len) {
  uint64_t h = UINT64_C(0xcbf29ce484222325) ^ seed;
  size_t i;
  for (i = 0; i < len; i++) {
    h ^= (unsigned char)s[i];
    h *= UINT64_C(0x100000001b3);
  }
  return mix64(h);
}

/* ---------------------------------------------------------- objects */

typedef struct hub_topic hub_topic;
typedef struct hub_conn hub_conn;

typedef struct hub_sub {
  hub_link topic_link; /* in topic->acked or topic->pending */
  hub_link conn_link;  /* in conn->subs */
  hub_conn *conn;
  hub_topic *topic;
  int acked;
  /* While pending: for every subscribe request waiting on this
     subscription, its "subscribed" reply and the "error" reply sent
     instead if the subscription is cancelled, built in advance so that
     acknowledging never allocates. frames[2i], frames[2i + 1]. */
  hub_buf **frames;
  uint32_t nframes;
} hub_sub;

struct hub_topic {
  hub_hnode hnode;
  hub_buf *name; /* channel name, NUL-terminated */
  hub_link all;  /* in hub->topics, creation order */
  hub_link acked;
  hub_link pending;
  size_t nsubs;  /* acked + pending */
  size_t nacked; /* length of acked */
  /* Acknowledged subscribers holding repeat subscribe requests that wait
     for a re-subscribe (after the backplane came back) to be confirmed. */
  size_t nwaiting;
  /* SUBSCRIBEs sent whose confirmation has not come back.  A topic with
     no subscribers lives on while this is nonzero, so that a stale
     confirmation is not taken for the current one. */
  uint32_t inflight;
  int bp_subscribed; /* a SUBSCRIBE is in force (sent, not unsubscribed) */
  int confirmed;     /* ... and Redis has confirmed it */
};

struct hub_conn {
  hub_hnode hnode;
  hub_conn_id id;
  void *user;
  hub_link all;        /* in hub->conns while open */
  hub_link ping_link;  /* ordered by next_ping */
  hub_link pong_link;  /* ordered by last_pong */
  hub_link write_link; /* while frames wait, ordered by last_progress */
  hub_link subs;
  hub_tstamp next_ping;
  hub_tstamp last_pong;
  hub_tstamp last_progress;
  uint64_t q_msgs;
  uint64_t q_bytes;
  size_t nsubs;
  hub_buf *key;   /* registry key "conn:<instance>:<n>" */
  hub_buf *value; /* registry value */
  /* 1 + the sequence number of the last SEND, PING or CLOSE queued for
     this connection (0: none), so that a close only searches the queue
     when something for it may still be there. */
  uint64_t eff_last;
  int closing;
  int reg_live;
  /* Deferred eviction during a fan-out: the reason + 1, and the next
     connection to evict. */
  int evict;
  hub_conn *evict_next;
};

/* A connection key whose REG_DEL was emitted while the backplane was down
   and so was most likely lost: deleted again on every reconnect and at
   shutdown, until the key's TTL has surely run out. */
typedef struct hub_orphan {
  hub_link link;
  hub_buf *key;
  hub_tstamp expires;
} hub_orphan;

struct hub {
  const hub_mem *mem;
  hub_config cfg;
  char instance_id[129];
  size_t instance_id_len;
  hub_htab conn_tab;
  hub_htab topic_tab;
  hub_link conns;   /* open connections, open order */
  hub_link pings;   /* open connections by next ping */
  hub_link pongs;   /* open connections by last pong */
  hub_link writes;  /* open connections with frames waiting */
  hub_link topics;  /* creation order */
  hub_link orphans; /* hub_orphan, by expiry */
  size_t norphans;
  hub_conn_id next_conn_id;
  size_t nconns_open;
  size_t ntopics;
  size_t nsubs;
  size_t nchannels;
  size_t nbp;
  int bp_up;
  int shut_down;
  hub_tstamp now;
  hub_tstamp t_start;
  hub_tstamp next_heartbeat;
  hub_buf *instance_key;
  hub_effect *effs;
  size_t eff_head;
  size_t eff_tail;
  size_t eff_cap;
  /* The absolute sequence number of effs[0]: effects are numbered in the
     order they are queued, across compactions. */
  uint64_t eff_base;
  hub_stats st;
};

#ifndef HUB_MUTANT
#  define HUB_MUTANT 0
#endif

/* ------------------------------------------------------ error texts */

const char *hub_strerror(int err) {
  switch (err) {
  case HUB_OK:
    return "success";
  case HUB_ERR_INVALID_ARGUMENT:
    return "invalid argument";
  case HUB_ERR_UNKNOWN_CONN:
    return "unknown connection";
  case HUB_ERR_BAD_REQUEST:
    return "bad request";
  case HUB_ERR_SHUT_DOWN:
    return "hub is shutting down";
  case HUB_ERR_NOMEM:
    return "out of memory";
  default:
    return "unknown error";
  }
}

const char *hub_close_kind_name(hub_close_kind kind) {
  static const char *const names[HUB_CLOSE_KIND_MAX] = {
    "shutdown",     "slow_msgs", "slow_bytes", "write_timeout",
    "pong_timeout", "too_big",   "binary",     "bad_utf8"};
  if ((unsigned)kind >= HUB_CLOSE_KIND_MAX) {
    return "unknown";
  }
  return names[kind];
}

static uint16_t close_code(hub_close_kind kind) {
  switch (kind) {
  case HUB_CLOSE_SHUTDOWN:
    return 1001;
  case HUB_CLOSE_TOO_BIG:
    return 1009;
  case HUB_CLOSE_BINARY:
    return 1003;
  case HUB_CLOSE_BAD_UTF8:
    return 1007;
  default:
    return 1008;
  }
}

static const char *close_reason(hub_close_kind kind) {
  switch (kind) {
  case HUB_CLOSE_SHUTDOWN:
    return "server shutting down";
  case HUB_CLOSE_SLOW_MSGS:
  case HUB_CLOSE_SLOW_BYTES:
    return "slow consumer";
  case HUB_CLOSE_WRITE_TIMEOUT:
    return "write timeout";
  case HUB_CLOSE_PONG_TIMEOUT:
    return "pong timeout";
  case HUB_CLOSE_TOO_BIG:
    return "message too big";
  case HUB_CLOSE_BINARY:
    return "binary frames are not supported";
  case HUB_CLOSE_BAD_UTF8:
    return "invalid UTF-8";
  default:
    return "";
  }
}

/* ----------------------------------------------------- effect queue */

/* Makes room for |n| more effects.  On failure nothing changes. */
static int eff_reserve(hub *h, size_t n) {
  size_t need, cap;
  hub_effect *effs;

  if (h->eff_tail + n <= h->eff_cap) {
    return 0;
  }
  if (h->eff_head > 0) {
    memmove(h->effs, h->effs + h->eff_head,
            (h->eff_tail - h->eff_head) * sizeof(*h->effs));
    h->eff_tail -= h->eff_head;
    h->eff_base += h->eff_head;
    h->eff_head = 0;
    if (h->eff_tail + n <= h->eff_cap) {
      return 0;
    }
  }
  need = h->eff_tail + n;
  cap = h->eff_cap ? h->eff_cap : 64;
  while (cap < need) {
    cap *= 2;
  }
  effs = hub_mem_realloc(h->mem, h->effs, cap * sizeof(*effs));
  if (effs == NULL) {
    return HUB_ERR_NOMEM;
  }
  h->effs = effs;
  h->eff_cap = cap;
  return 0;
}

static hub_effect *eff_push(hub *h, hub_effect_type type) {
  hub_effect *e;
  HUB_ASSERT(h->eff_tail < h->eff_cap);
  e = &h->effs[h->eff_tail++];
  memset(e, 0, sizeof(*e));
  e->type = type;
  return e;
}

static void eff_release(hub_effect *e) {
  hub_buf_unref(e->name);
  hub_buf_unref(e->buf);
  e->name = NULL;
  e->buf = NULL;
  e->type = HUB_EFF_NONE;
}

const hub_effect *hub_effect_peek(hub *h) {
  while (h->eff_head < h->eff_tail &&
         h->effs[h->eff_head].type == HUB_EFF_NONE) {
    h->eff_head++;
  }
  if (h->eff_head == h->eff_tail) {
    h->eff_base += h->eff_tail;
    h->eff_head = h->eff_tail = 0;
    return NULL;
  }
  return &h->effs[h->eff_head];
}

void hub_effect_pop(hub *h) {
  if (hub_effect_peek(h) == NULL) {
    return;
  }
  eff_release(&h->effs[h->eff_head]);
  h->eff_head++;
  if (h->eff_head == h->eff_tail) {
    h->eff_base += h->eff_tail;
    h->eff_head = h->eff_tail = 0;
  }
}

/* A SEND, PING or CLOSE for |c|. */
static hub_effect *eff_push_conn(hub *h, hub_effect_type type, hub_conn *c) {
  hub_effect *e = eff_push(h, type);
  e->conn = c->id;
  e->conn_user = c->user;
  c->eff_last = h->eff_base + h->eff_tail; /* 1 + this one's number */
  return e;
}

static void eff_name(hub *h, hub_effect_type type, hub_buf *name) {
  hub_effect *e = eff_push(h, type);
  hub_buf_ref(name);
  e->name = name;
}

/* ------------------------------------------------------- encoding */

static hub_buf *frame_reply(hub *h, const char *type, const char *channel,
                            size_t channel_len, const char *id, size_t id_len) {
  size_t n = sizeof("{\"type\":\"") - 1 + strlen(type) +
             sizeof("\",\"channel\":\"") - 1 + channel_len + 2;
  hub_buf *b;
  hub_wr w;

  if (id != NULL) {
    n += sizeof(",\"id\":") - 1 + id_len;
  }
  b = hub_frame_new(h->mem, n);
  if (b == NULL) {
    return NULL;
  }
  w.p = b->data + b->payload_off;
  w.end = b->data + b->len;
  hub_wr_str(&w, "{\"type\":\"");
  hub_wr_str(&w, type);
  hub_wr_str(&w, "\",\"channel\":\"");
  hub_wr_mem(&w, channel, channel_len);
  hub_wr_str(&w, "\"");
  if (id != NULL) {
    hub_wr_str(&w, ",\"id\":");
    hub_wr_mem(&w, id, id_len);
  }
  hub_wr_str(&w, "}");
  HUB_ASSERT(w.p == w.end);
  return b;
}

static hub_buf *frame_error(hub *h, const char *id, size_t id_len,
                            const char *msg) {
  size_t msg_len = strlen(msg);
  size_t n = sizeof("{\"type\":\"error\",\"error\":}") - 1 +
             hub_json_str_len(msg, msg_len);
  hub_buf *b;
  hub_wr w;

  if (id != NULL) {
    n += sizeof(",\"id\":") - 1 + id_len;
  }
  b = hub_frame_new(h->mem, n);
  if (b == NULL) {
    return NULL;
  }
  w.p = b->data + b->payload_off;
  w.end = b->data + b->len;
  hub_wr_str(&w, "{\"type\":\"error\"");
  if (id != NULL) {
    hub_wr_str(&w, ",\"id\":");
    hub_wr_mem(&w, id, id_len);
  }
  hub_wr_str(&w, ",\"error\":");
  hub_wr_json_str(&w, msg, msg_len);
  hub_wr_str(&w, "}");
  HUB_ASSERT(w.p == w.end);
  return b;
}

/* The message frame, encoded once for every subscriber.  |data| must be
   valid JSON unless |as_string|, when it is wrapped as a JSON string. */
static hub_buf *frame_message(hub *h, const char *channel, size_t channel_len,
                              const char *data, size_t data_len,
                              int as_string) {
  size_t dl = as_string ? hub_json_str_len(data, data_len) : data_len;
  size_t n = sizeof("{\"type\":\"message\",\"channel\":\"\",\"data\":}") - 1 +
             channel_len + dl;
  hub_buf *b = hub_frame_new(h->mem, n);
  hub_wr w;

  if (b == NULL) {
    return NULL;
  }
  w.p = b->data + b->payload_off;
  w.end = b->data + b->len;
  hub_wr_str(&w, "{\"type\":\"message\",\"channel\":\"");
  hub_wr_mem(&w, channel, channel_len);
  hub_wr_str(&w, "\",\"data\":");
  if (as_string) {
    hub_wr_json_str(&w, data, data_len);
  } else {
    hub_wr_mem(&w, data, data_len);
  }
  hub_wr_str(&w, "}");
  HUB_ASSERT(w.p == w.end);
  return b;
}

static int64_t unix_now(const hub *h) {
  return h->cfg.unix_time_s + (int64_t)((h->now - h->t_start) / HUB_NS_PER_S);
}

static hub_buf *instance_value(hub *h) {
  int64_t t = h->cfg.unix_time_s;
  size_t n = sizeof("{\"instance_id\":\"\",\"connections\":,"
                    "\"started_at\":}") -
             1 + h->instance_id_len + hub_u64_len(h->nconns_open) +
             hub_i64_len(t);
  hub_buf *b = hub_buf_new(h->mem, n);
  hub_wr w;

  if (b == NULL) {
    return NULL;
  }
  w.p = b->data;
  w.end = b->data + b->len;
  hub_wr_str(&w, "{\"instance_id\":\"");
  hub_wr_mem(&w, h->instance_id, h->instance_id_len);
  hub_wr_str(&w, "\",\"connections\":");
  hub_wr_u64(&w, h->nconns_open);
  hub_wr_str(&w, ",\"started_at\":");
  hub_wr_i64(&w, t);
  hub_wr_str(&w, "}");
  HUB_ASSERT(w.p == w.end);
  return b;
}

/* "conn:<instance>:<n>" and its JSON value. */
static int conn_registry_bufs(hub *h, hub_conn_id id, const char *remote,
                              hub_buf **key, hub_buf **value) {
  size_t idlen = h->instance_id_len + 1 + hub_u64_len(id);
  size_t rlen = strlen(remote);
  int64_t t = unix_now(h);
  size_t vn = sizeof("{\"conn_id\":\"\",\"instance_id\":\"\","
                     "\"remote_addr\":,\"connected_at\":}") -
              1 + idlen + h->instance_id_len + hub_json_str_len(remote, rlen) +
              hub_i64_len(t);
  hub_wr w;

  *key = hub_buf_new(h->mem, 5 + idlen);
  *value = hub_buf_new(h->mem, vn);
  if (*key == NULL || *value == NULL) {
    hub_buf_unref(*key);
    hub_buf_unref(*value);
    return HUB_ERR_NOMEM;
  }
  w.p = (*key)->data;
  w.end = (*key)->data + (*key)->len;
  hub_wr_str(&w, "conn:");
  hub_wr_mem(&w, h->instance_id, h->instance_id_len);
  hub_wr_str(&w, ":");
  hub_wr_u64(&w, id);
  HUB_ASSERT(w.p == w.end);

  w.p = (*value)->data;
  w.end = (*value)->data + (*value)->len;
  hub_wr_str(&w, "{\"conn_id\":\"");
  hub_wr_mem(&w, h->instance_id, h->instance_id_len);
  hub_wr_str(&w, ":");
  hub_wr_u64(&w, id);
  hub_wr_str(&w, "\",\"instance_id\":\"");
  hub_wr_mem(&w, h->instance_id, h->instance_id_len);
  hub_wr_str(&w, "\",\"remote_addr\":");
  hub_wr_json_str(&w, remote, rlen);
  hub_wr_str(&w, ",\"connected_at\":");
  hub_wr_i64(&w, t);
  hub_wr_str(&w, "}");
  HUB_ASSERT(w.p == w.end);
  return 0;
}

/* ------------------------------------------------------ lookups */

static hub_conn *conn_find(const hub *h, hub_conn_id id) {
  uint64_t hash = mix64(id ^ h->cfg.seed);
  hub_hnode *p = h->conn_tab.b[hash & (h->conn_tab.nb - 1)];
  for (; p != NULL; p = p->next) {
    hub_conn *c = CONTAINER_OF(p, hub_conn, hnode);
    if (p->hash == hash && c->id == id) {
      return c;
    }
  }
  return NULL;
}

static hub_topic *topic_find(const hub *h, const char *ch, size_t len) {
  uint64_t hash = hash_str(h->cfg.seed, ch, len);
  hub_hnode *p = h->topic_tab.b[hash & (h->topic_tab.nb - 1)];
  for (; p != NULL; p = p->next) {
    hub_topic *t = CONTAINER_OF(p, hub_topic, hnode);
    if (p->hash == hash && t->name->len == len &&
        memcmp(t->name->data, ch, len) == 0) {
      return t;
    }
  }
  return NULL;
}

/* A connection has at most one subscription per topic. */
static hub_sub *conn_find_sub(const hub_conn *c, const hub_topic *t) {
  const hub_link *l;
  for (l = c->subs.next; l != &c->subs; l = l->next) {
    hub_sub *s = CONTAINER_OF(l, hub_sub, conn_link);
    if (s->topic == t) {
      return s;
    }
  }
  return NULL;
}

/* ------------------------------------------- subscriptions, topics */

static void topic_free(hub *h, hub_topic *t) {
  HUB_ASSERT(t->nsubs == 0 && t->inflight == 0 && !t->bp_subscribed);
  htab_remove(&h->topic_tab, &t->hnode);
  link_remove(&t->all);
  hub_buf_unref(t->name);
  hub_mem_free(h->mem, t);
  h->ntopics--;
}

/* The last local subscriber left (or the backplane state changed): drop
   the backplane subscription and the topic when nothing needs it. */
static void topic_idle(hub *h, hub_topic *t) {
  if (t->nsubs > 0) {
    return;
  }
  if (t->bp_subscribed) {
    if (HUB_MUTANT != 1) {
      eff_name(h, HUB_EFF_BP_UNSUBSCRIBE, t->name);
    }
    t->bp_subscribed = 0;
    t->confirmed = 0;
    h->nbp--;
  }
  if (t->inflight == 0) {
    topic_free(h, t);
  }
}

static void sub_free_frames(hub *h, hub_sub *s) {
  uint32_t i;
  for (i = 0; i < s->nframes; i++) {
    hub_buf_unref(s->frames[i]);
  }
  hub_mem_free(h->mem, s->frames);
  s->frames = NULL;
  s->nframes = 0;
}

/* Removes |s| from its topic and connection.  Emits an UNSUBSCRIBE if it
   was the topic's last subscriber; needs 1 reserved effect. */
static void sub_release(hub *h, hub_sub *s) {
  hub_topic *t = s->topic;
  hub_conn *c = s->conn;

  if (s->acked) {
    t->nacked--;
    if (s->nframes > 0) {
      t->nwaiting--;
    }
  }
  link_remove(&s->topic_link);
  link_remove(&s->conn_link);
  sub_free_frames(h, s);
  hub_mem_free(h->mem, s);
  c->nsubs--;
  t->nsubs--;
  h->nsubs--;
  if (t->nsubs == 0) {
    h->nchannels--;
    topic_idle(h, t);
  }
}

/* ---------------------------------------------------- connections */

/* Effects a close of |c| may emit: CLOSE, REG_DEL, an UNSUBSCRIBE per
   subscription. */
static size_t close_cost(const hub_conn *c) {
  return 2 + c->nsubs;
}

/* Releases |c|'s subscriptions and registry key and takes it off the
   timer lists; shared by a close the core decides and one the peer
   reports. */
static void orphan_add(hub *h, hub_buf *key) {
  hub_orphan *o = hub_mem_malloc(h->mem, sizeof(*o));
  if (o == NULL) {
    return; /* the key still expires by its TTL */
  }
  link_init(&o->link);
  hub_buf_ref(key);
  o->key = key;
  o->expires = h->now + (hub_tstamp)h->cfg.conn_ttl_s * HUB_NS_PER_S;
  link_push_tail(&h->orphans, &o->link);
  h->norphans++;
}

static void orphan_free(hub *h, hub_orphan *o) {
  link_remove(&o->link);
  hub_buf_unref(o->key);
  hub_mem_free(h->mem, o);
  h->norphans--;
}

/* REG_DEL of every orphaned key; needs norphans reserved effects. */
static void orphans_delete(hub *h) {
  hub_link *l;
  for (l = h->orphans.next; l != &h->orphans; l = l->next) {
    eff_name(h, HUB_EFF_REG_DEL, CONTAINER_OF(l, hub_orphan, link)->key);
  }
}

static void conn_retire(hub *h, hub_conn *c, int delete_key) {
  while (!link_empty(&c->subs)) {
    sub_release(h, CONTAINER_OF(c->subs.next, hub_sub, conn_link));
  }
  if (c->reg_live && delete_key) {
    eff_name(h, HUB_EFF_REG_DEL, c->key);
    if (!h->bp_up) {
      orphan_add(h, c->key);
    }
  }
  c->reg_live = 0;
  link_remove(&c->all);
  link_remove(&c->ping_link);
  link_remove(&c->pong_link);
  if (link_linked(&c->write_link)) {
    link_remove(&c->write_link);
  }
  h->nconns_open--;
}

/* The core closes |c|.  Needs close_cost(c) reserved effects. */
static void conn_close(hub *h, hub_conn *c, hub_close_kind kind) {
  hub_effect *e;

  HUB_ASSERT(!c->closing);
  e = eff_push_conn(h, HUB_EFF_CLOSE, c);
  e->close_kind = kind;
  e->close_code = close_code(kind);
  e->reason = close_reason(kind);
  c->closing = 1;
  h->st.evictions[kind]++;
  conn_retire(h, c, !(HUB_MUTANT == 5 && kind == HUB_CLOSE_SHUTDOWN));
}

/*
 * Queues |frame| for |c| (taking a reference), or finds that it would
 * pass the connection's limits.  With |deferred| NULL such a connection
 * is closed at once (needs close_cost(c) + 1 reserved effects); otherwise
 * it is marked and chained on *deferred for the caller to close after its
 * loop, and later sends to it in the same loop are skipped.
 */
static void conn_send(hub *h, hub_conn *c, hub_buf *frame,
                      hub_conn **deferred) {
  hub_effect *e;
  hub_close_kind kind;

  if (c->closing || c->evict) {
    return;
  }
  if (HUB_MUTANT != 3 && c->q_msgs + 1 > h->cfg.max_queue_msgs) {
    kind = HUB_CLOSE_SLOW_MSGS;
    goto over;
  }
  if (HUB_MUTANT != 3 && c->q_bytes + frame->len > h->cfg.max_queue_bytes) {
    kind = HUB_CLOSE_SLOW_BYTES;
    goto over;
  }
  if (c->q_msgs == 0) {
    c->last_progress = h->now;
    link_push_tail(&h->writes, &c->write_link);
  }
  c->q_msgs++;
  c->q_bytes += frame->len;
  e = eff_push_conn(h, HUB_EFF_SEND, c);
  hub_buf_ref(frame);
  e->buf = frame;
  return;

over:
  if (deferred == NULL) {
    conn_close(h, c, kind);
  } else {
    c->evict = (int)kind + 1;
    c->evict_next = *deferred;
    *deferred = c;
  }
}

/* Closes the connections conn_send deferred, in the order they were
   found (the chain is newest first). */
static void evict_deferred(hub *h, hub_conn *list) {
  hub_conn *rev = NULL;
  while (list != NULL) {
    hub_conn *next = list->evict_next;
    list->evict_next = rev;
    rev = list;
    list = next;
  }
  while (rev != NULL) {
    hub_conn *next = rev->evict_next;
    hub_close_kind kind = (hub_close_kind)(rev->evict - 1);
    rev->evict = 0;
    rev->evict_next = NULL;
    conn_close(h, rev, kind);
    rev = next;
  }
}

/* Sends a one-off reply to |c|, evicting it if it does not fit.  Takes
   over the caller's reference to |frame|. */
static void conn_reply(hub *h, hub_conn *c, hub_buf *frame) {
  conn_send(h, c, frame, NULL);
  hub_buf_unref(frame);
}

/* ---------------------------------------------------- fan-out */

/* Upper bound of effects for a fan-out to |n| subscribers: a SEND each,
   and for each an eviction's CLOSE and REG_DEL, plus the UNSUBSCRIBEs
   of topics emptied, at most one per topic. */
static size_t fanout_cost(const hub *h, size_t n) {
  return (HUB_MUTANT == 2 ? 4 : 3) * n + h->ntopics + 2;
}

static size_t list_len(const hub_link *l) {
  size_t n = 0;
  const hub_link *p;
  for (p = l->next; p != l; p = p->next) {
    n++;
  }
  return n;
}

/* Delivers |frame| to every acknowledged subscriber of |t|.  Needs
   fanout_cost(h, subscribers) reserved effects. */
static void fanout(hub *h, hub_topic *t, hub_buf *frame) {
  hub_conn *deferred = NULL;
  hub_link *l;

  for (l = t->acked.next; l != &t->acked; l = l->next) {
    hub_sub *s = CONTAINER_OF(l, hub_sub, topic_link);
    conn_send(h, s->conn, frame, &deferred);
    if (HUB_MUTANT == 2) {
      conn_send(h, s->conn, frame, &deferred);
    }
    if (!s->conn->evict) {
      h->st.msgs_out++;
    }
  }
  evict_deferred(h, deferred);
}

/* Acknowledges every pending subscriber of |t|, evicting (after the
   loop) those whose replies do not fit. */
static void ack_pending(hub *h, hub_topic *t, hub_conn **deferred) {
  hub_link *l;

  for (l = t->acked.next; t->nwaiting > 0 && l != &t->acked; l = l->next) {
    hub_sub *s = CONTAINER_OF(l, hub_sub, topic_link);
    uint32_t i;
    if (s->nframes == 0) {
      continue;
    }
    for (i = 0; i < s->nframes; i += 2) {
      conn_send(h, s->conn, s->frames[i], deferred);
    }
    sub_free_frames(h, s);
    t->nwaiting--;
  }
  while (!link_empty(&t->pending)) {
    hub_sub *s = CONTAINER_OF(t->pending.next, hub_sub, topic_link);
    uint32_t i;
    link_remove(&s->topic_link);
    link_push_tail(&t->acked, &s->topic_link);
    s->acked = 1;
    t->nacked++;
    for (i = 0; i < s->nframes; i += 2) {
      conn_send(h, s->conn, s->frames[i], deferred);
    }
    sub_free_frames(h, s);
  }
}

/* Effects ack_pending may need for |t|: replies, and a CLOSE and REG_DEL
   per subscriber, plus UNSUBSCRIBEs bounded by the topic count. */
static size_t ack_cost(const hub_topic *t) {
  size_t n = 0;
  const hub_link *l;
  for (l = t->acked.next; t->nwaiting > 0 && l != &t->acked; l = l->next) {
    const hub_sub *s = CONTAINER_OF(l, hub_sub, topic_link);
    n += s->nframes / 2 + 2;
  }
  for (l = t->pending.next; l != &t->pending; l = l->next) {
    const hub_sub *s = CONTAINER_OF(l, hub_sub, topic_link);
    n += s->nframes / 2 + 2;
  }
  return n;
}

/* ------------------------------------------------------- lifecycle */

void hub_config_default(hub_config *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->instance_id = "hub";
  cfg->backplane = 0;
  cfg->registry = 0;
  cfg->max_queue_msgs = 256;
  cfg->max_queue_bytes = 4194304;
  cfg->max_message_bytes = 65536;
  cfg->max_subs_per_conn = 4096;
  cfg->ping_interval_ns = 54 * HUB_NS_PER_S;
  cfg->pong_timeout_ns = 60 * HUB_NS_PER_S;
  cfg->write_timeout_ns = 10 * HUB_NS_PER_S;
  cfg->heartbeat_interval_ns = 10 * HUB_NS_PER_S;
  cfg->instance_ttl_s = 30;
  cfg->conn_ttl_s = 120;
  cfg->unix_time_s = 0;
  cfg->seed = 0;
}

static int config_valid(const hub_config *cfg) {
  return cfg->instance_id != NULL &&
         hub_channel_valid(cfg->instance_id, strlen(cfg->instance_id)) &&
         cfg->max_queue_msgs > 0 && cfg->max_queue_bytes > 0 &&
         cfg->max_message_bytes > 0 && cfg->max_subs_per_conn > 0 &&
         cfg->ping_interval_ns > 0 && cfg->pong_timeout_ns > 0 &&
         cfg->write_timeout_ns > 0 && cfg->heartbeat_interval_ns > 0 &&
         cfg->instance_ttl_s > 0 && cfg->conn_ttl_s > 0 &&
         (!cfg->registry || cfg->backplane);
}

static int registry_on(const hub *h) {
  return h->cfg.registry && !h->shut_down;
}

/* REG_SET of the instance key and every open connection's key.  Needs
   1 + nconns_open reserved effects; returns HUB_ERR_NOMEM with nothing
   emitted if the instance value cannot be built. */
static int heartbeat(hub *h) {
  hub_buf *v = instance_value(h);
  hub_effect *e;
  hub_link *l;

  if (v == NULL) {
    return HUB_ERR_NOMEM;
  }
  e = eff_push(h, HUB_EFF_REG_SET);
  hub_buf_ref(h->instance_key);
  e->name = h->instance_key;
  e->buf = v;
  e->ttl_s = h->cfg.instance_ttl_s;
  for (l = h->conns.next; l != &h->conns; l = l->next) {
    hub_conn *c = CONTAINER_OF(l, hub_conn, all);
    e = eff_push(h, HUB_EFF_REG_SET);
    hub_buf_ref(c->key);
    hub_buf_ref(c->value);
    e->name = c->key;
    e->buf = c->value;
    e->ttl_s = h->cfg.conn_ttl_s;
    c->reg_live = 1;
  }
  return 0;
}

int hub_new(hub **out, const hub_config *cfg, const hub_mem *mem,
            hub_tstamp now) {
  hub *h;
  size_t idlen;

  *out = NULL;
  if (cfg == NULL || !config_valid(cfg)) {
    return HUB_ERR_INVALID_ARGUMENT;
  }
  if (mem == NULL) {
    mem = hub_mem_default();
  }
  h = hub_mem_malloc(mem, sizeof(*h));
  if (h == NULL) {
    return HUB_ERR_NOMEM;
  }
  memset(h, 0, sizeof(*h));
  h->mem = mem;
  h->cfg = *cfg;
  idlen = strlen(cfg->instance_id);
  memcpy(h->instance_id, cfg->instance_id, idlen + 1);
  h->instance_id_len = idlen;
  h->cfg.instance_id = h->instance_id;
  link_init(&h->conns);
  link_init(&h->pings);
  link_init(&h->pongs);
  link_init(&h->writes);
  link_init(&h->topics);
  link_init(&h->orphans);
  h->next_conn_id = 1;
  h->now = now;
  h->t_start = now;
  h->next_heartbeat = now + cfg->heartbeat_interval_ns;

  if (htab_init(mem, &h->conn_tab) != 0 || htab_init(mem, &h->topic_tab) != 0 ||
      eff_reserve(h, 64) != 0) {
    goto nomem;
  }
  h->instance_key = hub_buf_new(mem, 9 + idlen);
  if (h->instance_key == NULL) {
    goto nomem;
  }
  memcpy(h->instance_key->data, "instance:", 9);
  memcpy(h->instance_key->data + 9, h->instance_id, idlen);
  if (registry_on(h) && heartbeat(h) != 0) {
    goto nomem;
  }
  *out = h;
  return 0;

nomem:
  hub_del(h);
  return HUB_ERR_NOMEM;
}

void hub_del(hub *h) {
  size_t i;

  if (h == NULL) {
    return;
  }
  while (h->eff_head < h->eff_tail) {
    eff_release(&h->effs[h->eff_head++]);
  }
  /* Every connection, open or closing, is in the id table. */
  for (i = 0; h->conn_tab.b != NULL && i < h->conn_tab.nb; i++) {
    while (h->conn_tab.b[i] != NULL) {
      hub_conn *c = CONTAINER_OF(h->conn_tab.b[i], hub_conn, hnode);
      h->conn_tab.b[i] = c->hnode.next;
      while (!link_empty(&c->subs)) {
        hub_sub *s = CONTAINER_OF(c->subs.next, hub_sub, conn_link);
        link_remove(&s->conn_link);
        link_remove(&s->topic_link);
        sub_free_frames(h, s);
        hub_mem_free(h->mem, s);
      }
      hub_buf_unref(c->key);
      hub_buf_unref(c->value);
      hub_mem_free(h->mem, c);
    }
  }
  while (!link_empty(&h->topics)) {
    hub_topic *t = CONTAINER_OF(h->topics.next, hub_topic, all);
    link_remove(&t->all);
    hub_buf_unref(t->name);
    hub_mem_free(h->mem, t);
  }
  while (!link_empty(&h->orphans)) {
    orphan_free(h, CONTAINER_OF(h->orphans.next, hub_orphan, link));
  }
  hub_buf_unref(h->instance_key);
  hub_mem_free(h->mem, h->conn_tab.b);
  hub_mem_free(h->mem, h->topic_tab.b);
  hub_mem_free(h->mem, h->effs);
  hub_mem_free(h->mem, h);
}

static void advance(hub *h, hub_tstamp now) {
  /* Time never runs backwards inside the hub, whatever the caller
     passes: the timer lists rely on it. */
  if (now > h->now) {
    h->now = now;
  }
}

/* ----------------------------------------------------- conn events */

int hub_on_conn_open(hub *h, hub_conn_id *id, const char *remote_addr,
                     void *user, hub_tstamp now) {
  hub_conn *c;
  hub_buf *key = NULL, *value = NULL;
  hub_conn_id cid = h->next_conn_id;

  advance(h, now);
  if (h->shut_down) {
    return HUB_ERR_SHUT_DOWN;
  }
  if (remote_addr == NULL) {
    remote_addr = "";
  }
  if (eff_reserve(h, 1) != 0 ||
      conn_registry_bufs(h, cid, remote_addr, &key, &value) != 0) {
    return HUB_ERR_NOMEM;
  }
  c = hub_mem_malloc(h->mem, sizeof(*c));
  if (c == NULL) {
    hub_buf_unref(key);
    hub_buf_unref(value);
    return HUB_ERR_NOMEM;
  }
  memset(c, 0, sizeof(*c));
  h->next_conn_id++;
  c->id = cid;
  c->user = user;
  c->key = key;
  c->value = value;
  link_init(&c->all);
  link_init(&c->ping_link);
  link_init(&c->pong_link);
  link_init(&c->write_link);
  link_init(&c->subs);
  c->hnode.hash = mix64(cid ^ h->cfg.seed);
  htab_insert(h->mem, &h->conn_tab, &c->hnode);
  link_push_tail(&h->conns, &c->all);
  c->next_ping = h->now + h->cfg.ping_interval_ns;
  link_push_tail(&h->pings, &c->ping_link);
  c->last_pong = h->now;
  link_push_tail(&h->pongs, &c->pong_link);
  h->nconns_open++;
  if (registry_on(h)) {
    hub_effect *e = eff_push(h, HUB_EFF_REG_SET);
    hub_buf_ref(key);
    hub_buf_ref(value);
    e->name = key;
    e->buf = value;
    e->ttl_s = h->cfg.conn_ttl_s;
    c->reg_live = 1;
  }
  *id = cid;
  return 0;
}

static int do_subscribe(hub *h, hub_conn *c, const hub_req *req) {
  hub_topic *t = topic_find(h, req->channel, req->channel_len);
  hub_sub *s = t ? conn_find_sub(c, t) : NULL;
  hub_buf *ok, *cancel = NULL, *name = NULL;
  hub_buf **frames;
  int effective;

  if (eff_reserve(h, 2 + close_cost(c) + 1) != 0) {
    return HUB_ERR_NOMEM;
  }
  if (s == NULL && c->nsubs >= h->cfg.max_subs_per_conn) {
    hub_buf *f = frame_error(h, req->id, req->id_len, "too many subscriptions");
    if (f == NULL) {
      return HUB_ERR_NOMEM;
    }
    conn_reply(h, c, f);
    return 0;
  }
  ok = frame_reply(h, "subscribed", req->channel, req->channel_len, req->id,
                   req->id_len);
  if (ok == NULL) {
    return HUB_ERR_NOMEM;
  }
  effective = !h->bp_up || (t != NULL && t->confirmed) || HUB_MUTANT == 6;
  if (s != NULL && s->acked && effective) {
    conn_reply(h, c, ok);
    return 0;
  }
  if (s != NULL || !effective) {
    /* The subscription will wait for the backplane: build the reply for
       either outcome now, so that the outcome never allocates. */
    cancel = frame_error(h, req->id, req->id_len, "subscription cancelled");
    if (cancel == NULL) {
      goto nomem;
    }
  }
  if (s != NULL) {
    frames =
      hub_mem_realloc(h->mem, s->frames, (s->nframes + 2) * sizeof(*frames));
    if (frames == NULL) {
      goto nomem;
    }
    s->frames = frames;
    if (s->acked && s->nframes == 0) {
      /* Acknowledged while the backplane was down; this repeat waits for
         the re-subscribe to be confirmed. */
      t->nwaiting++;
    }
    s->frames[s->nframes++] = ok;
    s->frames[s->nframes++] = cancel;
    return 0;
  }

  /* A new subscription: allocate everything, then link it in. */
  s = hub_mem_malloc(h->mem, sizeof(*s));
  if (s == NULL) {
    goto nomem;
  }
  memset(s, 0, sizeof(*s));
  link_init(&s->topic_link);
  link_init(&s->conn_link);
  if (!effective) {
    s->frames = hub_mem_malloc(h->mem, 2 * sizeof(*s->frames));
    if (s->frames == NULL) {
      hub_mem_free(h->mem, s);
      goto nomem;
    }
  }
  if (t == NULL) {
    t = hub_mem_malloc(h->mem, sizeof(*t));
    name = hub_buf_new_copy(h->mem, req->channel, req->channel_len);
    if (t == NULL || name == NULL) {
      hub_mem_free(h->mem, t);
      hub_buf_unref(name);
      hub_mem_free(h->mem, s->frames);
      hub_mem_free(h->mem, s);
      goto nomem;
    }
    memset(t, 0, sizeof(*t));
    t->name = name;
    link_init(&t->all);
    link_init(&t->acked);
    link_init(&t->pending);
    t->hnode.hash = hash_str(h->cfg.seed, req->channel, req->channel_len);
    htab_insert(h->mem, &h->topic_tab, &t->hnode);
    link_push_tail(&h->topics, &t->all);
    h->ntopics++;
  }
  s->conn = c;
  s->topic = t;
  link_push_tail(&c->subs, &s->conn_link);
  c->nsubs++;
  h->nsubs++;
  if (t->nsubs++ == 0) {
    h->nchannels++;
  }
  if (h->bp_up && !t->bp_subscribed) {
    eff_name(h, HUB_EFF_BP_SUBSCRIBE, t->name);
    t->bp_subscribed = 1;
    t->confirmed = 0;
    t->inflight++;
    h->nbp++;
  }
  if (effective) {
    s->acked = 1;
    t->nacked++;
    link_push_tail(&t->acked, &s->topic_link);
    hub_buf_unref(cancel);
    conn_reply(h, c, ok);
  } else {
    link_push_tail(&t->pending, &s->topic_link);
    s->frames[0] = ok;
    s->frames[1] = cancel;
    s->nframes = 2;
  }
  return 0;

nomem:
  hub_buf_unref(ok);
  hub_buf_unref(cancel);
  return HUB_ERR_NOMEM;
}

static int do_unsubscribe(hub *h, hub_conn *c, const hub_req *req) {
  hub_topic *t = topic_find(h, req->channel, req->channel_len);
  hub_sub *s = t ? conn_find_sub(c, t) : NULL;
  hub_buf *ok;
  uint32_t i;

  if (eff_reserve(h, (s ? s->nframes / 2 : 0) + 2 + close_cost(c)) != 0) {
    return HUB_ERR_NOMEM;
  }
  ok = frame_reply(h, "unsubscribed", req->channel, req->channel_len, req->id,
                   req->id_len);
  if (ok == NULL) {
    return HUB_ERR_NOMEM;
  }
  if (s != NULL) {
    /* Subscribe requests still waiting on this subscription are answered
       first, so every request gets exactly one reply. */
    for (i = 1; i < s->nframes; i += 2) {
      conn_send(h, c, s->frames[i], NULL);
      if (c->closing) {
        /* Evicted by that reply: the eviction released (and freed) |s|. */
        s = NULL;
        break;
      }
    }
    if (s != NULL) {
      sub_release(h, s);
    }
  }
  conn_reply(h, c, ok);
  return 0;
}

/* Publishes |req| (channel and data) from |c|, or from outside when |c|
   is NULL. */
static int do_publish(hub *h, hub_conn *c, const hub_req *req) {
  hub_topic *t = topic_find(h, req->channel, req->channel_len);
  hub_buf *reply = NULL;

  if (c != NULL) {
    reply = frame_reply(h, "published", req->channel, req->channel_len, req->id,
                        req->id_len);
    if (reply == NULL) {
      return HUB_ERR_NOMEM;
    }
  }
  if (h->bp_up) {
    /* Through the backplane only: local subscribers get it when it comes
       back, exactly once. */
    hub_buf *name = t ? t->name : NULL;
    hub_buf *data;
    hub_effect *e;

    if (eff_reserve(h, 1 + (c ? 1 + close_cost(c) : 0)) != 0) {
      goto nomem;
    }
    if (name == NULL) {
      name = hub_buf_new_copy(h->mem, req->channel, req->channel_len);
    } else {
      hub_buf_ref(name);
    }
    data = hub_buf_new_copy(h->mem, req->data, req->data_len);
    if (name == NULL || data == NULL) {
      hub_buf_unref(name);
      hub_buf_unref(data);
      goto nomem;
    }
    e = eff_push(h, HUB_EFF_BP_PUBLISH);
    e->name = name;
    e->buf = data;
  } else {
    size_t n = t ? t->nacked : 0;
    hub_buf *frame = NULL;

    if (eff_reserve(h, fanout_cost(h, n) + (c ? 1 + close_cost(c) : 0)) != 0) {
      goto nomem;
    }
    if (n > 0) {
      frame = frame_message(h, req->channel, req->channel_len, req->data,
                            req->data_len, 0);
      if (frame == NULL) {
        goto nomem;
      }
    }
    if (c != NULL) {
      conn_reply(h, c, reply);
      reply = NULL;
    }
    /* The reply may have evicted the publisher and so emptied the
       topic: look it up again. */
    t = topic_find(h, req->channel, req->channel_len);
    if (t != NULL && frame != NULL) {
      fanout(h, t, frame);
    }
    hub_buf_unref(frame);
  }
  h->st.publishes++;
  if (reply != NULL) {
    conn_reply(h, c, reply);
  }
  return 0;

nomem:
  hub_buf_unref(reply);
  return HUB_ERR_NOMEM;
}

int hub_on_conn_msg(hub *h, hub_conn_id id, int binary, const uint8_t *data,
                    size_t len, hub_tstamp now) {
  hub_conn *c = conn_find(h, id);
  hub_req req;
  const char *err;
  hub_close_kind kind;

  advance(h, now);
  if (c == NULL) {
    return HUB_ERR_UNKNOWN_CONN;
  }
  if (c->closing) {
    return 0;
  }
  h->st.msgs_in++;
  if (len > h->cfg.max_message_bytes) {
    kind = HUB_CLOSE_TOO_BIG;
    goto close;
  }
  if (binary) {
    kind = HUB_CLOSE_BINARY;
    goto close;
  }
  if (!hub_utf8_valid(data, len)) {
    kind = HUB_CLOSE_BAD_UTF8;
    goto close;
  }
  if (hub_req_parse((const char *)data, len, 0, &req, &err) != 0) {
    hub_buf *f;
    if (eff_reserve(h, 1 + close_cost(c)) != 0) {
      return HUB_ERR_NOMEM;
    }
    f = frame_error(h, req.id, req.id_len, err);
    if (f == NULL) {
      return HUB_ERR_NOMEM;
    }
    conn_reply(h, c, f);
    return 0;
  }
  switch (req.type) {
  case HUB_REQ_SUBSCRIBE:
    return do_subscribe(h, c, &req);
  case HUB_REQ_UNSUBSCRIBE:
    return do_unsubscribe(h, c, &req);
  case HUB_REQ_PUBLISH:
    return do_publish(h, c, &req);
  }
  return 0;

close:
  if (eff_reserve(h, close_cost(c)) != 0) {
    return HUB_ERR_NOMEM;
  }
  conn_close(h, c, kind);
  return 0;
}

int hub_on_conn_pong(hub *h, hub_conn_id id, hub_tstamp now) {
  hub_conn *c = conn_find(h, id);

  advance(h, now);
  if (c == NULL) {
    return HUB_ERR_UNKNOWN_CONN;
  }
  if (!c->closing) {
    c->last_pong = h->now;
    link_move_tail(&h->pongs, &c->pong_link);
  }
  return 0;
}

int hub_on_conn_written(hub *h, hub_conn_id id, size_t msgs, size_t bytes,
                        hub_tstamp now) {
  hub_conn *c = conn_find(h, id);

  advance(h, now);
  if (c == NULL) {
    return HUB_ERR_UNKNOWN_CONN;
  }
  if (c->closing) {
    return 0;
  }
  if (msgs > c->q_msgs || bytes > c->q_bytes) {
    return HUB_ERR_INVALID_ARGUMENT;
  }
  if (msgs == 0 && bytes == 0) {
    return 0;
  }
  c->q_msgs -= msgs;
  c->q_bytes -= bytes;
  c->last_progress = h->now;
  if (c->q_msgs == 0 && c->q_bytes == 0) {
    link_remove(&c->write_link);
  } else {
    link_move_tail(&h->writes, &c->write_link);
  }
  return 0;
}

int hub_on_conn_closed(hub *h, hub_conn_id id, hub_tstamp now) {
  hub_conn *c = conn_find(h, id);
  size_t i;

  advance(h, now);
  if (c == NULL) {
    return HUB_ERR_UNKNOWN_CONN;
  }
  if (!c->closing) {
    if (eff_reserve(h, close_cost(c)) != 0) {
      return HUB_ERR_NOMEM;
    }
    conn_retire(h, c, 1);
  }
  /* Nothing queued may reach a connection that is gone.  The queue is
     searched only while this connection's last effect is still in it, so
     a transport that pops a CLOSE before reporting the close (the usual
     order) searches nothing. */
  for (i = h->eff_head;
       c->eff_last > h->eff_base + h->eff_head && i < h->eff_tail; i++) {
    hub_effect *e = &h->effs[i];
    if (e->conn == id && (e->type == HUB_EFF_SEND || e->type == HUB_EFF_PING ||
                          e->type == HUB_EFF_CLOSE)) {
      eff_release(e);
    }
  }
  htab_remove(&h->conn_tab, &c->hnode);
  hub_buf_unref(c->key);
  hub_buf_unref(c->value);
  hub_mem_free(h->mem, c);
  return 0;
}

/* -------------------------------------------------- backplane events */

int hub_on_bp_msg(hub *h, const char *channel, size_t channel_len,
                  const uint8_t *data, size_t len, hub_tstamp now) {
  hub_topic *t = topic_find(h, channel, channel_len);
  hub_json_kind kind;
  hub_buf *frame;
  size_t n;
  int as_string;

  advance(h, now);
  if (t == NULL || link_empty(&t->acked)) {
    return 0;
  }
  n = t->nacked;
  if (eff_reserve(h, fanout_cost(h, n)) != 0) {
    return HUB_ERR_NOMEM;
  }
  /* Anyone can PUBLISH into Redis; what is not JSON is relayed as a JSON
     string rather than breaking every subscriber's parser. */
  as_string =
    hub_json_parse((const char *)data, len, &kind, NULL, 0, NULL) != 0;
  frame =
    frame_message(h, channel, channel_len, (const char *)data, len, as_string);
  if (frame == NULL) {
    return HUB_ERR_NOMEM;
  }
  fanout(h, t, frame);
  hub_buf_unref(frame);
  return 0;
}

int hub_on_bp_subscribed(hub *h, const char *channel, size_t channel_len,
                         hub_tstamp now) {
  hub_topic *t = topic_find(h, channel, channel_len);
  hub_conn *deferred = NULL;

  advance(h, now);
  if (t == NULL || t->inflight == 0) {
    return 0; /* a confirmation from before the backplane went down */
  }
  if (eff_reserve(h, ack_cost(t) + h->ntopics) != 0) {
    return HUB_ERR_NOMEM;
  }
  t->inflight--;
  if (t->inflight > 0) {
    return 0; /* an older SUBSCRIBE's confirmation */
  }
  if (t->nsubs == 0) {
    topic_idle(h, t);
    return 0;
  }
  HUB_ASSERT(t->bp_subscribed);
  t->confirmed = 1;
  ack_pending(h, t, &deferred);
  evict_deferred(h, deferred);
  return 0;
}

int hub_on_bp_up(hub *h, hub_tstamp now) {
  hub_link *l;

  advance(h, now);
  if (!h->cfg.backplane) {
    return HUB_ERR_INVALID_ARGUMENT;
  }
  if (h->bp_up || h->shut_down) {
    return 0;
  }
  if (eff_reserve(h, h->ntopics + 1 + h->nconns_open + h->norphans) != 0) {
    return HUB_ERR_NOMEM;
  }
  if (registry_on(h)) {
    if (heartbeat(h) != 0) {
      return HUB_ERR_NOMEM;
    }
    h->next_heartbeat = h->now + h->cfg.heartbeat_interval_ns;
    orphans_delete(h);
  }
  h->bp_up = 1;
  for (l = h->topics.next; l != &h->topics; l = l->next) {
    hub_topic *t = CONTAINER_OF(l, hub_topic, all);
    HUB_ASSERT(!t->bp_subscribed && t->inflight == 0);
    if (t->nsubs > 0 && HUB_MUTANT != 4) {
      eff_name(h, HUB_EFF_BP_SUBSCRIBE, t->name);
      t->bp_subscribed = 1;
      t->confirmed = 0;
      t->inflight = 1;
      h->nbp++;
    }
  }
  return 0;
}

int hub_on_bp_down(hub *h, hub_tstamp now) {
  hub_link *l, *next;
  hub_conn *deferred = NULL;
  size_t cost = h->ntopics;

  advance(h, now);
  if (!h->bp_up) {
    return 0;
  }
  for (l = h->topics.next; l != &h->topics; l = l->next) {
    cost += ack_cost(CONTAINER_OF(l, hub_topic, all));
  }
  if (eff_reserve(h, cost) != 0) {
    return HUB_ERR_NOMEM;
  }
  h->bp_up = 0;
  /* The connection and its subscriptions are gone: waiting subscribers
     are served locally from now on, so they are acknowledged. */
  for (l = h->topics.next; l != &h->topics; l = l->next) {
    hub_topic *t = CONTAINER_OF(l, hub_topic, all);
    if (t->bp_subscribed) {
      h->nbp--;
    }
    t->bp_subscribed = 0;
    t->confirmed = 0;
    t->inflight = 0;
    ack_pending(h, t, &deferred);
  }
  evict_deferred(h, deferred);
  for (l = h->topics.next; l != &h->topics; l = next) {
    hub_topic *t = CONTAINER_OF(l, hub_topic, all);
    next = l->next;
    if (t->nsubs == 0) {
      topic_free(h, t);
    }
  }
  return 0;
}

int hub_publish(hub *h, const uint8_t *body, size_t len, const char **errmsg,
                hub_tstamp now) {
  hub_req req;
  const char *err = NULL;

  advance(h, now);
  if (errmsg != NULL) {
    *errmsg = NULL;
  }
  if (h->shut_down) {
    return HUB_ERR_SHUT_DOWN;
  }
  if (!hub_utf8_valid(body, len)) {
    err = "body is not valid UTF-8";
  } else if (hub_req_parse((const char *)body, len, 1, &req, &err) == 0) {
    return do_publish(h, NULL, &req);
  }
  if (errmsg != NULL) {
    *errmsg = err;
  }
  return HUB_ERR_BAD_REQUEST;
}

/* ----------------------------------------------------------- timers */

hub_tstamp hub_get_expiry(const hub *h) {
  hub_tstamp t = HUB_TSTAMP_NONE, x;

  if (h->shut_down) {
    return HUB_TSTAMP_NONE;
  }
  if (!link_empty(&h->pongs)) {
    x = CONTAINER_OF(h->pongs.next, hub_conn, pong_link)->last_pong +
        h->cfg.pong_timeout_ns;
    t = x < t ? x : t;
  }
  if (!link_empty(&h->writes)) {
    x = CONTAINER_OF(h->writes.next, hub_conn, write_link)->last_progress +
        h->cfg.write_timeout_ns;
    t = x < t ? x : t;
  }
  if (!link_empty(&h->pings)) {
    x = CONTAINER_OF(h->pings.next, hub_conn, ping_link)->next_ping;
    t = x < t ? x : t;
  }
  if (registry_on(h)) {
    t = h->next_heartbeat < t ? h->next_heartbeat : t;
  }
  return t;
}

int hub_handle_expiry(hub *h, hub_tstamp now) {
  advance(h, now);
  if (h->shut_down) {
    return 0;
  }
  while (!link_empty(&h->orphans) &&
         CONTAINER_OF(h->orphans.next, hub_orphan, link)->expires <= h->now) {
    orphan_free(h, CONTAINER_OF(h->orphans.next, hub_orphan, link));
  }
  while (!link_empty(&h->pongs)) {
    hub_conn *c = CONTAINER_OF(h->pongs.next, hub_conn, pong_link);
    if (c->last_pong + h->cfg.pong_timeout_ns > h->now) {
      break;
    }
    if (eff_reserve(h, close_cost(c)) != 0) {
      return HUB_ERR_NOMEM;
    }
    conn_close(h, c, HUB_CLOSE_PONG_TIMEOUT);
  }
  while (!link_empty(&h->writes)) {
    hub_conn *c = CONTAINER_OF(h->writes.next, hub_conn, write_link);
    if (c->last_progress + h->cfg.write_timeout_ns > h->now) {
      break;
    }
    if (eff_reserve(h, close_cost(c)) != 0) {
      return HUB_ERR_NOMEM;
    }
    conn_close(h, c, HUB_CLOSE_WRITE_TIMEOUT);
  }
  while (!link_empty(&h->pings)) {
    hub_conn *c = CONTAINER_OF(h->pings.next, hub_conn, ping_link);
    if (c->next_ping > h->now) {
      break;
    }
    if (eff_reserve(h, 1) != 0) {
      return HUB_ERR_NOMEM;
    }
    (void)eff_push_conn(h, HUB_EFF_PING, c);
    c->next_ping = h->now + h->cfg.ping_interval_ns;
    link_move_tail(&h->pings, &c->ping_link);
  }
  if (registry_on(h) && h->next_heartbeat <= h->now) {
    if (eff_reserve(h, 1 + h->nconns_open) != 0 || heartbeat(h) != 0) {
      return HUB_ERR_NOMEM;
    }
    h->next_heartbeat = h->now + h->cfg.heartbeat_interval_ns;
  }
  return 0;
}

int hub_shutdown(hub *h, hub_tstamp now) {
  advance(h, now);
  if (h->shut_down) {
    return 0;
  }
  if (eff_reserve(h, 2 * h->nconns_open + h->nsubs + 1 + h->norphans) != 0) {
    return HUB_ERR_NOMEM;
  }
  if (HUB_MUTANT != 5) {
    orphans_delete(h);
  }
  while (!link_empty(&h->orphans)) {
    orphan_free(h, CONTAINER_OF(h->orphans.next, hub_orphan, link));
  }
  while (!link_empty(&h->conns)) {
    conn_close(h, CONTAINER_OF(h->conns.next, hub_conn, all),
               HUB_CLOSE_SHUTDOWN);
  }
  if (h->cfg.registry && HUB_MUTANT != 5) {
    eff_name(h, HUB_EFF_REG_DEL, h->instance_key);
  }
  h->shut_down = 1;
  return 0;
}

/* ---------------------------------------------------------- queries */

void hub_get_stats(const hub *h, hub_stats *st) {
  *st = h->st;
  st->conns = h->nconns_open;
  st->subscriptions = h->nsubs;
  st->channels = h->nchannels;
  st->bp_subscriptions = h->nbp;
}

int hub_bp_is_up(const hub *h) {
  return h->bp_up;
}

const char *hub_instance_id(const hub *h) {
  return h->instance_id;
}

size_t hub_channel_subscribers(const hub *h, const char *channel,
                               size_t channel_len) {
  const hub_topic *t = topic_find(h, channel, channel_len);
  return t ? t->nsubs : 0;
}

void hub_foreach_channel(const hub *h,
                         void (*cb)(void *arg, const char *channel,
                                    size_t channel_len, size_t subscribers),
                         void *arg) {
  const hub_link *l;
  for (l = h->topics.next; l != &h->topics; l = l->next) {
    const hub_topic *t = CONTAINER_OF(l, hub_topic, all);
    if (t->nsubs > 0) {
      cb(arg, (const char *)t->name->data, t->name->len, t->nsubs);
    }
  }
}

int hub_conn_backlog(const hub *h, hub_conn_id id, size_t *msgs,
                     size_t *bytes) {
  const hub_conn *c = conn_find(h, id);
  if (c == NULL) {
    return HUB_ERR_UNKNOWN_CONN;
  }
  *msgs = (size_t)c->q_msgs;
  *bytes = (size_t)c->q_bytes;
  return 0;
}

#define CHECK(cond, text)                                                      \
  do {                                                                         \
    if (!(cond)) {                                                             \
      *why = text;                                                             \
      return -1;                                                               \
    }                                                                          \
  } while (0)

static int check_sorted(const hub_link *head, size_t off, const char **why) {
  const hub_link *l;
  hub_tstamp prev = 0;
  for (l = head->next; l != head; l = l->next) {
    hub_tstamp t = *(const hub_tstamp *)(const void *)((const char *)l + off);
    CHECK(t >= prev, "timer list out of order");
    prev = t;
  }
  return 0;
}

int hub_check(const hub *h, const char **why) {
  const hub_link *l, *m;
  size_t ntopics = 0, nsubs = 0, nchannels = 0, nbp = 0, nopen = 0, i;
  size_t nconns = 0;

  for (l = h->topics.next; l != &h->topics; l = l->next) {
    const hub_topic *t = CONTAINER_OF(l, hub_topic, all);
    size_t n = 0, nw = 0;
    ntopics++;
    CHECK(topic_find(h, (const char *)t->name->data, t->name->len) == t,
          "topic not in table");
    for (m = t->acked.next; m != &t->acked; m = m->next) {
      const hub_sub *s = CONTAINER_OF(m, hub_sub, topic_link);
      CHECK(s->acked && s->topic == t && s->nframes % 2 == 0, "bad acked sub");
      CHECK(s->nframes == 0 || (h->bp_up && !t->confirmed),
            "repeat subscribe waiting on a settled subscription");
      nw += s->nframes > 0;
      CHECK(!s->conn->closing, "closing connection still subscribed");
      n++;
    }
    for (m = t->pending.next; m != &t->pending; m = m->next) {
      const hub_sub *s = CONTAINER_OF(m, hub_sub, topic_link);
      CHECK(!s->acked && s->topic == t && s->nframes >= 2 &&
              s->nframes % 2 == 0,
            "bad pending sub");
      CHECK(!s->conn->closing, "closing connection still subscribed");
      n++;
    }
    CHECK(n - list_len(&t->pending) == t->nacked, "topic acked count");
    CHECK(nw == t->nwaiting, "topic waiting count");
    CHECK(n == t->nsubs, "topic subscriber count");
    CHECK(t->nsubs > 0 || t->inflight > 0, "idle topic kept");
    if (!h->bp_up) {
      CHECK(!t->bp_subscribed && !t->confirmed && t->inflight == 0,
            "backplane state while down");
      CHECK(link_empty(&t->pending), "pending subscriber while down");
    } else {
      CHECK(t->nsubs == 0 || t->bp_subscribed || HUB_MUTANT == 4,
            "subscribed topic without a backplane subscription");
      CHECK(!t->confirmed || (t->bp_subscribed && t->inflight == 0),
            "confirmed without a settled subscription");
      CHECK(!t->confirmed || link_empty(&t->pending),
            "pending subscriber on a confirmed topic");
      CHECK(!t->bp_subscribed || t->confirmed || t->inflight > 0,
            "subscription neither confirmed nor in flight");
    }
    nsubs += t->nsubs;
    nchannels += t->nsubs > 0;
    nbp += t->bp_subscribed != 0;
  }
  CHECK(ntopics == h->ntopics && ntopics == h->topic_tab.n, "topic count");
  CHECK(nsubs == h->nsubs, "subscription count");
  CHECK(nchannels == h->nchannels, "channel count");
  CHECK(nbp == h->nbp, "backplane subscription count");

  for (i = 0; i < h->conn_tab.nb; i++) {
    const hub_hnode *p;
    for (p = h->conn_tab.b[i]; p != NULL; p = p->next) {
      const hub_conn *c = CONTAINER_OF(p, hub_conn, hnode);
      size_t n = 0;
      nconns++;
      CHECK(conn_find(h, c->id) == c, "connection not in table");
      CHECK(c->evict == 0 && c->evict_next == NULL, "eviction left marked");
      for (m = c->subs.next; m != &c->subs; m = m->next) {
        CHECK(CONTAINER_OF(m, hub_sub, conn_link)->conn == c, "sub owner");
        n++;
      }
      CHECK(n == c->nsubs, "connection subscription count");
      if (c->closing) {
        CHECK(c->nsubs == 0 && !link_linked(&c->all) &&
                !link_linked(&c->ping_link) && !link_linked(&c->pong_link) &&
                !link_linked(&c->write_link) && !c->reg_live,
              "closing connection still active");
      } else {
        nopen++;
        CHECK(link_linked(&c->all) && link_linked(&c->ping_link) &&
                link_linked(&c->pong_link),
              "open connection off a list");
        CHECK((c->q_msgs > 0 || c->q_bytes > 0) == link_linked(&c->write_link),
              "write list membership");
        CHECK(HUB_MUTANT == 3 || (c->q_msgs <= h->cfg.max_queue_msgs &&
                                  c->q_bytes <= h->cfg.max_queue_bytes),
              "queue past its limit");
        CHECK(h->shut_down || c->reg_live == (h->cfg.registry != 0),
              "registry key state");
      }
    }
  }
  CHECK(nconns == h->conn_tab.n, "connection table count");
  CHECK(nopen == h->nconns_open && list_len(&h->conns) == nopen,
        "open connection count");
  if (check_sorted(&h->pings,
                   offsetof(hub_conn, next_ping) -
                     offsetof(hub_conn, ping_link),
                   why) != 0 ||
      check_sorted(&h->pongs,
                   offsetof(hub_conn, last_pong) -
                     offsetof(hub_conn, pong_link),
                   why) != 0 ||
      check_sorted(&h->writes,
                   offsetof(hub_conn, last_progress) -
                     offsetof(hub_conn, write_link),
                   why) != 0) {
    return -1;
  }
  if (check_sorted(&h->orphans, offsetof(hub_orphan, expires), why) != 0) {
    return -1;
  }
  CHECK(list_len(&h->orphans) == h->norphans, "orphan count");
  CHECK(h->eff_head <= h->eff_tail && h->eff_tail <= h->eff_cap,
        "effect queue bounds");
  *why = NULL;
  return 0;
}
