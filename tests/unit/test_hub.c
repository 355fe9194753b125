/*
 * test_hub.c - construction, configuration defaults, error and kind
 * names, queries, and determinism (same events, same effects, byte for
 * byte).
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The defaults are CONTRACT.md's flag defaults. */
static void test_hub_config_defaults_match_contract(void **state) {
  hub_config cfg;

  (void)state;
  memset(&cfg, 0xa5, sizeof(cfg));
  hub_config_default(&cfg);
  assert_int_equal(cfg.max_queue_msgs, 256);
  assert_int_equal(cfg.max_queue_bytes, 4194304);
  assert_int_equal(cfg.max_message_bytes, 65536);
  assert_int_equal(cfg.ping_interval_ns, TH_S(54));
  assert_int_equal(cfg.pong_timeout_ns, TH_S(60));
  assert_int_equal(cfg.write_timeout_ns, TH_S(10));
  assert_int_equal(cfg.heartbeat_interval_ns, TH_S(10));
  assert_int_equal(cfg.instance_ttl_s, 30);
  assert_int_equal(cfg.conn_ttl_s, 120);
  assert_int_equal(cfg.backplane, 0);
  assert_int_equal(cfg.registry, 0);
  assert_true(cfg.max_subs_per_conn > 0);
}

static void test_hub_new_rejects_bad_instance_id(void **state) {
  th_mem m;
  hub_config cfg;
  hub *h = NULL;
  char id[200];

  (void)state;
  th_mem_init(&m);
  hub_config_default(&cfg);
  cfg.instance_id = NULL;
  assert_int_equal(hub_new(&h, &cfg, &m.mem, 0), HUB_ERR_INVALID_ARGUMENT);
  cfg.instance_id = "";
  assert_int_equal(hub_new(&h, &cfg, &m.mem, 0), HUB_ERR_INVALID_ARGUMENT);
  memset(id, 'i', 129);
  id[129] = '\0';
  cfg.instance_id = id;
  assert_int_equal(hub_new(&h, &cfg, &m.mem, 0), HUB_ERR_INVALID_ARGUMENT);
  id[128] = '\0';
  assert_int_equal(hub_new(&h, &cfg, &m.mem, 0), 0);
  assert_string_equal(hub_instance_id(h), id);
  hub_del(h);
  assert_int_equal(m.live, 0);
  hub_del(NULL);
}

/* The instance id is copied by hub_new. */
static void test_hub_instance_id_copied(void **state) {
  th t;
  char id[16] = "abc";

  (void)state;
  th_init(&t);
  t.cfg.instance_id = id;
  th_start(&t);
  strcpy(id, "xyz");
  assert_string_equal(hub_instance_id(t.h), "abc");
  th_fini(&t);
}

/* A NULL allocator means libc's. */
static void test_hub_default_allocator(void **state) {
  hub_config cfg;
  hub *h = NULL;
  hub_conn_id id;
  const hub_mem *m = hub_mem_default();

  (void)state;
  assert_non_null(m);
  assert_non_null(m->malloc);
  assert_non_null(m->free);
  assert_non_null(m->realloc);
  hub_config_default(&cfg);
  cfg.instance_id = "d";
  assert_int_equal(hub_new(&h, &cfg, NULL, 5), 0);
  assert_int_equal(hub_on_conn_open(h, &id, "x", NULL, 5), 0);
  while (hub_effect_peek(h) != NULL) {
    hub_effect_pop(h);
  }
  hub_del(h);
}

static void test_hub_strerror_names_every_code(void **state) {
  static const int codes[] = {
    HUB_OK,
    HUB_ERR_INVALID_ARGUMENT,
    HUB_ERR_UNKNOWN_CONN,
    HUB_ERR_BAD_REQUEST,
    HUB_ERR_SHUT_DOWN,
    HUB_ERR_NOMEM,
  };
  size_t i, j;

  (void)state;
  for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
    const char *s = hub_strerror(codes[i]);

    assert_non_null(s);
    assert_true(strlen(s) > 0);
    for (j = 0; j < i; j++) {
      assert_string_not_equal(s, hub_strerror(codes[j]));
    }
  }
  assert_non_null(hub_strerror(-12345));
}

