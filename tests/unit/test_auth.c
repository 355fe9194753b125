/*
 * test_auth.c - authentication in the core (hub_auth.c) and the claims
 * reader the drivers share (shell/sh_claims.c): grant matching with `*`
 * and `{sub}`, "permission denied", the token's expiry (4001), refresh
 * (VERIFY, refreshed, narrower grants, another sub, a failed one), the
 * registry's "user", and allocation failures in the new events.
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub_int.h"
#include "shell.h"

static int glob(const char *g, const char *sub, const char *s) {
  return hub_glob_match(g, strlen(g), sub, strlen(sub), s, strlen(s));
}

static void test_auth_glob_star_and_sub(void **state) {
  (void)state;
  assert_true(glob("news", "a", "news"));
  assert_false(glob("news", "a", "news2"));
  assert_false(glob("news", "a", "new"));
  assert_true(glob("*", "a", "anything"));
  assert_true(glob("news.*", "a", "news.sport"));
  assert_true(glob("news.*", "a", "news."));
  assert_false(glob("news.*", "a", "news"));
  assert_true(glob("*.x.*", "a", "a.x.b.x.c"));
  assert_true(glob("a*b*c", "a", "aXbYbZc"));
  assert_false(glob("a*b*c", "a", "aXbYbZ"));
  assert_true(glob("user:{sub}", "alice", "user:alice"));
  assert_false(glob("user:{sub}", "alice", "user:alice2"));
  assert_false(glob("user:{sub}", "alice", "user:bob"));
  assert_true(glob("user:{sub}:*", "alice", "user:alice:inbox"));
  assert_true(glob("*{sub}", "alice", "x.alice"));
  /* A sub is literal: its `*` matches only a `*`. */
  assert_false(glob("user:{sub}", "a*", "user:abc"));
  assert_true(glob("user:{sub}", "a*", "user:a*"));
  /* `{sub` without its brace is literal text. */
  assert_true(glob("{su", "a", "{su"));
  assert_false(glob("", "a", "x"));
}

static const char *const news_subs[] = {"news*", "user:{sub}"};
static const char *const news_pubs[] = {"chat"};

static hub_auth alice(hub_tstamp expires) {
  hub_auth a;
  memset(&a, 0, sizeof(a));
  a.sub = "alice";
  a.sub_len = 5;
  a.subscribe = news_subs;
  a.nsubscribe = 2;
  a.publish = news_pubs;
  a.npublish = 1;
  a.expires = expires;
  return a;
}

static void start_auth(th *t) {
  th_init(t);
  t->cfg.auth = 1;
  t->cfg.ping_interval_ns = TH_S(1000);
  t->cfg.pong_timeout_ns = TH_S(2000);
  th_start(t);
}

static hub_conn_id open_auth(th *t, const hub_auth *a) {
  hub_conn_id id = 0;
  int rc =
    hub_on_conn_open_auth(t->h, &id, "127.0.0.1:1", a, (void *)0x1000, t->now);
  th_drain(t);
  assert_int_equal(rc, 0);
  return id;
}

static void test_auth_open_needs_claims(void **state) {
  th t;
  hub_conn_id id = 0;
  hub_auth a = alice(HUB_TSTAMP_NONE);
  (void)state;
  start_auth(&t);
  assert_int_equal(hub_on_conn_open(t.h, &id, "x", NULL, t.now),
                   HUB_ERR_INVALID_ARGUMENT);
  assert_int_equal(hub_on_conn_open_auth(t.h, &id, "x", NULL, NULL, t.now),
                   HUB_ERR_INVALID_ARGUMENT);
  a.sub_len = 0;
  assert_int_equal(hub_on_conn_open_auth(t.h, &id, "x", &a, NULL, t.now),
                   HUB_ERR_INVALID_ARGUMENT);
  a.sub_len = 129;
  assert_int_equal(hub_on_conn_open_auth(t.h, &id, "x", &a, NULL, t.now),
                   HUB_ERR_INVALID_ARGUMENT);
  assert_int_equal(id, 0);
  th_expect_none(&t);
  th_fini(&t);
}

