/*
 * test_mem.c - allocation failure.  Every allocation of a scripted run
 * is made to fail in turn (once, and from then on); each event must
 * return 0 or HUB_ERR_NOMEM, leave hub_check happy, leak nothing, and
 * the hub must work again once memory is back.  Some events are also
 * checked for all-or-nothing effects.
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int contains(const uint8_t *p, size_t len, const char *needle) {
  size_t n = strlen(needle), i;

  for (i = 0; i + n <= len; i++) {
    if (memcmp(p + i, needle, n) == 0) {
      return 1;
    }
  }
  return 0;
}

static int rc_ok(th *t, int rc, const char *what) {
  if (rc != 0 && rc != HUB_ERR_NOMEM) {
    fail_msg("%s returned %d (%s)", what, rc, hub_strerror(rc));
  }
  th_drain(t);
  th_check(t);
  return rc;
}

#define EV(t, call) rc_ok((t), (call), #call)

/* A fact event: it returns nothing and must leave the hub consistent
   whatever the allocator does. */
#define FACT(t, call)                                                          \
  do {                                                                         \
    call;                                                                      \
    th_drain(t);                                                               \
    th_check(t);                                                               \
  } while (0)

static void msg(th *t, hub_conn_id c, const char *json) {
  if (c != 0) {
    EV(t, hub_on_conn_msg(t->h, c, 0, (const uint8_t *)json, strlen(json),
                          t->now));
  }
}

static void bp_msg(th *t, const char *ch, const char *data) {
  EV(t, hub_on_bp_msg(t->h, ch, strlen(ch), (const uint8_t *)data, strlen(data),
                      t->now));
}

static void bp_confirm(th *t, const char *ch) {
  FACT(t, hub_on_bp_subscribed(t->h, ch, strlen(ch), t->now));
}

static void written_all(th *t, hub_conn_id c) {
  size_t m = 0, b = 0;

  if (c != 0 && hub_conn_backlog(t->h, c, &m, &b) == 0 && (m || b)) {
    FACT(t, hub_on_conn_written(t->h, c, m, b, t->now));
  }
}

/* Fires the expiries up to |to|; an expiry that fails for memory is
   retried at most a few times. */
static void advance_to(th *t, hub_tstamp to) {
  int guard = 0;

  for (;;) {
    hub_tstamp exp = hub_get_expiry(t->h);

    if (exp == HUB_TSTAMP_NONE || exp > to || ++guard > 1000) {
      break;
    }
    if (exp > t->now) {
      t->now = exp;
    }
    if (EV(t, hub_handle_expiry(t->h, t->now)) != 0 && guard > 50) {
      break;
    }
  }
  t->now = to;
}

static hub_conn_id open_conn(th *t, const char *addr) {
  hub_conn_id id = 0;

  if (EV(t, hub_on_conn_open(t->h, &id, addr, NULL, t->now)) != 0) {
    return 0;
  }
  return id;
}

static void closed(th *t, hub_conn_id c) {
  if (c != 0) {
    FACT(t, hub_on_conn_closed(t->h, c, t->now));
  }
}

static void config(th *t) {
  th_init(t);
  t->cfg.backplane = 1;
  t->cfg.registry = 1;
  t->cfg.instance_id = "m";
  t->cfg.max_queue_msgs = 6;
  t->cfg.ping_interval_ns = TH_S(5);
  t->cfg.pong_timeout_ns = TH_S(12);
  t->cfg.heartbeat_interval_ns = TH_S(4);
}

