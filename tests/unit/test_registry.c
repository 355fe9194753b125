/*
 * test_registry.c - the distributed registry (instance and connection
 * keys, heartbeats, deletes) and graceful shutdown.
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SUB(ch, id)                                                            \
  "{\"type\":\"subscribe\",\"channel\":\"" ch "\",\"id\":" id "}"

static void start_registry(th *t, const char *instance) {
  th_init(t);
  t->cfg.instance_id = instance;
  t->cfg.backplane = 1;
  t->cfg.registry = 1;
  t->cfg.heartbeat_interval_ns = TH_S(10);
  t->cfg.instance_ttl_s = 30;
  t->cfg.conn_ttl_s = 120;
  t->cfg.ping_interval_ns = TH_S(1000);
  t->cfg.pong_timeout_ns = TH_S(1000);
  th_start(t);
}

static void expect_instance_value(const th_eff *e, const char *id, int conns) {
  char want[64];

  snprintf(want, sizeof(want), "\"%s\"", id);
  th_json_expect(e->data, "instance_id", want);
  snprintf(want, sizeof(want), "%d", conns);
  th_json_expect(e->data, "connections", want);
  snprintf(want, sizeof(want), "%lld", (long long)TH_UNIX0);
  th_json_expect(e->data, "started_at", want);
  assert_int_equal(th_json_nkeys(e->data, e->data_len), 3);
}

/* hub_new queues the instance key. */
static void test_registry_instance_key_at_start(void **state) {
  th t;
  th_eff *e;

  (void)state;
  start_registry(&t, "inst-7");
  e = th_expect_reg_set(&t, "instance:inst-7", 30);
  expect_instance_value(e, "inst-7", 0);
  th_expect_none(&t);
  assert_string_equal(hub_instance_id(t.h), "inst-7");
  th_fini(&t);
}

/* Opening sets conn:<instance>:<n> with the connection's details. */
static void test_registry_conn_key_at_open(void **state) {
  th t;
  hub_conn_id a, b;
  th_eff *e;
  char want[64];

  (void)state;
  start_registry(&t, "i1");
  th_clear(&t);
  th_advance(&t, TH_S(3));
  assert_int_equal(th_open_rc(&t, &a, "10.1.2.3:5555"), 0);
  e = th_expect_reg_set(&t, "conn:i1:1", 120);
  th_json_expect(e->data, "conn_id", "\"i1:1\"");
  th_json_expect(e->data, "instance_id", "\"i1\"");
  th_json_expect(e->data, "remote_addr", "\"10.1.2.3:5555\"");
  snprintf(want, sizeof(want), "%lld", (long long)TH_UNIX0 + 3);
  th_json_expect(e->data, "connected_at", want);
  assert_int_equal(th_json_nkeys(e->data, e->data_len), 4);
  th_expect_none(&t);
  assert_int_equal(th_open_rc(&t, &b, "[::1]:80"), 0);
  e = th_expect_reg_set(&t, "conn:i1:2", 120);
  th_json_expect(e->data, "remote_addr", "\"[::1]:80\"");
  th_expect_none(&t);
  th_fini(&t);
}

/* Every heartbeat_interval the instance key (with the live connection
   count) and every connection key are refreshed. */
static void test_registry_heartbeat_refreshes(void **state) {
  th t;
  hub_conn_id a, b;
  th_eff *e;
  int i;

  (void)state;
  start_registry(&t, "0");
  th_bp_up(&t);
  a = th_open(&t);
  b = th_open(&t);
  th_clear(&t);
  th_advance_to(&t, TH_T0 + TH_S(10) - 1);
  assert_int_equal(th_count_all(&t, HUB_EFF_REG_SET), 0);
  th_advance_to(&t, TH_T0 + TH_S(10));
  e = th_expect_reg_set(&t, "instance:0", 30);
  expect_instance_value(e, "0", 2);
  th_expect_reg_set(&t, "conn:0:1", 120);
  th_expect_reg_set(&t, "conn:0:2", 120);
  th_expect_none(&t);

  th_closed(&t, a);
  th_expect_reg_del(&t, "conn:0:1");
  th_expect_none(&t);
  for (i = 2; i <= 4; i++) {
    th_advance_to(&t, TH_T0 + TH_S(10) * (hub_tstamp)i);
    e = th_expect_reg_set(&t, "instance:0", 30);
    expect_instance_value(e, "0", 1);
    th_expect_reg_set(&t, "conn:0:2", 120);
    th_expect_none(&t);
  }
  (void)b;
  th_fini(&t);
}

