/*
 * hub_conn.h - connections (hub_conn.c): open and close, send
 * accounting and slow-consumer eviction, and the ping, pong and write
 * timers.  Internal to core/.
 */
#ifndef HUB_CONN_H
#define HUB_CONN_H

hub_conn *hub_conn_find(const hub *h, hub_conn_id id);

/* The connections' term of the fact reserve (hub_effq.h). */
size_t hub_conn_fact_cost(const hub *h);

/* Effects a close of |c| may emit: CLOSE, REG_DEL, an UNSUBSCRIBE per
   subscription. */
static inline size_t hub_conn_close_cost(const hub_conn *c) {
  return 2 + c->nsubs;
}

/* hub_on_conn_open, hub_on_conn_pong, hub_on_conn_written and
   hub_on_conn_closed, after advancing the clock. */
/* |auth| NULL: authentication off (hub_on_conn_open_auth checked it). */
int hub_conn_open(hub *h, hub_conn_id *id, const char *remote_addr,
                  const hub_auth *auth, void *user);
void hub_conn_pong(hub *h, hub_conn_id id);
void hub_conn_written(hub *h, hub_conn_id id, size_t msgs, size_t bytes);
void hub_conn_closed(hub *h, hub_conn_id id);

/* The core closes |c|.  Needs hub_conn_close_cost(c) reserved effects. */
void hub_conn_close(hub *h, hub_conn *c, hub_close_kind kind);

/* CLOSE 1001 to every open connection, in open order (hub_shutdown). */
void hub_conn_close_all(hub *h);

/*
 * Queues |frame| for |c| (taking a reference), or finds that it would
 * pass the connection's limits.  With |deferred| NULL such a connection
 * is closed at once (needs hub_conn_close_cost(c) + 1 reserved effects);
 * otherwise it is marked and chained on *deferred for the caller to close
 * after its loop (hub_conn_evict_deferred), and later sends to it in the
 * same loop are skipped.  Inline: the fan-out calls it per subscriber.
 */
static inline void hub_conn_send(hub *h, hub_conn *c, hub_buf *frame,
                                 hub_conn **deferred) {
  hub_effect *e;
  hub_close_kind kind;

  if (c->closing || c->evict) {
    return;
  }
  if (c->q_msgs + 1 > h->cfg.max_queue_msgs) {
    kind = HUB_CLOSE_SLOW_MSGS;
    goto over;
  }
  if (c->q_bytes + frame->len > h->cfg.max_queue_bytes) {
    kind = HUB_CLOSE_SLOW_BYTES;
    goto over;
  }
  if (c->q_msgs == 0) {
    c->last_progress = h->now;
    hub_link_push_tail(&h->writes, &c->write_link);
  }
  c->q_msgs++;
  c->q_bytes += frame->len;
  e = hub_effq_push_conn(h, HUB_EFF_SEND, c);
  hub_buf_ref(frame);
  e->buf = frame;
  return;

over:
  if (deferred == NULL) {
    hub_conn_close(h, c, kind);
  } else {
    c->evict = (int)kind + 1;
    c->evict_next = *deferred;
    *deferred = c;
  }
}

/* Closes the connections hub_conn_send deferred, in the order they were
   found. */
void hub_conn_evict_deferred(hub *h, hub_conn *list);

/* Sends a one-off reply to |c|, evicting it if it does not fit (needs
   hub_conn_close_cost(c) + 1 reserved effects).  Takes over the caller's
   reference to |frame|. */
void hub_conn_reply(hub *h, hub_conn *c, hub_buf *frame);

/* The connections' timers: the earliest deadline (or HUB_TSTAMP_NONE),
   and pong timeouts, write timeouts and pings due at h->now, in that
   order.  hub_conn_handle_expiry returns 0, or HUB_ERR_NOMEM with what it
   did in the effects and the rest still due. */
hub_tstamp hub_conn_get_expiry(const hub *h);
int hub_conn_handle_expiry(hub *h);

/* Frees every connection, open or closing, emitting nothing (hub_del). */
void hub_conn_free_all(hub *h);

#endif /* HUB_CONN_H */