/* A run through most of the core's paths. */
static void script(th *t, int with_shutdown) {
  const char *body = "{\"channel\":\"o\",\"data\":1}";
  const char *err;
  hub_conn_id a, b, c, d;
  int i;

  EV(t, hub_on_bp_up(t->h, t->now));
  a = open_conn(t, "127.0.0.1:1");
  b = open_conn(t, "127.0.0.1:2");
  c = open_conn(t, "127.0.0.1:3");
  msg(t, a, "{\"type\":\"subscribe\",\"channel\":\"news\",\"id\":1}");
  msg(t, b, "{\"type\":\"subscribe\",\"channel\":\"news\",\"id\":[2]}");
  msg(t, c, "{\"type\":\"subscribe\",\"channel\":\"other\"}");
  msg(t, c, "{\"type\":\"subscribe\",\"channel\":\"gone\"}");
  bp_confirm(t, "news");
  bp_confirm(t, "other");
  msg(t, c, "{\"type\":\"unsubscribe\",\"channel\":\"gone\",\"id\":\"u\"}");
  msg(t, a, "{\"type\":\"publish\",\"channel\":\"news\",\"data\":{\"x\":[1]}}");
  bp_msg(t, "news", "{\"x\":[1]}");
  bp_msg(t, "other", "not json \"at all\"");
  EV(t, hub_publish(t->h, (const uint8_t *)body, strlen(body), &err, t->now));
  msg(t, a, "{\"type\":\"nope\",\"id\":{\"deep\":[1,2,3]}}");
  msg(t, a, "][");
  written_all(t, a);
  written_all(t, b);
  advance_to(t, t->now + TH_S(4));
  FACT(t, hub_on_bp_down(t->h, t->now));
  msg(t, c, "{\"type\":\"subscribe\",\"channel\":\"third\"}");
  msg(t, b, "{\"type\":\"publish\",\"channel\":\"news\",\"data\":2}");
  EV(t, hub_on_bp_up(t->h, t->now));
  bp_confirm(t, "third");
  bp_confirm(t, "news");
  /* c never reads: evicted by the queue limit. */
  for (i = 0; i < 8; i++) {
    bp_msg(t, "other", "[1,2,3]");
  }
  if (c != 0) {
    closed(t, c);
  }
  d = open_conn(t, "127.0.0.1:4");
  msg(t, d, "{\"type\":\"subscribe\",\"channel\":\"news\"}");
  if (b != 0) {
    EV(t, hub_on_conn_msg(t->h, b, 1, (const uint8_t *)"x", 1, t->now));
  }
  if (a != 0) {
    FACT(t, hub_on_conn_pong(t->h, a, t->now));
  }
  written_all(t, a);
  written_all(t, d);
  advance_to(t, t->now + TH_S(13));
  if (with_shutdown) {
    FACT(t, hub_shutdown(t->h, t->now));
    closed(t, a);
    closed(t, b);
    closed(t, d);
  }
}

/* Memory is back: a new connection subscribes and receives a publish. */
static void recover(th *t) {
  hub_conn_id x;
  th_eff *e;
  const char *err;

  th_mem_fail_at(&t->mem, 0, 0);
  assert_int_equal(th_bp_up(t), 0);
  th_clear(t);
  x = th_open(t);
  assert_int_equal(
    th_msg(t, x, "{\"type\":\"subscribe\",\"channel\":\"fresh\",\"id\":1}"), 0);
  if (th_take_named(t, HUB_EFF_BP_SUBSCRIBE, "fresh") != NULL) {
    th_bp_subscribed(t, "fresh");
  }
  th_expect_reply(t, x, "subscribed", "\"fresh\"", "1");
  assert_int_equal(th_publish(t, "{\"channel\":\"fresh\",\"data\":[9]}", &err),
                   0);
  e = th_take_named(t, HUB_EFF_BP_PUBLISH, "fresh");
  if (e != NULL) {
    assert_int_equal(th_bp_msg(t, "fresh", "[9]"), 0);
  }
  th_expect_message(t, x, "fresh", "[9]");
  th_check(t);
}

static uint64_t clean_run_calls(void) {
  th t;
  uint64_t calls;

  config(&t);
  th_start(&t);
  t.mem.calls = 0;
  script(&t, 1);
  calls = t.mem.calls;
  assert_int_equal(t.mem.failures, 0);
  th_fini(&t);
  return calls;
}

/* Each allocation of the run fails once. */
static void test_mem_each_allocation_fails_once(void **state) {
  uint64_t calls = clean_run_calls(), k, nomem_runs = 0;

  (void)state;
  print_message("allocation sweep over %llu allocations\n",
                (unsigned long long)calls);
  assert_true(calls > 10);
  for (k = 1; k <= calls + 2; k++) {
    th t;

    config(&t);
    th_start(&t);
    th_mem_fail_at(&t.mem, k, 0);
    script(&t, 1);
    nomem_runs += t.mem.failures;
    th_fini(&t);
  }
  /* The failures really happened (a failure can shorten the rest of its
     run, so not every k is reached). */
  assert_true(nomem_runs >= calls / 2);
}

/* From the k-th allocation on, every one fails; then memory comes back
   and the hub works. */
