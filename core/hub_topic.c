/*
 * hub_topic.c - channels ("topics") and subscriptions: subscribe,
 * unsubscribe, publish, the fan-out, acknowledgement, and each channel's
 * backplane subscription state.
 *
 * The fan-out is the hot path: one frame, encoded once, is queued for
 * every acknowledged subscriber by hub_conn_send and hub_effq_push_conn,
 * both inline, so the loop makes no call per delivery beyond the
 * buffer's reference and allocates nothing.
 *
 * The fact reserve (hub_effq.h) holds, for the subscriptions, one effect
 * per subscription (the UNSUBSCRIBE its release may emit) and one per
 * subscribe request waiting for its reply (h->nreplies; the reply frames
 * themselves are built when the request is accepted).  With the
 * connections' term (CLOSE and REG_DEL of an evicted subscriber), that
 * is all hub_on_bp_subscribed and hub_on_bp_down can emit.
 */
#include "hub_int.h"

#include <string.h>

size_t hub_topic_fact_cost(const hub *h) {
  return h->nsubs + h->nreplies;
}

hub_topic *hub_topic_find(const hub *h, const char *ch, size_t len) {
  uint64_t hash = hub_hash_str(h->cfg.seed, ch, len);
  hub_hnode *p = hub_htab_chain(&h->topic_tab, hash);
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
  hub_htab_remove(&h->topic_tab, &t->hnode);
  hub_link_remove(&t->all);
  hub_hred_topic_free(h, t);
  hub_buf_unref(t->name);
  hub_mem_free(h->mem, t);
  h->ntopics--;
}

/* A new topic for |req|'s channel, not linked (topic_link links it). */
static hub_topic *topic_new(hub *h, const hub_req *req) {
  hub_topic *t = hub_mem_malloc(h->mem, sizeof(*t));
  hub_buf *name = hub_buf_new_copy(h->mem, req->channel, req->channel_len);
  if (t == NULL || name == NULL) {
    hub_mem_free(h->mem, t);
    hub_buf_unref(name);
    return NULL;
  }
  memset(t, 0, sizeof(*t));
  t->name = name;
  hub_link_init(&t->all);
  hub_link_init(&t->acked);
  hub_link_init(&t->pending);
  t->hnode.hash = hub_hash_str(h->cfg.seed, req->channel, req->channel_len);
  return t;
}

static void topic_link(hub *h, hub_topic *t) {
  hub_htab_insert(h->mem, &h->topic_tab, &t->hnode);
  hub_link_push_tail(&h->topics, &t->all);
  h->ntopics++;
}

/* The last local subscriber left (or the backplane state changed): drop
   the backplane subscription and the topic when nothing needs it. */