static void test_auth_permission_denied_keeps_open(void **state) {
  th t;
  hub_auth a = alice(HUB_TSTAMP_NONE);
  hub_conn_id c;
  (void)state;
  start_auth(&t);
  c = open_auth(&t, &a);
  th_msg(&t, c, "{\"type\":\"subscribe\",\"channel\":\"sport\",\"id\":1}");
  th_json_expect(th_expect_error(&t, c, "1")->data, "error",
                 "\"permission denied\"");
  th_msg(&t, c, "{\"type\":\"publish\",\"channel\":\"news\",\"data\":1}");
  th_json_expect(th_expect_error(&t, c, NULL)->data, "error",
                 "\"permission denied\"");
  th_expect_none(&t);
  assert_int_equal(hub_channel_subscribers(t.h, "sport", 5), 0);
  /* Granted ones work, the connection is still open. */
  th_msg(&t, c, "{\"type\":\"subscribe\",\"channel\":\"news.x\",\"id\":2}");
  th_expect_reply(&t, c, "subscribed", "\"news.x\"", "2");
  th_msg(&t, c, "{\"type\":\"subscribe\",\"channel\":\"user:alice\"}");
  th_expect_reply(&t, c, "subscribed", "\"user:alice\"", NULL);
  th_msg(&t, c, "{\"type\":\"publish\",\"channel\":\"chat\",\"data\":1}");
  th_expect_reply(&t, c, "published", "\"chat\"", NULL);
  th_expect_none(&t);
  th_check(&t);
  th_fini(&t);
}

static void test_auth_off_grants_everything(void **state) {
  th t;
  hub_conn_id c;
  (void)state;
  th_init(&t);
  th_start(&t);
  c = th_open(&t);
  th_msg(&t, c, "{\"type\":\"subscribe\",\"channel\":\"any\",\"id\":1}");
  th_expect_reply(&t, c, "subscribed", "\"any\"", "1");
  /* Without authentication refresh is no request at all. */
  th_msg(&t, c, "{\"type\":\"refresh\",\"token\":\"x\",\"id\":2}");
  th_json_expect(th_expect_error(&t, c, "2")->data, "error",
                 "\"unknown type\"");
  th_expect_none(&t);
  th_fini(&t);
}

static void test_auth_expiry_closes_4001(void **state) {
  th t;
  hub_auth a = alice(TH_T0 + TH_S(10));
  hub_conn_id c, d;
  th_eff *e;
  (void)state;
  start_auth(&t);
  c = open_auth(&t, &a);
  a.expires = HUB_TSTAMP_NONE;
  d = open_auth(&t, &a);
  assert_true(hub_get_expiry(t.h) <= TH_T0 + TH_S(10));
  th_advance_to(&t, TH_T0 + TH_S(10) - 1);
  assert_int_equal(th_count(&t, HUB_EFF_CLOSE, 0), 0);
  th_advance_to(&t, TH_T0 + TH_S(10));
  e = th_expect_close(&t, c, 4001, HUB_CLOSE_TOKEN_EXPIRED);
  assert_string_equal(e->reason, "token expired");
  assert_string_equal(hub_close_kind_name(HUB_CLOSE_TOKEN_EXPIRED),
                      "token_expired");
  th_closed(&t, c);
  (void)d;
  while (th_take(&t, HUB_EFF_PING, 0) != NULL) {
  }
  th_expect_none(&t);
  th_check(&t);
  th_fini(&t);
}

static th_eff *refresh(th *t, hub_conn_id c, const char *tok);

/* Expiries in any order close in (expires, id) order; closes by the
   peer and refreshes in between keep the heap whole. */
