/*
 * sim_replay.c - wshub-sim --replay FILE [--until K] [--trace].
 *
 * A recording (docs/recording.md) holds the core's inputs: the
 * configuration given to hub_new, then every event call in order, each
 * followed by its result and the running digest of the effects drained
 * until the next call.  The replay creates a fresh core from the
 * configuration and calls it exactly as the recorded driver did: after
 * each event it pops as many effects as the driver popped before its
 * next call (so an event the shell made between two effects, such as
 * hub_on_conn_closed after a CLOSE, comes at the same point of the
 * queue), digests them the same way, and compares.  The first event
 * whose result, effect count or digest differs is reported with its
 * arguments and the effects this replay produced for it.
 *
 * The shell and the driver are not run: what they did to the core is in
 * the recording as events of their own.  An allocation failure recorded
 * as a request's HUB_ERR_NOMEM is reproduced by failing every allocation
 * of that call (requests are all or nothing, hub.h).
 */
#include "sim_replay.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "hub.h"
#include "sh_rec.h"

/* Past this, a time is corruption: drivers count from boot or zero. */
#define RP_TIME_MAX (UINT64_C(1) << 62)
/* Effects of one event kept for a divergence report. */
#define RP_SHOW_MAX 20

/* Allocation failures of a recorded call (alloc_fail records). */
#define RP_FAILS_MAX 64

typedef struct rp_mem {
  hub_mem mem;
  int counting; /* inside a call */
  int fail;     /* fail every allocation of the call */
  uint64_t n;   /* allocations of the call so far */
  uint64_t fails[RP_FAILS_MAX];
  size_t nfails;
} rp_mem;

static int rp_fails(rp_mem *m) {
  size_t i;
  if (!m->counting) {
    return 0;
  }
  m->n++;
  if (m->fail) {
    return 1;
  }
  for (i = 0; i < m->nfails; i++) {
    if (m->fails[i] == m->n) {
      return 1;
    }
  }
  return 0;
}

static void *rp_malloc(size_t n, void *user) {
  return rp_fails(user) ? NULL : malloc(n);
}

static void rp_free(void *p, void *user) {
  (void)user;
  free(p);
}

static void *rp_realloc(void *p, size_t n, void *user) {
  return rp_fails(user) ? NULL : realloc(p, n);
}

/* A connection the recording opened and has not reported closed (for
   --until's state).  Its written reports are fed to the core as they
   are: the core ignores one its backlog shows to be impossible (hub.h),
   which is what it did in the recorded run. */
typedef struct rp_conn {
  int open;
} rp_conn;

typedef struct rp {
  const sim_replay_opts *o;
  FILE *out;
  sh_rec_reader rd;
  rp_mem mem;
  hub *h;
  sh_digest dg;
  hub_tstamp t0;
  uint64_t k; /* the current event: 0 is hub_new */
  /* Connections by id (the core numbers them 1, 2, ...): open from
     conn_open to conn_closed, with the SEND frames popped for them. */
  struct rp_conn *conns;
  size_t capconns;
  /* The current event's effects, for a divergence report. */
  char *show[RP_SHOW_MAX];
  size_t nshow;
  /* Lookahead: one record read ahead. */
  int have_next;
  int next_rv;
  sh_rec_record next;
  const char *why;
  int oom; /* the replay itself ran out of memory */
  uint64_t max_message_bytes;
} rp;

/* ------------------------------------------------------------ text */

/* Appends |p|[0..n) as printable text, at most |max| bytes of it. */
static void rp_text(char *dst, size_t cap, const uint8_t *p, size_t n,
                    size_t max) {
  size_t o = strlen(dst), i;
  for (i = 0; i < n && i < max && o + 5 < cap; i++) {
    uint8_t c = p[i];
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      dst[o++] = (char)c;
    } else {
      o += (size_t)snprintf(dst + o, cap - o, "\\x%02x", c);
    }
  }
  if (i < n && o + 4 < cap) {
    memcpy(dst + o, "...", 3);
    o += 3;
  }
  dst[o] = '\0';
}

static void rp_globs_text(char *b, size_t cap, const char *name,
                          const char *const *g, size_t ng) {
  size_t i, n = strlen(b);
  snprintf(b + n, cap - n, ", %s [", name);
  for (i = 0; i < ng && i < 8; i++) {
    n = strlen(b);
    snprintf(b + n, cap - n, "%s\"", i > 0 ? ", " : "");
    rp_text(b, cap, (const uint8_t *)g[i], strlen(g[i]), 48);
    n = strlen(b);
    snprintf(b + n, cap - n, "\"");
  }
  n = strlen(b);
  snprintf(b + n, cap - n, "%s]", i < ng ? ", ..." : "");
}

