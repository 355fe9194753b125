/*
 * test_hred.c - history with an external backplane (core/hub_hred.c):
 * subscribes served by reads, buffering during a read, the merge and its
 * dedupe, gap fill on a hole and after an outage, epoch changes, gap
 * frames only when history cannot fill, coalesced reads, publishes that
 * wait for the backplane's offset, the HTTP API, and allocation failures
 * that change nothing.
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define E1 "EpochOne"
#define E2 "EpochTwo"
#define PBODY "{\"channel\":\"news\",\"data\":5}"
#define XBODY "{\"channel\":\"x\",\"data\":1}"

static void start(th *t, uint32_t size) {
  th_init(t);
  t->cfg.backplane = 1;
  t->cfg.history_size = size;
  th_start(t);
  assert_int_equal(th_bp_up(t), 0);
  th_clear(t);
}

/* The next SEND to |c|, whose payload must be exactly |want|. */
static void expect_frame(th *t, hub_conn_id c, const char *want) {
  th_eff *e = th_take(t, HUB_EFF_SEND, c);
  if (e == NULL) {
    fail_msg("no frame for conn %llu, want %s", (unsigned long long)c, want);
  }
  if (e->data_len != strlen(want) || memcmp(e->data, want, e->data_len) != 0) {
    fail_msg("frame %.*s, want %s", (int)e->data_len, e->data, want);
  }
}

/* Effects of |type| for |conn| not yet taken (conn 0 for any). */
static size_t left(th *t, hub_effect_type type, hub_conn_id conn) {
  size_t i, n = 0;
  for (i = 0; i < t->n; i++) {
    if (t->effs[i].type == type && !t->effs[i].taken &&
        (conn == 0 || t->effs[i].conn == conn)) {
      n++;
    }
  }
  return n;
}

static void expect_msg(th *t, hub_conn_id c, uint64_t off) {
  char want[128];
  snprintf(want, sizeof(want),
           "{\"type\":\"message\",\"channel\":\"news\",\"offset\":%llu,"
           "\"data\":{\"o\":%llu}}",
           (unsigned long long)off, (unsigned long long)off);
  expect_frame(t, c, want);
}

/* The HREAD the hub just emitted (taken); asserts its since. */
static uint64_t take_read(th *t, uint64_t since) {
  th_eff *e = th_take(t, HUB_EFF_BP_HREAD, 0);
  assert_non_null(e);
  assert_string_equal(e->name, "news");
  assert_int_equal(e->since, since);
  return e->req;
}

/* A live message `wshub:<off>:<epoch>:{"o":<off>}` on news. */
static int live(th *t, uint64_t off, const char *epoch) {
  char p[128];
  snprintf(p, sizeof(p), "wshub:%llu:%s:{\"o\":%llu}", (unsigned long long)off,
           epoch, (unsigned long long)off);
  return th_bp_msg(t, "news", p);
}

/* Answers read |req| with offset |T| and entries lo..hi (none if lo > hi). */
static int answer(th *t, uint64_t req, uint64_t T, const char *epoch,
                  uint64_t lo, uint64_t hi) {
  hub_hentry e[64];
  char d[64][32];
  size_t n = 0;
  uint64_t o;
  int rc;
  for (o = lo; o <= hi && n < 64; o++, n++) {
    snprintf(d[n], sizeof(d[n]), "{\"o\":%llu}", (unsigned long long)o);
    e[n].offset = o;
    e[n].data = (const uint8_t *)d[n];
    e[n].len = strlen(d[n]);
  }
  rc = hub_on_bp_hread(t->h, req, 1, T, epoch, strlen(epoch), e, n, t->now);
  th_drain(t);
  th_check(t);
  return rc;
}

/* Opens a connection subscribed live to news at offset |top| of E1
   (through a read answered with no entries). */
static hub_conn_id live_sub(th *t, uint64_t top) {
  hub_conn_id a = th_open(t);
  char want[160];
  assert_int_equal(
    th_msg(t, a, "{\"type\":\"subscribe\",\"channel\":\"news\"}"), 0);
  if (th_take_named(t, HUB_EFF_BP_SUBSCRIBE, "news") != NULL) {
    th_bp_subscribed(t, "news");
  }
  assert_int_equal(answer(t, take_read(t, 0), top, E1, 1, 0), 0);
  snprintf(want, sizeof(want),
           "{\"type\":\"subscribed\",\"channel\":\"news\",\"offset\":%llu,"
           "\"epoch\":\"" E1 "\"}",
           (unsigned long long)top);
  expect_frame(t, a, want);
  th_written_all(t, a);
  return a;
}