static void test_mem_failures_from_k_on_then_recover(void **state) {
  uint64_t calls = clean_run_calls(), k;

  (void)state;
  for (k = 1; k <= calls + 2; k++) {
    th t;

    config(&t);
    th_start(&t);
    th_mem_fail_at(&t.mem, k, 1);
    script(&t, 0);
    recover(&t);
    th_fini(&t);
  }
}

/* hub_new fails cleanly at each of its allocations. */
static void test_mem_hub_new_fails_cleanly(void **state) {
  uint64_t k, calls;
  th t;

  (void)state;
  config(&t);
  th_start(&t);
  calls = t.mem.calls;
  th_fini(&t);
  assert_true(calls >= 1);
  for (k = 1; k <= calls; k++) {
    hub *h = (hub *)0x1;

    config(&t);
    th_mem_fail_at(&t.mem, k, 0);
    assert_int_equal(hub_new(&h, &t.cfg, &t.mem.mem, t.now), HUB_ERR_NOMEM);
    assert_int_equal(t.mem.live, 0);
  }
}

/* NOMEM on a subscribe changes nothing and says nothing; success gives
   both the subscription and its backplane SUBSCRIBE. */
static void test_mem_subscribe_all_or_nothing(void **state) {
  uint64_t k;
  int failed = 0, passed = 0;

  (void)state;
  for (k = 1; k <= 40; k++) {
    th t;
    hub_conn_id a;
    hub_stats st;
    int rc;
    const char *m = "{\"type\":\"subscribe\",\"channel\":\"s\",\"id\":1}";

    th_start_bp(&t);
    a = th_open(&t);
    th_mem_fail_at(&t.mem, k, 1);
    rc = hub_on_conn_msg(t.h, a, 0, (const uint8_t *)m, strlen(m), t.now);
    th_mem_fail_at(&t.mem, 0, 0);
    th_drain(&t);
    th_check(&t);
    hub_get_stats(t.h, &st);
    if (rc == HUB_ERR_NOMEM) {
      failed++;
      assert_int_equal(hub_channel_subscribers(t.h, "s", 1), 0);
      assert_int_equal(st.subscriptions, 0);
      assert_int_equal(st.bp_subscriptions, 0);
      th_expect_none(&t);
    } else {
      assert_int_equal(rc, 0);
      passed++;
      assert_int_equal(hub_channel_subscribers(t.h, "s", 1), 1);
      assert_int_equal(st.bp_subscriptions, 1);
      th_expect_bp_sub(&t, "s");
      th_expect_none(&t);
    }
    th_fini(&t);
  }
  assert_true(failed > 0);
  assert_true(passed > 0);
}

/* NOMEM on a fan-out delivers to no one; success delivers to all. */
static void test_mem_fanout_all_or_nothing(void **state) {
  enum { N = 20 };
  uint64_t k;
  int failed = 0, passed = 0;

  (void)state;
  for (k = 1; k <= 40; k++) {
    th t;
    hub_conn_id subs[N];
    size_t i;
    int rc;

    th_start_bp(&t);
    for (i = 0; i < N; i++) {
      subs[i] = th_open(&t);
      th_sub(&t, subs[i], "f");
    }
    th_clear(&t);
    th_mem_fail_at(&t.mem, k, 1);
    rc = hub_on_bp_msg(t.h, "f", 1, (const uint8_t *)"{\"big\":1}", 9, t.now);
    th_mem_fail_at(&t.mem, 0, 0);
    th_drain(&t);
    th_check(&t);
    if (rc == HUB_ERR_NOMEM) {
      failed++;
      th_expect_none(&t);
    } else {
      assert_int_equal(rc, 0);
      passed++;
      for (i = 0; i < N; i++) {
        th_expect_message(&t, subs[i], "f", "{\"big\":1}");
      }
      th_expect_none(&t);
    }
    th_fini(&t);
  }
  assert_true(failed > 0);
  assert_true(passed > 0);
}

/* NOMEM on open: no connection, no registry key. */
static void test_mem_open_all_or_nothing(void **state) {
  uint64_t k;
  int failed = 0;

  (void)state;
  for (k = 1; k <= 20; k++) {
    th t;
    hub_conn_id id = 0;
    hub_stats st;
    int rc;

    th_init(&t);
    t.cfg.backplane = 1;
    t.cfg.registry = 1;
    th_start(&t);
    th_bp_up(&t);
    th_clear(&t);
    th_mem_fail_at(&t.mem, k, 1);
    rc = hub_on_conn_open(t.h, &id, "1.1.1.1:1", NULL, t.now);
    th_mem_fail_at(&t.mem, 0, 0);
    th_drain(&t);
    th_check(&t);
    hub_get_stats(t.h, &st);
    if (rc == HUB_ERR_NOMEM) {
      failed++;
      assert_int_equal(st.conns, 0);
      th_expect_none(&t);
    } else {
      assert_int_equal(rc, 0);
      assert_int_equal(st.conns, 1);
    }
    th_fini(&t);
  }
  assert_true(failed > 0);
}