static void test_auth_expiry_heap_order(void **state) {
  th t;
  enum { N = 300 };
  static hub_conn_id ids[N];
  static hub_tstamp exp[N];
  uint64_t x = 88172645463325252u;
  size_t i, closed = 0;
  hub_tstamp last = 0;
  hub_conn_id last_id = 0;
  (void)state;
  start_auth(&t);
  for (i = 0; i < N; i++) {
    hub_auth a;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    /* Few distinct values: many ties. */
    exp[i] = TH_T0 + TH_S(1 + x % 50);
    a = alice(i % 7 == 0 ? HUB_TSTAMP_NONE : exp[i]);
    ids[i] = open_auth(&t, &a);
  }
  th_check(&t);
  /* Some leave early, one gets an expiry by refresh. */
  for (i = 0; i < N; i += 11) {
    th_closed(&t, ids[i]);
  }
  th_check(&t);
  {
    hub_auth a = alice(TH_T0 + TH_S(25));
    refresh(&t, ids[7], "t");
    assert_int_equal(hub_on_conn_verified(t.h, ids[7], &a, NULL, t.now), 0);
    th_drain(&t);
    th_written_all(&t, ids[7]);
    exp[7] = TH_T0 + TH_S(25);
  }
  th_clear(&t);
  th_advance_to(&t, TH_T0 + TH_S(60));
  for (i = 0; i < t.n; i++) {
    th_eff *e = &t.effs[i];
    size_t k;
    if (e->type != HUB_EFF_CLOSE) {
      continue;
    }
    assert_int_equal(e->close_code, 4001);
    for (k = 0; k < N && ids[k] != e->conn; k++) {
    }
    assert_true(k < N);
    assert_true(exp[k] > last || (exp[k] == last && e->conn > last_id));
    last = exp[k];
    last_id = e->conn;
    closed++;
  }
  /* Every 7th has no exp (7 got one by refresh), every 11th left. */
  for (i = 0; i < N; i++) {
    int expect = (i % 7 != 0 || i == 7) && i % 11 != 0;
    closed -= (size_t)expect;
  }
  assert_int_equal(closed, 0);
  th_check(&t);
  th_fini(&t);
}

static th_eff *refresh(th *t, hub_conn_id c, const char *tok) {
  char m[256];
  th_eff *e;
  snprintf(m, sizeof(m), "{\"type\":\"refresh\",\"token\":\"%s\",\"id\":4}",
           tok);
  assert_int_equal(th_msg(t, c, m), 0);
  e = th_take(t, HUB_EFF_VERIFY, c);
  assert_non_null(e);
  assert_string_equal(e->data, tok);
  assert_ptr_equal(e->conn_user, (void *)0x1000);
  return e;
}

static void test_auth_refresh_extends(void **state) {
  th t;
  hub_auth a = alice(TH_T0 + TH_S(10));
  hub_conn_id c;
  (void)state;
  start_auth(&t);
  c = open_auth(&t, &a);
  refresh(&t, c, "tok");
  th_expect_none(&t);
  /* A second refresh while the first waits. */
  th_msg(&t, c, "{\"type\":\"refresh\",\"token\":\"t2\",\"id\":5}");
  th_json_expect(th_expect_error(&t, c, "5")->data, "error",
                 "\"refresh in progress\"");
  a.expires = TH_T0 + TH_S(20);
  assert_int_equal(hub_on_conn_verified(t.h, c, &a, NULL, t.now), 0);
  th_drain(&t);
  th_expect_reply(&t, c, "refreshed", NULL, "4");
  th_expect_none(&t);
  th_written_all(&t, c);
  /* No answer is waiting any more. */
  assert_int_equal(hub_on_conn_verified(t.h, c, &a, NULL, t.now),
                   HUB_ERR_INVALID_ARGUMENT);
  th_advance_to(&t, TH_T0 + TH_S(15));
  assert_int_equal(th_count(&t, HUB_EFF_CLOSE, 0), 0);
  th_advance_to(&t, TH_T0 + TH_S(20));
  th_expect_close(&t, c, 4001, HUB_CLOSE_TOKEN_EXPIRED);
  th_fini(&t);
}

