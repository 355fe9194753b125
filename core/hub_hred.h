/*
 * hub_hred.h - history with an external backplane (hub_hred.c): the
 * recovery state machine per channel (buffer -> subscribe -> read ->
 * merge/dedupe -> release), gap detection and gap fill, publishes that
 * wait for the backplane's offset, and the HTTP API's waiting requests.
 * Internal to core/.
 */
#ifndef HUB_HRED_H
#define HUB_HRED_H

/* hub_api.c's bodies, shared with hub_hred.c. */
hub_buf *hub_api_error_body(hub *h, const char *reason);
hub_buf *hub_api_ok_body(hub *h, uint64_t off);
/* Queues an API_REPLY (takes over |body|); needs one reserved effect. */
void hub_api_reply(hub *h, uint64_t req, uint16_t status, hub_buf *body);

/* A publish to history channel |r->channel| on an external backplane,
   from |c| (a WebSocket publish) or, |c| NULL, from the HTTP API
   (|api_req| the driver's number).  0 or HUB_ERR_NOMEM. */
int hub_hred_publish(hub *h, hub_conn *c, uint64_t api_req, const hub_req *r);
/* GET /history on an external backplane.  0 or HUB_ERR_NOMEM. */
int hub_hred_api_history(hub *h, uint64_t api_req, const char *ch, size_t len,
                         uint64_t since, uint64_t limit);

typedef struct hub_htopic hub_htopic;
typedef struct hub_hwait hub_hwait;

/* 1 if |ch| keeps history in the external backplane. */
int hub_hred_on(const hub *h, const char *ch, size_t len);
void hub_hred_init(hub *h);
int hub_hred_check(const hub *h, const char **why);

/* A history channel's state, made with its topic. */
int hub_hred_topic_init(hub *h, hub_topic *t);
void hub_hred_topic_free(hub *h, hub_topic *t);

/* A subscribe's waiter: made (with its `since` and id) before anything
   changes, linked to its pending subscription, freed when it is
   answered or released. */
hub_hwait *hub_hred_wait_new(hub *h, const hub_req *req);
void hub_hred_wait_abort(hub *h, hub_hwait *w);
void hub_hred_wait_link(hub *h, hub_sub *s, hub_hwait *w);
void hub_hred_wait_free(hub *h, hub_sub *s);
/* A repeat subscribe on pending |s|: its id joins the waiter. */
int hub_hred_wait_repeat(hub *h, hub_sub *s, const hub_req *req);
/* The "subscribed" reply for a repeat subscribe on a live subscription
   (the channel's current offset and epoch). */
hub_buf *hub_hred_live_reply(hub *h, hub_topic *t, const hub_req *req);
/* Whether a new subscribe |req| on |t| is answered at once: the channel
   is live with no read in flight, and |req| has no since, or a since of
   the channel's epoch whose every later offset the ring holds
   (*nreplay of them).  Changes nothing. */
int hub_hred_ready(hub *h, hub_topic *t, const hub_req *req, size_t *nreplay);
/* Its "subscribed" reply: offset since (recovered) or top, the epoch. */
hub_buf *hub_hred_ready_reply(hub *h, hub_topic *t, const hub_req *req);
/* Sends |reply| (taking it over) and the last |nreplay| frames of the
   ring to |c|, whose subscription is live already; needs 1 + nreplay +
   hub_conn_close_cost(c) reserved effects. */
void hub_hred_ready_send(hub *h, hub_topic *t, hub_conn *c, hub_buf *reply,
                         size_t nreplay);
/* The ring's timer: the earliest deadline, and the rings due dropped
   (frees only). */
hub_tstamp hub_hred_get_expiry(const hub *h);
void hub_hred_expire(hub *h);
/* The channel has no live subscriber any more: the ring goes. */
void hub_hred_idle(hub *h, hub_topic *t);
/* Starts the read if one is due (needs one reserved effect); 1 if so. */
int hub_hred_maybe_read(hub *h, hub_topic *t);

/* A backplane message on history channel |t|: *plain set when it is not
   a `wshub:` payload (the caller delivers it without an offset).
   0 or HUB_ERR_NOMEM. */
int hub_hred_on_msg(hub *h, hub_topic *t, const uint8_t *data, size_t len,
                    int *plain);
/* The channel's SUBSCRIBE is confirmed (a fact: one effect from the
   topic's term). */
void hub_hred_confirmed(hub *h, hub_topic *t);
/* The backplane went down: the read and the buffer are dropped. */
void hub_hred_bp_down(hub *h, hub_topic *t);

/* The answers (hub.h). */
int hub_hred_on_hpublished(hub *h, uint64_t req, int ok, uint64_t offset,
                           const char *epoch, size_t epoch_len);
int hub_hred_on_hread(hub *h, uint64_t req, int ok, uint64_t offset,
                      const char *epoch, size_t epoch_len,
                      const hub_hentry *entries, size_t n);

/* The waiting requests' term of the fact reserve (hub_effq.h): one
   reply each. */
size_t hub_hred_fact_cost(const hub *h);
/* The backplane went down / the hub shuts down: every waiting request
   is answered (error / 503) from the reserve, and later answers are
   ignored. */
void hub_hred_fail_all(hub *h);
/* Frees everything, emitting nothing (hub_del). */
void hub_hred_free(hub *h);

#endif /* HUB_HRED_H */