static void topic_idle(hub *h, hub_topic *t) {
  if (t->nsubs > 0) {
    return;
  }
  if (t->bp_subscribed) {
    hub_effq_push_name(h, HUB_EFF_BP_UNSUBSCRIBE, t->name);
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
  h->nreplies -= s->nframes / 2;
  hub_mem_free(h->mem, s->frames);
  s->frames = NULL;
  s->nframes = 0;
}

void hub_sub_release(hub *h, hub_sub *s) {
  hub_topic *t = s->topic;
  hub_conn *c = s->conn;

  if (s->acked) {
    t->nacked--;
    if (s->nframes > 0) {
      t->nwaiting--;
    }
    if (t->nacked == 0 && t->ht != NULL) {
      hub_hred_idle(h, t);
    }
  }
  hub_link_remove(&s->topic_link);
  hub_link_remove(&s->conn_link);
  sub_free_frames(h, s);
  hub_hred_wait_free(h, s);
  hub_mem_free(h->mem, s);
  c->nsubs--;
  t->nsubs--;
  h->nsubs--;
  if (t->nsubs == 0) {
    h->nchannels--;
    topic_idle(h, t);
  }
}

void hub_sub_free_all(hub *h, hub_conn *c) {
  while (!hub_link_empty(&c->subs)) {
    hub_sub *s = CONTAINER_OF(c->subs.next, hub_sub, conn_link);
    hub_link_remove(&s->conn_link);
    hub_link_remove(&s->topic_link);
    sub_free_frames(h, s);
    hub_hred_wait_free(h, s);
    hub_mem_free(h->mem, s);
  }
}

void hub_topic_free_all(hub *h) {
  while (!hub_link_empty(&h->topics)) {
    hub_topic *t = CONTAINER_OF(h->topics.next, hub_topic, all);
    hub_link_remove(&t->all);
    hub_hred_topic_free(h, t);
    hub_buf_unref(t->name);
    hub_mem_free(h->mem, t);
  }
}

/* ---------------------------------------------------------- fan-out */

/* Upper bound of effects for a fan-out to |n| subscribers: a SEND each,
   and for each an eviction's CLOSE and REG_DEL, plus the UNSUBSCRIBEs
   of topics emptied, at most one per topic. */
static size_t fanout_cost(const hub *h, size_t n) {
  return 3 * n + h->ntopics + 2;
}

/* Delivers |frame| to every acknowledged subscriber of |t|.  Needs
   fanout_cost(h, subscribers) reserved effects. */
static void fanout(hub *h, hub_topic *t, hub_buf *frame) {
  hub_conn *deferred = NULL;
  hub_link *l;

  for (l = t->acked.next; l != &t->acked; l = l->next) {
    hub_sub *s = CONTAINER_OF(l, hub_sub, topic_link);
    hub_conn_send(h, s->conn, frame, &deferred);
    if (!s->conn->evict) {
      h->st.msgs_out++;
    }
  }
  hub_conn_evict_deferred(h, deferred);
}

size_t hub_topic_deliver_cost(const hub *h, size_t n) {
  return fanout_cost(h, n);
}

void hub_topic_deliver(hub *h, hub_topic *t, hub_buf *frame) {
  fanout(h, t, frame);
}

/* ---------------------------------------------------- acknowledgement */

/* What acknowledging may emit, from the fact reserve: each waiting reply
   (one SEND per request, h->nreplies in all), and each connection evicted
   by its replies (CLOSE and REG_DEL, at most once per connection) with
   the UNSUBSCRIBEs of its subscriptions. */
static size_t ack_spend(const hub *h) {
  return h->nreplies + 2 * h->nconns_open + h->nsubs;
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
      hub_conn_send(h, s->conn, s->frames[i], deferred);
    }
    sub_free_frames(h, s);
    t->nwaiting--;
  }
  while (!hub_link_empty(&t->pending)) {
    hub_sub *s = CONTAINER_OF(t->pending.next, hub_sub, topic_link);
    uint32_t i;
    hub_link_remove(&s->topic_link);
    hub_link_push_tail(&t->acked, &s->topic_link);
    s->acked = 1;
    t->nacked++;
    for (i = 0; i < s->nframes; i += 2) {
      hub_conn_send(h, s->conn, s->frames[i], deferred);
    }
    sub_free_frames(h, s);
  }
}

void hub_topic_ack_one(hub *h, hub_sub *s) {
  hub_topic *t = s->topic;
  HUB_ASSERT(!s->acked);
  hub_link_remove(&s->topic_link);
  hub_link_push_tail(&t->acked, &s->topic_link);
  s->acked = 1;
  t->nacked++;
  sub_free_frames(h, s);
}

/* ---------------------------------------------------------- requests */

/* Effects a subscribe may emit: its reply, a BP_SUBSCRIBE, an eviction
   by the reply (hub_conn_close_cost), and the fact reserve's growth: the
   new subscription's term and its waiting reply's. */
static size_t subscribe_cost(const hub_conn *c) {
  return 2 + hub_conn_close_cost(c) + 1 + 2;
}

/* A subscribe to a history channel of the external backplane: pending
   until a read answers (hub_hred.c), whose answer builds the reply.
   Needs subscribe_cost(c) reserved; reserves the read and the new
   channel's term itself. */
/* A subscribe to live history channel |t| answered at once
   (hub_hred_ready): live from now on, its reply and the |nreplay|
   frames of the ring it missed sent.  Needs subscribe_cost(c) reserved
   and reserves the replay. */
