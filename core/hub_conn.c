/*
 * hub_conn.c - connections: open and close, send accounting and
 * slow-consumer eviction (hub_conn_send is inline in hub_conn.h), and
 * the ping, pong and write timers.
 *
 * The fact reserve (hub_effq.h) holds three effects per open connection:
 * the CLOSE the core may still send it, the REG_DEL of its key, and the
 * REG_DEL of that key again at shutdown if it is deleted while the
 * backplane is down (hub_registry.c).  So closing a connection, whoever
 * decides it, never needs to grow the queue for the connection itself;
 * its subscriptions' UNSUBSCRIBEs come from hub_topic.c's term.
 */
#include "hub_int.h"

#include <string.h>

size_t hub_conn_fact_cost(const hub *h) {
  return 3 * h->nconns_open;
}

const char *hub_close_kind_name(hub_close_kind kind) {
  static const char *const names[HUB_CLOSE_KIND_MAX] = {
    "shutdown", "slow_msgs", "slow_bytes", "write_timeout", "pong_timeout",
    "too_big",  "binary",    "bad_utf8",   "token_expired"};
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
  case HUB_CLOSE_TOKEN_EXPIRED:
    return 4001;
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
  case HUB_CLOSE_TOKEN_EXPIRED:
    return "token expired";
  default:
    return "";
  }
}

hub_conn *hub_conn_find(const hub *h, hub_conn_id id) {
  uint64_t hash = hub_mix64(id ^ h->cfg.seed);
  hub_hnode *p = hub_htab_chain(&h->conn_tab, hash);
  for (; p != NULL; p = p->next) {
    hub_conn *c = CONTAINER_OF(p, hub_conn, hnode);
    if (p->hash == hash && c->id == id) {
      return c;
    }
  }
  return NULL;
}

/* ------------------------------------------------------ open, close */

int hub_conn_open(hub *h, hub_conn_id *id, const char *remote_addr,
                  const hub_auth *auth, void *user) {
  hub_conn *c;
  hub_buf *key = NULL, *value = NULL;
  hub_grants *g = NULL;
  hub_conn_auth *ca = NULL;
  hub_conn_id cid = h->next_conn_id;

  /* The REG_SET, and the new connection's term of the fact reserve. */
  if (hub_effq_reserve(h, 1 + 3) != 0 ||
      hub_registry_conn_bufs(h, cid, remote_addr, auth, &key, &value) != 0) {
    return HUB_ERR_NOMEM;
  }
  if (auth != NULL) {
    if (auth->expires != HUB_TSTAMP_NONE && hub_auth_reserve(h) != 0) {
      hub_buf_unref(key);
      hub_buf_unref(value);
      return HUB_ERR_NOMEM;
    }
    g = hub_grants_new(h, auth);
  }
  c = hub_mem_malloc(h->mem, sizeof(*c));
  /* The auth block last, so that the allocations before it keep their
     numbers within the call (a recording's alloc_fail names one). */
  if (auth != NULL) {
    ca = hub_mem_malloc(h->mem, sizeof(*ca));
  }
  if (c == NULL || (auth != NULL && (g == NULL || ca == NULL))) {
    hub_mem_free(h->mem, c);
    hub_mem_free(h->mem, ca);
    hub_grants_free(h, g);
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
  hub_link_init(&c->all);
  hub_link_init(&c->ping_link);
  hub_link_init(&c->pong_link);
  hub_link_init(&c->write_link);
  hub_link_init(&c->subs);
  c->hnode.hash = hub_mix64(cid ^ h->cfg.seed);
  hub_htab_insert(h->mem, &h->conn_tab, &c->hnode);
  hub_link_push_tail(&h->conns, &c->all);
  c->next_ping = h->now + h->cfg.ping_interval_ns;
  hub_link_push_tail(&h->pings, &c->ping_link);
  c->last_pong = h->now;
  hub_link_push_tail(&h->pongs, &c->pong_link);
  if (ca != NULL) {
    memset(ca, 0, sizeof(*ca));
    c->auth = ca;
    hub_auth_attach(h, c, g, auth->expires);
  }
  h->nconns_open++;
  hub_registry_conn_open(h, c);
  *id = cid;
  return 0;
}

/* Releases |c|'s subscriptions and registry key and takes it off the
   timer lists; shared by a close the core decides and one the peer
   reports.  Emits at most hub_conn_close_cost(c) - 1 effects. */
static void conn_retire(hub *h, hub_conn *c) {
  while (!hub_link_empty(&c->subs)) {
    hub_sub_release(h, CONTAINER_OF(c->subs.next, hub_sub, conn_link));
  }
  hub_registry_conn_gone(h, c);
  hub_auth_conn_gone(h, c);
  hub_link_remove(&c->all);
  hub_link_remove(&c->ping_link);
  hub_link_remove(&c->pong_link);
  if (hub_link_linked(&c->write_link)) {
    hub_link_remove(&c->write_link);
  }
  h->nconns_open--;
}

void hub_conn_close(hub *h, hub_conn *c, hub_close_kind kind) {
  hub_effect *e;

  HUB_ASSERT(!c->closing);
  e = hub_effq_push_conn(h, HUB_EFF_CLOSE, c);
  e->close_kind = kind;
  e->close_code = close_code(kind);
  e->reason = close_reason(kind);
  c->closing = 1;
  h->st.evictions[kind]++;
  conn_retire(h, c);
}

void hub_conn_close_all(hub *h) {
  while (!hub_link_empty(&h->conns)) {
    hub_conn_close(h, CONTAINER_OF(h->conns.next, hub_conn, all),
                   HUB_CLOSE_SHUTDOWN);
  }
}

/* A fact: it spends from the reserve and cannot fail.  An unknown id is
   the driver's mistake and is ignored. */
void hub_conn_closed(hub *h, hub_conn_id id) {
  hub_conn *c = hub_conn_find(h, id);

  if (c == NULL) {
    return;
  }
  if (!c->closing) {
    hub_effq_spend(h, hub_conn_close_cost(c));
    conn_retire(h, c);
  }
  /* Nothing queued may reach a connection that is gone. */
  hub_effq_discard_conn(h, c);
  hub_htab_remove(&h->conn_tab, &c->hnode);
  hub_auth_conn_free(h, c);
  hub_buf_unref(c->key);
  hub_buf_unref(c->value);
  hub_mem_free(h->mem, c);
}

void hub_conn_free_all(hub *h) {
  size_t i;

  /* Every connection, open or closing, is in the id table. */
  for (i = 0; h->conn_tab.b != NULL && i < h->conn_tab.nb; i++) {
    while (h->conn_tab.b[i] != NULL) {
      hub_conn *c = CONTAINER_OF(h->conn_tab.b[i], hub_conn, hnode);
      h->conn_tab.b[i] = c->hnode.next;
      hub_sub_free_all(h, c);
      hub_auth_conn_free(h, c);
      hub_buf_unref(c->key);
      hub_buf_unref(c->value);
      hub_mem_free(h->mem, c);
    }
  }
}

/* ------------------------------------------------- send accounting */

void hub_conn_evict_deferred(hub *h, hub_conn *list) {
  hub_conn *rev = NULL;

  /* The chain is newest first. */
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
    hub_conn_close(h, rev, kind);
    rev = next;
  }
}