/* Every allocation goes through hub_mem: with all refused the hub
   cannot even be made, and a hub built with the counting allocator
   returns every block. */
static void test_mem_all_allocation_through_hub_mem(void **state) {
  th t;
  hub *h = NULL;

  (void)state;
  config(&t);
  th_mem_fail_at(&t.mem, 1, 1);
  assert_int_equal(hub_new(&h, &t.cfg, &t.mem.mem, t.now), HUB_ERR_NOMEM);

  config(&t);
  th_start(&t);
  script(&t, 1);
  assert_true(t.mem.allocs > 0);
  th_fini(&t); /* checks live == 0 */
}

/* A buffer kept with hub_buf_ref outlives its effect and the hub's
   queue; it is freed through the hub's allocator on the last unref. */
static void test_mem_buf_ref_outlives_pop(void **state) {
  th t;
  hub_conn_id a;
  const hub_effect *e;
  hub_buf *kept = NULL;
  const char *m = "{\"type\":\"publish\",\"channel\":\"k\",\"data\":[42]}";
  int64_t live;

  (void)state;
  th_init(&t);
  th_start(&t);
  a = th_open(&t);
  th_sub(&t, a, "k");
  assert_int_equal(
    hub_on_conn_msg(t.h, a, 0, (const uint8_t *)m, strlen(m), t.now), 0);
  while ((e = hub_effect_peek(t.h)) != NULL) {
    if (e->type == HUB_EFF_SEND &&
        contains(hub_buf_payload(e->buf), hub_buf_payload_len(e->buf),
                 "\"message\"")) {
      kept = e->buf;
      hub_buf_ref(kept);
    }
    hub_effect_pop(t.h);
  }
  assert_non_null(kept);
  assert_int_equal(kept->ref, 1);
  assert_ptr_equal(kept->mem, &t.mem.mem);
  assert_true(
    contains(hub_buf_payload(kept), hub_buf_payload_len(kept), "[42]"));
  live = t.mem.live;
  hub_buf_unref(kept);
  assert_int_equal(t.mem.live, live - 1);
  hub_buf_unref(NULL);
  th_fini(&t);
}

/* Opens |n| connections, each subscribed to its own channel, on a
   backplane hub (with the registry if |registry|) whose effect queue is
   then empty. */
static void many(th *t, hub_conn_id *ids, size_t n, int registry) {
  size_t i;

  th_init(t);
  t->cfg.backplane = 1;
  t->cfg.registry = registry;
  t->cfg.ping_interval_ns = TH_S(5);
  t->cfg.pong_timeout_ns = TH_S(1000);
  th_start(t);
  th_bp_up(t);
  for (i = 0; i < n; i++) {
    char ch[32];

    ids[i] = th_open(t);
    snprintf(ch, sizeof(ch), "ch%zu", i);
    th_sub(t, ids[i], ch);
  }
  th_clear(t);
}

/* Shutdown reports a fact and cannot fail: with every allocation
   refused it still closes every connection and unsubscribes every
   channel, once. */
static void test_mem_shutdown_without_memory(void **state) {
  enum { N = 300 };
  th t;
  hub_conn_id ids[N];
  hub_stats st;
  uint64_t calls;
  size_t i;

  (void)state;
  many(&t, ids, N, 1);
  calls = t.mem.calls;
  th_mem_fail_at(&t.mem, 1, 1);
  hub_shutdown(t.h, t.now);
  th_check(&t);
  th_drain(&t);
  th_check(&t);
  for (i = 0; i < N; i++) {
    th_expect_close(&t, ids[i], 1001, HUB_CLOSE_SHUTDOWN);
  }
  assert_int_equal(th_count_all(&t, HUB_EFF_BP_UNSUBSCRIBE), N);
  assert_int_equal(th_count_all(&t, HUB_EFF_REG_DEL), N + 1);
  th_clear(&t);
  hub_get_stats(t.h, &st);
  assert_int_equal(st.conns, 0);
  assert_int_equal(st.bp_subscriptions, 0);
  for (i = 0; i < N; i++) {
    th_closed(&t, ids[i]);
  }
  th_expect_none(&t);
  th_check(&t);
  /* Not even tried. */
  assert_int_equal(t.mem.calls, calls);
  th_mem_fail_at(&t.mem, 0, 0);
  th_fini(&t);
}

