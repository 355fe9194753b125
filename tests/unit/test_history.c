/*
 * test_history.c - channel history with the embedded backplane
 * (core/hub_history.c): offsets and epochs, `since` recovery, the
 * history-TTLs on the core's clock, GET /history's query, the
 * configuration, and allocation failures that change nothing.
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SUB(ch) "{\"type\":\"subscribe\",\"channel\":\"" ch "\"}"
#define PUB(ch, data)                                                          \
  "{\"type\":\"publish\",\"channel\":\"" ch "\",\"data\":" data "}"

static void start_hist(th *t, uint32_t size) {
  th_init(t);
  t->cfg.history_size = size;
  th_start(t);
}

/* The next SEND to |c|, whose payload must be exactly |want|. */
static void expect_frame(th *t, hub_conn_id c, const char *want) {
  th_eff *e = th_take(t, HUB_EFF_SEND, c);
  assert_non_null(e);
  if (e->data_len != strlen(want) || memcmp(e->data, want, e->data_len) != 0) {
    fail_msg("frame %.*s, want %s", (int)e->data_len, e->data, want);
  }
}

/* The epoch in |c|'s next frame, a "subscribed" reply. */
static void take_epoch(th *t, hub_conn_id c, char *epoch, size_t cap) {
  th_eff *e = th_take(t, HUB_EFF_SEND, c);
  const char *v;
  size_t n;
  assert_non_null(e);
  assert_int_equal(th_json_get(e->data, e->data_len, "epoch", &v, &n), 1);
  assert_true(n >= 3 && n - 2 < cap);
  memcpy(epoch, v + 1, n - 2);
  epoch[n - 2] = '\0';
}

static void history_json(th *t, const char *ch, uint64_t since, uint64_t limit,
                         char *out, size_t cap) {
  hub_buf *b = NULL;
  const char *err = NULL;
  assert_int_equal(
    hub_history_get(t->h, ch, strlen(ch), since, limit, t->now, &b, &err), 0);
  assert_true(b->len < cap);
  memcpy(out, b->data, b->len);
  out[b->len] = '\0';
  hub_buf_unref(b);
}

static void test_history_offsets_and_epoch(void **state) {
  th t;
  hub_conn_id a;
  char epoch[40], want[256], got[512];
  const char *err;

  (void)state;
  start_hist(&t, 8);
  a = th_open(&t);
  th_msg(&t, a, "{\"type\":\"subscribe\",\"channel\":\"news\",\"id\":1}");
  take_epoch(&t, a, epoch, sizeof(epoch));
  assert_int_equal(strlen(epoch), 16);
  th_expect_none(&t);

  th_msg(&t, a,
         "{\"type\":\"publish\",\"channel\":\"news\",\"data\":{\"x\":1},"
         "\"id\":3}");
  expect_frame(&t, a,
               "{\"type\":\"published\",\"channel\":\"news\",\"id\":3,"
               "\"offset\":1}");
  expect_frame(&t, a,
               "{\"type\":\"message\",\"channel\":\"news\",\"offset\":1,"
               "\"data\":{\"x\":1}}");
  th_expect_none(&t);
  assert_int_equal(th_publish(&t, "{\"channel\":\"news\",\"data\":2}", &err),
                   0);
  assert_int_equal(hub_last_publish_offset(t.h), 2);
  expect_frame(&t, a,
               "{\"type\":\"message\",\"channel\":\"news\",\"offset\":2,"
               "\"data\":2}");
  /* A channel the globs leave out, under the same hub. */
  assert_int_equal(th_publish(&t, "{\"channel\":\"x\",\"data\":2}", &err), 0);
  assert_int_equal(hub_last_publish_offset(t.h), 1);

  history_json(&t, "news", 0, 0, got, sizeof(got));
  snprintf(want, sizeof(want),
           "{\"channel\":\"news\",\"epoch\":\"%s\",\"offset\":2,\"messages\":"
           "[{\"offset\":1,\"data\":{\"x\":1}},{\"offset\":2,\"data\":2}]}",
           epoch);
  assert_string_equal(got, want);
  th_check(&t);
  th_fini(&t);
}

