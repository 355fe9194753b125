/*
 * test_sh_shell.c - the shell (shell/shell.h): the effect applier over a
 * scripted transport, the early-write rule, every error policy, the
 * close frame, and the backplane link's backoff.
 *
 * The hub is a real one (the harness's th, for its failing allocator);
 * the transport is a fake that records what it is asked and can be
 * told to fail.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "shell.h"
#include "bp.h"

#define FK_CONNS 320

typedef struct fk_conn {
  sh_oq q;
  hub_conn_id id;
  int open;
  size_t frames; /* SEND frames queued */
} fk_conn;

typedef struct fk {
  bp b; /* first: the bp ops get a bp * */
  th t;
  sh s;
  fk_conn conns[FK_CONNS];
  size_t nconns;
  /* knobs */
  int send_fail;  /* sends fail (out of memory) */
  int close_ret;  /* what close answers */
  int write_fail; /* early writes find the socket gone */
  int write_none; /* early writes find the socket full */
  int bp_fail;    /* bp ops fail with this */
  /* records */
  size_t sends, pings, closes, writes, drains, resets, errors, timer_sets;
  size_t bp_ops;
  uint16_t close_code;
  char close_reason[64];
  hub_close_kind close_kind;
  hub_tstamp timer_at;
} fk;

static int fk_send(void *user, void *conn_user, hub_conn_id id, hub_buf *buf) {
  fk *f = user;
  fk_conn *k = conn_user;
  assert_non_null(k);
  assert_int_equal(k->id, id);
  if (f->send_fail) {
    return -1;
  }
  f->sends++;
  k->frames++;
  sh_oq_push(&f->s, &k->q, buf->len, 1);
  return 0;
}

static void fk_ping(void *user, void *conn_user, hub_conn_id id) {
  fk *f = user;
  (void)conn_user;
  (void)id;
  f->pings++;
}

static int fk_close(void *user, void *conn_user, hub_conn_id id, uint16_t code,
                    const char *reason, hub_close_kind kind) {
  fk *f = user;
  fk_conn *k = conn_user;
  assert_int_equal(k->id, id);
  f->closes++;
  f->close_code = code;
  f->close_kind = kind;
  snprintf(f->close_reason, sizeof(f->close_reason), "%s",
           reason != NULL ? reason : "");
  if (!k->open) {
    return SH_CLOSE_UNKNOWN;
  }
  k->open = 0;
  return f->close_ret;
}

static int fk_write(void *user, sh_oq *q, hub_conn_id *id, size_t *msgs,
                    size_t *bytes) {
  fk *f = user;
  fk_conn *k = (fk_conn *)(void *)((char *)q - offsetof(fk_conn, q));
  f->writes++;
  if (!k->open) {
    return 0;
  }
  *id = k->id;
  if (f->write_fail) {
    k->open = 0;
    return -1;
  }
  if (f->write_none) {
    return 0;
  }
  *msgs = q->msgs;
  *bytes = (size_t)q->bytes;
  sh_oq_pop(q, *msgs, *bytes);
  return 0;
}

static void fk_set_timer(void *user, hub_tstamp at) {
  fk *f = user;
  f->timer_sets++;
  f->timer_at = at;
}

static void fk_bp_reset(void *user) {
  fk *f = user;
  f->resets++;
}

static void fk_drained(void *user) {
  fk *f = user;
  f->drains++;
}

static void fk_error(void *user, const char *what, int err) {
  fk *f = user;
  (void)what;
  (void)err;
  f->errors++;
}

static int fk_bp_op(fk *f) {
  f->bp_ops++;
  return f->bp_fail;
}

static int fk_subscribe(bp *b, const char *channel, size_t len) {
  (void)channel;
  (void)len;
  return fk_bp_op((fk *)(void *)b);
}

static int fk_unsubscribe(bp *b, const char *channel, size_t len) {
  (void)channel;
  (void)len;
  return fk_bp_op((fk *)(void *)b);
}