/* The claims of a CONN_OPEN_AUTH or CONN_VERIFIED: sub, the globs, the
   expiry (relative to the recording's start). */
static void rp_auth_text(rp *r, const sh_rec_record *e, char *b, size_t cap) {
  size_t n = strlen(b), sp = SH_REC_AUTH_SPACE(e->l2);
  char *chars;
  const char **globs;
  hub_auth a;
  if (!(e->a & SH_REC_AUTH_CLAIMS)) {
    snprintf(b + n, cap - n, "no claims");
    return;
  }
  chars = malloc(sp);
  globs = malloc(sp * sizeof(*globs));
  if (chars == NULL || globs == NULL ||
      sh_rec_auth(e, &a, chars, sp, globs, sp) != 0) {
    snprintf(b + n, cap - n, "claims (not shown: out of memory)");
  } else {
    snprintf(b + n, cap - n, "sub \"");
    rp_text(b, cap, (const uint8_t *)a.sub, a.sub_len, 64);
    n = strlen(b);
    snprintf(b + n, cap - n, "\"");
    rp_globs_text(b, cap, "subscribe", a.subscribe, a.nsubscribe);
    rp_globs_text(b, cap, "publish", a.publish, a.npublish);
    n = strlen(b);
    if (a.expires == HUB_TSTAMP_NONE) {
      snprintf(b + n, cap - n, ", never expires");
    } else {
      snprintf(b + n, cap - n, ", expires t=%+.9f s",
               ((double)a.expires - (double)r->t0) / (double)HUB_NS_PER_S);
    }
  }
  free(chars);
  free(globs);
}

static void rp_event_text(rp *r, const sh_rec_record *e, char *b, size_t cap) {
  size_t n;
  snprintf(b, cap, "%s(", sh_rec_type_name(e->type));
  n = strlen(b);
  switch (e->type) {
  case SH_REC_CONFIG:
    snprintf(b + n, cap - n,
             "instance %s, backplane %d, registry %d, auth %d, "
             "max-publish-rate %u",
             e->cfg.instance_id, e->cfg.backplane, e->cfg.registry, e->cfg.auth,
             (unsigned)e->cfg.max_publish_rate);
    break;
  case SH_REC_CONN_OPEN:
    snprintf(b + n, cap - n, "addr \"");
    rp_text(b, cap, e->p1, e->l1, 64);
    n = strlen(b);
    snprintf(b + n, cap - n, "\"");
    break;
  case SH_REC_CONN_OPEN_AUTH:
  case SH_REC_CONN_VERIFIED:
    if (e->type == SH_REC_CONN_OPEN_AUTH) {
      snprintf(b + n, cap - n, "addr \"");
      rp_text(b, cap, e->p1, e->l1, 64);
      n = strlen(b);
      snprintf(b + n, cap - n, "\", ");
    } else {
      snprintf(b + n, cap - n, "conn %llu, ", (unsigned long long)e->id);
      if (e->a & SH_REC_AUTH_ERR) {
        n = strlen(b);
        snprintf(b + n, cap - n, "error \"");
        rp_text(b, cap, e->p1, e->l1, 64);
        n = strlen(b);
        snprintf(b + n, cap - n, "\", ");
      }
    }
    rp_auth_text(r, e, b, cap);
    break;
  case SH_REC_CONN_MSG:
    snprintf(
      b + n, cap - n, "conn %llu, %s, %llu bytes", (unsigned long long)e->id,
      (e->a & SH_REC_MSG_BINARY) ? "binary" : "text", (unsigned long long)e->b);
    if (e->p1 != NULL) {
      n = strlen(b);
      snprintf(b + n, cap - n, ": ");
      rp_text(b, cap, e->p1, e->l1, 120);
    }
    break;
  case SH_REC_CONN_PONG:
  case SH_REC_CONN_CLOSED:
    snprintf(b + n, cap - n, "conn %llu", (unsigned long long)e->id);
    break;
  case SH_REC_BP_CONGESTED:
    snprintf(b + n, cap - n, "%s", e->a ? "congested" : "drained");
    break;
  case SH_REC_CONN_WRITTEN:
    snprintf(b + n, cap - n, "conn %llu, %llu msgs, %llu bytes",
             (unsigned long long)e->id, (unsigned long long)e->a,
             (unsigned long long)e->b);
    break;
  case SH_REC_BP_MSG:
    snprintf(b + n, cap - n, "channel \"");
    rp_text(b, cap, e->p1, e->l1, 64);
    n = strlen(b);
    snprintf(b + n, cap - n, "\", %zu bytes: ", e->l2);
    rp_text(b, cap, e->p2, e->l2, 120);
    break;
  case SH_REC_BP_SUBSCRIBED:
    snprintf(b + n, cap - n, "channel \"");
    rp_text(b, cap, e->p1, e->l1, 64);
    n = strlen(b);
    snprintf(b + n, cap - n, "\"");
    break;
  case SH_REC_PUBLISH:
    snprintf(b + n, cap - n, "%zu bytes: ", e->l1);
    rp_text(b, cap, e->p1, e->l1, 120);
    break;
  case SH_REC_BP_HPUBLISHED:
  case SH_REC_BP_HREAD:
    snprintf(b + n, cap - n, "req %llu, ok %llu, offset %llu, epoch \"",
             (unsigned long long)e->id, (unsigned long long)e->a,
             (unsigned long long)e->b);
    rp_text(b, cap, e->p1, e->l1, 40);
    n = strlen(b);
    snprintf(b + n, cap - n, "\"");
    if (e->type == SH_REC_BP_HREAD) {
      n = strlen(b);
      snprintf(b + n, cap - n, ", %llu entries", (unsigned long long)e->count);
    }
    break;
  case SH_REC_API_PUBLISH:
    snprintf(b + n, cap - n, "req %llu, %zu bytes: ", (unsigned long long)e->id,
             e->l1);
    rp_text(b, cap, e->p1, e->l1, 120);
    break;
  case SH_REC_API_HISTORY:
    snprintf(b + n, cap - n, "req %llu, channel \"", (unsigned long long)e->id);
    rp_text(b, cap, e->p1, e->l1, 64);
    n = strlen(b);
    snprintf(b + n, cap - n, "\", since %llu, limit %llu",
             (unsigned long long)e->a, (unsigned long long)e->b);
    break;
  default:
    break;
  }
  n = strlen(b);
  snprintf(b + n, cap - n, ") at t=+%.9f s",
           (double)(e->now - r->t0) / (double)HUB_NS_PER_S);
}