static void test_history_channels_globs(void **state) {
  th t;
  hub_conn_id a;
  const char *err;

  (void)state;
  th_init(&t);
  t.cfg.history_size = 4;
  assert_int_equal(hub_config_set(&t.cfg, "history-channels", "h.*,exact"), 0);
  th_start(&t);
  a = th_open(&t);
  th_msg(&t, a, SUB("plain"));
  expect_frame(&t, a, "{\"type\":\"subscribed\",\"channel\":\"plain\"}");
  th_msg(&t, a, PUB("plain", "1"));
  expect_frame(&t, a, "{\"type\":\"published\",\"channel\":\"plain\"}");
  expect_frame(&t, a,
               "{\"type\":\"message\",\"channel\":\"plain\",\"data\":1}");
  assert_int_equal(th_publish(&t, "{\"channel\":\"h.1\",\"data\":1}", &err), 0);
  assert_int_equal(hub_last_publish_offset(t.h), 1);
  assert_int_equal(th_publish(&t, "{\"channel\":\"exactly\",\"data\":1}", &err),
                   0);
  assert_int_equal(hub_last_publish_offset(t.h), 0);
  {
    hub_buf *b = NULL;
    assert_int_equal(hub_history_get(t.h, "plain", 5, 0, 0, t.now, &b, &err),
                     HUB_ERR_BAD_REQUEST);
    assert_null(b);
    assert_int_equal(hub_history_get(t.h, "a b", 3, 0, 0, t.now, &b, &err),
                     HUB_ERR_BAD_REQUEST);
  }
  th_fini(&t);
}

/* A subscribe with `since` on the current epoch gets the missed
   messages after its reply, in order, then live ones; anything else is
   "recovered":false with nothing replayed. */
static void test_history_recovery(void **state) {
  th t;
  hub_conn_id a, b;
  char epoch[40], msg[256], want[256];
  const char *err;
  int i;

  (void)state;
  start_hist(&t, 4);
  a = th_open(&t);
  th_msg(&t, a, SUB("n"));
  take_epoch(&t, a, epoch, sizeof(epoch));
  for (i = 1; i <= 6; i++) {
    snprintf(msg, sizeof(msg), "{\"channel\":\"n\",\"data\":%d}", i);
    assert_int_equal(th_publish(&t, msg, &err), 0);
  }
  th_clear(&t);

  b = th_open(&t);
  snprintf(msg, sizeof(msg),
           "{\"type\":\"subscribe\",\"channel\":\"n\",\"id\":9,\"since\":"
           "{\"offset\":3,\"epoch\":\"%s\"}}",
           epoch);
  assert_int_equal(th_msg(&t, b, msg), 0);
  snprintf(want, sizeof(want),
           "{\"type\":\"subscribed\",\"channel\":\"n\",\"id\":9,\"offset\":3,"
           "\"epoch\":\"%s\",\"recovered\":true}",
           epoch);
  expect_frame(&t, b, want);
  for (i = 4; i <= 6; i++) {
    snprintf(want, sizeof(want),
             "{\"type\":\"message\",\"channel\":\"n\",\"offset\":%d,"
             "\"data\":%d}",
             i, i);
    expect_frame(&t, b, want);
  }
  th_expect_none(&t);

  /* A repeat subscribe replays nothing: the subscription holds it all. */
  assert_int_equal(th_msg(&t, b, msg), 0);
  snprintf(want, sizeof(want),
           "{\"type\":\"subscribed\",\"channel\":\"n\",\"id\":9,\"offset\":6,"
           "\"epoch\":\"%s\",\"recovered\":false}",
           epoch);
  expect_frame(&t, b, want);
  th_expect_none(&t);

  /* Trimmed (4 kept: 3..6, so since 1 misses 2), wrong epoch, ahead. */
  {
    static const char *const bad[] = {"{\"offset\":1,\"epoch\":\"%s\"}",
                                      "{\"offset\":6,\"epoch\":\"X%s\"}",
                                      "{\"offset\":7,\"epoch\":\"%s\"}"};
    size_t k;
    for (k = 0; k < 3; k++) {
      hub_conn_id c = th_open(&t);
      char since[128];
      snprintf(since, sizeof(since), bad[k], epoch);
      snprintf(msg, sizeof(msg),
               "{\"type\":\"subscribe\",\"channel\":\"n\",\"since\":%s}",
               since);
      assert_int_equal(th_msg(&t, c, msg), 0);
      snprintf(want, sizeof(want),
               "{\"type\":\"subscribed\",\"channel\":\"n\",\"offset\":6,"
               "\"epoch\":\"%s\",\"recovered\":false}",
               epoch);
      expect_frame(&t, c, want);
      th_expect_none(&t);
    }
  }
  /* since 2 with 3..6 kept: recovered. */
  {
    hub_conn_id c = th_open(&t);
    snprintf(msg, sizeof(msg),
             "{\"type\":\"subscribe\",\"channel\":\"n\",\"since\":"
             "{\"offset\":2,\"epoch\":\"%s\"}}",
             epoch);
    assert_int_equal(th_msg(&t, c, msg), 0);
    assert_int_equal(th_count(&t, HUB_EFF_SEND, c), 5);
    th_clear(&t);
  }
  th_check(&t);
  th_fini(&t);
}