/* Timer work that fails for memory is not lost: the expiry stays due
   and a later call does it. */
static void test_mem_expiry_retried_after_nomem(void **state) {
  enum { N = 300 };
  th t;
  hub_conn_id ids[N];
  hub_tstamp due;
  size_t i;
  int rc;

  (void)state;
  /* Plain connections: nothing grows the effect queue before the pings
     all fall due together. */
  th_init(&t);
  t.cfg.ping_interval_ns = TH_S(5);
  t.cfg.pong_timeout_ns = TH_S(1000);
  th_start(&t);
  for (i = 0; i < N; i++) {
    ids[i] = th_open(&t);
  }
  th_clear(&t);
  due = hub_get_expiry(t.h);
  assert_true(due != HUB_TSTAMP_NONE);
  t.now = due;
  th_mem_fail_at(&t.mem, 1, 1);
  rc = hub_handle_expiry(t.h, t.now);
  th_mem_fail_at(&t.mem, 0, 0);
  th_drain(&t);
  th_check(&t);
  /* The ping burst outgrows the effect queue, so the failure is hit.
     Whatever was done is in the effects; the rest is still due. */
  assert_int_equal(rc, HUB_ERR_NOMEM);
  assert_true(hub_get_expiry(t.h) <= t.now);
  assert_int_equal(hub_handle_expiry(t.h, t.now), 0);
  th_drain(&t);
  for (i = 0; i < N; i++) {
    assert_int_equal(th_count(&t, HUB_EFF_PING, ids[i]), 1);
  }
  th_fini(&t);
}

/* Going up again with many channels: NOMEM (the heartbeat's instance
   value cannot be built) changes nothing, a retry re-subscribes every
   channel once. */
static void test_mem_bp_up_retried_after_nomem(void **state) {
  enum { N = 300 };
  th t;
  hub_conn_id ids[N];
  int rc;

  (void)state;
  many(&t, ids, N, 1);
  th_bp_down(&t);
  th_clear(&t);
  th_mem_fail_at(&t.mem, 1, 1);
  rc = hub_on_bp_up(t.h, t.now);
  th_mem_fail_at(&t.mem, 0, 0);
  th_drain(&t);
  th_check(&t);
  assert_int_equal(rc, HUB_ERR_NOMEM);
  th_expect_none(&t);
  assert_int_equal(hub_bp_is_up(t.h), 0);
  assert_int_equal(th_bp_up(&t), 0);
  assert_int_equal(th_count_all(&t, HUB_EFF_BP_SUBSCRIBE), N);
  assert_int_equal(hub_bp_is_up(t.h), 1);
  th_fini(&t);
}

/* ------------------------------------------- facts cannot fail */

struct chans {
  char names[64][140];
  size_t n;
};

static void collect_chan(void *arg, const char *channel, size_t len,
                         size_t subscribers) {
  struct chans *cs = arg;

  (void)subscribers;
  if (cs->n < 64 && len < sizeof(cs->names[0])) {
    memcpy(cs->names[cs->n], channel, len);
    cs->names[cs->n][len] = 0;
    cs->n++;
  }
}

/* With every allocation refused from now on, every fact event there can
   be, one after the other and without popping an effect in between,
   succeeds and leaves the hub consistent; shutdown closes everything. */