static void test_hred_subscribe_waits_for_the_read(void **state) {
  th t;
  hub_conn_id a;
  (void)state;
  start(&t, 10);
  a = th_open(&t);
  assert_int_equal(
    th_msg(&t, a, "{\"type\":\"subscribe\",\"channel\":\"news\"}"), 0);
  assert_non_null(th_take_named(&t, HUB_EFF_BP_SUBSCRIBE, "news"));
  /* No reply and no read before the SUBSCRIBE is in force. */
  assert_int_equal(left(&t, HUB_EFF_SEND, a), 0);
  assert_int_equal(left(&t, HUB_EFF_BP_HREAD, 0), 0);
  th_bp_subscribed(&t, "news");
  assert_int_equal(left(&t, HUB_EFF_SEND, a), 0);
  assert_int_equal(answer(&t, take_read(&t, 0), 4, E1, 1, 0), 0);
  expect_frame(&t, a,
               "{\"type\":\"subscribed\",\"channel\":\"news\",\"offset\":4,"
               "\"epoch\":\"" E1 "\"}");
  /* Live: 5 delivered, a duplicate dropped, 6 delivered. */
  assert_int_equal(live(&t, 5, E1), 0);
  expect_msg(&t, a, 5);
  assert_int_equal(live(&t, 5, E1), 0);
  assert_int_equal(live(&t, 4, E1), 0);
  assert_int_equal(left(&t, HUB_EFF_SEND, a), 0);
  assert_int_equal(live(&t, 6, E1), 0);
  expect_msg(&t, a, 6);
  /* A payload without an offset: delivered as a plain message. */
  assert_int_equal(th_bp_msg(&t, "news", "{\"raw\":1}"), 0);
  expect_frame(
    &t, a, "{\"type\":\"message\",\"channel\":\"news\",\"data\":{\"raw\":1}}");
  th_fini(&t);
}

/* A recovering subscribe while another subscriber is live: the live
   messages that come during the read are buffered, merged with the
   read's entries by offset (the duplicate dropped), then released. */
static void test_hred_buffer_merge_dedupe(void **state) {
  th t;
  hub_conn_id a, b;
  uint64_t req;
  (void)state;
  start(&t, 10);
  a = live_sub(&t, 5);
  b = th_open(&t);
  assert_int_equal(
    th_msg(&t, b,
           "{\"type\":\"subscribe\",\"channel\":\"news\",\"id\":7,"
           "\"since\":{\"offset\":3,\"epoch\":\"" E1 "\"}}"),
    0);
  req = take_read(&t, 3);
  assert_int_equal(live(&t, 6, E1), 0);
  assert_int_equal(live(&t, 7, E1), 0);
  /* Held back while the read is in flight. */
  assert_int_equal(left(&t, HUB_EFF_SEND, a), 0);
  assert_int_equal(left(&t, HUB_EFF_SEND, b), 0);
  /* The read saw 4..6; 6 came live too. */
  assert_int_equal(answer(&t, req, 6, E1, 4, 6), 0);
  expect_msg(&t, a, 6);
  expect_msg(&t, a, 7);
  assert_int_equal(left(&t, HUB_EFF_SEND, a), 0);
  expect_frame(&t, b,
               "{\"type\":\"subscribed\",\"channel\":\"news\",\"id\":7,"
               "\"offset\":3,\"epoch\":\"" E1 "\",\"recovered\":true}");
  expect_msg(&t, b, 4);
  expect_msg(&t, b, 5);
  expect_msg(&t, b, 6);
  expect_msg(&t, b, 7);
  assert_int_equal(left(&t, HUB_EFF_SEND, b), 0);
  /* Both live at 7 now. */
  assert_int_equal(live(&t, 7, E1), 0);
  assert_int_equal(live(&t, 8, E1), 0);
  expect_msg(&t, a, 8);
  expect_msg(&t, b, 8);
  assert_int_equal(th_untaken(&t), 0);
  th_fini(&t);
}

/* A hole in the live offsets is read from history and filled; what
   history no longer holds is a gap frame, then what it holds. */