static int fk_publish(bp *b, const char *channel, size_t len,
                      const uint8_t *data, size_t dlen) {
  (void)channel;
  (void)len;
  (void)data;
  (void)dlen;
  return fk_bp_op((fk *)(void *)b);
}

static int fk_set(bp *b, const char *key, size_t key_len, const uint8_t *val,
                  size_t val_len, uint32_t ttl_s) {
  (void)key;
  (void)key_len;
  (void)val;
  (void)val_len;
  (void)ttl_s;
  return fk_bp_op((fk *)(void *)b);
}

static int fk_del(bp *b, const char *key, size_t key_len) {
  (void)key;
  (void)key_len;
  return fk_bp_op((fk *)(void *)b);
}

static void fk_free(bp *b) {
  (void)b;
}

static const bp_ops fk_bp_ops = {.subscribe = fk_subscribe,
                                 .unsubscribe = fk_unsubscribe,
                                 .publish = fk_publish,
                                 .set = fk_set,
                                 .del = fk_del,
                                 .hpublish = NULL,
                                 .hread = NULL,
                                 .free = fk_free};

/* A fake with a default config in f->t.cfg, to change before fk_start. */
static fk *fk_alloc(void) {
  fk *f = calloc(1, sizeof(*f));
  assert_non_null(f);
  th_init(&f->t);
  return f;
}

/* Starts the hub behind the shell; |backplane| 1 gives it the fake
   backplane (and the registry), up. */
static void fk_start(fk *f, int backplane) {
  sh_transport tr;
  f->t.cfg.backplane = backplane;
  f->t.cfg.registry = backplane;
  th_start(&f->t);
  th_clear(&f->t);
  f->b.ops = &fk_bp_ops;
  memset(&tr, 0, sizeof(tr));
  tr.user = f;
  tr.send = fk_send;
  tr.ping = fk_ping;
  tr.close = fk_close;
  tr.write = fk_write;
  tr.set_timer = fk_set_timer;
  tr.bp_reset = fk_bp_reset;
  tr.drained = fk_drained;
  tr.error = fk_error;
  sh_init(&f->s, f->t.h, backplane ? &f->b : NULL, &f->t.cfg, &tr);
  sh_drain(&f->s, f->t.now);
  if (backplane) {
    sh_bp_up(&f->s, f->t.now);
    assert_int_equal(hub_bp_is_up(f->t.h), 1);
  }
}

/* A hub with |max_queue_msgs| (0: default) behind the shell. */
static fk *fk_new(int backplane, uint32_t max_queue_msgs) {
  fk *f = fk_alloc();
  if (max_queue_msgs > 0) {
    f->t.cfg.max_queue_msgs = max_queue_msgs;
  }
  fk_start(f, backplane);
  return f;
}

static void fk_del_all(fk *f) {
  th_fini(&f->t);
  free(f);
}

static fk_conn *fk_open(fk *f) {
  fk_conn *k = &f->conns[f->nconns++];
  assert_true(f->nconns <= FK_CONNS);
  assert_int_equal(sh_conn_open(&f->s, &k->id, "127.0.0.1:1", k, f->t.now),
                   SH_OK);
  k->open = 1;
  return k;
}

static void fk_msg(fk *f, fk_conn *k, const char *json) {
  sh_conn_msg(&f->s, k->id, k, 0, (const uint8_t *)json, strlen(json),
              f->t.now);
}

/* Reports everything |k| has queued written, as a driver's flush does. */
static void fk_flush(fk *f, fk_conn *k) {
  size_t msgs = k->q.msgs, bytes = (size_t)k->q.bytes;
  sh_oq_pop(&k->q, msgs, bytes);
  sh_conn_written(&f->s, k->id, msgs, bytes, f->t.now);
}

static uint64_t fk_conns_open(fk *f) {
  hub_stats st;
  hub_get_stats(f->t.h, &st);
  return st.conns;
}

/* SEND effects reach the transport, the out-queue counts them, the drain
   ends with the drained hook, and the timer is armed once. */