static void facts_without_memory(th *t) {
  struct chans cs;
  hub_stats st;
  hub_conn_id id;
  size_t i;

  th_mem_fail_at(&t->mem, 1, 1);
  for (id = 1; id <= 8; id++) {
    size_t m = 0, b = 0;
    if (hub_conn_backlog(t->h, id, &m, &b) == 0) {
      hub_on_conn_written(t->h, id, m, b, t->now);
      th_check(t);
    }
    hub_on_conn_pong(t->h, id, t->now);
    th_check(t);
  }
  cs.n = 0;
  hub_foreach_channel(t->h, collect_chan, &cs);
  for (i = 0; i < cs.n; i++) {
    hub_on_bp_subscribed(t->h, cs.names[i], strlen(cs.names[i]), t->now);
    th_check(t);
  }
  hub_on_conn_closed(t->h, 1, t->now);
  th_check(t);
  hub_on_bp_down(t->h, t->now);
  th_check(t);
  hub_shutdown(t->h, t->now);
  th_check(t);
  th_drain(t);
  th_check(t);
  hub_get_stats(t->h, &st);
  assert_int_equal(st.conns, 0);
  assert_int_equal(st.subscriptions, 0);
  assert_int_equal(st.channels, 0);
  assert_int_equal(st.bp_subscriptions, 0);
  for (id = 1; id <= 8; id++) {
    hub_on_conn_closed(t->h, id, t->now);
    th_check(t);
  }
  th_drain(t);
  th_mem_fail_at(&t->mem, 0, 0);
}

/* After the script runs with every allocation from the k-th on refused,
   the fact events still all succeed, in whatever state it left. */
static void test_mem_facts_after_failures_from_k(void **state) {
  uint64_t calls = clean_run_calls(), k;

  (void)state;
  for (k = 1; k <= calls + 2; k++) {
    th t;

    config(&t);
    th_start(&t);
    th_mem_fail_at(&t.mem, k, 1);
    script(&t, 0);
    facts_without_memory(&t);
    th_fini(&t);
  }
}

/* A hub with everything a fact event can act on: subscribe requests
   waiting for a confirmation (one connection with two), a repeat
   subscribe waiting for a re-subscribe, a consumer at its queue limit
   that the next reply evicts, queued frames, the registry on.  Ids: a 1,
   b 2, c 3, d 4, e 5. */
static void rich(th *t) {
  th_init(t);
  t->cfg.backplane = 1;
  t->cfg.registry = 1;
  t->cfg.instance_id = "m";
  t->cfg.max_queue_msgs = 4;
  th_start(t);
  assert_int_equal(th_bp_up(t), 0);
  (void)th_open(t);
  (void)th_open(t);
  (void)th_open(t);
  (void)th_open(t);
  (void)th_open(t);
  /* d: acknowledged while down, then subscribes again while the
     re-subscribe is in flight. */
  th_bp_down(t);
  assert_int_equal(
    th_msg(t, 4, "{\"type\":\"subscribe\",\"channel\":\"w\",\"id\":\"d1\"}"),
    0);
  th_written_all(t, 4);
  assert_int_equal(th_bp_up(t), 0);
  assert_int_equal(
    th_msg(t, 4, "{\"type\":\"subscribe\",\"channel\":\"w\",\"id\":\"d2\"}"),
    0);
  /* c: 4 frames queued (the limit), none written. */
  assert_int_equal(th_msg(t, 3, "{\"type\":\"subscribe\",\"channel\":\"q\"}"),
                   0);
  th_bp_subscribed(t, "q");
  assert_int_equal(th_bp_msg(t, "q", "1"), 0);
  assert_int_equal(th_bp_msg(t, "q", "2"), 0);
  assert_int_equal(th_bp_msg(t, "q", "3"), 0);
  /* Pending on p: a twice, b, c. */
  assert_int_equal(
    th_msg(t, 1, "{\"type\":\"subscribe\",\"channel\":\"p\",\"id\":1}"), 0);
  assert_int_equal(
    th_msg(t, 1, "{\"type\":\"subscribe\",\"channel\":\"p\",\"id\":2}"), 0);
  assert_int_equal(
    th_msg(t, 2, "{\"type\":\"subscribe\",\"channel\":\"p\",\"id\":3}"), 0);
  assert_int_equal(
    th_msg(t, 3, "{\"type\":\"subscribe\",\"channel\":\"p\",\"id\":4}"), 0);
  /* b: a "published" reply queued. */
  assert_int_equal(
    th_msg(t, 2, "{\"type\":\"publish\",\"channel\":\"z\",\"data\":0}"), 0);
  th_clear(t);
  th_check(t);
}

/* Every fact event, in a row and with no allocation possible, does
   exactly what it does with memory. */