static void test_hred_gap_fill(void **state) {
  th t;
  hub_conn_id a;
  uint64_t req;
  hub_stats st;
  (void)state;
  start(&t, 10);
  a = live_sub(&t, 2);
  assert_int_equal(live(&t, 5, E1), 0);
  req = take_read(&t, 2);
  assert_int_equal(left(&t, HUB_EFF_SEND, a), 0);
  assert_int_equal(answer(&t, req, 5, E1, 3, 5), 0);
  expect_msg(&t, a, 3);
  expect_msg(&t, a, 4);
  expect_msg(&t, a, 5);
  assert_int_equal(th_untaken(&t), 0);
  /* 6 and 7 are gone from history (trimmed): a gap, then 8, 9. */
  assert_int_equal(live(&t, 9, E1), 0);
  req = take_read(&t, 5);
  assert_int_equal(answer(&t, req, 9, E1, 8, 9), 0);
  expect_frame(&t, a,
               "{\"type\":\"gap\",\"channel\":\"news\",\"epoch\":\"" E1
               "\",\"offset\":7}");
  expect_msg(&t, a, 8);
  expect_msg(&t, a, 9);
  hub_get_stats(t.h, &st);
  assert_int_equal(st.hist_gaps, 1);
  th_fini(&t);
}

/* Another epoch in the live stream: gap (new epoch, offset 0), then the
   new epoch from its start, read from history. */
static void test_hred_epoch_change(void **state) {
  th t;
  hub_conn_id a;
  uint64_t req;
  (void)state;
  start(&t, 10);
  a = live_sub(&t, 3);
  assert_int_equal(live(&t, 2, E2), 0);
  expect_frame(&t, a,
               "{\"type\":\"gap\",\"channel\":\"news\",\"epoch\":\"" E2
               "\",\"offset\":0}");
  req = take_read(&t, 0);
  assert_int_equal(answer(&t, req, 2, E2, 1, 2), 0);
  expect_msg(&t, a, 1);
  expect_msg(&t, a, 2);
  assert_int_equal(th_untaken(&t), 0);
  /* A read answered in another epoch than the live subscribers hold:
     the gap, then a read of the new epoch from its start. */
  assert_int_equal(live(&t, 5, E2), 0);
  req = take_read(&t, 2);
  assert_int_equal(answer(&t, req, 5, E1, 4, 5), 0);
  expect_frame(&t, a,
               "{\"type\":\"gap\",\"channel\":\"news\",\"epoch\":\"" E1
               "\",\"offset\":0}");
  req = take_read(&t, 0);
  assert_int_equal(answer(&t, req, 2, E1, 1, 2), 0);
  expect_msg(&t, a, 1);
  expect_msg(&t, a, 2);
  th_fini(&t);
}

/* After an outage the re-SUBSCRIBE's confirmation reads from the live
   subscribers' offset: what the outage lost is delivered, no gap. */
static void test_hred_refill_after_outage(void **state) {
  th t;
  hub_conn_id a, b;
  uint64_t req;
  (void)state;
  start(&t, 10);
  a = live_sub(&t, 3);
  /* A read in flight when the link goes is forgotten. */
  assert_int_equal(live(&t, 6, E1), 0);
  req = take_read(&t, 3);
  th_bp_down(&t);
  assert_int_equal(answer(&t, req, 6, E1, 4, 6), 0);
  assert_int_equal(left(&t, HUB_EFF_SEND, a), 0);
  /* Subscribing while down is answered once the backplane is back. */
  b = th_open(&t);
  assert_int_equal(
    th_msg(&t, b, "{\"type\":\"subscribe\",\"channel\":\"news\"}"), 0);
  assert_int_equal(left(&t, HUB_EFF_SEND, b), 0);
  /* A publish to a history channel is refused while down. */
  assert_int_equal(
    th_msg(&t, b,
           "{\"type\":\"publish\",\"channel\":\"news\",\"data\":1,\"id\":2}"),
    0);
  expect_frame(&t, b,
               "{\"type\":\"error\",\"id\":2,\"error\":\"backplane "
               "unavailable\"}");
  assert_int_equal(th_bp_up(&t), 0);
  th_bp_subscribed(&t, "news");
  req = take_read(&t, 3);
  assert_int_equal(answer(&t, req, 7, E1, 4, 7), 0);
  expect_msg(&t, a, 4);
  expect_msg(&t, a, 5);
  expect_msg(&t, a, 6);
  expect_msg(&t, a, 7);
  expect_frame(&t, b,
               "{\"type\":\"subscribed\",\"channel\":\"news\",\"offset\":7,"
               "\"epoch\":\"" E1 "\"}");
  th_fini(&t);
}

/* Subscribers waiting on one channel share reads: one for those present
   when it is issued and those that come during it with a since it
   covers. */