static void test_history_since_without_history(void **state) {
  th t;
  hub_conn_id a;

  (void)state;
  th_init(&t);
  th_start(&t);
  a = th_open(&t);
  th_msg(&t, a,
         "{\"type\":\"subscribe\",\"channel\":\"n\",\"id\":1,\"since\":"
         "{\"offset\":2,\"epoch\":\"E\"}}");
  expect_frame(&t, a,
               "{\"type\":\"subscribed\",\"channel\":\"n\",\"id\":1,"
               "\"recovered\":false}");
  th_msg(&t, a, "{\"type\":\"subscribe\",\"channel\":\"n\",\"since\":[1]}");
  expect_frame(&t, a, "{\"type\":\"error\",\"error\":\"invalid since\"}");
  th_msg(&t, a,
         "{\"type\":\"subscribe\",\"channel\":\"n\",\"since\":"
         "{\"offset\":-1,\"epoch\":\"E\"}}");
  expect_frame(&t, a, "{\"type\":\"error\",\"error\":\"invalid since\"}");
  th_expect_none(&t);
  th_fini(&t);
}

/* history-ttl drops the kept messages (offset and epoch stay);
   history-meta-ttl drops the record, so the next publish starts a new
   epoch at 1 - but not while the channel has local subscribers. */
static void test_history_ttls(void **state) {
  th t;
  hub_conn_id a;
  const char *err;
  char e1[40], e2[40], got[512];

  (void)state;
  th_init(&t);
  t.cfg.history_size = 4;
  t.cfg.history_ttl_ns = TH_S(10);
  t.cfg.history_meta_ttl_ns = TH_S(30);
  t.cfg.ping_interval_ns = TH_S(1000); /* no pong timeout in the way */
  t.cfg.pong_timeout_ns = TH_S(1000);
  th_start(&t);
  assert_int_equal(hub_get_expiry(t.h), HUB_TSTAMP_NONE);
  assert_int_equal(th_publish(&t, "{\"channel\":\"n\",\"data\":1}", &err), 0);
  assert_int_equal(hub_get_expiry(t.h), t.now + TH_S(10));
  th_advance(&t, TH_S(10));
  history_json(&t, "n", 0, 0, got, sizeof(got));
  assert_non_null(strstr(got, "\"offset\":1,\"messages\":[]}"));
  assert_int_equal(hub_get_expiry(t.h), t.now + TH_S(20));
  assert_int_equal(th_publish(&t, "{\"channel\":\"n\",\"data\":2}", &err), 0);
  assert_int_equal(hub_last_publish_offset(t.h), 2);
  th_advance(&t, TH_S(30));
  assert_int_equal(th_publish(&t, "{\"channel\":\"n\",\"data\":3}", &err), 0);
  assert_int_equal(hub_last_publish_offset(t.h), 1);

  /* Held by a subscriber: the record outlives its meta TTL. */
  a = th_open(&t);
  th_msg(&t, a, SUB("n"));
  take_epoch(&t, a, e1, sizeof(e1));
  th_written_all(&t, a);
  th_advance(&t, TH_S(100));
  th_clear(&t);
  assert_int_equal(th_publish(&t, "{\"channel\":\"n\",\"data\":4}", &err), 0);
  assert_int_equal(hub_last_publish_offset(t.h), 2);
  th_closed(&t, a);
  th_advance(&t, TH_S(31));
  history_json(&t, "n", 0, 0, got, sizeof(got));
  assert_non_null(strstr(got, "\"offset\":0,"));
  a = th_open(&t);
  th_msg(&t, a, SUB("n"));
  take_epoch(&t, a, e2, sizeof(e2));
  assert_string_not_equal(e1, e2);
  th_check(&t);
  th_fini(&t);
}