static void test_mem_facts_without_memory_exact(void **state) {
  th t;
  size_t m = 0, b = 0;
  uint64_t allocs;

  (void)state;
  rich(&t);
  allocs = t.mem.allocs;
  th_mem_fail_at(&t.mem, 1, 1);
  assert_int_equal(hub_conn_backlog(t.h, 2, &m, &b), 0);
  assert_int_equal(m, 1);
  hub_on_conn_written(t.h, 2, m, b, t.now);
  th_check(&t);
  hub_on_conn_pong(t.h, 5, t.now);
  th_check(&t);
  /* a gets its two replies, b its one; c's reply does not fit. */
  hub_on_bp_subscribed(t.h, "p", 1, t.now);
  th_check(&t);
  /* a goes, with its two replies still queued. */
  hub_on_conn_closed(t.h, 1, t.now);
  th_check(&t);
  /* d's repeat subscribe is answered. */
  hub_on_bp_down(t.h, t.now);
  th_check(&t);
  hub_shutdown(t.h, t.now);
  th_check(&t);
  th_drain(&t);
  th_check(&t);
  assert_int_equal(t.mem.allocs, allocs);

  th_expect_reply(&t, 2, "subscribed", "\"p\"", "3");
  th_expect_close(&t, 3, 1008, HUB_CLOSE_SLOW_MSGS);
  th_expect_bp_unsub(&t, "q");
  th_expect_reg_del(&t, "conn:m:3");
  th_expect_reg_del(&t, "conn:m:1");
  th_expect_reply(&t, 4, "subscribed", "\"w\"", "\"d2\"");
  th_expect_close(&t, 2, 1001, HUB_CLOSE_SHUTDOWN);
  th_expect_reg_del(&t, "conn:m:2");
  th_expect_close(&t, 4, 1001, HUB_CLOSE_SHUTDOWN);
  th_expect_reg_del(&t, "conn:m:4");
  th_expect_close(&t, 5, 1001, HUB_CLOSE_SHUTDOWN);
  th_expect_reg_del(&t, "conn:m:5");
  th_expect_reg_del(&t, "instance:m");
  th_expect_none(&t);
  hub_on_conn_closed(t.h, 2, t.now);
  hub_on_conn_closed(t.h, 3, t.now);
  hub_on_conn_closed(t.h, 4, t.now);
  hub_on_conn_closed(t.h, 5, t.now);
  th_drain(&t);
  th_check(&t);
  th_expect_none(&t);
  th_mem_fail_at(&t.mem, 0, 0);
  th_fini(&t);
}

/* ------------------------------- requests are all or nothing */

/* What a request may change, as seen from outside (msgs_in aside: a
   message that fails for memory still counts as received). */
static void fingerprint(th *t, char *out, size_t outsz) {
  struct chans cs;
  hub_stats st;
  hub_conn_id id;
  size_t n, i, ev = 0;

  hub_get_stats(t->h, &st);
  for (i = 0; i < HUB_CLOSE_KIND_MAX; i++) {
    ev += (size_t)st.evictions[i];
  }
  n = (size_t)snprintf(
    out, outsz, "c%llu s%llu ch%llu bp%llu o%llu p%llu e%zu up%d x%llu",
    (unsigned long long)st.conns, (unsigned long long)st.subscriptions,
    (unsigned long long)st.channels, (unsigned long long)st.bp_subscriptions,
    (unsigned long long)st.msgs_out, (unsigned long long)st.publishes, ev,
    hub_bp_is_up(t->h), (unsigned long long)hub_get_expiry(t->h));
  cs.n = 0;
  hub_foreach_channel(t->h, collect_chan, &cs);
  for (i = 0; i < cs.n && n < outsz; i++) {
    n += (size_t)snprintf(
      out + n, outsz - n, " %s=%zu", cs.names[i],
      hub_channel_subscribers(t->h, cs.names[i], strlen(cs.names[i])));
  }
  for (id = 1; id <= 8 && n < outsz; id++) {
    size_t m = 0, b = 0;
    if (hub_conn_backlog(t->h, id, &m, &b) == 0) {
      n += (size_t)snprintf(out + n, outsz - n, " %llu:%zu/%zu",
                            (unsigned long long)id, m, b);
    }
  }
}

enum { REQ_MAX = 12 };

static int raw_msg(th *t, hub_conn_id c, int binary, const char *m) {
  return hub_on_conn_msg(t->h, c, binary, (const uint8_t *)m, strlen(m),
                         t->now);
}