static void test_auth_refresh_narrower_unsubscribes(void **state) {
  th t;
  hub_auth a = alice(HUB_TSTAMP_NONE);
  static const char *const only_news[] = {"news"};
  hub_conn_id c;
  th_eff *e;
  (void)state;
  start_auth(&t);
  c = open_auth(&t, &a);
  th_sub(&t, c, "news");
  th_sub(&t, c, "news.x");
  th_sub(&t, c, "user:alice");
  refresh(&t, c, "narrow");
  a.subscribe = only_news;
  a.nsubscribe = 1;
  assert_int_equal(hub_on_conn_verified(t.h, c, &a, NULL, t.now), 0);
  th_drain(&t);
  th_expect_reply(&t, c, "refreshed", NULL, "4");
  e = th_take(&t, HUB_EFF_SEND, c);
  assert_non_null(e);
  assert_string_equal(e->data, "{\"type\":\"unsubscribed\",\"channel\":"
                               "\"news.x\",\"reason\":\"permission denied\"}");
  e = th_take(&t, HUB_EFF_SEND, c);
  assert_non_null(e);
  assert_string_equal(e->data, "{\"type\":\"unsubscribed\",\"channel\":"
                               "\"user:alice\",\"reason\":\"permission "
                               "denied\"}");
  th_expect_none(&t);
  assert_int_equal(hub_channel_subscribers(t.h, "news", 4), 1);
  assert_int_equal(hub_channel_subscribers(t.h, "news.x", 6), 0);
  th_msg(&t, c, "{\"type\":\"subscribe\",\"channel\":\"news.y\"}");
  th_json_expect(th_expect_error(&t, c, NULL)->data, "error",
                 "\"permission denied\"");
  th_check(&t);
  th_fini(&t);
}

static void test_auth_refresh_failures_change_nothing(void **state) {
  th t;
  hub_auth a = alice(TH_T0 + TH_S(10)), b = alice(TH_T0 + TH_S(99));
  static const char *const none[] = {"x"};
  hub_conn_id c;
  (void)state;
  start_auth(&t);
  c = open_auth(&t, &a);
  th_sub(&t, c, "news");
  /* Another sub. */
  refresh(&t, c, "bob");
  b.sub = "bob";
  b.sub_len = 3;
  b.subscribe = none;
  b.nsubscribe = 1;
  assert_int_equal(hub_on_conn_verified(t.h, c, &b, NULL, t.now), 0);
  th_drain(&t);
  th_json_expect(th_expect_error(&t, c, "4")->data, "error",
                 "\"token sub does not match\"");
  th_expect_none(&t);
  /* Did not verify. */
  refresh(&t, c, "bad");
  assert_int_equal(hub_on_conn_verified(t.h, c, NULL, "bad signature", t.now),
                   0);
  th_drain(&t);
  th_json_expect(th_expect_error(&t, c, "4")->data, "error",
                 "\"bad signature\"");
  th_expect_none(&t);
  /* A missing token. */
  th_msg(&t, c, "{\"type\":\"refresh\",\"id\":6}");
  th_json_expect(th_expect_error(&t, c, "6")->data, "error",
                 "\"missing field: token\"");
  th_written_all(&t, c);
  assert_int_equal(hub_channel_subscribers(t.h, "news", 4), 1);
  /* The old expiry still holds. */
  th_advance_to(&t, TH_T0 + TH_S(10));
  th_expect_close(&t, c, 4001, HUB_CLOSE_TOKEN_EXPIRED);
  assert_int_equal(hub_channel_subscribers(t.h, "news", 4), 0);
  th_fini(&t);
}

static void test_auth_verify_discarded_on_close(void **state) {
  th t;
  hub_auth a = alice(HUB_TSTAMP_NONE);
  hub_conn_id c;
  const hub_effect *e;
  static const char m[] = "{\"type\":\"refresh\",\"token\":\"t\"}";
  (void)state;
  start_auth(&t);
  c = open_auth(&t, &a);
  assert_int_equal(
    hub_on_conn_msg(t.h, c, 0, (const uint8_t *)m, strlen(m), t.now), 0);
  /* The VERIFY is queued, then the connection goes. */
  assert_non_null(hub_effect_peek(t.h));
  assert_int_equal(hub_effect_peek(t.h)->type, HUB_EFF_VERIFY);
  hub_on_conn_closed(t.h, c, t.now);
  e = hub_effect_peek(t.h);
  assert_null(e);
  assert_int_equal(hub_on_conn_verified(t.h, c, &a, NULL, t.now),
                   HUB_ERR_UNKNOWN_CONN);
  th_fini(&t);
}