static void test_hred_reads_coalesce(void **state) {
  th t;
  hub_conn_id c[100];
  uint64_t req;
  hub_stats st;
  size_t i;
  (void)state;
  start(&t, 10);
  (void)live_sub(&t, 10);
  for (i = 0; i < 100; i++) {
    char m[160];
    c[i] = th_open(&t);
    snprintf(m, sizeof(m),
             "{\"type\":\"subscribe\",\"channel\":\"news\",\"since\":"
             "{\"offset\":%zu,\"epoch\":\"" E1 "\"}}",
             5 + i % 5);
    assert_int_equal(th_msg(&t, c[i], m), 0);
  }
  /* The first one's read covers every later since (all >= 5): the 99
     join it instead of waiting for another. */
  assert_int_equal(left(&t, HUB_EFF_BP_HREAD, 0), 1);
  req = take_read(&t, 5);
  assert_int_equal(answer(&t, req, 10, E1, 6, 10), 0);
  assert_int_equal(left(&t, HUB_EFF_BP_HREAD, 0), 0);
  for (i = 0; i < 100; i++) {
    size_t k;
    th_eff *e = th_take(&t, HUB_EFF_SEND, c[i]);
    assert_non_null(e);
    assert_non_null(strstr(e->data, "\"recovered\":true"));
    for (k = 5 + i % 5 + 1; k <= 10; k++) {
      expect_msg(&t, c[i], k);
    }
  }
  hub_get_stats(t.h, &st);
  assert_int_equal(st.hist_reads, 2);
  th_fini(&t);
}

/* A waiter further behind than the read in flight does not join it (its
   range is not covered) and gets the next read; one further behind than
   history_size does not lower a read's since. */
static void test_hred_join_only_when_covered(void **state) {
  th t;
  hub_conn_id a, b, c;
  uint64_t req;
  th_eff *e;
  (void)state;
  start(&t, 10);
  (void)live_sub(&t, 30);
  a = th_open(&t);
  assert_int_equal(
    th_msg(&t, a,
           "{\"type\":\"subscribe\",\"channel\":\"news\",\"since\":"
           "{\"offset\":27,\"epoch\":\"" E1 "\"}}"),
    0);
  /* c is 25 behind: not recovered, so the read starts at top - 10. */
  c = th_open(&t);
  req = take_read(&t, 27);
  assert_int_equal(
    th_msg(&t, c,
           "{\"type\":\"subscribe\",\"channel\":\"news\",\"since\":"
           "{\"offset\":5,\"epoch\":\"" E1 "\"}}"),
    0);
  b = th_open(&t);
  assert_int_equal(
    th_msg(&t, b,
           "{\"type\":\"subscribe\",\"channel\":\"news\",\"since\":"
           "{\"offset\":24,\"epoch\":\"" E1 "\"}}"),
    0);
  assert_int_equal(answer(&t, req, 30, E1, 28, 30), 0);
  e = th_take(&t, HUB_EFF_SEND, a);
  assert_non_null(e);
  assert_non_null(strstr(e->data, "\"recovered\":true"));
  expect_msg(&t, a, 28);
  expect_msg(&t, a, 29);
  expect_msg(&t, a, 30);
  /* b (since 24) and c were not served by it. */
  assert_int_equal(left(&t, HUB_EFF_SEND, b), 0);
  assert_int_equal(left(&t, HUB_EFF_SEND, c), 0);
  req = take_read(&t, 20); /* top - 10, not 5: c cannot be recovered */
  assert_int_equal(answer(&t, req, 30, E1, 21, 30), 0);
  e = th_take(&t, HUB_EFF_SEND, b);
  assert_non_null(e);
  assert_non_null(strstr(e->data, "\"recovered\":true"));
  for (uint64_t k = 25; k <= 30; k++) {
    expect_msg(&t, b, k);
  }
  e = th_take(&t, HUB_EFF_SEND, c);
  assert_non_null(e);
  assert_non_null(strstr(e->data, "\"recovered\":false"));
  assert_int_equal(left(&t, HUB_EFF_SEND, c), 0);
  th_fini(&t);
}