static const char *rp_eff_name(hub_effect_type t) {
  switch (t) {
  case HUB_EFF_SEND:
    return "SEND";
  case HUB_EFF_PING:
    return "PING";
  case HUB_EFF_CLOSE:
    return "CLOSE";
  case HUB_EFF_BP_SUBSCRIBE:
    return "BP_SUBSCRIBE";
  case HUB_EFF_BP_UNSUBSCRIBE:
    return "BP_UNSUBSCRIBE";
  case HUB_EFF_BP_PUBLISH:
    return "BP_PUBLISH";
  case HUB_EFF_REG_SET:
    return "REG_SET";
  case HUB_EFF_REG_DEL:
    return "REG_DEL";
  case HUB_EFF_VERIFY:
    return "VERIFY";
  case HUB_EFF_BP_HPUBLISH:
    return "BP_HPUBLISH";
  case HUB_EFF_BP_HREAD:
    return "BP_HREAD";
  case HUB_EFF_API_REPLY:
    return "API_REPLY";
  default:
    return "?";
  }
}

static void rp_effect_text(const hub_effect *e, char *b, size_t cap) {
  size_t n;
  snprintf(b, cap, "%s", rp_eff_name(e->type));
  n = strlen(b);
  if (e->type == HUB_EFF_SEND || e->type == HUB_EFF_PING ||
      e->type == HUB_EFF_CLOSE || e->type == HUB_EFF_VERIFY) {
    snprintf(b + n, cap - n, " conn %llu", (unsigned long long)e->conn);
  }
  n = strlen(b);
  if (e->type == HUB_EFF_CLOSE) {
    snprintf(b + n, cap - n, " %u %s (%s)", (unsigned)e->close_code,
             e->reason != NULL ? e->reason : "",
             hub_close_kind_name(e->close_kind));
  }
  if (e->name != NULL) {
    n = strlen(b);
    snprintf(b + n, cap - n, " %s",
             e->type == HUB_EFF_REG_SET || e->type == HUB_EFF_REG_DEL ? "key "
                                                                      : "");
    rp_text(b, cap, e->name->data, e->name->len, 80);
  }
  if (e->type == HUB_EFF_REG_SET) {
    n = strlen(b);
    snprintf(b + n, cap - n, " ttl %us", (unsigned)e->ttl_s);
  }
  if (e->type == HUB_EFF_BP_HPUBLISH || e->type == HUB_EFF_BP_HREAD ||
      e->type == HUB_EFF_API_REPLY) {
    n = strlen(b);
    if (e->type == HUB_EFF_API_REPLY) {
      snprintf(b + n, cap - n, " req %llu status %u",
               (unsigned long long)e->req, (unsigned)e->status);
    } else {
      snprintf(b + n, cap - n, " req %llu since %llu count %u",
               (unsigned long long)e->req, (unsigned long long)e->since,
               (unsigned)e->count);
    }
  }
  if (e->buf != NULL) {
    n = strlen(b);
    snprintf(b + n, cap - n, " ");
    if (e->type == HUB_EFF_SEND) {
      rp_text(b, cap, hub_buf_payload(e->buf), hub_buf_payload_len(e->buf),
              160);
    } else if (e->type == HUB_EFF_VERIFY) {
      snprintf(b + n, cap - n, " token of %zu bytes (not shown)", e->buf->len);
    } else {
      rp_text(b, cap, e->buf->data, e->buf->len, 160);
    }
  }
}