/* Request |which| on a rich() hub (from 9 on, with the backplane down). */
static int request(th *t, int which) {
  static const char body[] = "{\"channel\":\"q\",\"data\":[1]}";
  const char *err = NULL;
  hub_conn_id id = 0;

  switch (which) {
  case 0:
    return hub_on_conn_open(t->h, &id, "10.0.0.1:1", NULL, t->now);
  case 1: /* a new subscription, pending */
    return raw_msg(t, 5, 0, "{\"type\":\"subscribe\",\"channel\":\"n\"}");
  case 2: /* a repeat, pending */
    return raw_msg(t, 1, 0,
                   "{\"type\":\"subscribe\",\"channel\":\"p\",\"id\":9}");
  case 3: /* cancels two waiting requests */
    return raw_msg(t, 1, 0, "{\"type\":\"unsubscribe\",\"channel\":\"p\"}");
  case 4: /* through the backplane */
    return raw_msg(t, 2, 0,
                   "{\"type\":\"publish\",\"channel\":\"q\",\"data\":7}");
  case 5:
    return hub_publish(t->h, (const uint8_t *)body, sizeof(body) - 1, &err,
                       t->now);
  case 6: /* an error reply */
    return raw_msg(t, 5, 0, "][");
  case 7: /* close 1003 */
    return raw_msg(t, 5, 1, "x");
  case 8: /* a fan-out that evicts c */
    return hub_on_bp_msg(t->h, "q", 1, (const uint8_t *)"[2]", 3, t->now);
  case 9: /* a local fan-out that evicts c, and the reply */
    return raw_msg(t, 2, 0,
                   "{\"type\":\"publish\",\"channel\":\"q\",\"data\":7}");
  case 10:
    return hub_on_bp_up(t->h, t->now);
  case 11: /* a subscribe while down, acknowledged at once */
    return raw_msg(t, 5, 0, "{\"type\":\"subscribe\",\"channel\":\"n\"}");
  }
  fail_msg("no request %d", which);
  return -1;
}

/* Each request, with each of its allocations failing (and every one
   after it): HUB_ERR_NOMEM with no effect and nothing changed, or
   success; hub_check passes either way. */
static void test_mem_requests_all_or_nothing(void **state) {
  int which;

  (void)state;
  for (which = 0; which < REQ_MAX; which++) {
    int failed = 0, passed = 0;
    uint64_t k;

    for (k = 1; k <= 12; k++) {
      th t;
      char before[2048], after[2048];
      int rc;

      rich(&t);
      if (which >= 9) {
        th_bp_down(&t);
        th_clear(&t);
      }
      fingerprint(&t, before, sizeof(before));
      th_mem_fail_at(&t.mem, k, 1);
      rc = request(&t, which);
      th_mem_fail_at(&t.mem, 0, 0);
      th_drain(&t);
      th_check(&t);
      if (rc == HUB_ERR_NOMEM) {
        failed++;
        fingerprint(&t, after, sizeof(after));
        assert_string_equal(before, after);
        th_expect_none(&t);
      } else {
        assert_int_equal(rc, 0);
        passed++;
        /* A repeat subscribe waiting with the first shows nothing yet. */
        if (which != 2 && th_untaken(&t) == 0) {
          fail_msg("request %d: success without an effect", which);
        }
      }
      th_fini(&t);
    }
    /* A close (7) allocates nothing and here finds its room reserved. */
    if (passed == 0 || (failed == 0 && which != 7)) {
      fail_msg("request %d: %d failed, %d passed", which, failed, passed);
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_mem_each_allocation_fails_once),
    cmocka_unit_test(test_mem_failures_from_k_on_then_recover),
    cmocka_unit_test(test_mem_hub_new_fails_cleanly),
    cmocka_unit_test(test_mem_subscribe_all_or_nothing),
    cmocka_unit_test(test_mem_fanout_all_or_nothing),
    cmocka_unit_test(test_mem_open_all_or_nothing),
    cmocka_unit_test(test_mem_all_allocation_through_hub_mem),
    cmocka_unit_test(test_mem_buf_ref_outlives_pop),
    cmocka_unit_test(test_mem_shutdown_without_memory),
    cmocka_unit_test(test_mem_expiry_retried_after_nomem),
    cmocka_unit_test(test_mem_bp_up_retried_after_nomem),
    cmocka_unit_test(test_mem_facts_after_failures_from_k),
    cmocka_unit_test(test_mem_facts_without_memory_exact),
    cmocka_unit_test(test_mem_requests_all_or_nothing),
  };

  return cmocka_run_group_tests(tests, 0, 0);
}
