/*
 * hub_registry.c - the registry: REG_SET of the instance key at start
 * and of each connection's key at open, both refreshed every heartbeat;
 * REG_DEL of a connection's key when it goes and of every key at
 * shutdown.  A REG_DEL emitted while the backplane is down was most
 * likely lost, so its key is kept as an orphan and deleted again on every
 * reconnect and at shutdown until its TTL has surely passed.
 *
 * The fact reserve (hub_effq.h) holds one effect per orphan (its REG_DEL
 * at shutdown) and one for the instance key's REG_DEL at shutdown.  A
 * connection's own REG_DELs come from its term (hub_conn.c), including
 * the one its orphan is given at shutdown.
 */
#include "hub_int.h"

#include <string.h>

int hub_registry_on(const hub *h) {
  return h->cfg.registry && !h->shut_down;
}

size_t hub_registry_fact_cost(const hub *h) {
  return h->norphans + (h->shut_down ? 0 : 1);
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

int hub_registry_init(hub *h) {
  h->instance_key = hub_buf_new(h->mem, 9 + h->instance_id_len);
  if (h->instance_key == NULL) {
    return HUB_ERR_NOMEM;
  }
  memcpy(h->instance_key->data, "instance:", 9);
  memcpy(h->instance_key->data + 9, h->instance_id, h->instance_id_len);
  return 0;
}

int hub_registry_conn_bufs(hub *h, hub_conn_id id, const char *remote,
                           const hub_auth *auth, hub_buf **key,
                           hub_buf **value) {
  size_t idlen = h->instance_id_len + 1 + hub_u64_len(id);
  size_t rlen = strlen(remote);
  int64_t t = unix_now(h);
  size_t vn = sizeof("{\"conn_id\":\"\",\"instance_id\":\"\","
                     "\"remote_addr\":,\"connected_at\":}") -
              1 + idlen + h->instance_id_len + hub_json_str_len(remote, rlen) +
              hub_i64_len(t);
  hub_wr w;

  if (auth != NULL) {
    vn += sizeof(",\"user\":") - 1 + hub_json_str_len(auth->sub, auth->sub_len);
  }
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
  if (auth != NULL) {
    hub_wr_str(&w, ",\"user\":");
    hub_wr_json_str(&w, auth->sub, auth->sub_len);
  }
  hub_wr_str(&w, "}");
  HUB_ASSERT(w.p == w.end);
  return 0;
}

static void reg_set(hub *h, hub_buf *key, hub_buf *value, uint32_t ttl_s) {
  hub_effect *e = hub_effq_push(h, HUB_EFF_REG_SET);
  hub_buf_ref(key);
  hub_buf_ref(value);
  e->name = key;
  e->buf = value;
  e->ttl_s = ttl_s;
}

size_t hub_registry_heartbeat_cost(const hub *h) {
  return 1 + h->nconns_open;
}

int hub_registry_heartbeat(hub *h) {
  hub_buf *v = instance_value(h);
  hub_link *l;

  if (v == NULL) {
    return HUB_ERR_NOMEM;
  }
  reg_set(h, h->instance_key, v, h->cfg.instance_ttl_s);
  hub_buf_unref(v);
  for (l = h->conns.next; l != &h->conns; l = l->next) {
    hub_conn *c = CONTAINER_OF(l, hub_conn, all);
    reg_set(h, c->key, c->value, h->cfg.conn_ttl_s);
    c->reg_live = 1;
  }
  return 0;
}

void hub_registry_conn_open(hub *h, hub_conn *c) {
  if (hub_registry_on(h)) {
    reg_set(h, c->key, c->value, h->cfg.conn_ttl_s);
    c->reg_live = 1;
  }
}

/* ---------------------------------------------------------- orphans */

/* Best effort: if the orphan cannot be allocated, the key still expires
   by its TTL; nothing else depends on it. */
static void orphan_add(hub *h, hub_buf *key) {
  hub_orphan *o = hub_mem_malloc(h->mem, sizeof(*o));
  if (o == NULL) {
    return;
  }
  hub_link_init(&o->link);
  hub_buf_ref(key);
  o->key = key;
  o->expires = h->now + (hub_tstamp)h->cfg.conn_ttl_s * HUB_NS_PER_S;
  hub_link_push_tail(&h->orphans, &o->link);
  h->norphans++;
}

static void orphan_free(hub *h, hub_orphan *o) {
  hub_link_remove(&o->link);
  hub_buf_unref(o->key);
  hub_mem_free(h->mem, o);
  h->norphans--;
}

/* REG_DEL of every orphaned key; needs norphans reserved effects. */
static void orphans_delete(hub *h) {
  hub_link *l;
  for (l = h->orphans.next; l != &h->orphans; l = l->next) {
    hub_effq_push_name(h, HUB_EFF_REG_DEL,
                       CONTAINER_OF(l, hub_orphan, link)->key);
  }
}

void hub_registry_conn_gone(hub *h, hub_conn *c) {
  if (c->reg_live) {
    hub_effq_push_name(h, HUB_EFF_REG_DEL, c->key);
    if (!h->bp_up) {
      orphan_add(h, c->key);
    }
  }
  c->reg_live = 0;
}

/* -------------------------------------------------- backplane, shutdown */

size_t hub_registry_bp_up_cost(const hub *h) {
  return hub_registry_heartbeat_cost(h) + h->norphans;
}

int hub_registry_bp_up(hub *h) {
  if (hub_registry_on(h)) {
    if (hub_registry_heartbeat(h) != 0) {
      return HUB_ERR_NOMEM;
    }
    h->next_heartbeat = h->now + h->cfg.heartbeat_interval_ns;
    orphans_delete(h);
  }
  return 0;
}

void hub_registry_shutdown_orphans(hub *h) {
  hub_effq_spend(h, h->norphans);
  orphans_delete(h);
  while (!hub_link_empty(&h->orphans)) {
    orphan_free(h, CONTAINER_OF(h->orphans.next, hub_orphan, link));
  }
}

void hub_registry_shutdown_instance(hub *h) {
  if (h->cfg.registry) {
    hub_effq_spend(h, 1);
    hub_effq_push_name(h, HUB_EFF_REG_DEL, h->instance_key);
  }
}

/* ----------------------------------------------------------- timers */

hub_tstamp hub_registry_get_expiry(const hub *h) {
  return hub_registry_on(h) ? h->next_heartbeat : HUB_TSTAMP_NONE;
}

void hub_registry_expire_orphans(hub *h) {
  while (!hub_link_empty(&h->orphans) &&
         CONTAINER_OF(h->orphans.next, hub_orphan, link)->expires <= h->now) {
    orphan_free(h, CONTAINER_OF(h->orphans.next, hub_orphan, link));
  }
}

int hub_registry_handle_expiry(hub *h) {
  if (hub_registry_on(h) && h->next_heartbeat <= h->now) {
    if (hub_effq_reserve(h, hub_registry_heartbeat_cost(h)) != 0 ||
        hub_registry_heartbeat(h) != 0) {
      return HUB_ERR_NOMEM;
    }
    h->next_heartbeat = h->now + h->cfg.heartbeat_interval_ns;
  }
  return 0;
}

void hub_registry_free(hub *h) {
  while (!hub_link_empty(&h->orphans)) {
    orphan_free(h, CONTAINER_OF(h->orphans.next, hub_orphan, link));
  }
  hub_buf_unref(h->instance_key);
  h->instance_key = NULL;
}