static void test_hred_publish(void **state) {
  th t;
  hub_conn_id a;
  th_eff *e;
  uint64_t req;
  (void)state;
  start(&t, 10);
  a = th_open(&t);
  assert_int_equal(
    th_msg(&t, a,
           "{\"type\":\"publish\",\"channel\":\"news\",\"data\":{\"x\":1},"
           "\"id\":3}"),
    0);
  e = th_take(&t, HUB_EFF_BP_HPUBLISH, 0);
  assert_non_null(e);
  assert_string_equal(e->name, "news");
  assert_string_equal(e->data, "{\"x\":1}");
  assert_int_equal(e->count, 10);
  assert_int_equal(e->meta_ttl_s, 86400);
  req = e->req;
  assert_int_equal(left(&t, HUB_EFF_SEND, a), 0);
  assert_int_equal(hub_on_bp_hpublished(t.h, req, 1, 8, E1, 8, t.now), 0);
  th_drain(&t);
  expect_frame(&t, a,
               "{\"type\":\"published\",\"channel\":\"news\",\"id\":3,"
               "\"offset\":8}");
  /* A second answer for it is ignored. */
  assert_int_equal(hub_on_bp_hpublished(t.h, req, 1, 8, E1, 8, t.now), 0);
  th_drain(&t);
  assert_int_equal(th_untaken(&t), 0);
  /* ok=0: backplane unavailable. */
  assert_int_equal(
    th_msg(&t, a, "{\"type\":\"publish\",\"channel\":\"news\",\"data\":2}"), 0);
  req = th_take(&t, HUB_EFF_BP_HPUBLISH, 0)->req;
  assert_int_equal(hub_on_bp_hpublished(t.h, req, 0, 0, NULL, 0, t.now), 0);
  th_drain(&t);
  expect_frame(&t, a,
               "{\"type\":\"error\",\"error\":\"backplane unavailable\"}");
  /* The HTTP API: the answer carries the offset; a down fails it. */
  assert_int_equal(
    hub_api_publish(t.h, 41, (const uint8_t *)PBODY, strlen(PBODY), t.now), 0);
  th_drain(&t);
  req = th_take(&t, HUB_EFF_BP_HPUBLISH, 0)->req;
  assert_int_equal(hub_on_bp_hpublished(t.h, req, 1, 9, E1, 8, t.now), 0);
  th_drain(&t);
  e = th_take(&t, HUB_EFF_API_REPLY, 0);
  assert_non_null(e);
  assert_int_equal(e->req, 41);
  assert_int_equal(e->status, 200);
  assert_string_equal(e->data, "{\"ok\":true,\"offset\":9}");
  assert_int_equal(
    hub_api_publish(t.h, 42, (const uint8_t *)PBODY, strlen(PBODY), t.now), 0);
  th_drain(&t);
  th_check(&t);
  th_bp_down(&t);
  e = th_take(&t, HUB_EFF_API_REPLY, 0);
  assert_non_null(e);
  assert_int_equal(e->req, 42);
  assert_int_equal(e->status, 503);
  assert_string_equal(e->data, "{\"error\":\"backplane unavailable\"}");
  th_fini(&t);
}

static void test_hred_api(void **state) {
  th t;
  th_eff *e;
  uint64_t req;
  (void)state;
  start(&t, 10);
  /* No history on that channel, a bad name: 400 at once. */
  t.cfg.history_size = 10;
  assert_int_equal(hub_api_history(t.h, 1, "a b", 3, 0, 0, t.now), 0);
  th_drain(&t);
  e = th_take(&t, HUB_EFF_API_REPLY, 0);
  assert_int_equal(e->status, 400);
  assert_int_equal(hub_api_history(t.h, 2, "news", 4, 3, 2, t.now), 0);
  th_drain(&t);
  e = th_take(&t, HUB_EFF_BP_HREAD, 0);
  assert_non_null(e);
  assert_int_equal(e->since, 3);
  assert_int_equal(e->count, 2);
  req = e->req;
  assert_int_equal(answer(&t, req, 9, E1, 4, 5), 0);
  e = th_take(&t, HUB_EFF_API_REPLY, 0);
  assert_non_null(e);
  assert_int_equal(e->req, 2);
  assert_int_equal(e->status, 200);
  assert_string_equal(e->data,
                      "{\"channel\":\"news\",\"epoch\":\"" E1 "\",\"offset\":9,"
                      "\"messages\":[{\"offset\":4,\"data\":{\"o\":4}},"
                      "{\"offset\":5,\"data\":{\"o\":5}}]}");
  /* A publish without history through the API: 200 at once. */
  th_fini(&t);
  th_init(&t);
  th_start(&t);
  assert_int_equal(
    hub_api_publish(t.h, 5, (const uint8_t *)XBODY, strlen(XBODY), t.now), 0);
  th_drain(&t);
  e = th_take(&t, HUB_EFF_API_REPLY, 0);
  assert_non_null(e);
  assert_int_equal(e->status, 200);
  assert_string_equal(e->data, "{\"ok\":true}");
  assert_int_equal(hub_api_publish(t.h, 6, (const uint8_t *)"{}", 2, t.now), 0);
  th_drain(&t);
  e = th_take(&t, HUB_EFF_API_REPLY, 0);
  assert_int_equal(e->status, 400);
  th_fini(&t);
}

/* Every allocation of a read's answer, failed: NOMEM, nothing changed,
   and the same answer then succeeds. */