static int subscribe_hred_ready(hub *h, hub_conn *c, const hub_req *req,
                                hub_topic *t, size_t nreplay) {
  hub_buf *ok;
  hub_sub *s;

  if (hub_effq_reserve(h, subscribe_cost(c) + nreplay) != 0) {
    return HUB_ERR_NOMEM;
  }
  ok = hub_hred_ready_reply(h, t, req);
  s = hub_mem_malloc(h->mem, sizeof(*s));
  if (ok == NULL || s == NULL) {
    hub_buf_unref(ok);
    hub_mem_free(h->mem, s);
    return HUB_ERR_NOMEM;
  }
  memset(s, 0, sizeof(*s));
  hub_link_init(&s->topic_link);
  hub_link_init(&s->conn_link);
  s->conn = c;
  s->topic = t;
  s->acked = 1;
  hub_link_push_tail(&c->subs, &s->conn_link);
  c->nsubs++;
  h->nsubs++;
  t->nsubs++;
  t->nacked++;
  hub_link_push_tail(&t->acked, &s->topic_link);
  hub_hred_ready_send(h, t, c, ok, nreplay);
  return 0;
}

static int subscribe_hred(hub *h, hub_conn *c, const hub_req *req, hub_topic *t,
                          hub_sub *s) {
  hub_buf *cancel, **frames;
  hub_hwait *w;
  int fresh = t == NULL;
  size_t nreplay;

  if (hub_effq_reserve(h, subscribe_cost(c) + 2) != 0) {
    return HUB_ERR_NOMEM;
  }
  if (s != NULL && s->acked) {
    /* Live: answered at once with where the channel is. */
    hub_buf *ok = hub_hred_live_reply(h, t, req);
    if (ok == NULL) {
      return HUB_ERR_NOMEM;
    }
    hub_conn_reply(h, c, ok);
    return 0;
  }
  if (s == NULL && t != NULL && hub_hred_ready(h, t, req, &nreplay)) {
    return subscribe_hred_ready(h, c, req, t, nreplay);
  }
  cancel = hub_frame_error(h, req->id, req->id_len, "subscription cancelled");
  if (cancel == NULL) {
    return HUB_ERR_NOMEM;
  }
  if (s != NULL) {
    frames =
      hub_mem_realloc(h->mem, s->frames, (s->nframes + 2) * sizeof(*frames));
    if (frames == NULL) {
      hub_buf_unref(cancel);
      return HUB_ERR_NOMEM;
    }
    s->frames = frames;
    if (hub_hred_wait_repeat(h, s, req) != 0) {
      hub_buf_unref(cancel);
      return HUB_ERR_NOMEM;
    }
    s->frames[s->nframes++] = NULL;
    s->frames[s->nframes++] = cancel;
    h->nreplies++;
    return 0;
  }
  s = hub_mem_malloc(h->mem, sizeof(*s));
  w = hub_hred_wait_new(h, req);
  if (s != NULL) {
    memset(s, 0, sizeof(*s));
    s->frames = hub_mem_malloc(h->mem, 2 * sizeof(*s->frames));
  }
  if (fresh && s != NULL && s->frames != NULL && w != NULL) {
    t = topic_new(h, req);
    if (t != NULL && hub_hred_topic_init(h, t) != 0) {
      hub_buf_unref(t->name);
      hub_mem_free(h->mem, t);
      t = NULL;
    }
  }
  if (s == NULL || s->frames == NULL || w == NULL || t == NULL) {
    if (s != NULL) {
      hub_mem_free(h->mem, s->frames);
    }
    hub_mem_free(h->mem, s);
    hub_hred_wait_abort(h, w);
    hub_buf_unref(cancel);
    if (fresh && t != NULL) {
      hub_hred_topic_free(h, t);
      hub_buf_unref(t->name);
      hub_mem_free(h->mem, t);
    }
    return HUB_ERR_NOMEM;
  }
  HUB_ASSERT(t->ht != NULL);
  if (fresh) {
    topic_link(h, t);
  }
  hub_link_init(&s->topic_link);
  hub_link_init(&s->conn_link);
  s->conn = c;
  s->topic = t;
  hub_link_push_tail(&c->subs, &s->conn_link);
  c->nsubs++;
  h->nsubs++;
  if (t->nsubs++ == 0) {
    h->nchannels++;
  }
  hub_link_push_tail(&t->pending, &s->topic_link);
  s->frames[0] = NULL;
  s->frames[1] = cancel;
  s->nframes = 2;
  h->nreplies++;
  hub_hred_wait_link(h, s, w);
  if (h->bp_up && !t->bp_subscribed) {
    hub_effq_push_name(h, HUB_EFF_BP_SUBSCRIBE, t->name);
    t->bp_subscribed = 1;
    t->confirmed = 0;
    t->inflight++;
    h->nbp++;
  }
  (void)hub_hred_maybe_read(h, t);
  return 0;
}