/* The connection key is deleted exactly once, whether the connection
   goes by itself or is closed by the hub first. */
static void test_registry_conn_key_deleted_once(void **state) {
  th t;
  hub_conn_id a, b;

  (void)state;
  start_registry(&t, "0");
  th_bp_up(&t);
  a = th_open(&t);
  b = th_open(&t);
  th_clear(&t);
  th_closed(&t, a);
  th_expect_reg_del(&t, "conn:0:1");
  th_expect_none(&t);
  th_clear(&t);

  th_msgn(&t, b, 1, "bin", 3);
  th_expect_close(&t, b, 1003, HUB_CLOSE_BINARY);
  th_closed(&t, b);
  th_advance(&t, TH_S(25));
  assert_int_equal(th_count_all(&t, HUB_EFF_REG_DEL), 1);
  th_expect_reg_del(&t, "conn:0:2");
  /* The heartbeats after that refresh the instance key only. */
  assert_null(th_take_named(&t, HUB_EFF_REG_SET, "conn:0:2"));
  assert_non_null(th_take_named(&t, HUB_EFF_REG_SET, "instance:0"));
  th_fini(&t);
}

/* hub_on_bp_up refreshes the registry. */
static void test_registry_refreshed_on_bp_up(void **state) {
  th t;
  hub_conn_id a;

  (void)state;
  start_registry(&t, "0");
  a = th_open(&t);
  th_clear(&t);
  th_bp_up(&t);
  th_expect_reg_set(&t, "instance:0", 30);
  th_expect_reg_set(&t, "conn:0:1", 120);
  th_expect_none(&t);
  th_bp_down(&t);
  th_bp_up(&t);
  th_expect_reg_set(&t, "instance:0", 30);
  th_expect_reg_set(&t, "conn:0:1", 120);
  th_expect_none(&t);
  (void)a;
  th_fini(&t);
}

/* Registry off: no REG effects at all. */
static void test_registry_off_emits_nothing(void **state) {
  th t;
  hub_conn_id a;

  (void)state;
  th_init(&t);
  t.cfg.backplane = 1;
  t.cfg.registry = 0;
  t.cfg.heartbeat_interval_ns = TH_S(1);
  th_start(&t);
  th_bp_up(&t);
  a = th_open(&t);
  th_advance(&t, TH_S(5));
  th_closed(&t, a);
  th_shutdown(&t);
  assert_int_equal(th_count_all(&t, HUB_EFF_REG_SET), 0);
  assert_int_equal(th_count_all(&t, HUB_EFF_REG_DEL), 0);
  th_fini(&t);
}

/* Graceful shutdown: CLOSE 1001 to every open connection in open order,
   UNSUBSCRIBE for every backplane channel (pending ones included),
   REG_DEL of every connection key and of the instance key. */