static void test_hred_answer_nomem(void **state) {
  uint64_t k;
  (void)state;
  for (k = 1;; k++) {
    th t;
    hub_conn_id a, b;
    uint64_t req;
    int rc;
    hub_hentry e[3];
    static const char *d[3] = {"{\"o\":4}", "{\"o\":5}", "{\"o\":6}"};
    size_t i;
    start(&t, 10);
    a = live_sub(&t, 5);
    b = th_open(&t);
    assert_int_equal(
      th_msg(&t, b,
             "{\"type\":\"subscribe\",\"channel\":\"news\",\"since\":"
             "{\"offset\":3,\"epoch\":\"" E1 "\"}}"),
      0);
    req = take_read(&t, 3);
    assert_int_equal(live(&t, 7, E1), 0);
    for (i = 0; i < 3; i++) {
      e[i].offset = 4 + i;
      e[i].data = (const uint8_t *)d[i];
      e[i].len = strlen(d[i]);
    }
    th_mem_fail_at(&t.mem, k, 0);
    rc = hub_on_bp_hread(t.h, req, 1, 6, E1, strlen(E1), e, 3, t.now);
    th_drain(&t);
    th_check(&t);
    th_mem_fail_at(&t.mem, 0, 0);
    if (rc == 0) {
      th_fini(&t);
      assert_true(k > 3);
      break;
    }
    assert_int_equal(rc, HUB_ERR_NOMEM);
    assert_int_equal(th_untaken(&t), 0);
    /* Nothing changed: the same answer now serves both. */
    assert_int_equal(
      hub_on_bp_hread(t.h, req, 1, 6, E1, strlen(E1), e, 3, t.now), 0);
    th_drain(&t);
    expect_msg(&t, a, 6);
    expect_msg(&t, a, 7);
    assert_non_null(th_take(&t, HUB_EFF_SEND, b));
    expect_msg(&t, b, 4);
    expect_msg(&t, b, 5);
    expect_msg(&t, b, 6);
    expect_msg(&t, b, 7);
    th_fini(&t);
  }
}

/* The requests that allocate (a subscribe, a publish, a buffered live
   message) change nothing on NOMEM either. */
static void test_hred_requests_nomem(void **state) {
  uint64_t k;
  int done = 0;
  (void)state;
  for (k = 1; !done; k++) {
    th t;
    hub_conn_id a, b;
    int rc;
    start(&t, 10);
    a = live_sub(&t, 5);
    b = th_open(&t);
    th_mem_fail_at(&t.mem, k, 0);
    rc = th_msg(&t, b,
                "{\"type\":\"subscribe\",\"channel\":\"news\",\"id\":1,"
                "\"since\":{\"offset\":3,\"epoch\":\"" E1 "\"}}");
    th_check(&t);
    if (rc == 0) {
      rc = live(&t, 6, E1); /* buffered: the read is in flight */
      th_check(&t);
    }
    if (rc == 0) {
      rc =
        th_msg(&t, a, "{\"type\":\"publish\",\"channel\":\"news\",\"data\":1}");
      th_check(&t);
    }
    th_mem_fail_at(&t.mem, 0, 0);
    if (rc == 0) {
      done = 1;
    } else {
      assert_int_equal(rc, HUB_ERR_NOMEM);
    }
    th_fini(&t);
  }
  assert_true(k > 4);
}

/* A subscribe with since |off| of |epoch| on news from |c|. */
static void sub_since(th *t, hub_conn_id c, uint64_t off, const char *epoch) {
  char m[160];
  snprintf(m, sizeof(m),
           "{\"type\":\"subscribe\",\"channel\":\"news\",\"since\":"
           "{\"offset\":%llu,\"epoch\":\"%s\"}}",
           (unsigned long long)off, epoch);
  assert_int_equal(th_msg(t, c, m), 0);
}

static void expect_recovered(th *t, hub_conn_id c, uint64_t off,
                             const char *epoch) {
  char want[200];
  snprintf(want, sizeof(want),
           "{\"type\":\"subscribed\",\"channel\":\"news\",\"offset\":%llu,"
           "\"epoch\":\"%s\",\"recovered\":true}",
           (unsigned long long)off, epoch);
  expect_frame(t, c, want);
}

static uint64_t reads(th *t) {
  hub_stats st;
  hub_get_stats(t->h, &st);
  return st.hist_reads;
}

/* On a live channel the ring of the messages delivered answers a
   subscribe whose since it covers, and one without since, at once: no
   HREAD.  A since below the ring, or of another epoch, still reads. */
