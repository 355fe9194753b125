/*
 * test_conn.c - per-connection outbound accounting, slow-consumer
 * eviction at both limits, ping/pong and write timeouts.
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PUB(ch, data)                                                          \
  "{\"type\":\"publish\",\"channel\":\"" ch "\",\"data\":" data "}"

/* The frame length of one delivery of |data| on channel "q", measured on
   a throwaway hub so tests can set byte limits exactly. */
static size_t frame_len_of(const char *msg) {
  th t;
  hub_conn_id a;
  th_eff *e;
  size_t len;

  th_init(&t);
  th_start(&t);
  a = th_open(&t);
  th_sub(&t, a, "q");
  th_clear(&t);
  th_msg(&t, a, msg);
  e = th_take(&t, HUB_EFF_SEND, a);
  while (e != NULL) {
    const char *v;
    size_t vlen;

    if (th_json_get(e->data, e->data_len, "type", &v, &vlen) == 1 &&
        vlen == 9 && memcmp(v, "\"message\"", 9) == 0) {
      break;
    }
    e = th_take(&t, HUB_EFF_SEND, a);
  }
  assert_non_null(e);
  len = e->frame_len;
  th_fini(&t);
  return len;
}

/* The backlog counts every queued frame (replies included) until
   hub_on_conn_written reports it, partially or wholly. */
static void test_conn_backlog_accounting(void **state) {
  th t;
  hub_conn_id a;
  size_t msgs, bytes, total = 0;
  th_eff *e;

  (void)state;
  th_init(&t);
  th_start(&t);
  a = th_open(&t);
  assert_int_equal(hub_conn_backlog(t.h, a, &msgs, &bytes), 0);
  assert_int_equal(msgs, 0);
  assert_int_equal(bytes, 0);
  th_msg(&t, a, "{\"type\":\"subscribe\",\"channel\":\"q\"}");
  th_msg(&t, a, PUB("q", "{\"a\":1}"));
  while ((e = th_take(&t, HUB_EFF_SEND, a)) != NULL) {
    total += e->frame_len;
  }
  assert_int_equal(th_count(&t, HUB_EFF_SEND, a), 3);
  assert_int_equal(hub_conn_backlog(t.h, a, &msgs, &bytes), 0);
  assert_int_equal(msgs, 3);
  assert_int_equal(bytes, total);
  /* Part of the first frame. */
  th_written(&t, a, 0, 5);
  assert_int_equal(hub_conn_backlog(t.h, a, &msgs, &bytes), 0);
  assert_int_equal(msgs, 3);
  assert_int_equal(bytes, total - 5);
  th_written(&t, a, 3, total - 5);
  assert_int_equal(hub_conn_backlog(t.h, a, &msgs, &bytes), 0);
  assert_int_equal(msgs, 0);
  assert_int_equal(bytes, 0);
  assert_int_equal(hub_conn_backlog(t.h, a + 1, &msgs, &bytes),
                   HUB_ERR_UNKNOWN_CONN);
  th_expect_none(&t);
  th_fini(&t);
}

/* max_queue_msgs = 4: four frames queue, the fifth evicts with 1008.
   The publisher and the other subscriber are untouched. */
static void test_conn_evict_at_msg_limit(void **state) {
  th t;
  hub_conn_id pub, slow, ok;
  hub_stats st;
  int i;

  (void)state;
  th_init(&t);
  t.cfg.max_queue_msgs = 4;
  th_start(&t);
  pub = th_open(&t);
  slow = th_open(&t);
  ok = th_open(&t);
  th_sub(&t, slow, "q");
  th_sub(&t, ok, "q");
  th_clear(&t);
  for (i = 0; i < 4; i++) {
    th_msg(&t, pub, PUB("q", "1"));
    th_written_all(&t, pub);
    th_written_all(&t, ok);
  }
  assert_int_equal(th_count(&t, HUB_EFF_CLOSE, slow), 0);
  assert_int_equal(th_count(&t, HUB_EFF_SEND, slow), 4);
  th_clear(&t);

  th_msg(&t, pub, PUB("q", "\"five\""));
  th_expect_reply(&t, pub, "published", "\"q\"", NULL);
  th_expect_message(&t, ok, "q", "\"five\"");
  th_expect_close(&t, slow, 1008, HUB_CLOSE_SLOW_MSGS);
  th_expect_none(&t); /* no fifth SEND to slow */
  hub_get_stats(t.h, &st);
  assert_int_equal(st.evictions[HUB_CLOSE_SLOW_MSGS], 1);
  assert_int_equal(st.evictions[HUB_CLOSE_SLOW_BYTES], 0);
  assert_int_equal(st.conns, 2);
  assert_int_equal(hub_channel_subscribers(t.h, "q", 1), 1);

  /* Later messages reach the survivor only. */
  th_msg(&t, pub, PUB("q", "\"six\""));
  th_expect_reply(&t, pub, "published", "\"q\"", NULL);
  th_expect_message(&t, ok, "q", "\"six\"");
  th_expect_none(&t);
  th_closed(&t, slow);
  th_expect_none(&t);
  th_fini(&t);
}