/* ------------------------------------------------------------ state */

static rp_conn *rp_conn_get(rp *r, hub_conn_id id) {
  if (id == 0 || id > r->capconns || !r->conns[id - 1].open) {
    return NULL;
  }
  return &r->conns[id - 1];
}

static int rp_conn_add(rp *r, hub_conn_id id) {
  if (id == 0 || id > (hub_conn_id)1 << 40) {
    return -1;
  }
  if (id > r->capconns) {
    size_t nc = r->capconns ? 2 * r->capconns : 64;
    rp_conn *p;
    while (nc < id) {
      nc *= 2;
    }
    p = realloc(r->conns, nc * sizeof(*p));
    if (p == NULL) {
      return -1;
    }
    memset(p + r->capconns, 0, (nc - r->capconns) * sizeof(*p));
    r->conns = p;
    r->capconns = (size_t)nc;
  }
  r->conns[id - 1].open = 1;
  return 0;
}

static void rp_conn_del(rp *r, hub_conn_id id) {
  rp_conn *c = rp_conn_get(r, id);
  if (c != NULL) {
    memset(c, 0, sizeof(*c));
  }
}

static void rp_channel_cb(void *arg, const char *channel, size_t len,
                          size_t subscribers) {
  FILE *f = arg;
  fprintf(f, "  channel %.*s: %zu subscriber%s\n", (int)len, channel,
          subscribers, subscribers == 1 ? "" : "s");
}

static void rp_print_state(rp *r) {
  hub_stats st;
  size_t i;
  int k;
  FILE *f = r->out;
  if (f == NULL) {
    return;
  }
  hub_get_stats(r->h, &st);
  fprintf(f, "state after event %llu:\n", (unsigned long long)r->k);
  fprintf(f, "  instance %s, backplane %s\n", hub_instance_id(r->h),
          hub_bp_is_up(r->h) ? "up" : "down (or embedded)");
  fprintf(f,
          "  stats: conns %llu, subscriptions %llu, channels %llu, "
          "bp_subscriptions %llu, msgs_in %llu, msgs_out %llu, publishes "
          "%llu\n",
          (unsigned long long)st.conns, (unsigned long long)st.subscriptions,
          (unsigned long long)st.channels,
          (unsigned long long)st.bp_subscriptions,
          (unsigned long long)st.msgs_in, (unsigned long long)st.msgs_out,
          (unsigned long long)st.publishes);
  fprintf(f, "  evictions:");
  for (k = 0; k < HUB_CLOSE_KIND_MAX; k++) {
    fprintf(f, " %s %llu", hub_close_kind_name((hub_close_kind)k),
            (unsigned long long)st.evictions[k]);
  }
  fprintf(f, "\n");
  hub_foreach_channel(r->h, rp_channel_cb, f);
  for (i = 0; i < r->capconns; i++) {
    size_t msgs = 0, bytes = 0;
    if (!r->conns[i].open) {
      continue;
    }
    if (hub_conn_backlog(r->h, i + 1, &msgs, &bytes) == 0) {
      fprintf(f, "  conn %zu: backlog %zu msgs, %zu bytes\n", i + 1, msgs,
              bytes);
    } else {
      fprintf(f, "  conn %zu: closed by the hub, close not yet reported\n",
              i + 1);
    }
  }
}

/* ------------------------------------------------------------ replay */

static int rp_read(rp *r, sh_rec_record *out) {
  if (r->have_next) {
    r->have_next = 0;
    *out = r->next;
    return r->next_rv;
  }
  return sh_rec_next(&r->rd, out, &r->why);
}

/* The RESULT of the event just read, or the implied one (result 0, no
   effects, queue empty) when the next record is not a RESULT.  Returns
   1, or 0 when the file ends before the event's result is known. */