void hub_conn_reply(hub *h, hub_conn *c, hub_buf *frame) {
  hub_conn_send(h, c, frame, NULL);
  hub_buf_unref(frame);
}

/* A fact.  A report of more than is queued is the driver's mistake and
   is ignored, as is an unknown id. */
void hub_conn_written(hub *h, hub_conn_id id, size_t msgs, size_t bytes) {
  hub_conn *c = hub_conn_find(h, id);

  if (c == NULL || c->closing) {
    return;
  }
  if (msgs > c->q_msgs || bytes > c->q_bytes) {
    return;
  }
  if (msgs == 0 && bytes == 0) {
    return;
  }
  /* A report that would leave frames with no bytes, or bytes with no
     frames, cannot be a transport's: the backlog would no longer say
     whether the connection has anything queued.  Ignored (hub.h). */
  if ((msgs == c->q_msgs) != (bytes == c->q_bytes)) {
    return;
  }
  c->q_msgs -= msgs;
  c->q_bytes -= bytes;
  c->last_progress = h->now;
  if (c->q_msgs == 0 && c->q_bytes == 0) {
    hub_link_remove(&c->write_link);
  } else {
    hub_link_move_tail(&h->writes, &c->write_link);
  }
}

/* ----------------------------------------------------------- timers */

void hub_conn_pong(hub *h, hub_conn_id id) {
  hub_conn *c = hub_conn_find(h, id);

  if (c != NULL && !c->closing) {
    c->last_pong = h->now;
    hub_link_move_tail(&h->pongs, &c->pong_link);
  }
}

hub_tstamp hub_conn_get_expiry(const hub *h) {
  hub_tstamp t = HUB_TSTAMP_NONE, x;

  if (!hub_link_empty(&h->pongs)) {
    x = CONTAINER_OF(h->pongs.next, hub_conn, pong_link)->last_pong +
        h->cfg.pong_timeout_ns;
    t = x < t ? x : t;
  }
  if (!hub_link_empty(&h->writes)) {
    x = CONTAINER_OF(h->writes.next, hub_conn, write_link)->last_progress +
        h->cfg.write_timeout_ns;
    t = x < t ? x : t;
  }
  if (!hub_link_empty(&h->pings)) {
    x = CONTAINER_OF(h->pings.next, hub_conn, ping_link)->next_ping;
    t = x < t ? x : t;
  }
  return t;
}

/* Each step reserves for itself, so a failure leaves the steps done in
   the effects and the rest due. */
int hub_conn_handle_expiry(hub *h) {
  while (!hub_link_empty(&h->pongs)) {
    hub_conn *c = CONTAINER_OF(h->pongs.next, hub_conn, pong_link);
    if (c->last_pong + h->cfg.pong_timeout_ns > h->now) {
      break;
    }
    if (hub_effq_reserve(h, hub_conn_close_cost(c)) != 0) {
      return HUB_ERR_NOMEM;
    }
    hub_conn_close(h, c, HUB_CLOSE_PONG_TIMEOUT);
  }
  while (!hub_link_empty(&h->writes)) {
    hub_conn *c = CONTAINER_OF(h->writes.next, hub_conn, write_link);
    if (c->last_progress + h->cfg.write_timeout_ns > h->now) {
      break;
    }
    if (hub_effq_reserve(h, hub_conn_close_cost(c)) != 0) {
      return HUB_ERR_NOMEM;
    }
    hub_conn_close(h, c, HUB_CLOSE_WRITE_TIMEOUT);
  }
  while (!hub_link_empty(&h->pings)) {
    hub_conn *c = CONTAINER_OF(h->pings.next, hub_conn, ping_link);
    if (c->next_ping > h->now) {
      break;
    }
    if (hub_effq_reserve(h, 1) != 0) {
      return HUB_ERR_NOMEM;
    }
    (void)hub_effq_push_conn(h, HUB_EFF_PING, c);
    c->next_ping = h->now + h->cfg.ping_interval_ns;
    hub_link_move_tail(&h->pings, &c->ping_link);
  }
  return 0;
}
