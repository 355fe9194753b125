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