/* Written frames free room: a reader that keeps up is never evicted. */
static void test_conn_written_frames_free_room(void **state) {
  th t;
  hub_conn_id pub, sub;
  int i;

  (void)state;
  th_init(&t);
  t.cfg.max_queue_msgs = 2;
  th_start(&t);
  pub = th_open(&t);
  sub = th_open(&t);
  th_sub(&t, sub, "q");
  th_clear(&t);
  for (i = 0; i < 100; i++) {
    th_msg(&t, pub, PUB("q", "1"));
    th_written_all(&t, pub);
    if (i % 2 == 1) {
      th_written_all(&t, sub);
    }
  }
  assert_int_equal(th_count_all(&t, HUB_EFF_CLOSE), 0);
  assert_int_equal(th_count(&t, HUB_EFF_SEND, sub), 100);
  th_fini(&t);
}

/* Replies count against the limit too. */
static void test_conn_replies_count_against_limit(void **state) {
  th t;
  hub_conn_id a;

  (void)state;
  th_init(&t);
  t.cfg.max_queue_msgs = 3;
  th_start(&t);
  a = th_open(&t);
  th_msg(&t, a, "{\"type\":\"unsubscribe\",\"channel\":\"x\"}");
  th_msg(&t, a, "{\"type\":\"unsubscribe\",\"channel\":\"x\"}");
  th_msg(&t, a, "{\"type\":\"unsubscribe\",\"channel\":\"x\"}");
  assert_int_equal(th_count(&t, HUB_EFF_SEND, a), 3);
  assert_int_equal(th_count(&t, HUB_EFF_CLOSE, a), 0);
  th_msg(&t, a, "{\"type\":\"unsubscribe\",\"channel\":\"x\"}");
  assert_int_equal(th_count(&t, HUB_EFF_SEND, a), 3);
  th_expect_close(&t, a, 1008, HUB_CLOSE_SLOW_MSGS);
  th_fini(&t);
}

/* max_queue_bytes = exactly three frames: three queue, the fourth
   evicts; one byte less evicts at the third. */
static void test_conn_evict_at_byte_limit(void **state) {
  const char *msg = PUB("q", "{\"blob\":\"0123456789abcdef\"}");
  size_t flen = frame_len_of(msg);
  int slack;

  (void)state;
  for (slack = 0; slack >= -1; slack--) {
    th t;
    hub_conn_id pub, slow, ok;
    hub_stats st;
    int i, fit = slack == 0 ? 3 : 2;

    th_init(&t);
    t.cfg.max_queue_bytes = (uint64_t)(3 * flen) + (uint64_t)(int64_t)slack;
    th_start(&t);
    pub = th_open(&t);
    slow = th_open(&t);
    ok = th_open(&t);
    th_sub(&t, slow, "q");
    th_sub(&t, ok, "q");
    th_clear(&t);
    for (i = 0; i < fit; i++) {
      th_msg(&t, pub, msg);
      th_written_all(&t, pub);
      th_written_all(&t, ok);
    }
    assert_int_equal(th_count(&t, HUB_EFF_SEND, slow), fit);
    assert_int_equal(th_count(&t, HUB_EFF_CLOSE, slow), 0);
    th_clear(&t);
    th_msg(&t, pub, msg);
    th_expect_reply(&t, pub, "published", "\"q\"", NULL);
    th_expect_message(&t, ok, "q", "{\"blob\":\"0123456789abcdef\"}");
    th_expect_close(&t, slow, 1008, HUB_CLOSE_SLOW_BYTES);
    th_expect_none(&t);
    hub_get_stats(t.h, &st);
    assert_int_equal(st.evictions[HUB_CLOSE_SLOW_BYTES], 1);
    assert_int_equal(st.evictions[HUB_CLOSE_SLOW_MSGS], 0);
    th_fini(&t);
  }
}