int hub_topic_subscribe(hub *h, hub_conn *c, const hub_req *req) {
  hub_topic *t = hub_topic_find(h, req->channel, req->channel_len);
  hub_sub *s = t ? conn_find_sub(c, t) : NULL;
  hub_buf *ok, *cancel = NULL;
  hub_buf **frames;
  hub_hist_sub hs;
  int effective;

  if (hub_effq_reserve(h, subscribe_cost(c)) != 0) {
    return HUB_ERR_NOMEM;
  }
  if (s == NULL && c->nsubs >= h->cfg.max_subs_per_conn) {
    hub_buf *f =
      hub_frame_error(h, req->id, req->id_len, "too many subscriptions");
    if (f == NULL) {
      return HUB_ERR_NOMEM;
    }
    hub_conn_reply(h, c, f);
    return 0;
  }
  if (hub_hred_on(h, req->channel, req->channel_len)) {
    return subscribe_hred(h, c, req, t, s);
  }
  /* The reply (with offset and epoch on a history channel) and the
     frames a recovery replays after it (hub_history.c). */
  hub_hist_expire(h);
  if (hub_hist_sub_prepare(h, req, s != NULL, &hs) != 0) {
    return HUB_ERR_NOMEM;
  }
  if (hs.nreplay > 0 &&
      hub_effq_reserve(h, subscribe_cost(c) + hs.nreplay) != 0) {
    hub_hist_sub_abort(h, &hs);
    return HUB_ERR_NOMEM;
  }
  ok = hs.reply;
  hs.reply = NULL;
  effective = !h->bp_up || (t != NULL && t->confirmed);
  if (s != NULL && s->acked && effective) {
    hub_conn_reply(h, c, ok);
    hub_hist_sub_commit(h, c, &hs);
    return 0;
  }
  if (s != NULL || !effective) {
    /* The subscription will wait for the backplane: build the reply for
       either outcome now, so that the outcome never allocates. */
    cancel = hub_frame_error(h, req->id, req->id_len, "subscription cancelled");
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
    h->nreplies++;
    hub_hist_sub_commit(h, c, &hs);
    return 0;
  }

  /* A new subscription: allocate everything, then link it in. */
  s = hub_mem_malloc(h->mem, sizeof(*s));
  if (s == NULL) {
    goto nomem;
  }
  memset(s, 0, sizeof(*s));
  hub_link_init(&s->topic_link);
  hub_link_init(&s->conn_link);
  if (!effective) {
    s->frames = hub_mem_malloc(h->mem, 2 * sizeof(*s->frames));
    if (s->frames == NULL) {
      hub_mem_free(h->mem, s);
      goto nomem;
    }
  }
  if (t == NULL) {
    t = topic_new(h, req);
    if (t == NULL) {
      hub_mem_free(h->mem, s->frames);
      hub_mem_free(h->mem, s);
      goto nomem;
    }
    topic_link(h, t);
  }
  s->conn = c;
  s->topic = t;
  hub_link_push_tail(&c->subs, &s->conn_link);
  c->nsubs++;
  h->nsubs++;
  if (t->nsubs++ == 0) {
    h->nchannels++;
  }
  if (h->bp_up && !t->bp_subscribed) {
    hub_effq_push_name(h, HUB_EFF_BP_SUBSCRIBE, t->name);
    t->bp_subscribed = 1;
    t->confirmed = 0;
    t->inflight++;
    h->nbp++;
  }
  if (effective) {
    s->acked = 1;
    t->nacked++;
    hub_link_push_tail(&t->acked, &s->topic_link);
    hub_buf_unref(cancel);
    hub_conn_reply(h, c, ok);
  } else {
    hub_link_push_tail(&t->pending, &s->topic_link);
    s->frames[0] = ok;
    s->frames[1] = cancel;
    s->nframes = 2;
    h->nreplies++;
  }
  hub_hist_sub_commit(h, c, &hs);
  return 0;

nomem:
  hub_buf_unref(ok);
  hub_buf_unref(cancel);
  hub_hist_sub_abort(h, &hs);
  return HUB_ERR_NOMEM;
}