static void test_sh_shell_applies_effects(void **state) {
  fk *f = fk_new(0, 0);
  fk_conn *k;
  size_t sets;
  (void)state;
  k = fk_open(f);
  assert_int_equal(f->timer_sets, 1); /* the first ping */
  assert_true(f->timer_at == f->t.now + f->t.cfg.ping_interval_ns);
  fk_msg(f, k, "{\"type\":\"subscribe\",\"channel\":\"news\",\"id\":1}");
  assert_int_equal(f->sends, 1);
  assert_int_equal(k->q.msgs, 1);
  assert_true(f->drains >= 2);
  /* The unwritten reply armed the write timeout, the earlier deadline. */
  assert_true(f->timer_at == f->t.now + f->t.cfg.write_timeout_ns);
  fk_flush(f, k);
  assert_int_equal(k->q.msgs, 0);
  assert_int_equal(k->q.bytes, 0);
  assert_true(f->timer_at == f->t.now + f->t.cfg.ping_interval_ns);
  /* An event that moves no deadline does not touch the driver's timer. */
  sets = f->timer_sets;
  sh_conn_pong(&f->s, k->id, f->t.now);
  assert_int_equal(f->timer_sets, sets);
  fk_del_all(f);
}

/* A frame the transport cannot queue closes its connection 1011, and
   the hub is told at once. */
static void test_sh_shell_send_nomem_closes_1011(void **state) {
  fk *f = fk_new(0, 0);
  fk_conn *k;
  (void)state;
  k = fk_open(f);
  f->send_fail = 1;
  fk_msg(f, k, "{\"type\":\"subscribe\",\"channel\":\"news\",\"id\":1}");
  assert_int_equal(f->closes, 1);
  assert_int_equal(f->close_code, 1011);
  assert_string_equal(f->close_reason, "internal error");
  assert_int_equal(f->close_kind, HUB_CLOSE_KIND_MAX);
  assert_int_equal(f->s.st.nomem_closes, 1);
  assert_int_equal(fk_conns_open(f), 0);
  assert_int_equal(hub_conn_backlog(f->t.h, k->id, NULL, NULL),
                   HUB_ERR_UNKNOWN_CONN);
  fk_del_all(f);
}

/* A CLOSE effect the driver finishes later: the hub keeps the
   connection (closing) until sh_conn_closed. */
static void test_sh_shell_close_pending(void **state) {
  fk *f = fk_new(0, 0);
  fk_conn *k;
  size_t qm, qb;
  (void)state;
  k = fk_open(f);
  f->close_ret = SH_CLOSE_PENDING;
  sh_conn_msg(&f->s, k->id, k, 1, (const uint8_t *)"x", 1, f->t.now);
  assert_int_equal(f->closes, 1);
  assert_int_equal(f->close_code, 1003);
  assert_int_equal(f->close_kind, HUB_CLOSE_BINARY);
  assert_int_equal(fk_conns_open(f), 0);
  assert_int_equal(hub_conn_backlog(f->t.h, k->id, &qm, &qb), 0);
  sh_conn_closed(&f->s, k->id, f->t.now);
  assert_int_equal(hub_conn_backlog(f->t.h, k->id, &qm, &qb),
                   HUB_ERR_UNKNOWN_CONN);
  fk_del_all(f);
}

/* Past a quarter of max_queue_msgs a connection is written before the
   next event, so a burst of publishes does not evict a reader that keeps
   up; one that does not keep up is evicted as before. */
static void test_sh_shell_early_write(void **state) {
  fk *f = fk_new(0, 8); /* mark: 2 messages */
  fk_conn *sub, *pub;
  int i;
  (void)state;
  sub = fk_open(f);
  pub = fk_open(f);
  fk_msg(f, sub, "{\"type\":\"subscribe\",\"channel\":\"news\"}");
  fk_flush(f, sub);
  assert_int_equal(f->writes, 0);
  for (i = 0; i < 40; i++) {
    fk_msg(f, pub, "{\"type\":\"publish\",\"channel\":\"news\",\"data\":1}");
  }
  /* Every publish after the first pushed sub past the mark. */
  assert_true(f->writes >= 20);
  assert_int_equal(f->closes, 0);
  assert_true(sub->q.msgs < 2);
  assert_int_equal(fk_conns_open(f), 2);
  /* A socket that takes nothing: the hub's limit evicts. */
  f->write_none = 1;
  for (i = 0; i < 40 && sub->open; i++) {
    fk_msg(f, pub, "{\"type\":\"publish\",\"channel\":\"news\",\"data\":1}");
  }
  assert_int_equal(sub->open, 0);
  assert_int_equal(f->close_code, 1008);
  assert_int_equal(f->close_kind, HUB_CLOSE_SLOW_MSGS);
  assert_true(f->s.st.early_writes >= 20);
  fk_del_all(f);
}