/* Evicting the last subscriber of a channel unsubscribes it on the
   backplane. */
static void test_conn_eviction_releases_backplane(void **state) {
  th t;
  hub_conn_id slow, other;
  int i;

  (void)state;
  th_init(&t);
  t.cfg.backplane = 1;
  t.cfg.max_queue_msgs = 2;
  th_start(&t);
  th_bp_up(&t);
  slow = th_open(&t);
  other = th_open(&t);
  th_sub(&t, slow, "lonely");
  th_sub(&t, slow, "shared");
  th_sub(&t, other, "shared");
  th_clear(&t);
  for (i = 0; i < 3; i++) {
    th_bp_msg(&t, "lonely", "1");
  }
  th_expect_close(&t, slow, 1008, HUB_CLOSE_SLOW_MSGS);
  th_expect_bp_unsub(&t, "lonely");
  assert_int_equal(th_count(&t, HUB_EFF_SEND, slow), 2);
  assert_int_equal(th_count_all(&t, HUB_EFF_BP_UNSUBSCRIBE), 1);
  assert_int_equal(hub_channel_subscribers(t.h, "shared", 6), 1);
  th_fini(&t);
}

/* A ping every ping_interval after open; a pong keeps the connection. */
static void test_conn_ping_interval(void **state) {
  th t;
  hub_conn_id a;
  hub_tstamp t_open;
  int i;

  (void)state;
  th_init(&t);
  t.cfg.ping_interval_ns = TH_S(5);
  t.cfg.pong_timeout_ns = TH_S(8);
  th_start(&t);
  th_advance(&t, TH_MS(300));
  t_open = t.now;
  a = th_open(&t);
  assert_true(hub_get_expiry(t.h) <= t_open + TH_S(5));
  th_advance_to(&t, t_open + TH_S(5) - 1);
  assert_int_equal(th_count(&t, HUB_EFF_PING, a), 0);
  th_advance_to(&t, t_open + TH_S(5));
  assert_int_equal(th_count(&t, HUB_EFF_PING, a), 1);
  th_pong(&t, a);
  for (i = 2; i <= 10; i++) {
    th_advance_to(&t, t_open + TH_S(5) * (hub_tstamp)i);
    assert_int_equal(th_count(&t, HUB_EFF_PING, a), (size_t)i);
    th_pong(&t, a);
  }
  assert_int_equal(th_count_all(&t, HUB_EFF_CLOSE), 0);
  th_fini(&t);
}

/* No pong for pong_timeout after open: CLOSE 1008. */
static void test_conn_pong_timeout_from_open(void **state) {
  th t;
  hub_conn_id a, b;
  hub_tstamp t_open;
  hub_stats st;
  th_eff *e;

  (void)state;
  th_init(&t);
  t.cfg.ping_interval_ns = TH_S(5);
  t.cfg.pong_timeout_ns = TH_S(8);
  th_start(&t);
  t_open = t.now;
  a = th_open(&t);
  b = th_open(&t);
  th_sub(&t, a, "p");
  th_advance_to(&t, t_open + TH_S(8) - 1);
  assert_int_equal(th_count_all(&t, HUB_EFF_CLOSE), 0);
  th_pong(&t, b);
  th_advance_to(&t, t_open + TH_S(8));
  e = th_expect_close(&t, a, 1008, HUB_CLOSE_PONG_TIMEOUT);
  assert_true(strlen(e->reason) > 0);
  assert_int_equal(th_count(&t, HUB_EFF_CLOSE, b), 0);
  hub_get_stats(t.h, &st);
  assert_int_equal(st.evictions[HUB_CLOSE_PONG_TIMEOUT], 1);
  assert_int_equal(hub_channel_subscribers(t.h, "p", 1), 0);
  th_fini(&t);
}