static void test_registry_shutdown_effects(void **state) {
  th t;
  hub_conn_id c[4];
  th_eff *e[4];
  hub_stats st;
  int i, dels3;
  const char *err;

  (void)state;
  start_registry(&t, "s");
  th_bp_up(&t);
  for (i = 0; i < 4; i++) {
    c[i] = th_open(&t);
  }
  th_sub(&t, c[0], "one");
  th_sub(&t, c[1], "one");
  th_sub(&t, c[2], "two");
  th_msg(&t, c[3], SUB("pending", "1"));
  th_expect_bp_sub(&t, "pending");
  /* c[2] leaves before the shutdown: it gets nothing then. */
  th_msgn(&t, c[2], 1, "b", 1);
  th_expect_close(&t, c[2], 1003, HUB_CLOSE_BINARY);
  dels3 = th_take_named(&t, HUB_EFF_REG_DEL, "conn:s:3") != NULL;
  th_clear(&t);

  th_shutdown(&t);
  e[0] = th_expect_close(&t, c[0], 1001, HUB_CLOSE_SHUTDOWN);
  e[1] = th_expect_close(&t, c[1], 1001, HUB_CLOSE_SHUTDOWN);
  e[3] = th_expect_close(&t, c[3], 1001, HUB_CLOSE_SHUTDOWN);
  assert_true(th_index(&t, e[0]) < th_index(&t, e[1]));
  assert_true(th_index(&t, e[1]) < th_index(&t, e[3]));
  assert_int_equal(th_count(&t, HUB_EFF_CLOSE, c[2]), 0);
  /* c[3]'s pending subscribe may be answered before its CLOSE, never
     after it. */
  {
    th_eff *s3 = th_take(&t, HUB_EFF_SEND, c[3]);

    if (s3 != NULL) {
      th_json_expect(s3->data, "type", "\"error\"");
      assert_true(th_index(&t, s3) < th_index(&t, e[3]));
    }
  }
  th_expect_bp_unsub(&t, "one");
  th_expect_bp_unsub(&t, "pending");
  th_expect_reg_del(&t, "conn:s:1");
  th_expect_reg_del(&t, "conn:s:2");
  th_expect_reg_del(&t, "conn:s:4");
  th_expect_reg_del(&t, "instance:s");
  /* c[2]'s key goes when c[2] does (or went with its CLOSE). */
  dels3 += th_take_named(&t, HUB_EFF_REG_DEL, "conn:s:3") != NULL;
  th_expect_none(&t);
  th_closed(&t, c[2]);
  dels3 += th_take_named(&t, HUB_EFF_REG_DEL, "conn:s:3") != NULL;
  assert_int_equal(dels3, 1);
  th_expect_none(&t);
  hub_get_stats(t.h, &st);
  assert_int_equal(st.conns, 0);
  assert_int_equal(st.channels, 0);
  assert_int_equal(st.subscriptions, 0);
  assert_int_equal(st.bp_subscriptions, 0);

  /* Afterwards: new work refused, the rest ignored, no duplicates. */
  {
    hub_conn_id x;

    assert_int_equal(th_open_rc(&t, &x, "1.2.3.4:5"), HUB_ERR_SHUT_DOWN);
  }
  assert_int_equal(th_publish(&t, "{\"channel\":\"one\",\"data\":1}", &err),
                   HUB_ERR_SHUT_DOWN);
  th_bp_msg(&t, "one", "1");
  th_msg(&t, c[0], "{\"type\":\"publish\",\"channel\":\"one\",\"data\":1}");
  for (i = 0; i < 4; i++) {
    if (i != 2) {
      th_closed(&t, c[i]);
    }
  }
  th_advance(&t, TH_S(100));
  th_expect_none(&t);
  th_fini(&t);
}

/* Shutdown with the embedded backplane: closes only. */
static void test_registry_shutdown_embedded(void **state) {
  th t;
  hub_conn_id a, b;

  (void)state;
  th_init(&t);
  th_start(&t);
  a = th_open(&t);
  b = th_open(&t);
  th_sub(&t, a, "x");
  th_clear(&t);
  th_shutdown(&t);
  th_expect_close(&t, a, 1001, HUB_CLOSE_SHUTDOWN);
  th_expect_close(&t, b, 1001, HUB_CLOSE_SHUTDOWN);
  th_expect_none(&t);
  assert_int_equal(hub_channel_subscribers(t.h, "x", 1), 0);
  th_fini(&t);
}

/* Shutdown while the backplane is down: nothing to unsubscribe. */
static void test_registry_shutdown_backplane_down(void **state) {
  th t;
  hub_conn_id a;

  (void)state;
  th_init(&t);
  t.cfg.backplane = 1;
  th_start(&t);
  th_bp_up(&t);
  a = th_open(&t);
  th_sub(&t, a, "x");
  th_bp_down(&t);
  th_clear(&t);
  th_shutdown(&t);
  th_expect_close(&t, a, 1001, HUB_CLOSE_SHUTDOWN);
  th_expect_none(&t);
  th_fini(&t);
}

/* A NULL remote address is allowed; the key then carries a string. */
static void test_registry_null_remote_addr(void **state) {
  th t;
  hub_conn_id a;
  th_eff *e;
  const char *v;
  size_t vlen;

  (void)state;
  start_registry(&t, "n");
  th_clear(&t);
  assert_int_equal(hub_on_conn_open(t.h, &a, NULL, NULL, t.now), 0);
  th_drain(&t);
  e = th_expect_reg_set(&t, "conn:n:1", 120);
  assert_int_equal(th_json_get(e->data, e->data_len, "remote_addr", &v, &vlen),
                   1);
  assert_int_equal(v[0], '"');
  th_expect_none(&t);
  th_fini(&t);
}