/* An early write that finds the socket gone reports the close. */
static void test_sh_shell_early_write_gone(void **state) {
  fk *f = fk_new(0, 4); /* mark: 1 message */
  fk_conn *k;
  (void)state;
  k = fk_open(f);
  f->write_fail = 1;
  fk_msg(f, k, "{\"type\":\"subscribe\",\"channel\":\"news\"}");
  assert_int_equal(f->writes, 1);
  assert_int_equal(fk_conns_open(f), 0);
  assert_int_equal(hub_conn_backlog(f->t.h, k->id, NULL, NULL),
                   HUB_ERR_UNKNOWN_CONN);
  fk_del_all(f);
}

/* conn_open: out of memory refuses (503); so does a shut-down hub. */
static void test_sh_shell_open_refused(void **state) {
  fk *f = fk_new(0, 0);
  hub_conn_id id = 0;
  (void)state;
  th_mem_fail_at(&f->t.mem, 1, 1);
  assert_int_equal(sh_conn_open(&f->s, &id, "a", NULL, f->t.now),
                   SH_UNAVAILABLE);
  th_mem_fail_at(&f->t.mem, 0, 0);
  assert_int_equal(f->s.st.refused, 1);
  assert_int_equal(fk_conns_open(f), 0);
  sh_shutdown(&f->s, f->t.now);
  assert_int_equal(sh_conn_open(&f->s, &id, "a", NULL, f->t.now), SH_SHUT_DOWN);
  assert_true(f->s.timer_at == HUB_TSTAMP_NONE);
  fk_del_all(f);
}

/* conn_msg out of memory: that connection is closed 1011, no other. */
static void test_sh_shell_msg_nomem_closes_1011(void **state) {
  fk *f = fk_new(0, 0);
  fk_conn *a, *b;
  (void)state;
  a = fk_open(f);
  b = fk_open(f);
  th_mem_fail_at(&f->t.mem, 1, 0);
  fk_msg(f, a, "{\"type\":\"subscribe\",\"channel\":\"news\",\"id\":1}");
  th_mem_fail_at(&f->t.mem, 0, 0);
  assert_int_equal(f->closes, 1);
  assert_int_equal(f->close_code, 1011);
  assert_int_equal(a->open, 0);
  assert_int_equal(b->open, 1);
  assert_int_equal(fk_conns_open(f), 1);
  assert_int_equal(hub_conn_backlog(f->t.h, a->id, NULL, NULL),
                   HUB_ERR_UNKNOWN_CONN);
  fk_del_all(f);
}

/* A message for an id the hub does not know is the driver's bug: the
   error hook hears of it, nothing else happens. */
static void test_sh_shell_unknown_conn_reported(void **state) {
  fk *f = fk_new(0, 0);
  (void)state;
  sh_conn_msg(&f->s, 99, NULL, 0, (const uint8_t *)"{}", 2, f->t.now);
  assert_int_equal(f->errors, 1);
  assert_int_equal(f->closes, 0);
  fk_del_all(f);
}