static void test_history_query_limits(void **state) {
  th t;
  const char *err;
  char got[1024], msg[64];
  int i;

  (void)state;
  start_hist(&t, 5);
  for (i = 1; i <= 9; i++) {
    snprintf(msg, sizeof(msg), "{\"channel\":\"q\",\"data\":%d}", i);
    assert_int_equal(th_publish(&t, msg, &err), 0);
  }
  history_json(&t, "q", 6, 2, got, sizeof(got));
  assert_non_null(strstr(got,
                         "\"offset\":9,\"messages\":[{\"offset\":7,\"data\":7},"
                         "{\"offset\":8,\"data\":8}]}"));
  history_json(&t, "q", 0, 100, got, sizeof(got));
  assert_non_null(strstr(got, "[{\"offset\":5,\"data\":5},"));
  history_json(&t, "q", 9, 0, got, sizeof(got));
  assert_non_null(strstr(got, "\"messages\":[]}"));
  history_json(&t, "q", 50, 0, got, sizeof(got));
  assert_non_null(strstr(got, "\"messages\":[]}"));
  history_json(&t, "q", UINT64_MAX, 0, got, sizeof(got));
  assert_non_null(strstr(got, "\"offset\":9,\"messages\":[]}"));
  th_fini(&t);
}

/* The same seed gives the same epochs; the query of a channel without a
   record names the epoch its record then gets. */
static void test_history_epochs_deterministic(void **state) {
  th t1, t2;
  char e1[40], e2[40], q[256];
  hub_conn_id a, b;

  (void)state;
  start_hist(&t1, 2);
  start_hist(&t2, 2);
  history_json(&t1, "z", 0, 0, q, sizeof(q));
  a = th_open(&t1);
  b = th_open(&t2);
  th_msg(&t1, a, SUB("z"));
  th_msg(&t2, b, SUB("z"));
  take_epoch(&t1, a, e1, sizeof(e1));
  take_epoch(&t2, b, e2, sizeof(e2));
  assert_string_equal(e1, e2);
  assert_non_null(strstr(q, e1));
  /* since {0, the named epoch} on a channel not made yet: recovered,
     with nothing to replay. */
  history_json(&t1, "y", 0, 0, q, sizeof(q));
  {
    const char *v = strstr(q, "\"epoch\":\"") + 9;
    char msg[256], want[256];
    snprintf(msg, sizeof(msg),
             "{\"type\":\"subscribe\",\"channel\":\"y\",\"since\":"
             "{\"offset\":0,\"epoch\":\"%.16s\"}}",
             v);
    snprintf(want, sizeof(want),
             "{\"type\":\"subscribed\",\"channel\":\"y\",\"offset\":0,"
             "\"epoch\":\"%.16s\",\"recovered\":true}",
             v);
    assert_int_equal(th_msg(&t1, a, msg), 0);
    expect_frame(&t1, a, want);
    th_expect_none(&t1);
  }
  th_fini(&t1);
  th_fini(&t2);
}

static void test_history_config(void **state) {
  hub_config cfg;
  hub *h = NULL;

  (void)state;
  hub_config_default(&cfg);
  assert_int_equal(cfg.history_size, 0);
  assert_int_equal(cfg.history_ttl_ns, TH_S(300));
  assert_int_equal(cfg.history_meta_ttl_ns, TH_S(86400));
  assert_string_equal(cfg.history_channels, "*");
  assert_int_equal(hub_config_set(&cfg, "history-size", "100"), 0);
  assert_int_equal(cfg.history_size, 100);
  assert_int_equal(hub_config_set(&cfg, "history-size", "100001"),
                   HUB_ERR_INVALID_ARGUMENT);
  assert_int_equal(hub_config_set(&cfg, "history-ttl", "0"),
                   HUB_ERR_INVALID_ARGUMENT);
  assert_int_equal(hub_config_set(&cfg, "history-ttl", "2s"), 0);
  assert_int_equal(cfg.history_ttl_ns, TH_S(2));
  assert_int_equal(hub_config_set(&cfg, "history-meta-ttl", "1m"), 0);
  assert_int_equal(cfg.history_meta_ttl_ns, TH_S(60));
  /* Both backplanes keep history. */
  cfg.backplane = 1;
  assert_int_equal(hub_new(&h, &cfg, NULL, 0), 0);
  hub_del(h);
  cfg.backplane = 0;
  assert_int_equal(hub_new(&h, &cfg, NULL, 0), 0);
  hub_del(h);
}

/* Every allocation of a publish and of a recovering subscribe, failed
   in turn: NOMEM, nothing changed (same query answer, hub_check holds),
   and the retry succeeds. */
