/*
 * hub.c - the public entry points of the core.  Each advances the clock
 * and delegates to the module that owns the concept (README.md beside
 * this file has the map); the order of the steps in the compound events
 * (hub_on_bp_up, hub_handle_expiry, hub_shutdown) is the effects' order.
 *
 * Events that report facts return void: they spend from the effect
 * queue's fact reserve (hub_effq.h) and allocate nothing.  Requests
 * reserve first and change state after, so one that fails for memory
 * has done nothing.  Iteration order is always a list order (open order,
 * creation order, subscribe order), never a hash order, so effects are
 * deterministic.
 */
#include "hub_int.h"

#include <string.h>

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
  case HUB_ERR_UNAVAILABLE:
    return "backplane unavailable";
  case HUB_ERR_NOMEM:
    return "out of memory";
  default:
    return "unknown error";
  }
}

static void advance(hub *h, hub_tstamp now) {
  /* Time never runs backwards inside the hub, whatever the caller
     passes: the timer lists rely on it. */
  if (now > h->now) {
    h->now = now;
  }
}

/* ------------------------------------------------------- lifecycle */

int hub_new(hub **out, const hub_config *cfg, const hub_mem *mem,
            hub_tstamp now) {
  hub *h;
  size_t idlen;

  *out = NULL;
  if (cfg == NULL || !hub_config_valid(cfg)) {
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
  hub_link_init(&h->conns);
  hub_link_init(&h->pings);
  hub_link_init(&h->pongs);
  hub_link_init(&h->writes);
  hub_link_init(&h->topics);
  hub_link_init(&h->orphans);
  hub_hred_init(h);
  h->next_conn_id = 1;
  h->now = now;
  h->t_start = now;
  h->next_heartbeat = now + cfg->heartbeat_interval_ns;

  if (hub_htab_init(mem, &h->conn_tab) != 0 ||
      hub_htab_init(mem, &h->topic_tab) != 0 || hub_effq_reserve(h, 64) != 0 ||
      hub_registry_init(h) != 0 || hub_hist_init(h) != 0) {
    goto nomem;
  }
  if (hub_registry_on(h) && hub_registry_heartbeat(h) != 0) {
    goto nomem;
  }
  *out = h;
  return 0;

nomem:
  hub_del(h);
  return HUB_ERR_NOMEM;
}

void hub_del(hub *h) {
  if (h == NULL) {
    return;
  }
  hub_effq_free(h);
  hub_conn_free_all(h);
  hub_topic_free_all(h);
  hub_registry_free(h);
  hub_auth_free(h);
  hub_hred_free(h);
  hub_hist_free(h);
  hub_htab_free(h->mem, &h->conn_tab);
  hub_htab_free(h->mem, &h->topic_tab);
  hub_mem_free(h->mem, h);
}

/* ----------------------------------------------------- conn events */

int hub_on_conn_open(hub *h, hub_conn_id *id, const char *remote_addr,
                     void *user, hub_tstamp now) {
  advance(h, now);
  if (h->shut_down) {
    return HUB_ERR_SHUT_DOWN;
  }
  if (h->cfg.auth) {
    return HUB_ERR_INVALID_ARGUMENT;
  }
  return hub_conn_open(h, id, remote_addr ? remote_addr : "", NULL, user);
}

int hub_on_conn_open_auth(hub *h, hub_conn_id *id, const char *remote_addr,
                          const hub_auth *auth, void *user, hub_tstamp now) {
  advance(h, now);
  if (h->shut_down) {
    return HUB_ERR_SHUT_DOWN;
  }
  if (!h->cfg.auth) {
    auth = NULL;
  } else if (auth == NULL || hub_auth_valid(auth) != 0) {
    return HUB_ERR_INVALID_ARGUMENT;
  }
  return hub_conn_open(h, id, remote_addr ? remote_addr : "", auth, user);
}

int hub_on_conn_verified(hub *h, hub_conn_id id, const hub_auth *auth,
                         const char *err, hub_tstamp now) {
  hub_conn *c = hub_conn_find(h, id);

  advance(h, now);
  if (c == NULL) {
    return HUB_ERR_UNKNOWN_CONN;
  }
  if (c->closing) {
    return 0;
  }
  return hub_auth_verified(h, c, auth, err);
}

int hub_on_conn_msg(hub *h, hub_conn_id id, int binary, const uint8_t *data,
                    size_t len, hub_tstamp now) {
  hub_conn *c = hub_conn_find(h, id);

  advance(h, now);
  if (c == NULL) {
    return HUB_ERR_UNKNOWN_CONN;
  }
  if (c->closing) {
    return 0;
  }
  return hub_proto_on_msg(h, c, binary, data, len);
}

void hub_on_conn_pong(hub *h, hub_conn_id id, hub_tstamp now) {
  advance(h, now);
  hub_conn_pong(h, id);
}

void hub_on_conn_written(hub *h, hub_conn_id id, size_t msgs, size_t bytes,
                         hub_tstamp now) {
  advance(h, now);
  hub_conn_written(h, id, msgs, bytes);
}

void hub_on_conn_closed(hub *h, hub_conn_id id, hub_tstamp now) {
  advance(h, now);
  hub_conn_closed(h, id);
}

/* -------------------------------------------------- backplane events */

int hub_on_bp_msg(hub *h, const char *channel, size_t channel_len,
                  const uint8_t *data, size_t len, hub_tstamp now) {
  advance(h, now);
  return hub_topic_on_bp_msg(h, channel, channel_len, data, len);
}

void hub_on_bp_subscribed(hub *h, const char *channel, size_t channel_len,
                          hub_tstamp now) {
  advance(h, now);
  hub_topic_on_bp_subscribed(h, channel, channel_len);
}

int hub_on_bp_up(hub *h, hub_tstamp now) {
  advance(h, now);
  if (!h->cfg.backplane) {
    return HUB_ERR_INVALID_ARGUMENT;
  }
  if (h->bp_up || h->shut_down) {
    return 0;
  }
  if (hub_effq_reserve(h, hub_topic_bp_up_cost(h) +
                            hub_registry_bp_up_cost(h)) != 0 ||
      hub_registry_bp_up(h) != 0) {
    return HUB_ERR_NOMEM;
  }
  hub_topic_bp_up(h);
  return 0;
}

void hub_on_bp_down(hub *h, hub_tstamp now) {
  advance(h, now);
  /* The driver's queue went with the link. */
  h->bp_congested = 0;
  if (h->bp_up) {
    hub_topic_bp_down(h);
  }
  /* Publishes and API requests waiting for it are answered now. */
  hub_hred_fail_all(h);
}

void hub_on_bp_congested(hub *h, int congested, hub_tstamp now) {
  advance(h, now);
  h->bp_congested = congested != 0;
}

int hub_on_bp_hpublished(hub *h, uint64_t req, int ok, uint64_t offset,
                         const char *epoch, size_t epoch_len, hub_tstamp now) {
  advance(h, now);
  return hub_hred_on_hpublished(h, req, ok, offset, epoch, epoch_len);
}

int hub_on_bp_hread(hub *h, uint64_t req, int ok, uint64_t offset,
                    const char *epoch, size_t epoch_len,
                    const hub_hentry *entries, size_t n, hub_tstamp now) {
  advance(h, now);
  return hub_hred_on_hread(h, req, ok, offset, epoch, epoch_len, entries, n);
}

int hub_publish(hub *h, const uint8_t *body, size_t len, const char **errmsg,
                hub_tstamp now) {
  hub_req req;
  const char *err = NULL;

  advance(h, now);
  if (errmsg != NULL) {
    *errmsg = NULL;
  }
  h->hist_last_offset = 0;
  if (h->shut_down) {
    return HUB_ERR_SHUT_DOWN;
  }
  if (!hub_utf8_valid(body, len)) {
    err = "body is not valid UTF-8";
  } else if (hub_req_parse((const char *)body, len, 1, &req, &err) == 0) {
    if (h->bp_up && h->bp_congested) {
      h->st.bp_refused++;
      return HUB_ERR_UNAVAILABLE;
    }
    return hub_topic_publish(h, NULL, &req);
  }
  if (errmsg != NULL) {
    *errmsg = err;
  }
  return HUB_ERR_BAD_REQUEST;
}

/* ----------------------------------------------------------- timers */

hub_tstamp hub_get_expiry(const hub *h) {
  hub_tstamp t, x;

  if (h->shut_down) {
    return HUB_TSTAMP_NONE;
  }
  t = hub_conn_get_expiry(h);
  x = hub_registry_get_expiry(h);
  t = x < t ? x : t;
  x = hub_auth_get_expiry(h);
  t = x < t ? x : t;
  x = hub_hist_get_expiry(h);
  t = x < t ? x : t;
  x = hub_hred_get_expiry(h);
  return x < t ? x : t;
}

int hub_handle_expiry(hub *h, hub_tstamp now) {
  int rv;

  advance(h, now);
  if (h->shut_down) {
    return 0;
  }
  hub_registry_expire_orphans(h);
  rv = hub_conn_handle_expiry(h);
  if (rv == 0) {
    rv = hub_auth_handle_expiry(h);
  }
  if (rv != 0) {
    return rv;
  }
  hub_hist_expire(h); /* frees only: cannot fail */
  hub_hred_expire(h);
  return hub_registry_handle_expiry(h);
}

/* A fact: every effect comes from the reserve (the orphans' and the
   instance key's REG_DELs, and each open connection's close). */
void hub_shutdown(hub *h, hub_tstamp now) {
  advance(h, now);
  if (h->shut_down) {
    return;
  }
  hub_registry_shutdown_orphans(h);
  hub_effq_spend(h, 2 * h->nconns_open + h->nsubs);
  hub_conn_close_all(h);
  hub_hred_fail_all(h);
  hub_registry_shutdown_instance(h);
  h->shut_down = 1;
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
  const hub_topic *t = hub_topic_find(h, channel, channel_len);
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
  const hub_conn *c = hub_conn_find(h, id);
  if (c == NULL) {
    return HUB_ERR_UNKNOWN_CONN;
  }
  *msgs = (size_t)c->q_msgs;
  *bytes = (size_t)c->q_bytes;
  return 0;
}