static void test_auth_registry_user(void **state) {
  th t;
  hub_auth a = alice(HUB_TSTAMP_NONE);
  hub_conn_id c;
  th_eff *e;
  (void)state;
  th_init(&t);
  t.cfg.auth = 1;
  t.cfg.backplane = 1;
  t.cfg.registry = 1;
  th_start(&t);
  th_bp_up(&t);
  th_clear(&t);
  c = open_auth(&t, &a);
  e = th_expect_reg_set(&t, "conn:0:1", t.cfg.conn_ttl_s);
  th_json_expect(e->data, "user", "\"alice\"");
  th_json_expect(e->data, "conn_id", "\"0:1\"");
  (void)c;
  th_fini(&t);
}

/* Every allocation failure of open, refresh and its answer: NOMEM with
   nothing done, or success; never a leak, hub_check always holds. */
static void test_auth_alloc_failures(void **state) {
  uint64_t k;
  static const char *const only_news[] = {"news"};
  static const char rmsg[] = "{\"type\":\"refresh\",\"token\":\"t\",\"id\":1}";
  (void)state;
  for (k = 1; k < 40; k++) {
    th t;
    hub_auth a = alice(TH_T0 + TH_S(10));
    hub_conn_id c = 0;
    int rc;
    start_auth(&t);
    th_mem_fail_at(&t.mem, k, 1);
    rc = hub_on_conn_open_auth(t.h, &c, "x", &a, (void *)0x1000, t.now);
    th_mem_fail_at(&t.mem, 0, 0);
    th_drain(&t);
    th_check(&t);
    if (rc == HUB_ERR_NOMEM) {
      assert_int_equal(c, 0);
      th_expect_none(&t);
      th_fini(&t);
      continue;
    }
    assert_int_equal(rc, 0);
    th_sub(&t, c, "news");
    th_sub(&t, c, "news.x");
    th_clear(&t);
    th_mem_fail_at(&t.mem, k, 1);
    rc = hub_on_conn_msg(t.h, c, 0, (const uint8_t *)rmsg, strlen(rmsg), t.now);
    th_mem_fail_at(&t.mem, 0, 0);
    th_drain(&t);
    th_check(&t);
    if (rc == HUB_ERR_NOMEM) {
      th_expect_none(&t);
      th_fini(&t);
      continue;
    }
    if (th_take(&t, HUB_EFF_VERIFY, c) == NULL) {
      th_expect_none(&t);
      fail_msg("k=%llu: no VERIFY", (unsigned long long)k);
    }
    a.subscribe = only_news;
    a.nsubscribe = 1;
    th_mem_fail_at(&t.mem, k, 1);
    rc = hub_on_conn_verified(t.h, c, &a, NULL, t.now);
    th_mem_fail_at(&t.mem, 0, 0);
    th_drain(&t);
    th_check(&t);
    if (rc == HUB_ERR_NOMEM) {
      th_expect_none(&t);
      assert_int_equal(hub_channel_subscribers(t.h, "news.x", 6), 1);
      /* Still waiting: the answer can come again. */
      assert_int_equal(hub_on_conn_verified(t.h, c, &a, NULL, t.now), 0);
      th_drain(&t);
    }
    th_expect_reply(&t, c, "refreshed", NULL, "1");
    assert_non_null(th_take(&t, HUB_EFF_SEND, c));
    assert_int_equal(hub_channel_subscribers(t.h, "news.x", 6), 0);
    th_expect_none(&t);
    th_fini(&t);
  }
}

/* --------------------------------------------- through the shell */

typedef struct sk {
  th t;
  sh s;
  hub_conn_id id;
  sh_oq q;
  char last[512]; /* the last SEND's payload */
  size_t sends, verifies, closes;
  uint16_t close_code;
  int fail_next_answer; /* verify arms allocation failure for the answer */
} sk;

