/*
 * hub_auth.c - authentication: a connection's grants (its token's sub
 * and glob lists), grant matching, the token's expiry (CLOSE 4001) and
 * the refresh request: the core cannot verify a token, so a refresh
 * emits HUB_EFF_VERIFY with the token and the driver answers with
 * hub_on_conn_verified, carrying the verified claims or a reason.
 *
 * With authentication off no connection has grants and nothing here
 * emits anything, so the protocol's bytes are those of a hub without
 * it.  Expiring connections are kept in a binary min-heap (any order of
 * expiries costs O(log n) per open, refresh or close); its array is
 * grown before the change that may need the slot, so removal (a fact)
 * never allocates.  The expiry close comes from the connection's term of the
 * fact reserve (its CLOSE, hub_conn.c), and a refresh in flight holds no
 * reserved effect: its answer is a request that reserves for itself.
 */
#include "hub_int.h"

#include <string.h>

/* sub, then the subscribe globs, then the publish globs, back to back in
   bytes[]; glob i is [off[i], off[i + 1]). */
struct hub_grants {
  size_t sub_len;
  size_t nsubscribe;
  size_t npublish;
  uint32_t *off;
  char *bytes;
};

static int list_valid(const char *const *v, size_t n) {
  size_t i;
  if (n > HUB_AUTH_GLOBS_MAX || (n > 0 && v == NULL)) {
    return 0;
  }
  for (i = 0; i < n; i++) {
    if (v[i] == NULL || strlen(v[i]) > HUB_AUTH_GLOB_MAX) {
      return 0;
    }
  }
  return 1;
}

int hub_auth_valid(const hub_auth *a) {
  if (a->sub == NULL || a->sub_len < 1 || a->sub_len > HUB_AUTH_SUB_MAX ||
      memchr(a->sub, 0, a->sub_len) != NULL ||
      !hub_utf8_valid((const uint8_t *)a->sub, a->sub_len)) {
    return -1;
  }
  if (!list_valid(a->subscribe, a->nsubscribe) ||
      !list_valid(a->publish, a->npublish)) {
    return -1;
  }
  return 0;
}

/*
 * The classic one-backtrack glob match: the pattern is literal pieces
 * between stars, and matching each piece at its leftmost place is never
 * worse than a later one, so on a mismatch only the last star needs to
 * take one more character.  `{sub}` is one literal piece (a sub holding
 * `*` or `{sub}` is still literal).  O(glen * n) at worst.
 */
int hub_glob_match(const char *g, size_t glen, const char *sub, size_t sub_len,
                   const char *s, size_t n) {
  size_t p = 0, t = 0, star_p = 0, star_t = 0;
  int star = 0;

  while (t < n || p < glen) {
    if (p < glen) {
      if (g[p] == '*') {
        star = 1;
        star_p = ++p;
        star_t = t;
        continue;
      }
      if (glen - p >= 5 && memcmp(g + p, "{sub}", 5) == 0) {
        if (n - t >= sub_len && memcmp(s + t, sub, sub_len) == 0) {
          p += 5;
          t += sub_len;
          continue;
        }
      } else if (t < n && g[p] == s[t]) {
        p++;
        t++;
        continue;
      }
    }
    if (!star || star_t >= n) {
      return 0;
    }
    p = star_p;
    t = ++star_t;
  }
  return 1;
}

hub_grants *hub_grants_new(hub *h, const hub_auth *a) {
  size_t nglobs = a->nsubscribe + a->npublish, bytes = a->sub_len, i, o;
  hub_grants *g;

  for (i = 0; i < a->nsubscribe; i++) {
    bytes += strlen(a->subscribe[i]);
  }
  for (i = 0; i < a->npublish; i++) {
    bytes += strlen(a->publish[i]);
  }
  g = hub_mem_malloc(h->mem,
                     sizeof(*g) + (nglobs + 1) * sizeof(uint32_t) + bytes + 1);
  if (g == NULL) {
    return NULL;
  }
  g->sub_len = a->sub_len;
  g->nsubscribe = a->nsubscribe;
  g->npublish = a->npublish;
  g->off = (uint32_t *)(void *)(g + 1);
  g->bytes = (char *)(g->off + nglobs + 1);
  memcpy(g->bytes, a->sub, a->sub_len);
  o = a->sub_len;
  for (i = 0; i < nglobs; i++) {
    const char *s =
      i < a->nsubscribe ? a->subscribe[i] : a->publish[i - a->nsubscribe];
    size_t l = strlen(s);
    g->off[i] = (uint32_t)o;
    memcpy(g->bytes + o, s, l);
    o += l;
  }
  g->off[nglobs] = (uint32_t)o;
  g->bytes[o] = '\0';
  return g;
}