/* publish: 400 for a bad body, 503 out of memory or shut down. */
static void test_sh_shell_publish_verdicts(void **state) {
  fk *f = fk_new(0, 0);
  const char *err = NULL;
  static const char ok[] = "{\"channel\":\"news\",\"data\":1}";
  fk_conn *k;
  (void)state;
  k = fk_open(f); /* a subscriber: the publish needs memory for it */
  fk_msg(f, k, "{\"type\":\"subscribe\",\"channel\":\"news\"}");
  assert_int_equal(
    sh_publish(&f->s, (const uint8_t *)ok, sizeof(ok) - 1, &err, f->t.now),
    SH_OK);
  assert_int_equal(sh_publish(&f->s, (const uint8_t *)"{}", 2, &err, f->t.now),
                   SH_BAD_REQUEST);
  assert_non_null(err);
  th_mem_fail_at(&f->t.mem, 1, 1);
  assert_int_equal(
    sh_publish(&f->s, (const uint8_t *)ok, sizeof(ok) - 1, &err, f->t.now),
    SH_UNAVAILABLE);
  th_mem_fail_at(&f->t.mem, 0, 0);
  sh_shutdown(&f->s, f->t.now);
  assert_int_equal(
    sh_publish(&f->s, (const uint8_t *)ok, sizeof(ok) - 1, &err, f->t.now),
    SH_SHUT_DOWN);
  fk_del_all(f);
}

/* handle_expiry out of memory: the timer is re-armed SH_EXPIRY_RETRY_NS
   later, and the retry does the work. */
static void test_sh_shell_expiry_retried(void **state) {
  enum { N = 300 };
  fk *f = fk_alloc();
  hub_tstamp due;
  size_t i;
  (void)state;
  /* Plain connections whose pings fall due together: the burst
     outgrows the effect queue, so an allocation failure is hit. */
  f->t.cfg.ping_interval_ns = TH_S(5);
  f->t.cfg.pong_timeout_ns = TH_S(1000);
  fk_start(f, 0);
  for (i = 0; i < N; i++) {
    fk_open(f);
  }
  due = f->timer_at;
  assert_true(due == hub_get_expiry(f->t.h));
  f->t.now = due;
  th_mem_fail_at(&f->t.mem, 1, 1);
  sh_expiry(&f->s, f->t.now);
  th_mem_fail_at(&f->t.mem, 0, 0);
  assert_int_equal(f->s.st.expiry_retries, 1);
  assert_true(f->pings < N);
  /* Due now, but the retry waits: no busy loop on a full memory. */
  assert_true(f->timer_at == due + SH_EXPIRY_RETRY_NS);
  f->t.now = f->timer_at;
  sh_expiry(&f->s, f->t.now);
  assert_int_equal(f->pings, N);
  assert_true(f->timer_at == due + f->t.cfg.ping_interval_ns);
  fk_del_all(f);
}

/* A backplane message the hub has no memory for: the link is reset and
   the hub told down (it re-subscribes when the link is back). */
static void test_sh_shell_bp_msg_nomem_resets(void **state) {
  fk *f = fk_new(1, 0);
  fk_conn *k;
  size_t i;
  (void)state;
  for (i = 0; i < 4; i++) {
    k = fk_open(f);
    fk_msg(f, k, "{\"type\":\"subscribe\",\"channel\":\"news\"}");
  }
  sh_bp_subscribed(&f->s, "news", 4, f->t.now);
  th_mem_fail_at(&f->t.mem, 1, 1);
  sh_bp_msg(&f->s, "news", 4, (const uint8_t *)"{\"x\":1}", 7, f->t.now);
  th_mem_fail_at(&f->t.mem, 0, 0);
  assert_int_equal(f->resets, 1);
  assert_int_equal(f->s.st.bp_resets, 1);
  assert_int_equal(hub_bp_is_up(f->t.h), 0);
  f->bp_ops = 0;
  sh_bp_up(&f->s, f->t.now);
  assert_int_equal(hub_bp_is_up(f->t.h), 1);
  assert_true(f->bp_ops >= 1); /* SUBSCRIBE news again, registry */
  fk_del_all(f);
}

