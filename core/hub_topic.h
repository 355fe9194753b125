/*
 * hub_topic.h - channels ("topics") and subscriptions (hub_topic.c):
 * subscribe, unsubscribe, publish, the fan-out, acknowledgement, and the
 * channels' backplane subscription state.  Internal to core/.
 */
#ifndef HUB_TOPIC_H
#define HUB_TOPIC_H

hub_topic *hub_topic_find(const hub *h, const char *ch, size_t len);

/* The subscriptions' term of the fact reserve (hub_effq.h). */
size_t hub_topic_fact_cost(const hub *h);

/* Client requests from open connection |c| (|c| NULL for publish:
   hub_publish).  Each returns 0 or HUB_ERR_NOMEM, having then done
   nothing. */
int hub_topic_subscribe(hub *h, hub_conn *c, const hub_req *req);
int hub_topic_unsubscribe(hub *h, hub_conn *c, const hub_req *req);
int hub_topic_publish(hub *h, hub_conn *c, const hub_req *req);

/* Removes |s| from its topic and connection.  Emits an UNSUBSCRIBE if it
   was the topic's last subscriber (from the subscription's term of the
   reserve). */
void hub_sub_release(hub *h, hub_sub *s);
/* Frees |c|'s subscriptions, emitting nothing (hub_del). */
void hub_sub_free_all(hub *h, hub_conn *c);

/* Backplane events (after advancing the clock).  hub_topic_on_bp_msg
   returns 0 or HUB_ERR_NOMEM (nothing delivered). */
int hub_topic_on_bp_msg(hub *h, const char *channel, size_t channel_len,
                        const uint8_t *data, size_t len);
void hub_topic_on_bp_subscribed(hub *h, const char *channel,
                                size_t channel_len);
/* The backplane is up: re-subscribes every channel with local
   subscribers; needs hub_topic_bp_up_cost(h) reserved effects.  Down:
   forgets every backplane subscription and acknowledges every pending
   subscriber, from the fact reserve. */
size_t hub_topic_bp_up_cost(const hub *h);
void hub_topic_bp_up(hub *h);
void hub_topic_bp_down(hub *h);

/* The fan-out for other modules (hub_history.c): delivers |frame| to
   every acknowledged subscriber of |t|; needs
   hub_topic_deliver_cost(h, t->nacked) reserved effects. */
size_t hub_topic_deliver_cost(const hub *h, size_t n);
void hub_topic_deliver(hub *h, hub_topic *t, hub_buf *frame);

/* Acknowledges pending |s| (hub_hred.c, once its read answered): it
   joins the live subscribers; its frames are freed. */
void hub_topic_ack_one(hub *h, hub_sub *s);

/* Frees every topic, emitting nothing (hub_del, after the connections). */
void hub_topic_free_all(hub *h);

#endif /* HUB_TOPIC_H */