/* The pong timeout counts from the last pong. */
static void test_conn_pong_timeout_from_last_pong(void **state) {
  th t;
  hub_conn_id a;
  hub_tstamp t_open, t_pong;

  (void)state;
  th_init(&t);
  t.cfg.ping_interval_ns = TH_S(5);
  t.cfg.pong_timeout_ns = TH_S(8);
  th_start(&t);
  t_open = t.now;
  a = th_open(&t);
  th_advance_to(&t, t_open + TH_S(6));
  th_pong(&t, a);
  t_pong = t.now;
  th_advance_to(&t, t_pong + TH_S(8) - 1);
  assert_int_equal(th_count(&t, HUB_EFF_CLOSE, a), 0);
  th_advance_to(&t, t_pong + TH_S(8));
  th_expect_close(&t, a, 1008, HUB_CLOSE_PONG_TIMEOUT);
  /* A closing connection gets no more pings. */
  th_clear(&t);
  th_advance(&t, TH_S(60));
  assert_int_equal(th_count(&t, HUB_EFF_PING, a), 0);
  assert_int_equal(th_count(&t, HUB_EFF_CLOSE, a), 0);
  th_fini(&t);
}

/* Data waiting with no write progress for write_timeout: CLOSE 1008.
   The clock starts when data starts waiting, and progress resets it. */
static void test_conn_write_timeout(void **state) {
  th t;
  hub_conn_id pub, sub;
  hub_tstamp t_queued, t_progress;
  hub_stats st;

  (void)state;
  th_init(&t);
  t.cfg.write_timeout_ns = TH_S(10);
  t.cfg.ping_interval_ns = TH_S(1000);
  t.cfg.pong_timeout_ns = TH_S(1000);
  th_start(&t);
  pub = th_open(&t);
  sub = th_open(&t);
  th_sub(&t, sub, "w");
  /* Idle with nothing queued: never a write timeout. */
  th_advance(&t, TH_S(30));
  th_written_all(&t, pub);
  assert_int_equal(th_count_all(&t, HUB_EFF_CLOSE), 0);

  th_msg(&t, pub, PUB("w", "1"));
  th_written_all(&t, pub);
  t_queued = t.now;
  th_advance_to(&t, t_queued + TH_S(7));
  th_written(&t, sub, 0, 3); /* some bytes left: progress */
  t_progress = t.now;
  th_advance_to(&t, t_progress + TH_S(10) - 1);
  assert_int_equal(th_count_all(&t, HUB_EFF_CLOSE), 0);
  th_advance_to(&t, t_progress + TH_S(10));
  th_expect_close(&t, sub, 1008, HUB_CLOSE_WRITE_TIMEOUT);
  assert_int_equal(th_count_all(&t, HUB_EFF_CLOSE), 1);
  hub_get_stats(t.h, &st);
  assert_int_equal(st.evictions[HUB_CLOSE_WRITE_TIMEOUT], 1);
  th_fini(&t);
}

/* Everything written stops the write timer. */
static void test_conn_write_timeout_stops_when_drained(void **state) {
  th t;
  hub_conn_id pub, sub;

  (void)state;
  th_init(&t);
  t.cfg.write_timeout_ns = TH_S(10);
  t.cfg.ping_interval_ns = TH_S(1000);
  t.cfg.pong_timeout_ns = TH_S(1000);
  th_start(&t);
  pub = th_open(&t);
  sub = th_open(&t);
  th_sub(&t, sub, "w");
  th_msg(&t, pub, PUB("w", "1"));
  th_written_all(&t, pub);
  th_advance(&t, TH_S(9));
  th_written_all(&t, sub);
  th_advance(&t, TH_S(30));
  assert_int_equal(th_count_all(&t, HUB_EFF_CLOSE), 0);
  /* Data queued later starts a fresh clock. */
  th_msg(&t, pub, PUB("w", "2"));
  th_written_all(&t, pub);
  th_advance(&t, TH_S(10) - 1);
  assert_int_equal(th_count_all(&t, HUB_EFF_CLOSE), 0);
  th_advance(&t, 1);
  th_expect_close(&t, sub, 1008, HUB_CLOSE_WRITE_TIMEOUT);
  th_fini(&t);
}

/* hub_get_expiry is NONE with nothing to do, and never in the past. */
static void test_conn_expiry_none_when_idle(void **state) {
  th t;
  hub_conn_id a;

  (void)state;
  th_init(&t);
  th_start(&t);
  assert_int_equal(hub_get_expiry(t.h), HUB_TSTAMP_NONE);
  a = th_open(&t);
  assert_true(hub_get_expiry(t.h) != HUB_TSTAMP_NONE);
  assert_true(hub_get_expiry(t.h) > t.now);
  assert_true(hub_get_expiry(t.h) <= t.now + t.cfg.ping_interval_ns);
  th_closed(&t, a);
  assert_int_equal(hub_get_expiry(t.h), HUB_TSTAMP_NONE);
  /* Handling an expiry early does nothing. */
  assert_int_equal(hub_handle_expiry(t.h, t.now), 0);
  th_drain(&t);
  th_expect_none(&t);
  th_fini(&t);
}