static int sk_send(void *user, void *conn_user, hub_conn_id id, hub_buf *b) {
  sk *k = user;
  size_t n = hub_buf_payload_len(b);
  (void)conn_user;
  (void)id;
  if (n >= sizeof(k->last)) {
    n = sizeof(k->last) - 1;
  }
  memcpy(k->last, hub_buf_payload(b), n);
  k->last[n] = '\0';
  k->sends++;
  return 0;
}

static void sk_ping(void *user, void *conn_user, hub_conn_id id) {
  (void)user;
  (void)conn_user;
  (void)id;
}

static int sk_close(void *user, void *conn_user, hub_conn_id id, uint16_t code,
                    const char *reason, hub_close_kind kind) {
  sk *k = user;
  (void)conn_user;
  (void)id;
  (void)reason;
  (void)kind;
  k->closes++;
  k->close_code = code;
  return SH_CLOSE_DONE;
}

static int sk_write(void *user, sh_oq *q, hub_conn_id *id, size_t *msgs,
                    size_t *bytes) {
  (void)user;
  (void)q;
  *id = 0;
  *msgs = *bytes = 0;
  return 0;
}

static void sk_set_timer(void *user, hub_tstamp at) {
  (void)user;
  (void)at;
}

static int sk_verify(void *user, void *conn_user, hub_conn_id id,
                     const char *token, size_t len, const hub_auth **auth,
                     const char **err) {
  static hub_auth a;
  sk *k = user;
  (void)conn_user;
  assert_int_equal(id, k->id);
  assert_int_equal(strlen(token), len);
  k->verifies++;
  if (strcmp(token, "good") != 0) {
    *err = "bad signature";
    return -1;
  }
  a = alice(HUB_TSTAMP_NONE);
  a.nsubscribe = 0; /* narrower: drops every subscription */
  *auth = &a;
  if (k->fail_next_answer) {
    th_mem_fail_at(&k->t.mem, 1, 1);
  }
  return 0;
}

static void sk_start(sk *k) {
  sh_transport tr;
  hub_auth a = alice(HUB_TSTAMP_NONE);
  memset(k, 0, sizeof(*k));
  start_auth(&k->t);
  memset(&tr, 0, sizeof(tr));
  tr.user = k;
  tr.send = sk_send;
  tr.ping = sk_ping;
  tr.close = sk_close;
  tr.write = sk_write;
  tr.set_timer = sk_set_timer;
  tr.verify = sk_verify;
  sh_init(&k->s, k->t.h, NULL, &k->t.cfg, &tr);
  sh_drain(&k->s, k->t.now);
  a.sub_len = 0;
  assert_int_equal(sh_conn_open_auth(&k->s, &k->id, "x", &a, k, k->t.now),
                   SH_BAD_REQUEST);
  a.sub_len = 5;
  assert_int_equal(sh_conn_open_auth(&k->s, &k->id, "x", &a, k, k->t.now),
                   SH_OK);
}

static void sk_msg(sk *k, const char *m) {
  sh_conn_msg(&k->s, k->id, k, 0, (const uint8_t *)m, strlen(m), k->t.now);
}

static void test_auth_shell_verify(void **state) {
  sk *k = calloc(1, sizeof(*k));
  (void)state;
  assert_non_null(k);
  sk_start(k);
  sk_msg(k, "{\"type\":\"subscribe\",\"channel\":\"news\"}");
  assert_string_equal(k->last,
                      "{\"type\":\"subscribed\",\"channel\":\"news\"}");
  sk_msg(k, "{\"type\":\"refresh\",\"token\":\"bad\",\"id\":1}");
  assert_int_equal(k->verifies, 1);
  assert_string_equal(
    k->last, "{\"type\":\"error\",\"id\":1,\"error\":\"bad signature\"}");
  sk_msg(k, "{\"type\":\"refresh\",\"token\":\"good\",\"id\":2}");
  assert_int_equal(k->verifies, 2);
  assert_string_equal(k->last, "{\"type\":\"unsubscribed\",\"channel\":"
                               "\"news\",\"reason\":\"permission denied\"}");
  assert_int_equal(hub_channel_subscribers(k->t.h, "news", 4), 0);
  assert_int_equal(k->closes, 0);
  /* The answer out of memory: the shell closes that connection 1011. */
  k->fail_next_answer = 1;
  sk_msg(k, "{\"type\":\"refresh\",\"token\":\"good\",\"id\":3}");
  th_mem_fail_at(&k->t.mem, 0, 0);
  assert_int_equal(k->closes, 1);
  assert_int_equal(k->close_code, 1011);
  th_check(&k->t);
  th_fini(&k->t);
  free(k);
}