static int rp_result(rp *r, sh_rec_record *res) {
  int rv = sh_rec_next(&r->rd, &r->next, &r->why);
  r->mem.nfails = 0;
  while (rv == SH_REC_RECORD && r->next.type == SH_REC_ALLOC_FAIL) {
    if (r->mem.nfails < RP_FAILS_MAX) {
      r->mem.fails[r->mem.nfails++] = r->next.count;
    }
    if (r->o->trace && r->out != NULL) {
      fprintf(r->out, "    (allocation %llu of the call fails)\n",
              (unsigned long long)r->next.count);
    }
    rv = sh_rec_next(&r->rd, &r->next, &r->why);
  }
  memset(res, 0, sizeof(*res));
  res->type = SH_REC_RESULT;
  res->flags = SH_REC_QEMPTY;
  res->digest = r->dg.d; /* checked only through the count */
  if (rv == SH_REC_RECORD && r->next.type == SH_REC_RESULT) {
    *res = r->next;
    return 1;
  }
  r->have_next = 1;
  r->next_rv = rv;
  if (rv == SH_REC_TRUNCATED && r->next.type != SH_REC_RESULT) {
    return 1; /* the record cut off is a later one: the result is implied */
  }
  if (rv != SH_REC_RECORD) {
    return 0; /* EOF, cut off or bad: the result is not in the file */
  }
  return 1;
}

static void rp_show_clear(rp *r) {
  size_t i;
  for (i = 0; i < r->nshow; i++) {
    free(r->show[i]);
  }
  r->nshow = 0;
}

static void rp_pop(rp *r, const hub_effect *e) {
  char b[400];
  int want = r->o->trace || r->nshow < RP_SHOW_MAX;
  sh_digest_effect(&r->dg, e);
  if (want && r->out != NULL) {
    rp_effect_text(e, b, sizeof(b));
    if (r->o->trace) {
      fprintf(r->out, "    effect %s\n", b);
    }
    if (r->nshow < RP_SHOW_MAX) {
      r->show[r->nshow] = strdup(b);
      if (r->show[r->nshow] != NULL) {
        r->nshow++;
      }
    }
  }
  hub_effect_pop(r->h);
}

/* Pops the event's effects as the driver did; returns 0, or 1 after
   printing the divergence. */
static int rp_check(rp *r, const sh_rec_record *ev, const sh_rec_record *res,
                    int rc) {
  const hub_effect *e;
  uint64_t got = 0, extra = 0;
  /* An implied result (no RESULT record) says "none": the digest stays. */
  uint64_t expect = res->offset == 0 ? r->dg.d : res->digest;
  char what[600];
  size_t i;
  while (got < res->count && (e = hub_effect_peek(r->h)) != NULL) {
    rp_pop(r, e);
    got++;
  }
  if (res->flags & SH_REC_QEMPTY) {
    while ((e = hub_effect_peek(r->h)) != NULL) {
      rp_pop(r, e);
      extra++;
    }
  }
  if (rc == res->rc && got == res->count && extra == 0 && r->dg.d == expect) {
    rp_show_clear(r);
    return 0;
  }
  if (r->out != NULL) {
    rp_event_text(r, ev, what, sizeof(what));
    fprintf(r->out,
            "REPLAY diverged at event %llu: %s: ", (unsigned long long)r->k,
            what);
    if (rc != res->rc) {
      fprintf(r->out, "recorded result %d (%s), replay returned %d (%s); ",
              res->rc, hub_strerror(res->rc), rc, hub_strerror(rc));
    }
    fprintf(r->out,
            "recorded %llu effect%s, digest %016llx; the replay produced %llu, "
            "digest %016llx",
            (unsigned long long)res->count, res->count == 1 ? "" : "s",
            (unsigned long long)expect, (unsigned long long)(got + extra),
            (unsigned long long)r->dg.d);
    fprintf(r->out, "%s\n", r->nshow > 0 ? ":" : "");
    for (i = 0; i < r->nshow; i++) {
      fprintf(r->out, "  %s\n", r->show[i]);
    }
    if (got + extra > r->nshow) {
      fprintf(r->out, "  ... (%llu more)\n",
              (unsigned long long)(got + extra - r->nshow));
    }
  }
  rp_show_clear(r);
  return 1;
}

/* Calls the core as the recorded driver did.  Returns the call's result
   (0 for facts), or 1 with r->why set when the record cannot be a
   driver's call. */