/* hub_on_conn_written cannot fail, so it ignores a report the backlog
   shows to be impossible (hub.h): one finished frame with fewer bytes
   than that frame (which once left a frame count of 0 with bytes queued,
   and the next SEND failed an assertion in hub_link_push_tail), all the
   bytes with a frame left, more than is queued.  The hub stays
   consistent and the next delivery queues as usual. */
static void test_conn_written_inconsistent_report_ignored(void **state) {
  th t;
  hub_conn_id a, p;
  size_t msgs, bytes, flen, flen2;
  th_eff *e;

  (void)state;
  th_init(&t);
  th_start(&t);
  a = th_open(&t);
  p = th_open(&t);
  th_sub(&t, a, "q");
  th_written_all(&t, a);
  th_clear(&t);
  th_msg(&t, p, PUB("q", "{\"a\":1}"));
  th_written_all(&t, p);
  e = th_take(&t, HUB_EFF_SEND, a);
  assert_non_null(e);
  flen = e->frame_len;
  th_clear(&t);
  assert_int_equal(hub_conn_backlog(t.h, a, &msgs, &bytes), 0);
  assert_int_equal(msgs, 1);
  assert_int_equal(bytes, flen);

  th_written(&t, a, 1, flen - 1); /* the frame done, a byte of it not */
  th_written(&t, a, 0, flen);     /* every byte, the frame not done */
  th_written(&t, a, 2, flen);     /* more frames than queued */
  th_written(&t, a, 1, flen + 1); /* more bytes than queued */
  assert_int_equal(hub_conn_backlog(t.h, a, &msgs, &bytes), 0);
  assert_int_equal(msgs, 1);
  assert_int_equal(bytes, flen);
  th_check(&t);
  th_expect_none(&t);

  /* Two frames queued: the first finished with a byte short is
     consistent (the core keeps no frame lengths) and taken. */
  th_msg(&t, p, PUB("q", "{\"a\":1}"));
  th_written_all(&t, p);
  e = th_take(&t, HUB_EFF_SEND, a);
  assert_non_null(e);
  flen2 = e->frame_len;
  th_clear(&t);
  th_written(&t, a, 1, flen - 1);
  assert_int_equal(hub_conn_backlog(t.h, a, &msgs, &bytes), 0);
  assert_int_equal(msgs, 1);
  assert_int_equal(bytes, flen2 + 1);
  th_written(&t, a, 1, flen2); /* not every byte: ignored */
  th_written(&t, a, 1, flen2 + 1);
  assert_int_equal(hub_conn_backlog(t.h, a, &msgs, &bytes), 0);
  assert_int_equal(msgs, 0);
  assert_int_equal(bytes, 0);
  th_check(&t);

  /* A later delivery queues normally (it used to assert here). */
  th_msg(&t, p, PUB("q", "{\"a\":2}"));
  th_written_all(&t, p);
  e = th_take(&t, HUB_EFF_SEND, a);
  assert_non_null(e);
  assert_int_equal(hub_conn_backlog(t.h, a, &msgs, &bytes), 0);
  assert_int_equal(msgs, 1);
  assert_int_equal(bytes, e->frame_len);
  th_check(&t);
  th_fini(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_conn_backlog_accounting),
    cmocka_unit_test(test_conn_evict_at_msg_limit),
    cmocka_unit_test(test_conn_written_frames_free_room),
    cmocka_unit_test(test_conn_replies_count_against_limit),
    cmocka_unit_test(test_conn_evict_at_byte_limit),
    cmocka_unit_test(test_conn_eviction_releases_backplane),
    cmocka_unit_test(test_conn_ping_interval),
    cmocka_unit_test(test_conn_pong_timeout_from_open),
    cmocka_unit_test(test_conn_pong_timeout_from_last_pong),
    cmocka_unit_test(test_conn_write_timeout),
    cmocka_unit_test(test_conn_write_timeout_stops_when_drained),
    cmocka_unit_test(test_conn_expiry_none_when_idle),
    cmocka_unit_test(test_conn_written_inconsistent_report_ignored),
  };

  return cmocka_run_group_tests(tests, 0, 0);
}