void hub_grants_free(hub *h, hub_grants *g) {
  hub_mem_free(h->mem, g);
}

const char *hub_auth_sub(const hub_conn *c, size_t *len) {
  if (c->auth == NULL) {
    *len = 0;
    return NULL;
  }
  *len = c->auth->grants->sub_len;
  return c->auth->grants->bytes;
}

static int grants_allow(const hub_grants *g, int publish, const char *ch,
                        size_t len) {
  size_t i = publish ? g->nsubscribe : 0;
  size_t end = publish ? g->nsubscribe + g->npublish : g->nsubscribe;

  for (; i < end; i++) {
    if (hub_glob_match(g->bytes + g->off[i], g->off[i + 1] - g->off[i],
                       g->bytes, g->sub_len, ch, len)) {
      return 1;
    }
  }
  return 0;
}

int hub_auth_granted(const hub_conn *c, int publish, const char *ch,
                     size_t len) {
  return c->auth == NULL || grants_allow(c->auth->grants, publish, ch, len);
}

/* ------------------------------------------------------------ expiry */

/* Heap order: earlier expiry first, then lower id (a fixed order for
   equal expiries, so closes are deterministic). */
static int heap_less(const hub_conn *a, const hub_conn *b) {
  return a->auth->expires < b->auth->expires ||
         (a->auth->expires == b->auth->expires && a->id < b->id);
}

static void heap_set(hub *h, size_t i, hub_conn *c) {
  h->auth_heap[i] = c;
  c->auth->heap_idx = i;
}

static void heap_up(hub *h, size_t i) {
  hub_conn *c = h->auth_heap[i];
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!heap_less(c, h->auth_heap[p])) {
      break;
    }
    heap_set(h, i, h->auth_heap[p]);
    i = p;
  }
  heap_set(h, i, c);
}

static void heap_down(hub *h, size_t i) {
  hub_conn *c = h->auth_heap[i];
  for (;;) {
    size_t l = 2 * i + 1, m = i;
    const hub_conn *best = c;
    if (l < h->auth_n && heap_less(h->auth_heap[l], best)) {
      m = l;
      best = h->auth_heap[l];
    }
    if (l + 1 < h->auth_n && heap_less(h->auth_heap[l + 1], best)) {
      m = l + 1;
    }
    if (m == i) {
      break;
    }
    heap_set(h, i, h->auth_heap[m]);
    i = m;
  }
  heap_set(h, i, c);
}

static void heap_remove(hub *h, hub_conn *c) {
  size_t i = c->auth != NULL ? c->auth->heap_idx : HUB_AUTH_NO_HEAP;
  hub_conn *last;
  if (i == HUB_AUTH_NO_HEAP) {
    return;
  }
  HUB_ASSERT(i < h->auth_n && h->auth_heap[i] == c);
  c->auth->heap_idx = HUB_AUTH_NO_HEAP;
  last = h->auth_heap[--h->auth_n];
  if (last != c) {
    heap_set(h, i, last);
    heap_up(h, i);
    heap_down(h, last->auth->heap_idx);
  }
}

int hub_auth_reserve(hub *h) {
  size_t cap;
  hub_conn **v;
  if (h->auth_n < h->auth_cap) {
    return 0;
  }
  cap = h->auth_cap ? 2 * h->auth_cap : 16;
  v = hub_mem_realloc(h->mem, h->auth_heap, cap * sizeof(*v));
  if (v == NULL) {
    return HUB_ERR_NOMEM;
  }
  h->auth_heap = v;
  h->auth_cap = cap;
  return 0;
}

void hub_auth_attach(hub *h, hub_conn *c, hub_grants *g, hub_tstamp expires) {
  HUB_ASSERT(c->auth != NULL && g != NULL);
  c->auth->grants = g;
  c->auth->expires = expires;
  c->auth->heap_idx = HUB_AUTH_NO_HEAP;
  if (expires != HUB_TSTAMP_NONE) {
    HUB_ASSERT(h->auth_n < h->auth_cap);
    heap_set(h, h->auth_n++, c);
    heap_up(h, c->auth->heap_idx);
  }
}

void hub_auth_conn_gone(hub *h, hub_conn *c) {
  heap_remove(h, c);
}

void hub_auth_conn_free(hub *h, hub_conn *c) {
  if (c->auth == NULL) {
    return;
  }
  hub_grants_free(h, c->auth->grants);
  hub_buf_unref(c->auth->refresh_id);
  hub_mem_free(h->mem, c->auth);
  c->auth = NULL;
}

void hub_auth_free(hub *h) {
  hub_mem_free(h->mem, h->auth_heap);
  h->auth_heap = NULL;
  h->auth_n = h->auth_cap = 0;
}