/* Going up without the memory for it: reset, the hub stays down. */
static void test_sh_shell_bp_up_nomem_resets(void **state) {
  fk *f = fk_new(1, 0);
  fk_conn *k;
  (void)state;
  k = fk_open(f);
  fk_msg(f, k, "{\"type\":\"subscribe\",\"channel\":\"news\"}");
  sh_bp_down(&f->s, f->t.now);
  th_mem_fail_at(&f->t.mem, 1, 1);
  sh_bp_up(&f->s, f->t.now);
  th_mem_fail_at(&f->t.mem, 0, 0);
  assert_int_equal(f->resets, 1);
  assert_int_equal(hub_bp_is_up(f->t.h), 0);
  sh_bp_up(&f->s, f->t.now);
  assert_int_equal(hub_bp_is_up(f->t.h), 1);
  fk_del_all(f);
}

/* A backplane command that cannot be queued for want of memory resets
   the link once, after the drain; a command lost because the link is
   down changes nothing. */
static void test_sh_shell_bp_op_nomem_resets(void **state) {
  fk *f = fk_new(1, 0);
  fk_conn *a, *b;
  (void)state;
  a = fk_open(f);
  b = fk_open(f);
  f->bp_fail = HUB_ERR_INVALID_ARGUMENT;
  fk_msg(f, a, "{\"type\":\"subscribe\",\"channel\":\"one\"}");
  assert_int_equal(f->resets, 0);
  assert_int_equal(hub_bp_is_up(f->t.h), 1);
  f->bp_fail = HUB_ERR_NOMEM;
  fk_msg(f, b, "{\"type\":\"subscribe\",\"channel\":\"two\"}");
  assert_int_equal(f->resets, 1);
  assert_int_equal(hub_bp_is_up(f->t.h), 0);
  f->bp_fail = 0;
  fk_del_all(f);
}

/* Pongs for a peer that pings without reading: past twice the limits
   the shell closes it 1008 "slow consumer". */
static void test_sh_shell_ping_in_guard(void **state) {
  fk *f = fk_new(0, 8);
  fk_conn *k;
  (void)state;
  k = fk_open(f);
  assert_int_equal(sh_conn_ping_in(&f->s, k->id, k, &k->q, 80, f->t.now), 0);
  assert_int_equal(f->closes, 0);
  assert_int_equal(sh_conn_ping_in(&f->s, k->id, k, &k->q, 81, f->t.now), -1);
  assert_int_equal(f->closes, 1);
  assert_int_equal(f->close_code, 1008);
  assert_string_equal(f->close_reason, "slow consumer");
  assert_int_equal(fk_conns_open(f), 0);
  fk_del_all(f);
}

static void test_sh_shell_close_frame(void **state) {
  uint8_t fr[SH_CLOSE_FRAME_MAX];
  char longr[200];
  (void)state;
  assert_int_equal(sh_close_frame(fr, 0, "x"), 2);
  assert_int_equal(fr[0], 0x88);
  assert_int_equal(fr[1], 0);
  assert_int_equal(sh_close_frame(fr, 1008, "slow consumer"), 4 + 13);
  assert_int_equal(fr[1], 2 + 13);
  assert_int_equal((fr[2] << 8) | fr[3], 1008);
  assert_memory_equal(fr + 4, "slow consumer", 13);
  memset(longr, 'r', sizeof(longr) - 1);
  longr[sizeof(longr) - 1] = '\0';
  assert_int_equal(sh_close_frame(fr, 1000, longr), SH_CLOSE_FRAME_MAX);
  assert_int_equal(fr[1], 125);
}

static void test_sh_shell_frame_consume(void **state) {
  size_t off = 0, left = 15;
  (void)state;
  assert_int_equal(sh_frame_consume(10, &off, &left), 1);
  assert_int_equal(left, 5);
  assert_int_equal(off, 0);
  assert_int_equal(sh_frame_consume(10, &off, &left), 0);
  assert_int_equal(off, 5);
  assert_int_equal(left, 0);
  left = 5;
  assert_int_equal(sh_frame_consume(10, &off, &left), 1);
  assert_int_equal(left, 0);
}

