/*
 * test_rate.c - the refusals a publish can meet before it is delivered:
 * the per-connection publish limit (max_publish_rate, on the hub's
 * clock), a congested backplane (hub_on_bp_congested), and the id kept
 * in the error reply to JSON nested past the depth limit.
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char pub_msg[] =
  "{\"type\":\"publish\",\"channel\":\"news\",\"data\":1,\"id\":7}";

/* A bucket of N: N publishes at one instant pass, the next is refused
   with "rate limited" and not delivered; a second later N pass again. */
static void test_rate_bucket_refills_per_second(void **state) {
  th t;
  hub_conn_id a, b;
  hub_stats st;
  int i, round;

  (void)state;
  th_init(&t);
  t.cfg.max_publish_rate = 5;
  th_start(&t);
  a = th_open(&t);
  b = th_open(&t);
  th_sub(&t, b, "news");
  for (round = 0; round < 2; round++) {
    th_eff *e;
    for (i = 0; i < 5; i++) {
      assert_int_equal(th_msg(&t, a, pub_msg), 0);
      th_expect_reply(&t, a, "published", "\"news\"", "7");
      th_expect_message(&t, b, "news", "1");
    }
    assert_int_equal(th_msg(&t, a, pub_msg), 0);
    e = th_expect_error(&t, a, "7");
    assert_non_null(strstr(e->data, "rate limited"));
    th_expect_none(&t);
    th_written_all(&t, a);
    th_written_all(&t, b);
    th_clear(&t);
    th_advance(&t, HUB_NS_PER_S);
    th_clear(&t);
  }
  hub_get_stats(t.h, &st);
  assert_int_equal(st.rate_limited, 2);
  assert_int_equal(st.conns, 2); /* the publisher stays open */
  th_check(&t);
  th_fini(&t);
}

/* Half a second refills half the bucket; each connection has its own. */
static void test_rate_partial_refill_and_per_connection(void **state) {
  th t;
  hub_conn_id a, c;
  int i, ok = 0;

  (void)state;
  th_init(&t);
  t.cfg.max_publish_rate = 10;
  th_start(&t);
  a = th_open(&t);
  c = th_open(&t);
  for (i = 0; i < 10; i++) {
    th_msg(&t, a, pub_msg);
  }
  th_clear(&t);
  th_written_all(&t, a);
  th_advance(&t, HUB_NS_PER_S / 2);
  th_clear(&t);
  for (i = 0; i < 10; i++) {
    th_msg(&t, a, pub_msg);
    ok += th_count(&t, HUB_EFF_SEND, a) == 1 &&
          strstr(t.effs[t.n - 1].data, "published") != NULL;
    th_written_all(&t, a);
    th_clear(&t);
  }
  assert_int_equal(ok, 5);
  /* The other connection's bucket is untouched. */
  th_msg(&t, c, pub_msg);
  th_expect_reply(&t, c, "published", "\"news\"", "7");
  th_fini(&t);
}

static void test_rate_zero_is_no_limit(void **state) {
  th t;
  hub_conn_id a;
  int i;

  (void)state;
  th_init(&t);
  t.cfg.max_publish_rate = 0;
  th_start(&t);
  a = th_open(&t);
  for (i = 0; i < 5000; i++) {
    th_msg(&t, a, pub_msg);
    th_expect_reply(&t, a, "published", "\"news\"", "7");
    th_written_all(&t, a);
    th_clear(&t);
  }
  th_fini(&t);
}

static void test_rate_config_set(void **state) {
  hub_config cfg;

  (void)state;
  hub_config_default(&cfg);
  assert_int_equal(cfg.max_publish_rate, 1000);
  assert_int_equal(hub_config_set(&cfg, "max-publish-rate", "0"), 0);
  assert_int_equal(cfg.max_publish_rate, 0);
  assert_int_equal(hub_config_set(&cfg, "max-publish-rate", "250"), 0);
  assert_int_equal(cfg.max_publish_rate, 250);
  assert_int_equal(hub_config_set(&cfg, "max-publish-rate", "-1"),
                   HUB_ERR_INVALID_ARGUMENT);
  assert_int_equal(hub_config_set(&cfg, "max-publish-rate", "99999999999"),
                   HUB_ERR_INVALID_ARGUMENT);
  assert_int_equal(cfg.max_publish_rate, 250);
}