int hub_topic_unsubscribe(hub *h, hub_conn *c, const hub_req *req) {
  hub_topic *t = hub_topic_find(h, req->channel, req->channel_len);
  hub_sub *s = t ? conn_find_sub(c, t) : NULL;
  hub_buf *ok;
  uint32_t i;

  /* The cancelled requests' errors, the UNSUBSCRIBE, the reply, and an
     eviction by any of those replies. */
  if (hub_effq_reserve(h, (s ? s->nframes / 2 : 0) + 2 +
                            hub_conn_close_cost(c)) != 0) {
    return HUB_ERR_NOMEM;
  }
  ok = hub_frame_reply(h, "unsubscribed", req->channel, req->channel_len,
                       req->id, req->id_len);
  if (ok == NULL) {
    return HUB_ERR_NOMEM;
  }
  if (s != NULL) {
    /* Subscribe requests still waiting on this subscription are answered
       first, so every request gets exactly one reply. */
    for (i = 1; i < s->nframes; i += 2) {
      hub_conn_send(h, c, s->frames[i], NULL);
      if (c->closing) {
        /* Evicted by that reply: the eviction released (and freed) |s|. */
        s = NULL;
        break;
      }
    }
    if (s != NULL) {
      hub_sub_release(h, s);
    }
  }
  hub_conn_reply(h, c, ok);
  return 0;
}

/* Publishes |req| (channel and data) from |c|, or from outside when |c|
   is NULL. */