static void test_hred_ring_serves(void **state) {
  th t;
  hub_conn_id a, b, c, d, e;
  uint64_t n, req;
  th_eff *f;
  (void)state;
  start(&t, 10);
  a = live_sub(&t, 5);
  assert_int_equal(live(&t, 6, E1), 0);
  assert_int_equal(live(&t, 7, E1), 0);
  assert_int_equal(live(&t, 8, E1), 0);
  expect_msg(&t, a, 6);
  expect_msg(&t, a, 7);
  expect_msg(&t, a, 8);
  n = reads(&t);
  b = th_open(&t);
  sub_since(&t, b, 5, E1);
  assert_int_equal(left(&t, HUB_EFF_BP_HREAD, 0), 0);
  expect_recovered(&t, b, 5, E1);
  expect_msg(&t, b, 6);
  expect_msg(&t, b, 7);
  expect_msg(&t, b, 8);
  /* Up to date: nothing to replay. */
  c = th_open(&t);
  sub_since(&t, c, 8, E1);
  expect_recovered(&t, c, 8, E1);
  assert_int_equal(left(&t, HUB_EFF_SEND, c), 0);
  /* Without since: the channel's offset and epoch. */
  d = th_open(&t);
  assert_int_equal(
    th_msg(&t, d, "{\"type\":\"subscribe\",\"channel\":\"news\",\"id\":3}"), 0);
  expect_frame(&t, d,
               "{\"type\":\"subscribed\",\"channel\":\"news\",\"id\":3,"
               "\"offset\":8,\"epoch\":\"" E1 "\"}");
  assert_int_equal(reads(&t), n);
  assert_int_equal(left(&t, HUB_EFF_BP_HREAD, 0), 0);
  /* All live. */
  assert_int_equal(live(&t, 9, E1), 0);
  expect_msg(&t, a, 9);
  expect_msg(&t, b, 9);
  expect_msg(&t, c, 9);
  expect_msg(&t, d, 9);
  /* 5 is below the ring (6..9 kept): a read. */
  e = th_open(&t);
  sub_since(&t, e, 4, E1);
  assert_int_equal(left(&t, HUB_EFF_SEND, e), 0);
  req = take_read(&t, 4);
  assert_int_equal(answer(&t, req, 9, E1, 5, 9), 0);
  expect_recovered(&t, e, 4, E1);
  for (uint64_t k = 5; k <= 9; k++) {
    expect_msg(&t, e, k);
  }
  /* That read's entries joined the ring: 4 is served now. */
  th_closed(&t, e);
  e = th_open(&t);
  sub_since(&t, e, 4, E1);
  assert_int_equal(left(&t, HUB_EFF_BP_HREAD, 0), 0);
  expect_recovered(&t, e, 4, E1);
  for (uint64_t k = 5; k <= 9; k++) {
    expect_msg(&t, e, k);
  }
  /* Another epoch: a read, not recovered. */
  n = reads(&t);
  e = th_open(&t);
  sub_since(&t, e, 8, E2);
  req = take_read(&t, 8);
  assert_int_equal(answer(&t, req, 9, E1, 9, 9), 0);
  f = th_take(&t, HUB_EFF_SEND, e);
  assert_non_null(f);
  assert_non_null(strstr(f->data, "\"recovered\":false"));
  assert_int_equal(left(&t, HUB_EFF_SEND, e), 0);
  assert_int_equal(reads(&t), n + 1);
  th_fini(&t);
}

/* The ring holds at most history_size frames. */
static void test_hred_ring_bounded(void **state) {
  th t;
  hub_conn_id a, b;
  uint64_t k, req;
  (void)state;
  start(&t, 4);
  a = live_sub(&t, 0);
  for (k = 1; k <= 10; k++) {
    assert_int_equal(live(&t, k, E1), 0);
    expect_msg(&t, a, k);
  }
  b = th_open(&t);
  sub_since(&t, b, 6, E1);
  expect_recovered(&t, b, 6, E1);
  for (k = 7; k <= 10; k++) {
    expect_msg(&t, b, k);
  }
  th_closed(&t, b);
  b = th_open(&t);
  sub_since(&t, b, 5, E1);
  req = take_read(&t, 6); /* top - history_size */
  (void)req;
  th_fini(&t);
}

/* The ring starts over after a gap frame to the live subscribers and
   after an epoch change. */