/* Congested: WebSocket publishes get "backplane unavailable", POST
   /publish gets HUB_ERR_UNAVAILABLE, nothing reaches the backplane; the
   flag clears with hub_on_bp_congested(0) and with the link going down
   (then publishes are delivered locally). */
static void test_rate_congested_backplane_refuses(void **state) {
  th t;
  hub_conn_id a;
  const char *err = NULL;
  th_eff *e;
  hub_stats st;

  (void)state;
  th_init(&t);
  th_start_bp(&t);
  a = th_open(&t);
  th_clear(&t);
  hub_on_bp_congested(t.h, 1, t.now);
  th_msg(&t, a, pub_msg);
  e = th_expect_error(&t, a, "7");
  assert_non_null(strstr(e->data, "backplane unavailable"));
  assert_int_equal(th_publish(&t, "{\"channel\":\"news\",\"data\":2}", &err),
                   HUB_ERR_UNAVAILABLE);
  th_expect_none(&t);
  hub_get_stats(t.h, &st);
  assert_int_equal(st.bp_refused, 2);
  assert_int_equal(st.publishes, 0);
  th_written_all(&t, a);
  hub_on_bp_congested(t.h, 0, t.now);
  th_msg(&t, a, pub_msg);
  th_expect_reply(&t, a, "published", "\"news\"", "7");
  th_expect_bp_pub(&t, "news", "1");
  th_written_all(&t, a);
  hub_on_bp_congested(t.h, 1, t.now);
  th_bp_down(&t);
  th_clear(&t);
  assert_int_equal(th_publish(&t, "{\"channel\":\"news\",\"data\":2}", &err),
                   0);
  th_check(&t);
  th_fini(&t);
}

/* Deeper than 64 levels: an error reply that keeps an id sent before
   the deep part (none when the id comes after it). */
static void test_rate_deep_json_keeps_id(void **state) {
  th t;
  hub_conn_id a;
  char msg[512];
  size_t n = 0;
  int i;
  th_eff *e;

  (void)state;
  th_init(&t);
  th_start(&t);
  a = th_open(&t);
  n += (size_t)snprintf(msg + n, sizeof(msg) - n,
                        "{\"id\":42,\"type\":\"publish\",\"channel\":\"x\","
                        "\"data\":");
  for (i = 0; i < 80; i++) {
    msg[n++] = '[';
  }
  for (i = 0; i < 80; i++) {
    msg[n++] = ']';
  }
  msg[n++] = '}';
  msg[n] = '\0';
  assert_int_equal(th_msg(&t, a, msg), 0);
  e = th_expect_error(&t, a, "42");
  assert_non_null(strstr(e->data, "nested too deeply"));
  th_written_all(&t, a);
  /* The id after the deep part is never reached. */
  n = 0;
  n += (size_t)snprintf(msg + n, sizeof(msg) - n, "{\"data\":");
  for (i = 0; i < 80; i++) {
    msg[n++] = '[';
  }
  for (i = 0; i < 80; i++) {
    msg[n++] = ']';
  }
  n += (size_t)snprintf(msg + n, sizeof(msg) - n, ",\"id\":43}");
  assert_int_equal(th_msg(&t, a, msg), 0);
  th_expect_error(&t, a, NULL);
  th_expect_none(&t);
  th_fini(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_rate_bucket_refills_per_second),
    cmocka_unit_test(test_rate_partial_refill_and_per_connection),
    cmocka_unit_test(test_rate_zero_is_no_limit),
    cmocka_unit_test(test_rate_config_set),
    cmocka_unit_test(test_rate_congested_backplane_refuses),
    cmocka_unit_test(test_rate_deep_json_keeps_id),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