static int rp_call(rp *r, const sh_rec_record *e, int want_rc, int *rc) {
  *rc = 0;
  /* The allocations the recording says failed fail again.  A request
     that ran out of memory with none recorded (a driver whose allocator
     does not report them) did nothing (hub.h): failing every allocation
     of the call gets the same. */
  r->mem.counting = 1;
  r->mem.n = 0;
  r->mem.fail = want_rc == HUB_ERR_NOMEM && r->mem.nfails == 0;
  switch (e->type) {
  case SH_REC_CONN_OPEN: {
    char *addr = malloc(e->l1 + 1);
    hub_conn_id id = 0;
    if (addr == NULL) {
      r->why = "out of memory";
      r->mem.fail = r->mem.counting = 0;
      return 1;
    }
    if (e->l1 > 0) {
      memcpy(addr, e->p1, e->l1);
    }
    addr[e->l1] = '\0';
    *rc = hub_on_conn_open(r->h, &id, addr, NULL, e->now);
    free(addr);
    if (*rc == 0 && rp_conn_add(r, id) != 0) {
      r->why = "out of memory";
      r->mem.fail = r->mem.counting = 0;
      return 1;
    }
    break;
  }
  case SH_REC_CONN_OPEN_AUTH:
  case SH_REC_CONN_VERIFIED: {
    /* The address or the error, NUL-terminated, and the claims. */
    size_t sp = SH_REC_AUTH_SPACE(e->l2);
    char *text = malloc(e->l1 + 1);
    char *chars = malloc(sp);
    const char **globs = malloc(sp * sizeof(*globs));
    hub_auth auth;
    const hub_auth *ap = NULL;
    hub_conn_id id = 0;
    int bad = text == NULL || chars == NULL || globs == NULL;
    if (!bad) {
      if (e->l1 > 0) {
        memcpy(text, e->p1, e->l1);
      }
      text[e->l1] = '\0';
      if (e->a & SH_REC_AUTH_CLAIMS) {
        bad = sh_rec_auth(e, &auth, chars, sp, globs, sp) != 0;
        ap = &auth;
      }
    }
    if (!bad) {
      if (e->type == SH_REC_CONN_OPEN_AUTH) {
        *rc = hub_on_conn_open_auth(r->h, &id, text, ap, NULL, e->now);
      } else {
        *rc = hub_on_conn_verified(
          r->h, e->id, ap, (e->a & SH_REC_AUTH_ERR) ? text : NULL, e->now);
      }
    }
    free(text);
    free(chars);
    free(globs);
    if (bad || (e->type == SH_REC_CONN_OPEN_AUTH && *rc == 0 &&
                rp_conn_add(r, id) != 0)) {
      r->why = "out of memory";
      r->mem.fail = r->mem.counting = 0;
      return 1;
    }
    break;
  }
  case SH_REC_CONN_MSG:
    /* Without its bytes only when refused by its length alone (hub.h):
       otherwise the core would read them. */
    if (e->p1 == NULL && e->b <= r->max_message_bytes) {
      r->mem.fail = r->mem.counting = 0;
      r->why = "a message without its bytes that is not over the "
               "configured max-message-bytes";
      return 1;
    }
    *rc = hub_on_conn_msg(r->h, e->id, (e->a & SH_REC_MSG_BINARY) != 0, e->p1,
                          (size_t)e->b, e->now);
    break;
  case SH_REC_CONN_PONG:
    hub_on_conn_pong(r->h, e->id, e->now);
    break;
  case SH_REC_CONN_WRITTEN:
    hub_on_conn_written(r->h, e->id, (size_t)e->a, (size_t)e->b, e->now);
    break;
  case SH_REC_CONN_CLOSED:
    hub_on_conn_closed(r->h, e->id, e->now);
    rp_conn_del(r, e->id);
    break;
  case SH_REC_BP_MSG:
    *rc = hub_on_bp_msg(r->h, (const char *)e->p1, e->l1, e->p2, e->l2, e->now);
    break;
  case SH_REC_BP_SUBSCRIBED:
    hub_on_bp_subscribed(r->h, (const char *)e->p1, e->l1, e->now);
    break;
  case SH_REC_BP_UP:
    *rc = hub_on_bp_up(r->h, e->now);
    break;
  case SH_REC_BP_DOWN:
    hub_on_bp_down(r->h, e->now);
    break;
  case SH_REC_BP_CONGESTED:
    hub_on_bp_congested(r->h, (int)e->a, e->now);
    break;
  case SH_REC_PUBLISH: {
    const char *err = NULL;
    *rc = hub_publish(r->h, e->p1, e->l1, &err, e->now);
    break;
  }
  case SH_REC_BP_HPUBLISHED:
    *rc = hub_on_bp_hpublished(r->h, e->id, (int)e->a, e->b,
                               (const char *)e->p1, e->l1, e->now);
    break;
  case SH_REC_BP_HREAD: {
    size_t ne = (size_t)e->count;
    hub_hentry *he = calloc(ne > 0 ? ne : 1, sizeof(*he));
    if (he == NULL) {
      r->mem.fail = r->mem.counting = 0;
      r->why = "out of memory for a history read's entries";
      return 1;
    }
    (void)sh_rec_hentries(e, he, ne);
    *rc = hub_on_bp_hread(r->h, e->id, (int)e->a, e->b, (const char *)e->p1,
                          e->l1, he, ne, e->now);
    free(he);
    break;
  }
  case SH_REC_API_PUBLISH:
    *rc = hub_api_publish(r->h, e->id, e->p1, e->l1, e->now);
    break;
  case SH_REC_API_HISTORY:
    *rc = hub_api_history(r->h, e->id, (const char *)e->p1, e->l1, e->a, e->b,
                          e->now);
    break;
  case SH_REC_EXPIRY:
    *rc = hub_handle_expiry(r->h, e->now);
    break;
  case SH_REC_SHUTDOWN:
    hub_shutdown(r->h, e->now);
    break;
  default:
    r->mem.fail = r->mem.counting = 0;
    r->why = "a record out of place (a second hub_new?)";
    return 1;
  }
  r->mem.fail = r->mem.counting = 0;
  return 0;
}