int hub_auth_check(const hub *h) {
  size_t i;
  for (i = 0; i < h->auth_n; i++) {
    const hub_conn *c = h->auth_heap[i];
    if (c->auth == NULL || c->auth->heap_idx != i || c->closing ||
        c->auth->expires == HUB_TSTAMP_NONE ||
        (i > 0 && heap_less(c, h->auth_heap[(i - 1) / 2]))) {
      return -1;
    }
  }
  return h->auth_n <= h->auth_cap ? 0 : -1;
}

hub_tstamp hub_auth_get_expiry(const hub *h) {
  return h->auth_n > 0 ? h->auth_heap[0]->auth->expires : HUB_TSTAMP_NONE;
}

int hub_auth_handle_expiry(hub *h) {
  while (h->auth_n > 0) {
    hub_conn *c = h->auth_heap[0];
    if (c->auth->expires > h->now) {
      break;
    }
    if (hub_effq_reserve(h, hub_conn_close_cost(c)) != 0) {
      return HUB_ERR_NOMEM;
    }
    /* The retire takes it off the heap. */
    hub_conn_close(h, c, HUB_CLOSE_TOKEN_EXPIRED);
  }
  return 0;
}

/* ---------------------------------------------------------- requests */

int hub_auth_deny(hub *h, hub_conn *c, const hub_req *req) {
  hub_buf *f;

  /* The error reply, and an eviction by it. */
  if (hub_effq_reserve(h, 1 + hub_conn_close_cost(c)) != 0) {
    return HUB_ERR_NOMEM;
  }
  f = hub_frame_error(h, req->id, req->id_len, "permission denied");
  if (f == NULL) {
    return HUB_ERR_NOMEM;
  }
  hub_conn_reply(h, c, f);
  return 0;
}

int hub_auth_refresh(hub *h, hub_conn *c, const hub_req *req) {
  hub_buf *tok, *id = NULL;
  hub_effect *e;

  if (c->auth->refreshing) {
    if (hub_effq_reserve(h, 1 + hub_conn_close_cost(c)) != 0) {
      return HUB_ERR_NOMEM;
    }
    tok = hub_frame_error(h, req->id, req->id_len, "refresh in progress");
    if (tok == NULL) {
      return HUB_ERR_NOMEM;
    }
    hub_conn_reply(h, c, tok);
    return 0;
  }
  /* The VERIFY. */
  if (hub_effq_reserve(h, 1) != 0) {
    return HUB_ERR_NOMEM;
  }
  tok = hub_buf_new_copy(h->mem, req->token, req->token_len);
  if (req->id != NULL) {
    id = hub_buf_new_copy(h->mem, req->id, req->id_len);
  }
  if (tok == NULL || (req->id != NULL && id == NULL)) {
    hub_buf_unref(tok);
    hub_buf_unref(id);
    return HUB_ERR_NOMEM;
  }
  e = hub_effq_push_conn(h, HUB_EFF_VERIFY, c);
  e->buf = tok;
  c->auth->refresh_id = id;
  c->auth->refreshing = 1;
  return 0;
}

/* {"type":"refreshed"[,"id":<id>]} */
static hub_buf *frame_refreshed(hub *h, const hub_buf *id) {
  size_t n = sizeof("{\"type\":\"refreshed\"}") - 1 +
             (id ? sizeof(",\"id\":") - 1 + id->len : 0);
  hub_wr w;
  hub_buf *b = hub_frame_new_wr(h->mem, n, &w);

  if (b == NULL) {
    return NULL;
  }
  hub_wr_str(&w, "{\"type\":\"refreshed\"");
  if (id != NULL) {
    hub_wr_str(&w, ",\"id\":");
    hub_wr_mem(&w, id->data, id->len);
  }
  hub_wr_str(&w, "}");
  HUB_ASSERT(w.p == w.end);
  return b;
}

/* {"type":"unsubscribed","channel":|name|,"reason":"permission denied"} */
static hub_buf *frame_revoked(hub *h, const hub_buf *name) {
  size_t n = sizeof("{\"type\":\"unsubscribed\",\"channel\":\"\","
                    "\"reason\":\"permission denied\"}") -
             1 + name->len;
  hub_wr w;
  hub_buf *b = hub_frame_new_wr(h->mem, n, &w);

  if (b == NULL) {
    return NULL;
  }
  hub_wr_str(&w, "{\"type\":\"unsubscribed\",\"channel\":\"");
  hub_wr_mem(&w, name->data, name->len);
  hub_wr_str(&w, "\",\"reason\":\"permission denied\"}");
  HUB_ASSERT(w.p == w.end);
  return b;
}

static int sub_equal(const hub_grants *g, const hub_auth *a) {
  return g->sub_len == a->sub_len && memcmp(g->bytes, a->sub, a->sub_len) == 0;
}

/* The answer failed (or its sub differs): an error reply, the refresh is
   over, nothing else changes. */