/* Remote addresses with JSON-special bytes are escaped in the registry
   value.  An instance id that would need escaping is either refused by
   hub_new or escaped too, never written raw. */
static void test_registry_values_escaped(void **state) {
  th t;
  hub_conn_id a;
  th_eff *e;
  hub *h = NULL;
  int rc;

  (void)state;
  start_registry(&t, "r");
  th_clear(&t);
  assert_int_equal(th_open_rc(&t, &a, "a\"b\n"), 0);
  e = th_expect_reg_set(&t, "conn:r:1", 120);
  th_json_expect(e->data, "remote_addr", "\"a\\\"b\\n\"");
  th_fini(&t);

  th_init(&t);
  t.cfg.instance_id = "we\"ird\\id";
  t.cfg.backplane = 1;
  t.cfg.registry = 1;
  rc = hub_new(&h, &t.cfg, &t.mem.mem, t.now);
  if (rc == 0) {
    t.h = h;
    th_drain(&t);
    e = th_expect_reg_set(&t, "instance:we\"ird\\id", t.cfg.instance_ttl_s);
    th_json_expect(e->data, "instance_id", "\"we\\\"ird\\\\id\"");
  } else {
    assert_int_equal(rc, HUB_ERR_INVALID_ARGUMENT);
  }
  th_fini(&t);
}

/* A connection key whose DEL went out while the backplane was down (and
   so was lost) is deleted again when it comes back and at shutdown, until
   its TTL has surely run out.  (Found by the simulator.) */
static void test_registry_lost_delete_repeated(void **state) {
  th t;
  hub_conn_id a, b;

  (void)state;
  start_registry(&t, "0");
  th_bp_up(&t);
  a = th_open(&t);
  b = th_open(&t);
  th_clear(&t);

  th_bp_down(&t);
  th_closed(&t, a);
  th_expect_reg_del(&t, "conn:0:1"); /* lost: the backplane is down */
  th_expect_none(&t);

  th_bp_up(&t);
  th_take_named(&t, HUB_EFF_REG_SET, "instance:0");
  th_take_named(&t, HUB_EFF_REG_SET, "conn:0:2");
  th_expect_reg_del(&t, "conn:0:1");
  th_expect_none(&t);
  th_check(&t);

  /* Deleted again at shutdown too. */
  th_shutdown(&t);
  th_expect_reg_del(&t, "conn:0:1");
  th_expect_close(&t, b, 1001, HUB_CLOSE_SHUTDOWN);
  th_expect_reg_del(&t, "conn:0:2");
  th_expect_reg_del(&t, "instance:0");
  th_expect_none(&t);
  th_fini(&t);
}

/* Once the TTL has passed, the orphaned key is forgotten. */
static void test_registry_lost_delete_forgotten_after_ttl(void **state) {
  th t;
  hub_conn_id a;

  (void)state;
  start_registry(&t, "0");
  th_bp_up(&t);
  a = th_open(&t);
  th_clear(&t);
  th_bp_down(&t);
  th_closed(&t, a);
  th_clear(&t);
  th_advance(&t, TH_S(121));
  th_clear(&t);
  th_bp_up(&t);
  th_take_named(&t, HUB_EFF_REG_SET, "instance:0");
  th_expect_none(&t);
  th_check(&t);
  th_fini(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_registry_instance_key_at_start),
    cmocka_unit_test(test_registry_conn_key_at_open),
    cmocka_unit_test(test_registry_heartbeat_refreshes),
    cmocka_unit_test(test_registry_conn_key_deleted_once),
    cmocka_unit_test(test_registry_refreshed_on_bp_up),
    cmocka_unit_test(test_registry_off_emits_nothing),
    cmocka_unit_test(test_registry_shutdown_effects),
    cmocka_unit_test(test_registry_shutdown_embedded),
    cmocka_unit_test(test_registry_shutdown_backplane_down),
    cmocka_unit_test(test_registry_null_remote_addr),
    cmocka_unit_test(test_registry_values_escaped),
    cmocka_unit_test(test_registry_lost_delete_repeated),
    cmocka_unit_test(test_registry_lost_delete_forgotten_after_ttl),
  };

  return cmocka_run_group_tests(tests, 0, 0);
}
