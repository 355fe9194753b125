/*
 * hub_check.c - hub_check: every internal invariant, recomputed from the
 * lists and compared with the counters.  For tests and the simulator;
 * O(size of the hub).
 */
#include "hub_int.h"

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
  size_t nconns = 0, nreplies = 0, nexp = 0;

  for (l = h->topics.next; l != &h->topics; l = l->next) {
    const hub_topic *t = CONTAINER_OF(l, hub_topic, all);
    size_t n = 0, nw = 0, nw_frames = 0;
    ntopics++;
    CHECK(hub_topic_find(h, (const char *)t->name->data, t->name->len) == t,
          "topic not in table");
    for (m = t->acked.next; m != &t->acked; m = m->next) {
      const hub_sub *s = CONTAINER_OF(m, hub_sub, topic_link);
      CHECK(s->acked && s->topic == t && s->nframes % 2 == 0, "bad acked sub");
      CHECK(s->nframes == 0 || (h->bp_up && !t->confirmed),
            "repeat subscribe waiting on a settled subscription");
      nw += s->nframes > 0;
      nw_frames += s->nframes / 2;
      CHECK(!s->conn->closing, "closing connection still subscribed");
      n++;
    }
    for (m = t->pending.next; m != &t->pending; m = m->next) {
      const hub_sub *s = CONTAINER_OF(m, hub_sub, topic_link);
      CHECK(!s->acked && s->topic == t && s->nframes >= 2 &&
              s->nframes % 2 == 0,
            "bad pending sub");
      CHECK(!s->conn->closing, "closing connection still subscribed");
      nw_frames += s->nframes / 2;
      n++;
    }
    CHECK(n - hub_link_len(&t->pending) == t->nacked, "topic acked count");
    CHECK(nw == t->nwaiting, "topic waiting count");
    CHECK(n == t->nsubs, "topic subscriber count");
    CHECK(t->nsubs > 0 || t->inflight > 0, "idle topic kept");
    nreplies += nw_frames;
    if (!h->bp_up) {
      CHECK(!t->bp_subscribed && !t->confirmed && t->inflight == 0,
            "backplane state while down");
      /* A history channel's subscribers wait for the backplane. */
      CHECK(t->ht != NULL || hub_link_empty(&t->pending),
            "pending subscriber while down");
    } else {
      CHECK(t->nsubs == 0 || t->bp_subscribed,
            "subscribed topic without a backplane subscription");
      CHECK(!t->confirmed || (t->bp_subscribed && t->inflight == 0),
            "confirmed without a settled subscription");
      CHECK(!t->confirmed || t->ht != NULL || hub_link_empty(&t->pending),
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
  CHECK(nreplies == h->nreplies, "waiting reply count");

  for (i = 0; i < h->conn_tab.nb; i++) {
    const hub_hnode *p;
    for (p = h->conn_tab.b[i]; p != NULL; p = p->next) {
      const hub_conn *c = CONTAINER_OF(p, hub_conn, hnode);
      size_t n = 0;
      nconns++;
      CHECK(hub_conn_find(h, c->id) == c, "connection not in table");
      CHECK(c->evict == 0 && c->evict_next == NULL, "eviction left marked");
      for (m = c->subs.next; m != &c->subs; m = m->next) {
        CHECK(CONTAINER_OF(m, hub_sub, conn_link)->conn == c, "sub owner");
        n++;
      }
      CHECK(n == c->nsubs, "connection subscription count");
      if (c->closing) {
        CHECK(c->nsubs == 0 && !hub_link_linked(&c->all) &&
                !hub_link_linked(&c->ping_link) &&
                !hub_link_linked(&c->pong_link) &&
                !hub_link_linked(&c->write_link) && !c->reg_live,
              "closing connection still active");
      } else {
        nopen++;
        CHECK(hub_link_linked(&c->all) && hub_link_linked(&c->ping_link) &&
                hub_link_linked(&c->pong_link),
              "open connection off a list");
        CHECK((c->q_msgs > 0 || c->q_bytes > 0) ==
                hub_link_linked(&c->write_link),
              "write list membership");
        CHECK((c->q_msgs > 0) == (c->q_bytes > 0),
              "queued frames without bytes, or bytes without frames");
        CHECK(c->q_msgs <= h->cfg.max_queue_msgs &&
                c->q_bytes <= h->cfg.max_queue_bytes,
              "queue past its limit");
        CHECK(h->shut_down || c->reg_live == (h->cfg.registry != 0),
              "registry key state");
        CHECK((c->auth != NULL) == (h->cfg.auth != 0),
              "grants without authentication, or none with it");
        if (c->auth != NULL) {
          CHECK(c->auth->grants != NULL, "authenticated without grants");
          CHECK((c->auth->heap_idx != HUB_AUTH_NO_HEAP) ==
                  (c->auth->expires != HUB_TSTAMP_NONE),
                "token expiry heap membership");
          CHECK(c->auth->refreshing || c->auth->refresh_id == NULL,
                "refresh id without a refresh");
          nexp += c->auth->heap_idx != HUB_AUTH_NO_HEAP;
        }
      }
      if (c->closing) {
        CHECK(c->auth == NULL || c->auth->heap_idx == HUB_AUTH_NO_HEAP,
              "closing connection on the expiry heap");
      }
    }
  }
  CHECK(nconns == h->conn_tab.n, "connection table count");
  CHECK(nopen == h->nconns_open && hub_link_len(&h->conns) == nopen,
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
  CHECK(hub_link_len(&h->orphans) == h->norphans, "orphan count");
  CHECK(h->auth_n == nexp, "token expiry heap count");
  CHECK(hub_auth_check(h) == 0, "token expiry heap order");
  CHECK(h->eff_head <= h->eff_tail && h->eff_tail <= h->eff_cap,
        "effect queue bounds");
  /* The reservation rule (hub_effq.h): every fact event to come fits. */
  CHECK(h->eff_cap - h->eff_tail >= hub_effq_fact_reserve(h),
        "fact reserve not held");
  if (hub_hist_check(h, why) != 0 || hub_hred_check(h, why) != 0) {
    return -1;
  }
  *why = NULL;
  return 0;
}