static void test_hub_close_kind_names(void **state) {
  int k, j;

  (void)state;
  assert_string_equal(hub_close_kind_name(HUB_CLOSE_SLOW_MSGS), "slow_msgs");
  for (k = 0; k < HUB_CLOSE_KIND_MAX; k++) {
    const char *s = hub_close_kind_name((hub_close_kind)k);
    const char *p;

    assert_non_null(s);
    assert_true(strlen(s) > 0);
    for (p = s; *p; p++) {
      assert_true((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
                  *p == '_');
    }
    for (j = 0; j < k; j++) {
      assert_string_not_equal(s, hub_close_kind_name((hub_close_kind)j));
    }
  }
}

/* The connection's |user| pointer comes back in every effect for it. */
static void test_hub_conn_user_in_effects(void **state) {
  th t;
  hub_conn_id a;
  int tag;
  size_t i;

  (void)state;
  th_init(&t);
  t.cfg.ping_interval_ns = TH_S(1);
  t.cfg.pong_timeout_ns = TH_S(3);
  th_start(&t);
  assert_int_equal(hub_on_conn_open(t.h, &a, "h", &tag, t.now), 0);
  th_drain(&t);
  th_msg(&t, a, "{\"type\":\"subscribe\",\"channel\":\"u\"}");
  th_advance(&t, TH_S(5));
  assert_true(th_count(&t, HUB_EFF_SEND, a) >= 1);
  assert_true(th_count(&t, HUB_EFF_PING, a) >= 1);
  assert_int_equal(th_count(&t, HUB_EFF_CLOSE, a), 1);
  for (i = 0; i < t.n; i++) {
    assert_int_equal(t.effs[i].conn, a);
    assert_ptr_equal(t.effs[i].conn_user, &tag);
  }
  th_fini(&t);
}

/* A scripted session over two channels, the backplane and the clock. */
static char *session(uint64_t seed, size_t *len) {
  static const char *names[] = {"k9",  "a",   "zz",  "m:1", "b/2", "q", "x@y",
                                "c-3", "d.4", "e_5", "f",   "g",   "h", "i",
                                "j",   "k",   "l",   "n",   "o",   "p"};
  th t;
  hub_conn_id c[6];
  size_t i;
  char *out;

  th_init(&t);
  t.cfg.seed = seed;
  t.cfg.backplane = 1;
  t.cfg.registry = 1;
  t.cfg.max_queue_msgs = 5;
  t.cfg.ping_interval_ns = TH_S(2);
  t.cfg.pong_timeout_ns = TH_S(5);
  t.cfg.heartbeat_interval_ns = TH_S(3);
  th_start(&t);
  th_bp_up(&t);
  for (i = 0; i < 6; i++) {
    c[i] = th_open(&t);
  }
  for (i = 0; i < 20; i++) {
    char m[128];

    snprintf(m, sizeof(m), "{\"type\":\"subscribe\",\"channel\":\"%s\"}",
             names[i]);
    th_msg(&t, c[i % 6], m);
    th_msg(&t, c[(i + 1) % 6], m);
    if (i % 3 == 0) {
      th_bp_subscribed(&t, names[i]);
    }
  }
  for (i = 0; i < 20; i++) {
    char d[64];

    snprintf(d, sizeof(d), "{\"i\":%zu}", i);
    th_bp_msg(&t, names[(i * 7) % 20], d);
    th_written_all(&t, c[i % 6]);
  }
  th_advance(&t, TH_S(4));
  th_pong(&t, c[0]);
  th_bp_down(&t);
  th_bp_up(&t);
  th_msg(&t, c[2], "{\"type\":\"unsubscribe\",\"channel\":\"zz\",\"id\":1}");
  th_closed(&t, c[3]);
  th_advance(&t, TH_S(3));
  th_shutdown(&t);
  out = th_dump(&t, len);
  th_fini(&t);
  return out;
}

/* The same events give the same effects, byte for byte. */
static void test_hub_deterministic(void **state) {
  size_t l1, l2;
  char *a = session(3, &l1);
  char *b = session(3, &l2);

  (void)state;
  assert_true(l1 > 1000);
  assert_int_equal(l1, l2);
  assert_memory_equal(a, b, l1);
  free(a);
  free(b);
}

/* The hash seed changes no effect: nothing iterates in hash order. */
static void test_hub_seed_does_not_change_effects(void **state) {
  size_t l1, l2;
  char *a = session(1, &l1);
  char *b = session(0x9e3779b97f4a7c15u, &l2);

  (void)state;
  assert_int_equal(l1, l2);
  assert_memory_equal(a, b, l1);
  free(a);
  free(b);
}

/* hub_check holds through a long mixed run with many channels. */
static void test_hub_check_through_churn(void **state) {
  th t;
  hub_conn_id c[30];
  size_t i, j;
  uint32_t x = 12345;

  (void)state;
  th_start_bp(&t);
  for (i = 0; i < 30; i++) {
    c[i] = th_open(&t);
  }
  for (i = 0; i < 3000; i++) {
    char m[128];
    size_t who;

    x = x * 1103515245u + 12345u;
    who = (x >> 8) % 30;
    j = (x >> 16) % 40;
    switch ((x >> 4) % 5) {
    case 0:
    case 1:
      snprintf(m, sizeof(m), "{\"type\":\"subscribe\",\"channel\":\"c%zu\"}",
               j);
      break;
    case 2:
      snprintf(m, sizeof(m), "{\"type\":\"unsubscribe\",\"channel\":\"c%zu\"}",
               j);
      break;
    case 3:
      snprintf(m, sizeof(m), "c%zu", j);
      th_bp_subscribed(&t, m);
      m[0] = '\0';
      break;
    default:
      snprintf(m, sizeof(m), "c%zu", j);
      th_bp_msg(&t, m, "{}");
      m[0] = '\0';
      break;
    }
    if (m[0] != '\0') {
      assert_int_equal(th_msg(&t, c[who], m), 0);
    }
    th_written_all(&t, c[who]);
    if (i % 97 == 0) {
      th_check(&t);
      th_clear(&t);
    }
  }
  th_check(&t);
  th_fini(&t);
}

/* Flags by name, as the server and the simulator's `config` pass them. */
static void test_hub_config_set_by_flag_name(void **state) {
  hub_config cfg, before;

  (void)state;
  hub_config_default(&cfg);
  assert_int_equal(hub_config_set(&cfg, "max-queue-msgs", "4"), 0);
  assert_int_equal(cfg.max_queue_msgs, 4);
  assert_int_equal(hub_config_set(&cfg, "max-queue-bytes", "65536"), 0);
  assert_int_equal(cfg.max_queue_bytes, 65536);
  assert_int_equal(hub_config_set(&cfg, "max-message-bytes", "1024"), 0);
  assert_int_equal(cfg.max_message_bytes, 1024);
  assert_int_equal(hub_config_set(&cfg, "ping-interval", "1.5"), 0);
  assert_int_equal(cfg.ping_interval_ns, 1500 * HUB_NS_PER_MS);
  assert_int_equal(hub_config_set(&cfg, "pong-timeout", "250ms"), 0);
  assert_int_equal(cfg.pong_timeout_ns, 250 * HUB_NS_PER_MS);
  assert_int_equal(hub_config_set(&cfg, "write-timeout", "2s"), 0);
  assert_int_equal(cfg.write_timeout_ns, 2 * HUB_NS_PER_S);
  assert_int_equal(hub_config_set(&cfg, "heartbeat-interval", "1m"), 0);
  assert_int_equal(cfg.heartbeat_interval_ns, 60 * HUB_NS_PER_S);
  assert_int_equal(hub_config_set(&cfg, "registry", "on"), 0);
  assert_int_equal(cfg.registry, 1);
  assert_int_equal(hub_config_set(&cfg, "registry", "off"), 0);
  assert_int_equal(cfg.registry, 0);

  /* Bad values change nothing. */
  before = cfg;
  assert_int_equal(hub_config_set(&cfg, "max-queue-msgs", "0"),
                   HUB_ERR_INVALID_ARGUMENT);
  assert_int_equal(hub_config_set(&cfg, "max-queue-msgs", "4294967296"),
                   HUB_ERR_INVALID_ARGUMENT);
  assert_int_equal(hub_config_set(&cfg, "max-queue-bytes", "-1"),
                   HUB_ERR_INVALID_ARGUMENT);
  assert_int_equal(hub_config_set(&cfg, "max-queue-bytes", "12k"),
                   HUB_ERR_INVALID_ARGUMENT);
  assert_int_equal(hub_config_set(&cfg, "ping-interval", "0"),
                   HUB_ERR_INVALID_ARGUMENT);
  assert_int_equal(hub_config_set(&cfg, "ping-interval", "5d"),
                   HUB_ERR_INVALID_ARGUMENT);
  assert_int_equal(hub_config_set(&cfg, "ping-interval", ""),
                   HUB_ERR_INVALID_ARGUMENT);
  assert_int_equal(hub_config_set(&cfg, "registry", "yes"),
                   HUB_ERR_INVALID_ARGUMENT);
  assert_int_equal(hub_config_set(&cfg, "max-message-bytes", NULL),
                   HUB_ERR_INVALID_ARGUMENT);
  assert_memory_equal(&cfg, &before, sizeof(cfg));

  /* Not the hub's. */
  assert_int_equal(hub_config_set(&cfg, "listen", "127.0.0.1:1"), 1);
  assert_int_equal(hub_config_set(&cfg, "sndbuf", "4096"), 1);
}

/* Hours, next to minutes (issue 12: "1m" was accepted, "1h" refused). */
static void test_hub_parse_duration_hours(void **state) {
  hub_tstamp d;

  (void)state;
  assert_int_equal(hub_parse_duration("1h", &d), 0);
  assert_true(d == 3600 * HUB_NS_PER_S);
  assert_int_equal(hub_parse_duration("1.5h", &d), 0);
  assert_true(d == 5400 * HUB_NS_PER_S);
  assert_int_equal(hub_parse_duration("1m", &d), 0);
  assert_true(d == 60 * HUB_NS_PER_S);
  assert_int_not_equal(hub_parse_duration("1hr", &d), 0);
  assert_int_not_equal(hub_parse_duration("h", &d), 0);
}

static void test_hub_parse_duration_and_u64(void **state) {
  hub_tstamp d;
  uint64_t u;

  (void)state;
  assert_int_equal(hub_parse_duration("54", &d), 0);
  assert_int_equal(d, 54 * HUB_NS_PER_S);
  assert_int_equal(hub_parse_duration(".5s", &d), 0);
  assert_int_equal(d, 500 * HUB_NS_PER_MS);
  assert_int_equal(hub_parse_duration("100us", &d), 0);
  assert_int_equal(d, 100000);
  assert_int_equal(hub_parse_duration("7ns", &d), 0);
  assert_int_equal(d, 7);
  assert_int_equal(hub_parse_duration("0.0000000019", &d), 0);
  assert_int_equal(d, 1);
  assert_int_not_equal(hub_parse_duration("s", &d), 0);
  assert_int_not_equal(hub_parse_duration("1.5.5", &d), 0);
  assert_int_not_equal(hub_parse_duration("-1", &d), 0);
  assert_int_not_equal(hub_parse_duration("99999999999999999999", &d), 0);
  assert_int_equal(hub_parse_u64("18446744073709551615", &u), 0);
  assert_true(u == UINT64_MAX);
  assert_int_not_equal(hub_parse_u64("18446744073709551616", &u), 0);
  assert_int_not_equal(hub_parse_u64("", &u), 0);
  assert_int_not_equal(hub_parse_u64("1 ", &u), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_hub_config_defaults_match_contract),
    cmocka_unit_test(test_hub_new_rejects_bad_instance_id),
    cmocka_unit_test(test_hub_instance_id_copied),
    cmocka_unit_test(test_hub_default_allocator),
    cmocka_unit_test(test_hub_strerror_names_every_code),
    cmocka_unit_test(test_hub_close_kind_names),
    cmocka_unit_test(test_hub_conn_user_in_effects),
    cmocka_unit_test(test_hub_deterministic),
    cmocka_unit_test(test_hub_seed_does_not_change_effects),
    cmocka_unit_test(test_hub_check_through_churn),
    cmocka_unit_test(test_hub_config_set_by_flag_name),
    cmocka_unit_test(test_hub_parse_duration_and_u64),
    cmocka_unit_test(test_hub_parse_duration_hours),
  };

  return cmocka_run_group_tests(tests, 0, 0);
}