static int refresh_fail(hub *h, hub_conn *c, const char *err) {
  hub_buf *id = c->auth->refresh_id, *f;

  if (hub_effq_reserve(h, 1 + hub_conn_close_cost(c)) != 0) {
    return HUB_ERR_NOMEM;
  }
  f = hub_frame_error(h, id ? (const char *)id->data : NULL, id ? id->len : 0,
                      err);
  if (f == NULL) {
    return HUB_ERR_NOMEM;
  }
  c->auth->refresh_id = NULL;
  c->auth->refreshing = 0;
  hub_buf_unref(id);
  hub_conn_reply(h, c, f);
  return 0;
}

int hub_auth_verified(hub *h, hub_conn *c, const hub_auth *a, const char *err) {
  hub_grants *g;
  hub_buf *ok, **revoked = NULL;
  hub_link *l, *next;
  size_t nrev = 0, i, cost;

  if (c->auth == NULL || !c->auth->refreshing) {
    return HUB_ERR_INVALID_ARGUMENT;
  }
  if (a == NULL) {
    return refresh_fail(h, c, err != NULL ? err : "invalid token");
  }
  if (hub_auth_valid(a) != 0) {
    return refresh_fail(h, c, "invalid claims");
  }
  if (!sub_equal(c->auth->grants, a)) {
    return refresh_fail(h, c, "token sub does not match");
  }
  /* Everything is allocated before anything changes: the new grants,
     the reply, and an "unsubscribed" frame per subscription they no
     longer allow. */
  g = hub_grants_new(h, a);
  if (g == NULL) {
    return HUB_ERR_NOMEM;
  }
  /* The reply; per revoked subscription its waiting requests' errors,
     its frame and its UNSUBSCRIBE; and an eviction by any of them. */
  cost = 1 + hub_conn_close_cost(c);
  for (l = c->subs.next; l != &c->subs; l = l->next) {
    hub_sub *s = CONTAINER_OF(l, hub_sub, conn_link);
    if (!grants_allow(g, 0, (const char *)s->topic->name->data,
                      s->topic->name->len)) {
      nrev++;
      cost += s->nframes / 2 + 2;
    }
  }
  ok = frame_refreshed(h, c->auth->refresh_id);
  if (nrev > 0) {
    revoked = hub_mem_malloc(h->mem, nrev * sizeof(*revoked));
    if (revoked != NULL) {
      memset(revoked, 0, nrev * sizeof(*revoked));
    }
  }
  if (ok == NULL || (nrev > 0 && revoked == NULL) || hub_auth_reserve(h) != 0 ||
      hub_effq_reserve(h, cost) != 0) {
    goto nomem;
  }
  i = 0;
  for (l = c->subs.next; l != &c->subs; l = l->next) {
    hub_sub *s = CONTAINER_OF(l, hub_sub, conn_link);
    if (!grants_allow(g, 0, (const char *)s->topic->name->data,
                      s->topic->name->len)) {
      revoked[i] = frame_revoked(h, s->topic->name);
      if (revoked[i] == NULL) {
        goto nomem;
      }
      i++;
    }
  }

  /* The change: new grants and expiry, the reply, then the revocations
     in subscription order. */
  hub_grants_free(h, c->auth->grants);
  heap_remove(h, c);
  hub_auth_attach(h, c, g, a->expires);
  hub_buf_unref(c->auth->refresh_id);
  c->auth->refresh_id = NULL;
  c->auth->refreshing = 0;
  hub_conn_reply(h, c, ok);
  i = 0;
  for (l = c->subs.next; !c->closing && l != &c->subs; l = next) {
    hub_sub *s = CONTAINER_OF(l, hub_sub, conn_link);
    uint32_t k;
    next = l->next;
    if (grants_allow(g, 0, (const char *)s->topic->name->data,
                     s->topic->name->len)) {
      continue;
    }
    /* Subscribe requests still waiting on it are answered first, as an
       unsubscribe answers them. */
    for (k = 1; k < s->nframes && !c->closing; k += 2) {
      hub_conn_send(h, c, s->frames[k], NULL);
    }
    if (c->closing) {
      break; /* evicted: the eviction released every subscription */
    }
    hub_sub_release(h, s);
    hub_conn_reply(h, c, revoked[i]);
    revoked[i++] = NULL;
  }
  for (; i < nrev; i++) {
    hub_buf_unref(revoked[i]);
  }
  hub_mem_free(h->mem, revoked);
  return 0;

nomem:
  for (i = 0; revoked != NULL && i < nrev; i++) {
    hub_buf_unref(revoked[i]);
  }
  hub_mem_free(h->mem, revoked);
  hub_buf_unref(ok);
  hub_grants_free(h, g);
  return HUB_ERR_NOMEM;
}