static void test_hred_ring_reset(void **state) {
  th t;
  hub_conn_id a, b;
  uint64_t req;
  (void)state;
  start(&t, 10);
  a = live_sub(&t, 5);
  assert_int_equal(live(&t, 6, E1), 0);
  expect_msg(&t, a, 6);
  /* A hole history no longer holds: gap, then 9. */
  assert_int_equal(live(&t, 9, E1), 0);
  req = take_read(&t, 6);
  assert_int_equal(answer(&t, req, 9, E1, 9, 9), 0);
  expect_frame(&t, a,
               "{\"type\":\"gap\",\"channel\":\"news\",\"epoch\":\"" E1
               "\",\"offset\":8}");
  expect_msg(&t, a, 9);
  /* The ring holds 9 only: since 8 is served, since 6 reads. */
  b = th_open(&t);
  sub_since(&t, b, 8, E1);
  expect_recovered(&t, b, 8, E1);
  expect_msg(&t, b, 9);
  th_closed(&t, b);
  b = th_open(&t);
  sub_since(&t, b, 6, E1);
  req = take_read(&t, 6);
  assert_int_equal(answer(&t, req, 9, E1, 9, 9), 0);
  th_closed(&t, b);
  th_clear(&t);
  /* Another epoch: gap to the live group, a read from 0; the old epoch's
     since reads, the new one's is served from what that read kept. */
  assert_int_equal(live(&t, 1, E2), 0);
  expect_frame(&t, a,
               "{\"type\":\"gap\",\"channel\":\"news\",\"epoch\":\"" E2
               "\",\"offset\":0}");
  req = take_read(&t, 0);
  assert_int_equal(answer(&t, req, 1, E2, 1, 1), 0);
  expect_msg(&t, a, 1);
  b = th_open(&t);
  sub_since(&t, b, 8, E1);
  req = take_read(&t, 1);
  assert_int_equal(answer(&t, req, 1, E2, 2, 1), 0);
  th_closed(&t, b);
  th_clear(&t);
  b = th_open(&t);
  sub_since(&t, b, 0, E2);
  assert_int_equal(left(&t, HUB_EFF_BP_HREAD, 0), 0);
  expect_recovered(&t, b, 0, E2);
  expect_msg(&t, b, 1);
  th_fini(&t);
}

/* history_ttl without a live message empties the ring (the core's
   timer); the channel's last offset is still answered at once. */
static void test_hred_ring_ttl(void **state) {
  th t;
  hub_conn_id a, b;
  uint64_t req;
  (void)state;
  th_init(&t);
  t.cfg.backplane = 1;
  t.cfg.history_size = 10;
  t.cfg.history_ttl_ns = TH_S(60);
  t.cfg.ping_interval_ns = TH_S(1000);
  t.cfg.pong_timeout_ns = TH_S(2000);
  th_start(&t);
  assert_int_equal(th_bp_up(&t), 0);
  th_clear(&t);
  a = live_sub(&t, 5);
  assert_int_equal(live(&t, 6, E1), 0);
  expect_msg(&t, a, 6);
  th_written_all(&t, a);
  assert_true(hub_get_expiry(t.h) <= t.now + TH_S(60));
  th_advance(&t, TH_S(30));
  assert_int_equal(live(&t, 7, E1), 0);
  expect_msg(&t, a, 7);
  th_written_all(&t, a);
  th_advance(&t, TH_S(59));
  b = th_open(&t);
  sub_since(&t, b, 5, E1);
  expect_recovered(&t, b, 5, E1);
  expect_msg(&t, b, 6);
  expect_msg(&t, b, 7);
  th_closed(&t, b);
  th_advance(&t, TH_S(2));
  th_clear(&t);
  b = th_open(&t);
  sub_since(&t, b, 6, E1);
  assert_int_equal(left(&t, HUB_EFF_SEND, b), 0);
  req = take_read(&t, 6);
  assert_int_equal(answer(&t, req, 7, E1, 7, 7), 0);
  th_closed(&t, b);
  th_fini(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_hred_subscribe_waits_for_the_read),
    cmocka_unit_test(test_hred_buffer_merge_dedupe),
    cmocka_unit_test(test_hred_gap_fill),
    cmocka_unit_test(test_hred_epoch_change),
    cmocka_unit_test(test_hred_refill_after_outage),
    cmocka_unit_test(test_hred_reads_coalesce),
    cmocka_unit_test(test_hred_join_only_when_covered),
    cmocka_unit_test(test_hred_publish),
    cmocka_unit_test(test_hred_api),
    cmocka_unit_test(test_hred_answer_nomem),
    cmocka_unit_test(test_hred_requests_nomem),
    cmocka_unit_test(test_hred_ring_serves),
    cmocka_unit_test(test_hred_ring_bounded),
    cmocka_unit_test(test_hred_ring_reset),
    cmocka_unit_test(test_hred_ring_ttl),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