/* ---------------------------------------------------- sh_claims */

static void test_auth_claims_parse(void **state) {
  static sh_claims c;
  const char *err;
  const char *j = "{\"sub\":\"al\\u00e9\",\"subscribe\":[\"news.*\",\"user:"
                  "{sub}\"],\"exp\":1700000010,\"nbf\":5.5,\"x\":{\"y\":[1,"
                  "true,null]}}";
  (void)state;
  assert_int_equal(sh_claims_parse(&c, j, strlen(j), &err), 0);
  assert_int_equal(c.auth.sub_len, 4);
  assert_memory_equal(c.auth.sub, "al\xc3\xa9", 4);
  assert_int_equal(c.auth.nsubscribe, 2);
  assert_string_equal(c.auth.subscribe[1], "user:{sub}");
  assert_int_equal(c.auth.npublish, 0);
  assert_true(c.has_exp && c.exp == 1700000010);
  assert_true(c.has_nbf && c.nbf == 5);
  assert_int_equal(c.auth.expires, HUB_TSTAMP_NONE);

  j = "{\"subscribe\":[]}";
  assert_int_equal(sh_claims_parse(&c, j, strlen(j), &err), -1);
  assert_string_equal(err, "missing sub");
  j = "{\"sub\":7}";
  assert_int_equal(sh_claims_parse(&c, j, strlen(j), &err), -1);
  assert_string_equal(err, "sub must be a string of 1 to 128 bytes");
  j = "{\"sub\":\"\"}";
  assert_int_equal(sh_claims_parse(&c, j, strlen(j), &err), -1);
  j = "{\"sub\":\"a\",\"publish\":\"x\"}";
  assert_int_equal(sh_claims_parse(&c, j, strlen(j), &err), -1);
  assert_string_equal(err, "publish must be an array of strings");
  j = "{\"sub\":\"a\",\"publish\":[1]}";
  assert_int_equal(sh_claims_parse(&c, j, strlen(j), &err), -1);
  j = "{\"sub\":\"a\"";
  assert_int_equal(sh_claims_parse(&c, j, strlen(j), &err), -1);
  j = "[]";
  assert_int_equal(sh_claims_parse(&c, j, strlen(j), &err), -1);
  {
    char big[300];
    memset(big, 0, sizeof(big));
    strcpy(big, "{\"sub\":\"");
    memset(big + 8, 'a', 129);
    strcat(big, "\"}");
    assert_int_equal(sh_claims_parse(&c, big, strlen(big), &err), -1);
    big[8 + 128] = '"';
    big[8 + 129] = '}';
    big[8 + 130] = '\0';
    assert_int_equal(sh_claims_parse(&c, big, strlen(big), &err), 0);
    assert_int_equal(c.auth.sub_len, 128);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_auth_glob_star_and_sub),
    cmocka_unit_test(test_auth_open_needs_claims),
    cmocka_unit_test(test_auth_permission_denied_keeps_open),
    cmocka_unit_test(test_auth_off_grants_everything),
    cmocka_unit_test(test_auth_expiry_closes_4001),
    cmocka_unit_test(test_auth_refresh_extends),
    cmocka_unit_test(test_auth_expiry_heap_order),
    cmocka_unit_test(test_auth_refresh_narrower_unsubscribes),
    cmocka_unit_test(test_auth_refresh_failures_change_nothing),
    cmocka_unit_test(test_auth_verify_discarded_on_close),
    cmocka_unit_test(test_auth_registry_user),
    cmocka_unit_test(test_auth_alloc_failures),
    cmocka_unit_test(test_auth_shell_verify),
    cmocka_unit_test(test_auth_claims_parse),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