static int rp_bad(rp *r, const char *why) {
  if (r->out != NULL) {
    fprintf(r->out,
            "REPLAY error: not replayable at event %llu (byte %zu): "
            "%s\n",
            (unsigned long long)r->k, r->rd.off, why);
  }
  return SIM_REPLAY_BAD;
}

static int rp_truncated(rp *r, const char *how) {
  if (r->out != NULL) {
    fprintf(r->out, "REPLAY truncated: %llu events, effects identical\n",
            (unsigned long long)r->k);
    fprintf(r->out, "(%s)\n", how);
  }
  return SIM_REPLAY_TRUNCATED;
}

static int rp_until(rp *r) {
  if (r->out != NULL) {
    fprintf(r->out, "REPLAY until event %llu: effects identical so far\n",
            (unsigned long long)r->k);
  }
  rp_print_state(r);
  return SIM_REPLAY_OK;
}

static void rp_trace_event(rp *r, const sh_rec_record *e) {
  char what[600];
  if (r->o->trace && r->out != NULL) {
    rp_event_text(r, e, what, sizeof(what));
    fprintf(r->out, "event %llu %s\n", (unsigned long long)r->k, what);
  }
}

static int rp_run(rp *r, const uint8_t *data, size_t len) {
  sh_rec_record ev, res;
  int rv, rc;
  hub_tstamp last;

  if (sh_rec_open(&r->rd, data, len, &r->why) != 0) {
    if (r->out != NULL) {
      fprintf(r->out, "REPLAY error: %s\n", r->why);
    }
    return SIM_REPLAY_BAD;
  }
  rv = sh_rec_next(&r->rd, &ev, &r->why);
  if (rv == SH_REC_EOF || rv == SH_REC_TRUNCATED) {
    if (r->out != NULL) {
      fprintf(r->out, "REPLAY error: the recording ends before the hub's "
                      "configuration\n");
    }
    return SIM_REPLAY_BAD;
  }
  if (rv == SH_REC_BAD) {
    return rp_bad(r, r->why);
  }
  if (ev.type != SH_REC_CONFIG) {
    return rp_bad(r, "the first record is not the hub's configuration");
  }
  if (ev.now > RP_TIME_MAX) {
    return rp_bad(r, "a time past 2^62 ns");
  }
  r->t0 = ev.now;
  r->max_message_bytes = ev.cfg.max_message_bytes;
  last = ev.now;
  rc = hub_new(&r->h, &ev.cfg, &r->mem.mem, ev.now);
  if (rc != 0) {
    r->h = NULL;
    if (r->out != NULL) {
      fprintf(r->out,
              "REPLAY error: hub_new refuses the recorded "
              "configuration: %s\n",
              hub_strerror(rc));
    }
    return SIM_REPLAY_BAD;
  }
  rp_trace_event(r, &ev);
  rc = 0;
  for (;;) {
    /* |ev| is read: its result (a NOMEM is replayed, so it is needed
       before the call), the call, then its effects. */
    if (!rp_result(r, &res)) {
      if (r->next_rv == SH_REC_BAD) {
        return rp_bad(r, r->why);
      }
      /* The process died before the event's effects were known. */
      if (r->k > 0) {
        r->k--;
      }
      return rp_truncated(
        r, r->next_rv == SH_REC_TRUNCATED
             ? "the last record is cut off: the process died while writing it"
             : "the recording has no end: the process died before the last "
               "event's effects were recorded");
    }
    if (ev.type != SH_REC_CONFIG && rp_call(r, &ev, res.rc, &rc) != 0) {
      return rp_bad(r, r->why);
    }
    if (ev.type == SH_REC_CONFIG && res.rc != 0) {
      return rp_bad(r, "hub_new recorded as failed");
    }
    if (rp_check(r, &ev, &res, rc) != 0) {
      return SIM_REPLAY_DIVERGED;
    }
    if (r->oom) {
      return rp_bad(r, "the replay ran out of memory");
    }
    if (r->o->has_until && r->k == r->o->until) {
      return rp_until(r);
    }
    rv = rp_read(r, &ev);
    if (rv == SH_REC_BAD) {
      return rp_bad(r, r->why);
    }
    if (rv == SH_REC_TRUNCATED) {
      return rp_truncated(
        r, "the last record is cut off: the process died while writing it");
    }
    if (rv == SH_REC_EOF) {
      return rp_truncated(r, "the recording has no end: the process died");
    }
    if (ev.type == SH_REC_END) {
      if (ev.count != r->k) {
        return rp_bad(r, "the end record counts a different number of "
                         "events");
      }
      if (r->rd.off != r->rd.len) {
        return rp_bad(r, "bytes after the end record");
      }
      if (r->o->has_until) {
        if (r->out != NULL) {
          fprintf(r->out,
                  "REPLAY error: --until %llu: the recording has "
                  "%llu events\n",
                  (unsigned long long)r->o->until, (unsigned long long)r->k);
        }
        return SIM_REPLAY_BAD;
      }
      if (r->out != NULL) {
        fprintf(r->out, "REPLAY ok: %llu events, effects identical%s\n",
                (unsigned long long)r->k,
                ev.flags == SH_REC_STOP_LIMIT
                  ? " (the recording stopped at --record-max-bytes)"
                  : "");
      }
      return SIM_REPLAY_OK;
    }
    if (ev.type == SH_REC_RESULT || ev.type == SH_REC_ALLOC_FAIL) {
      return rp_bad(r, "a result record without its event");
    }
    if (ev.type == SH_REC_CONFIG) {
      return rp_bad(r, "a second hub configuration");
    }
    if (ev.now < last || ev.now > RP_TIME_MAX) {
      return rp_bad(r, "time runs backwards");
    }
    last = ev.now;
    r->k++;
    rp_trace_event(r, &ev);
  }
}