static void test_history_nomem_changes_nothing(void **state) {
  uint64_t k;
  int done_pub = 0, done_sub = 0;

  (void)state;
  for (k = 1; !(done_pub && done_sub) && k < 64; k++) {
    th t;
    hub_conn_id a, b;
    const char *err;
    char before[512], after[512], epoch[40], msg[256];
    int rc;

    start_hist(&t, 3);
    a = th_open(&t);
    th_msg(&t, a, SUB("n"));
    take_epoch(&t, a, epoch, sizeof(epoch));
    assert_int_equal(th_publish(&t, "{\"channel\":\"n\",\"data\":1}", &err), 0);
    th_clear(&t);
    b = th_open(&t);
    history_json(&t, "n", 0, 0, before, sizeof(before));
    th_mem_fail_at(&t.mem, t.mem.calls + k, 0);
    rc = th_msg(&t, a, PUB("n", "2"));
    th_mem_fail_at(&t.mem, 0, 0);
    history_json(&t, "n", 0, 0, after, sizeof(after));
    th_check(&t);
    if (rc == HUB_ERR_NOMEM) {
      assert_string_equal(before, after);
      th_expect_none(&t);
      assert_int_equal(th_msg(&t, a, PUB("n", "2")), 0);
    } else {
      assert_int_equal(rc, 0);
      done_pub = 1;
    }
    th_clear(&t);
    snprintf(msg, sizeof(msg),
             "{\"type\":\"subscribe\",\"channel\":\"n\",\"since\":"
             "{\"offset\":0,\"epoch\":\"%s\"}}",
             epoch);
    th_mem_fail_at(&t.mem, t.mem.calls + k, 0);
    rc = th_msg(&t, b, msg);
    th_mem_fail_at(&t.mem, 0, 0);
    th_check(&t);
    if (rc == HUB_ERR_NOMEM) {
      th_expect_none(&t);
      assert_int_equal(hub_channel_subscribers(t.h, "n", 1), 1);
      assert_int_equal(th_msg(&t, b, msg), 0);
    } else {
      assert_int_equal(rc, 0);
      done_sub = 1;
    }
    assert_int_equal(th_count(&t, HUB_EFF_SEND, b), 3);
    th_fini(&t);
  }
  assert_true(done_pub && done_sub);
}

/* A replay that does not fit the connection's queue limits evicts it
   (1008, as any frame past the limits would), and the hub stays
   consistent. */
static void test_history_replay_past_queue_limit_evicts(void **state) {
  th t;
  hub_conn_id a, b;
  char epoch[40], msg[256];
  const char *err;
  int i;

  (void)state;
  th_init(&t);
  t.cfg.history_size = 16;
  t.cfg.max_queue_msgs = 4;
  th_start(&t);
  a = th_open(&t);
  th_msg(&t, a, SUB("n"));
  take_epoch(&t, a, epoch, sizeof(epoch));
  th_written_all(&t, a);
  th_closed(&t, a);
  for (i = 1; i <= 8; i++) {
    snprintf(msg, sizeof(msg), "{\"channel\":\"n\",\"data\":%d}", i);
    assert_int_equal(th_publish(&t, msg, &err), 0);
  }
  th_clear(&t);
  b = th_open(&t);
  snprintf(msg, sizeof(msg),
           "{\"type\":\"subscribe\",\"channel\":\"n\",\"since\":"
           "{\"offset\":0,\"epoch\":\"%s\"}}",
           epoch);
  assert_int_equal(th_msg(&t, b, msg), 0);
  /* The reply and three messages fit; the fifth frame does not. */
  assert_int_equal(th_count(&t, HUB_EFF_SEND, b), 4);
  th_expect_close(&t, b, 1008, HUB_CLOSE_SLOW_MSGS);
  th_check(&t);
  assert_int_equal(hub_channel_subscribers(t.h, "n", 1), 0);
  th_fini(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_history_offsets_and_epoch),
    cmocka_unit_test(test_history_channels_globs),
    cmocka_unit_test(test_history_recovery),
    cmocka_unit_test(test_history_since_without_history),
    cmocka_unit_test(test_history_ttls),
    cmocka_unit_test(test_history_query_limits),
    cmocka_unit_test(test_history_epochs_deterministic),
    cmocka_unit_test(test_history_config),
    cmocka_unit_test(test_history_nomem_changes_nothing),
    cmocka_unit_test(test_history_replay_past_queue_limit_evicts),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