/* The write-now list can lose a member the driver frees. */
static void test_sh_shell_oq_forget(void **state) {
  fk *f = fk_new(0, 4);
  fk_conn a, b;
  (void)state;
  memset(&a, 0, sizeof(a));
  memset(&b, 0, sizeof(b));
  sh_oq_push(&f->s, &a.q, 10, 1);
  sh_oq_push(&f->s, &b.q, 10, 1);
  assert_int_equal(a.q.urgent, 1);
  sh_oq_forget(&f->s, &a.q);
  assert_int_equal(a.q.urgent, 0);
  assert_ptr_equal(f->s.urgent, &b.q);
  assert_null(b.q.urgent_next);
  sh_oq_forget(&f->s, &b.q);
  assert_null(f->s.urgent);
  sh_oq_push(&f->s, &a.q, 10, 0); /* own bytes: never urgent */
  assert_int_equal(a.q.msgs, 1);
  fk_del_all(f);
}

/* Backoff: 100 ms doubling to 5 s, each wait in [step/2, step], back to
   the start once up; the same seed gives the same waits. */
static void test_sh_shell_link_backoff(void **state) {
  sh_link l, m;
  hub_tstamp now = TH_S(10), step = SH_LINK_BACKOFF_MIN_NS, at;
  int i, differ = 0;
  (void)state;
  sh_link_init(&l, 1);
  sh_link_init(&m, 2);
  assert_int_equal(sh_link_connect(&l), 0);
  assert_int_equal(sh_link_connect(&l), -1); /* one attempt at a time */
  (void)sh_link_connect(&m);
  for (i = 0; i < 12; i++) {
    at = sh_link_lost(&l, now);
    assert_int_equal(l.state, SH_LINK_WAIT);
    assert_true(at >= now + step / 2 && at <= now + step);
    assert_true(sh_link_lost(&l, now + 1) == at); /* waiting: no change */
    if (sh_link_lost(&m, now) != at) {
      differ = 1;
    }
    assert_int_equal(sh_link_connect(&l), 0);
    (void)sh_link_connect(&m);
    now = at;
    step =
      step * 2 > SH_LINK_BACKOFF_MAX_NS ? SH_LINK_BACKOFF_MAX_NS : step * 2;
  }
  assert_true(step == SH_LINK_BACKOFF_MAX_NS);
  assert_true(differ);
  sh_link_up(&l);
  assert_int_equal(l.state, SH_LINK_UP);
  assert_int_equal(l.ups, 1);
  assert_int_equal(sh_link_connect(&l), -1);
  at = sh_link_lost(&l, now);
  assert_true(at >= now + SH_LINK_BACKOFF_MIN_NS / 2 &&
              at <= now + SH_LINK_BACKOFF_MIN_NS);
  /* Determinism. */
  sh_link_init(&l, 42);
  sh_link_init(&m, 42);
  for (i = 0; i < 5; i++) {
    assert_true(sh_link_lost(&l, now) == sh_link_lost(&m, now));
    (void)sh_link_connect(&l);
    (void)sh_link_connect(&m);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_sh_shell_applies_effects),
    cmocka_unit_test(test_sh_shell_send_nomem_closes_1011),
    cmocka_unit_test(test_sh_shell_close_pending),
    cmocka_unit_test(test_sh_shell_early_write),
    cmocka_unit_test(test_sh_shell_early_write_gone),
    cmocka_unit_test(test_sh_shell_open_refused),
    cmocka_unit_test(test_sh_shell_msg_nomem_closes_1011),
    cmocka_unit_test(test_sh_shell_unknown_conn_reported),
    cmocka_unit_test(test_sh_shell_publish_verdicts),
    cmocka_unit_test(test_sh_shell_expiry_retried),
    cmocka_unit_test(test_sh_shell_bp_msg_nomem_resets),
    cmocka_unit_test(test_sh_shell_bp_up_nomem_resets),
    cmocka_unit_test(test_sh_shell_bp_op_nomem_resets),
    cmocka_unit_test(test_sh_shell_ping_in_guard),
    cmocka_unit_test(test_sh_shell_close_frame),
    cmocka_unit_test(test_sh_shell_frame_consume),
    cmocka_unit_test(test_sh_shell_oq_forget),
    cmocka_unit_test(test_sh_shell_link_backoff),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