int hub_topic_publish(hub *h, hub_conn *c, const hub_req *req) {
  hub_topic *t = hub_topic_find(h, req->channel, req->channel_len);
  hub_buf *reply = NULL;

  if (hub_hist_on(h, req->channel, req->channel_len)) {
    if (h->cfg.backplane) {
      /* Through the backplane's history (UINT64_MAX: hub_publish, which
         owes no API reply). */
      return hub_hred_publish(h, c, UINT64_MAX, req);
    }
    return hub_hist_publish(h, c, req);
  }
  if (c != NULL) {
    reply = hub_frame_reply(h, "published", req->channel, req->channel_len,
                            req->id, req->id_len);
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

    /* The BP_PUBLISH, and the reply with an eviction by it. */
    if (hub_effq_reserve(h, 1 + (c ? 1 + hub_conn_close_cost(c) : 0)) != 0) {
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
    e = hub_effq_push(h, HUB_EFF_BP_PUBLISH);
    e->name = name;
    e->buf = data;
  } else {
    size_t n = t ? t->nacked : 0;
    hub_buf *frame = NULL;

    /* The fan-out, and the reply with an eviction by it. */
    if (hub_effq_reserve(h, fanout_cost(h, n) +
                              (c ? 1 + hub_conn_close_cost(c) : 0)) != 0) {
      goto nomem;
    }
    if (n > 0) {
      frame = hub_frame_message(h, req->channel, req->channel_len, req->data,
                                req->data_len, 0);
      if (frame == NULL) {
        goto nomem;
      }
    }
    if (c != NULL) {
      hub_conn_reply(h, c, reply);
      reply = NULL;
    }
    /* The reply may have evicted the publisher and so emptied the
       topic: look it up again. */
    t = hub_topic_find(h, req->channel, req->channel_len);
    if (t != NULL && frame != NULL) {
      fanout(h, t, frame);
    }
    hub_buf_unref(frame);
  }
  h->st.publishes++;
  if (reply != NULL) {
    hub_conn_reply(h, c, reply);
  }
  return 0;

nomem:
  hub_buf_unref(reply);
  return HUB_ERR_NOMEM;
}

/* --------------------------------------------------------- backplane */

int hub_topic_on_bp_msg(hub *h, const char *channel, size_t channel_len,
                        const uint8_t *data, size_t len) {
  hub_topic *t = hub_topic_find(h, channel, channel_len);
  hub_json_kind kind;
  hub_buf *frame;
  int as_string;

  if (t != NULL && t->ht != NULL) {
    int plain, rv = hub_hred_on_msg(h, t, data, len, &plain);
    if (!plain) {
      return rv;
    }
  }
  if (t == NULL || hub_link_empty(&t->acked)) {
    return 0;
  }
  if (hub_effq_reserve(h, fanout_cost(h, t->nacked)) != 0) {
    return HUB_ERR_NOMEM;
  }
  /* Anyone can PUBLISH into Redis; what is not JSON is relayed as a JSON
     string rather than breaking every subscriber's parser. */
  as_string =
    hub_json_parse((const char *)data, len, &kind, NULL, 0, NULL) != 0;
  frame = hub_frame_message(h, channel, channel_len, (const char *)data, len,
                            as_string);
  if (frame == NULL) {
    return HUB_ERR_NOMEM;
  }
  fanout(h, t, frame);
  hub_buf_unref(frame);
  return 0;
}

void hub_topic_on_bp_subscribed(hub *h, const char *channel,
                                size_t channel_len) {
  hub_topic *t = hub_topic_find(h, channel, channel_len);
  hub_conn *deferred = NULL;

  if (t == NULL || t->inflight == 0) {
    return; /* a confirmation from before the backplane went down */
  }
  hub_effq_spend(h, ack_spend(h));
  t->inflight--;
  if (t->inflight > 0) {
    return; /* an older SUBSCRIBE's confirmation */
  }
  if (t->nsubs == 0) {
    topic_idle(h, t);
    return;
  }
  HUB_ASSERT(t->bp_subscribed);
  t->confirmed = 1;
  if (t->ht != NULL) {
    /* A history channel's subscribers wait for the read. */
    hub_hred_confirmed(h, t);
    return;
  }
  ack_pending(h, t, &deferred);
  hub_conn_evict_deferred(h, deferred);
}

size_t hub_topic_bp_up_cost(const hub *h) {
  return h->ntopics;
}

void hub_topic_bp_up(hub *h) {
  hub_link *l;

  h->bp_up = 1;
  for (l = h->topics.next; l != &h->topics; l = l->next) {
    hub_topic *t = CONTAINER_OF(l, hub_topic, all);
    HUB_ASSERT(!t->bp_subscribed && t->inflight == 0);
    if (t->nsubs > 0) {
      hub_effq_push_name(h, HUB_EFF_BP_SUBSCRIBE, t->name);
      t->bp_subscribed = 1;
      t->confirmed = 0;
      t->inflight = 1;
      h->nbp++;
    }
  }
}

void hub_topic_bp_down(hub *h) {
  hub_link *l, *next;
  hub_conn *deferred = NULL;

  /* No UNSUBSCRIBE follows (the backplane is down), so the replies and
     the evictions are all. */
  hub_effq_spend(h, ack_spend(h));
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
    if (t->ht != NULL) {
      /* Its subscribers are answered once the backplane is back (their
         offsets live there). */
      hub_hred_bp_down(h, t);
      continue;
    }
    ack_pending(h, t, &deferred);
  }
  hub_conn_evict_deferred(h, deferred);
  for (l = h->topics.next; l != &h->topics; l = next) {
    hub_topic *t = CONTAINER_OF(l, hub_topic, all);
    next = l->next;
    if (t->nsubs == 0) {
      topic_free(h, t);
    }
  }
}