int sim_replay_buf(const uint8_t *data, size_t len, const sim_replay_opts *o) {
  rp r;
  int code;
  memset(&r, 0, sizeof(r));
  r.o = o;
  r.out = o->out;
  r.mem.mem.user = &r.mem;
  r.mem.mem.malloc = rp_malloc;
  r.mem.mem.free = rp_free;
  r.mem.mem.realloc = rp_realloc;
  sh_digest_init(&r.dg);
  code = rp_run(&r, data, len);
  sh_digest_fini(&r.dg);
  rp_show_clear(&r);
  hub_del(r.h);
  free(r.conns);
  return code;
}

int sim_replay_main(int argc, char **argv) {
  sim_replay_opts o;
  const char *path = NULL;
  FILE *f;
  uint8_t *data = NULL;
  size_t len = 0, cap = 0;
  int i, code;

  memset(&o, 0, sizeof(o));
  o.out = stdout;
  for (i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--replay") == 0 && i + 1 < argc) {
      path = argv[++i];
    } else if (strcmp(argv[i], "--trace") == 0) {
      o.trace = 1;
    } else if (strcmp(argv[i], "--until") == 0 && i + 1 < argc) {
      char *end;
      errno = 0;
      o.until = strtoull(argv[++i], &end, 10);
      if (errno != 0 || *end != '\0' || argv[i][0] == '\0' ||
          argv[i][0] == '-') {
        fprintf(stderr, "wshub-sim: --until wants an event number\n");
        return SIM_REPLAY_BAD;
      }
      o.has_until = 1;
    } else {
      fprintf(stderr,
              "wshub-sim: unknown option with --replay: %s\n"
              "usage: wshub-sim --replay FILE [--until K] [--trace]\n",
              argv[i]);
      return SIM_REPLAY_BAD;
    }
  }
  if (path == NULL) {
    fprintf(stderr, "usage: wshub-sim --replay FILE [--until K] [--trace]\n");
    return SIM_REPLAY_BAD;
  }
  f = fopen(path, "rb");
  if (f == NULL) {
    printf("REPLAY error: %s: %s\n", path, strerror(errno));
    return SIM_REPLAY_BAD;
  }
  for (;;) {
    size_t n;
    if (len == cap) {
      size_t nc = cap ? 2 * cap : 1 << 16;
      uint8_t *p = realloc(data, nc);
      if (p == NULL) {
        fclose(f);
        free(data);
        printf("REPLAY error: %s: out of memory\n", path);
        return SIM_REPLAY_BAD;
      }
      data = p;
      cap = nc;
    }
    n = fread(data + len, 1, cap - len, f);
    len += n;
    if (n == 0) {
      break;
    }
  }
  if (ferror(f)) {
    printf("REPLAY error: %s: %s\n", path, strerror(errno));
    fclose(f);
    free(data);
    return SIM_REPLAY_BAD;
  }
  fclose(f);
  code = sim_replay_buf(data != NULL ? data : (const uint8_t *)"", len, &o);
  free(data);
  fflush(stdout);
  return code;
}
