/*
 * hub_effq.h - the effect queue: a ring of hub_effect the caller drains
 * with hub_effect_peek / hub_effect_pop.  Internal to core/.
 *
 * The reservation rule.  The queue always has room past its tail for
 * hub_effq_fact_reserve(h) effects: everything the events that report
 * facts (hub_on_conn_closed, hub_on_bp_subscribed, hub_on_bp_down,
 * hub_shutdown, ...) could ever emit from the current state, however
 * many of them come in a row without a pop.  That reserve is a sum of
 * terms, one per object that can cause a fact effect, each defined in
 * the module that owns the object (hub_conn_fact_cost,
 * hub_topic_fact_cost, hub_registry_fact_cost).  A fact event spends
 * from the terms of the objects it retires and never allocates an
 * effect slot; a request reserves its own cost plus the reserve after
 * its change (hub_effq_reserve) before it changes anything, so a request
 * that fails for memory has done nothing.
 */
#ifndef HUB_EFFQ_H
#define HUB_EFFQ_H

#include <string.h>

/* The effects every fact event still to come may emit. */
size_t hub_effq_fact_reserve(const hub *h);

/* Makes room for |n| more effects on top of the fact reserve, so that
   after pushing up to |n| the reserve still holds.  On failure nothing
   changes and HUB_ERR_NOMEM is returned. */
int hub_effq_reserve(hub *h, size_t n);

/* A fact event is about to push up to |n| effects from the reserve. */
static inline void hub_effq_spend(const hub *h, size_t n) {
  HUB_ASSERT(h->eff_cap - h->eff_tail >= n);
}

static inline hub_effect *hub_effq_push(hub *h, hub_effect_type type) {
  hub_effect *e;
  HUB_ASSERT(h->eff_tail < h->eff_cap);
  e = &h->effs[h->eff_tail++];
  memset(e, 0, sizeof(*e));
  e->type = type;
  return e;
}

/* A SEND, PING, CLOSE or VERIFY for |c|.  Inline: the fan-out pushes one per
   delivery. */
static inline hub_effect *hub_effq_push_conn(hub *h, hub_effect_type type,
                                             hub_conn *c) {
  hub_effect *e = hub_effq_push(h, type);
  e->conn = c->id;
  e->conn_user = c->user;
  c->eff_last = h->eff_base + h->eff_tail; /* 1 + this one's number */
  return e;
}

/* An effect naming |name| (a reference is taken). */
void hub_effq_push_name(hub *h, hub_effect_type type, hub_buf *name);

/* Drops an effect's buffer references and blanks it (peek skips it). */
void hub_effq_release(hub_effect *e);

/* Blanks every queued SEND, PING, CLOSE and VERIFY for |c| (it is
   gone). */
void hub_effq_discard_conn(hub *h, const hub_conn *c);

/* Releases everything queued (hub_del). */
void hub_effq_free(hub *h);

#endif /* HUB_EFFQ_H */
