/*
 * test_sh_rec.c - the flight recorder (shell/sh_rec.h): the writer's
 * buffering and limit, the crash flush arithmetic, the reader on good,
 * cut-off and foreign input, the digest, and a shell run whose every
 * core call is recorded exactly once (a replay here reproduces its
 * digests).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub.h"
#include "shell.h"
#include "sh_rec.h"

/* ------------------------------------------------------------ a sink */

typedef struct tsink {
  uint8_t file[1 << 16];
  size_t len;
  size_t writes;
  int fail;
  int stopped;
  size_t stops;
} tsink;

static int ts_write(void *user, const uint8_t *p, size_t n) {
  tsink *t = user;
  if (t->fail) {
    return -1;
  }
  assert_true(t->len + n <= sizeof(t->file));
  memcpy(t->file + t->len, p, n);
  t->len += n;
  t->writes++;
  return 0;
}

static void ts_stopped(void *user, int why) {
  tsink *t = user;
  t->stopped = why;
  t->stops++;
}

static void ts_init(sh_rec *r, tsink *t, uint8_t *buf, size_t cap,
                    uint64_t max) {
  sh_rec_sink k;
  memset(t, 0, sizeof(*t));
  k.user = t;
  k.write = ts_write;
  k.stopped = ts_stopped;
  sh_rec_init(r, buf, cap, max, &k);
}

/* A shell over an embedded hub, with a transport that takes every
   frame and closes at once (SH_CLOSE_DONE). */
typedef struct tconn {
  sh_oq q;
  hub_conn_id id;
} tconn;

typedef struct tdrv {
  hub *h;
  sh s;
  tconn conns[8];
  uint16_t last_close; /* the code of the last CLOSE applied */
} tdrv;

static int td_send(void *user, void *conn_user, hub_conn_id id, hub_buf *buf) {
  tdrv *d = user;
  tconn *c = conn_user;
  (void)id;
  sh_oq_push(&d->s, &c->q, buf->len, 1);
  return 0;
}

static void td_ping(void *user, void *conn_user, hub_conn_id id) {
  (void)user;
  (void)conn_user;
  (void)id;
}

static int td_close(void *user, void *conn_user, hub_conn_id id, uint16_t code,
                    const char *reason, hub_close_kind kind) {
  tdrv *d = user;
  (void)conn_user;
  (void)id;
  d->last_close = code;
  (void)reason;
  (void)kind;
  return SH_CLOSE_DONE;
}

static int td_write(void *user, sh_oq *q, hub_conn_id *id, size_t *msgs,
                    size_t *bytes) {
  tconn *c = (tconn *)(void *)((char *)q - offsetof(tconn, q));
  (void)user;
  *id = c->id;
  *msgs = q->msgs;
  *bytes = (size_t)q->bytes;
  sh_oq_pop(q, *msgs, *bytes);
  return 0;
}

static void td_set_timer(void *user, hub_tstamp at) {
  (void)user;
  (void)at;
}

static void td_cfg(hub_config *cfg) {
  hub_config_default(cfg);
  cfg->instance_id = "rec-test";
  cfg->seed = 42;
  cfg->max_queue_msgs = 8; /* the early-write mark at 2 frames */
}

static int td_verify(void *user, void *conn_user, hub_conn_id id,
                     const char *token, size_t len, const hub_auth **auth,
                     const char **err);

static void td_start_auth(tdrv *d, hub_config *cfg, sh_rec *r, int auth) {
  sh_transport t;
  memset(d, 0, sizeof(*d));
  td_cfg(cfg);
  cfg->auth = auth;
  assert_int_equal(hub_new(&d->h, cfg, NULL, 1000), 0);
  memset(&t, 0, sizeof(t));
  t.user = d;
  t.send = td_send;
  t.ping = td_ping;
  t.close = td_close;
  t.write = td_write;
  t.set_timer = td_set_timer;
  t.verify = auth ? td_verify : NULL;
  sh_init(&d->s, d->h, NULL, cfg, &t);
  if (r != NULL) {
    assert_int_equal(sh_record(&d->s, r, cfg, 1000), 0);
  }
  sh_drain(&d->s, 1000);
}

static void td_start(tdrv *d, hub_config *cfg, sh_rec *r) {
  td_start_auth(d, cfg, r, 0);
}

/* The claims of the auth session's tokens: "t-open" (sub alice, news*
   and {sub}.* to subscribe, news only to publish, expiring at 50 us),
   "t-ok" (alice again: news.local only, expiring at 90 us), "t-other"
   (sub mallory, refused by the core); any other token fails to
   verify. */
static const char *const ta_sub_open[] = {"news*", "{sub}.*"};
static const char *const ta_pub_open[] = {"news"};
static const char *const ta_sub_ok[] = {"news.local"};
static const char *const ta_any[] = {"*"};
static const hub_auth ta_open = {"alice",     5, ta_sub_open, 2,
                                 ta_pub_open, 1, 50000};
static const hub_auth ta_ok = {"alice", 5, ta_sub_ok, 1, NULL, 0, 90000};
static const hub_auth ta_other = {"mallory", 7, ta_any,         1,
                                  ta_any,    1, HUB_TSTAMP_NONE};

static int td_verify(void *user, void *conn_user, hub_conn_id id,
                     const char *token, size_t len, const hub_auth **auth,
                     const char **err) {
  (void)user;
  (void)conn_user;
  (void)id;
  assert_int_equal(strlen(token), len);
  if (strcmp(token, "t-ok") == 0) {
    *auth = &ta_ok;
  } else if (strcmp(token, "t-other") == 0) {
    *auth = &ta_other;
  } else {
    *err = "bad signature";
    return -1;
  }
  return 0;
}

static void td_msg(tdrv *d, int k, const char *text, hub_tstamp now) {
  sh_conn_msg(&d->s, d->conns[k].id, &d->conns[k], 0, (const uint8_t *)text,
              strlen(text), now);
}

/* A run with subscribes, publishes (early writes: the write-now list),
   a binary frame (CLOSE 1003, then the shell's own conn_closed) and a
   shutdown. */
static void td_run(tdrv *d) {
  int k;
  for (k = 0; k < 3; k++) {
    assert_int_equal(sh_conn_open(&d->s, &d->conns[k].id, "10.0.0.1:1",
                                  &d->conns[k], 2000 + (hub_tstamp)k),
                     SH_OK);
    td_msg(d, k, "{\"type\":\"subscribe\",\"channel\":\"news\"}", 3000);
  }
  for (k = 0; k < 4; k++) {
    const char *err = NULL;
    const char *body = "{\"channel\":\"news\",\"data\":{\"n\":1}}";
    assert_int_equal(sh_publish(&d->s, (const uint8_t *)body, strlen(body),
                                &err, 4000 + (hub_tstamp)k),
                     SH_OK);
  }
  sh_conn_msg(&d->s, d->conns[1].id, &d->conns[1], 1, (const uint8_t *)"x", 1,
              5000);
  sh_expiry(&d->s, 6000);
  sh_shutdown(&d->s, 7000);
}

/* ------------------------------------------------------------ tests */

static void test_sh_rec_hash_is_fixed(void **state) {
  (void)state;
  /* The digest is part of the file format: these must never change. */
  assert_true(sh_hash("", 0) == sh_mix(SH_DIGEST_SEED, 0));
  assert_true(sh_hash("abcdefgh", 8) != sh_hash("abcdefgi", 8));
  assert_true(sh_hash("abc", 3) != sh_hash("abc\0", 4));
  assert_true(sh_mix(1, 2) == sh_mix(1, 2));
  {
    /* One 8-byte word, little-endian, then the (empty) tail. */
    uint64_t h = SH_DIGEST_SEED ^ 8;
    h = sh_mix(h, UINT64_C(0x6867666564636261));
    h = sh_mix(h, 0);
    assert_true(sh_hash("abcdefgh", 8) == h);
  }
}

static void test_sh_rec_roundtrip(void **state) {
  sh_rec r;
  tsink t;
  uint8_t buf[4096];
  sh_rec_reader rd;
  sh_rec_record o;
  const char *why = NULL;
  tdrv d;
  hub_config cfg;
  (void)state;

  ts_init(&r, &t, buf, sizeof(buf), 0);
  td_start(&d, &cfg, &r);
  /* As sh_drain would: the queue found empty after each event. */
  sh_rec_event(&r, SH_REC_CONN_WRITTEN, 1500, 7, 3, 99, NULL, 0, NULL, 0);
  sh_rec_qempty(&r);
  sh_rec_event(&r, SH_REC_BP_MSG, 1400, 0, 0, 0, "news", 4, "{}", 2);
  sh_rec_qempty(&r);
  sh_rec_event(&r, SH_REC_CONN_MSG, 1600, 2, SH_REC_MSG_NODATA, 1 << 20, NULL,
               0, NULL, 0);
  sh_rec_rc(&r, HUB_ERR_NOMEM);
  sh_rec_event(&r, SH_REC_BP_CONGESTED, 1700, 0, 1, 0, NULL, 0, NULL, 0);
  sh_rec_qempty(&r);
  assert_int_equal(sh_rec_end(&r), 0);
  assert_int_equal(t.writes, 1); /* all of it in one write, at the end */

  assert_int_equal(sh_rec_open(&rd, t.file, t.len, &why), 0);
  assert_int_equal(sh_rec_next(&rd, &o, &why), SH_REC_RECORD);
  assert_int_equal(o.type, SH_REC_CONFIG);
  assert_string_equal(o.cfg.instance_id, "rec-test");
  assert_true(o.cfg.seed == 42 && o.cfg.max_queue_msgs == 8);
  assert_true(o.cfg.max_publish_rate == cfg.max_publish_rate); /* tag 17 */
  assert_true(o.now == 1000);
  /* hub_new queued nothing (no registry): no RESULT. */
  assert_int_equal(sh_rec_next(&rd, &o, &why), SH_REC_RECORD);
  assert_int_equal(o.type, SH_REC_CONN_WRITTEN);
  assert_true(o.now == 1500 && o.id == 7 && o.a == 3 && o.b == 99);
  assert_int_equal(sh_rec_next(&rd, &o, &why), SH_REC_RECORD);
  assert_int_equal(o.type, SH_REC_BP_MSG); /* time may go back: a delta */
  assert_true(o.now == 1400 && o.l1 == 4 && o.l2 == 2);
  assert_memory_equal(o.p1, "news", 4);
  assert_memory_equal(o.p2, "{}", 2);
  assert_int_equal(sh_rec_next(&rd, &o, &why), SH_REC_RECORD);
  assert_int_equal(o.type, SH_REC_CONN_MSG);
  assert_true(o.a == SH_REC_MSG_NODATA && o.b == 1 << 20 && o.p1 == NULL);
  assert_int_equal(sh_rec_next(&rd, &o, &why), SH_REC_RECORD);
  assert_int_equal(o.type, SH_REC_RESULT);
  assert_int_equal(o.rc, HUB_ERR_NOMEM);
  assert_true(o.count == 0 && o.flags == 0);
  assert_int_equal(sh_rec_next(&rd, &o, &why), SH_REC_RECORD);
  assert_int_equal(o.type, SH_REC_BP_CONGESTED);
  assert_true(o.now == 1700 && o.a == 1);
  assert_int_equal(sh_rec_next(&rd, &o, &why), SH_REC_RECORD);
  assert_int_equal(o.type, SH_REC_END);
  assert_true(o.flags == SH_REC_STOP_END && o.count == 4);
  assert_int_equal(sh_rec_next(&rd, &o, &why), SH_REC_EOF);
  sh_rec_fini(&r);
  hub_del(d.h);
}

static void test_sh_rec_buffered(void **state) {
  sh_rec r;
  tsink t;
  uint8_t buf[256];
  tdrv d;
  hub_config cfg;
  int i;
  (void)state;
  ts_init(&r, &t, buf, sizeof(buf), 0);
  td_start(&d, &cfg, &r);
  for (i = 0; i < 100; i++) {
    sh_rec_event(&r, SH_REC_CONN_PONG, 2000 + (hub_tstamp)i, 1, 0, 0, NULL, 0,
                 NULL, 0);
    sh_rec_qempty(&r);
  }
  /* 100 events of 4 bytes: a write per full buffer, not per event. */
  assert_true(t.writes >= 1 && t.writes <= 3);
  assert_int_equal(sh_rec_flush(&r), 0);
  assert_int_equal(t.len, r.file_off);
  assert_int_equal(r.len, 0);
  /* A record larger than the buffer goes to the sink directly. */
  {
    static uint8_t big[1000];
    sh_rec_reader rd;
    sh_rec_record o;
    const char *why;
    int n = 0;
    memset(big, 'a', sizeof(big));
    sh_rec_event(&r, SH_REC_PUBLISH, 9000, 0, 0, 0, big, sizeof(big), NULL, 0);
    sh_rec_qempty(&r);
    assert_int_equal(sh_rec_end(&r), 0);
    assert_int_equal(sh_rec_open(&rd, t.file, t.len, &why), 0);
    while (sh_rec_next(&rd, &o, &why) == SH_REC_RECORD) {
      n++;
      if (o.type == SH_REC_PUBLISH) {
        assert_int_equal(o.l1, sizeof(big));
        assert_memory_equal(o.p1, big, sizeof(big));
      }
    }
    assert_int_equal(n, 1 + 100 + 1 + 1);
  }
  sh_rec_fini(&r);
  hub_del(d.h);
}

static void test_sh_rec_limit(void **state) {
  sh_rec r;
  tsink t;
  uint8_t buf[512];
  tdrv d;
  hub_config cfg;
  sh_rec_reader rd;
  sh_rec_record o;
  const char *why;
  int i, ends = 0;
  (void)state;
  ts_init(&r, &t, buf, sizeof(buf), 300);
  td_start(&d, &cfg, &r);
  for (i = 0; i < 200; i++) {
    sh_rec_event(&r, SH_REC_CONN_PONG, 2000 + (hub_tstamp)i, 1, 0, 0, NULL, 0,
                 NULL, 0);
  }
  assert_int_equal(r.stopped, SH_REC_STOP_LIMIT);
  assert_int_equal(t.stopped, SH_REC_STOP_LIMIT);
  assert_int_equal(t.stops, 1);
  assert_true(t.len <= 300 && t.len > 200);
  assert_int_equal(sh_rec_end(&r), 0); /* already ended: nothing more */
  assert_true(t.len <= 300);
  assert_int_equal(sh_rec_open(&rd, t.file, t.len, &why), 0);
  while (sh_rec_next(&rd, &o, &why) == SH_REC_RECORD) {
    if (o.type == SH_REC_END) {
      ends++;
      assert_true(o.flags == SH_REC_STOP_LIMIT);
    }
  }
  assert_int_equal(ends, 1);
  assert_int_equal(rd.off, t.len);

  /* Too small for the header: nothing recorded, not attached. */
  {
    sh_rec r2;
    tsink t2;
    uint8_t b2[512];
    tdrv d2;
    ts_init(&r2, &t2, b2, sizeof(b2), 40);
    memset(&d2, 0, sizeof(d2));
    td_cfg(&cfg);
    assert_int_equal(sh_record(&d2.s, &r2, &cfg, 0), -1);
    assert_null(d2.s.rec);
    assert_int_equal(t2.len, 0);
    assert_int_equal(t2.stopped, SH_REC_STOP_LIMIT);
  }
  sh_rec_fini(&r);
  hub_del(d.h);
}

static void test_sh_rec_sink_failure_stops(void **state) {
  sh_rec r;
  tsink t;
  uint8_t buf[256];
  tdrv d;
  hub_config cfg;
  int i;
  (void)state;
  ts_init(&r, &t, buf, sizeof(buf), 0);
  td_start(&d, &cfg, &r);
  t.fail = 1;
  for (i = 0; i < 100; i++) {
    sh_rec_event(&r, SH_REC_CONN_PONG, 2000, 1, 0, 0, NULL, 0, NULL, 0);
  }
  assert_int_equal(r.stopped, SH_REC_STOP_WRITE);
  assert_int_equal(t.stops, 1);
  assert_int_equal(sh_rec_end(&r), -1);
  sh_rec_fini(&r);
  hub_del(d.h);
}

static void test_sh_rec_unwritten(void **state) {
  sh_rec r;
  tsink t;
  uint8_t buf[256];
  const uint8_t *p = NULL;
  tdrv d;
  hub_config cfg;
  (void)state;
  ts_init(&r, &t, buf, sizeof(buf), 0);
  td_start(&d, &cfg, &r);
  /* Nothing flushed yet: the whole buffer is owed. */
  assert_int_equal(sh_rec_unwritten(&r, 0, &p), r.len);
  assert_ptr_equal(p, buf);
  /* A flush interrupted after 5 bytes: the rest, not the 5 again. */
  assert_int_equal(sh_rec_unwritten(&r, 5, &p), r.len - 5);
  assert_ptr_equal(p, buf + 5);
  /* After a flush: nothing (len 0 first, then the offset moves). */
  assert_int_equal(sh_rec_flush(&r), 0);
  assert_int_equal(sh_rec_unwritten(&r, t.len, &p), 0);
  sh_rec_event(&r, SH_REC_BP_UP, 3000, 0, 0, 0, NULL, 0, NULL, 0);
  assert_int_equal(sh_rec_unwritten(&r, t.len, &p), r.len);
  assert_ptr_equal(p, buf);
  sh_rec_fini(&r);
  hub_del(d.h);
}

static void test_sh_rec_reader_rejects(void **state) {
  sh_rec r;
  tsink t;
  uint8_t buf[1024], copy[1024];
  sh_rec_reader rd;
  sh_rec_record o;
  const char *why = NULL;
  tdrv d;
  hub_config cfg;
  size_t n;
  int rv;
  (void)state;

  assert_int_equal(sh_rec_open(&rd, (const uint8_t *)"", 0, &why), SH_REC_BAD);
  assert_non_null(strstr(why, "empty"));
  assert_int_equal(
    sh_rec_open(&rd, (const uint8_t *)"{\"not\":\"this\"}", 14, &why),
    SH_REC_BAD);
  assert_non_null(strstr(why, "not a wshub recording"));

  ts_init(&r, &t, buf, sizeof(buf), 0);
  td_start(&d, &cfg, &r);
  sh_rec_event(&r, SH_REC_PUBLISH, 2000, 0, 0, 0, "{\"x\":1}", 7, NULL, 0);
  assert_int_equal(sh_rec_end(&r), 0);
  n = t.len;
  memcpy(copy, t.file, n);

  /* Another version. */
  copy[8] = 9;
  assert_int_equal(sh_rec_open(&rd, copy, n, &why), SH_REC_BAD);
  assert_non_null(strstr(why, "version"));
  copy[8] = 1;
  /* Cut in the middle of the last record: truncated, not bad. */
  assert_int_equal(sh_rec_open(&rd, copy, n - 1, &why), 0);
  while ((rv = sh_rec_next(&rd, &o, &why)) == SH_REC_RECORD) {
  }
  assert_int_equal(rv, SH_REC_TRUNCATED);
  /* An unknown type: bad.  An annotation (0x80..): skipped. */
  assert_int_equal(sh_rec_open(&rd, copy, n, &why), 0);
  assert_int_equal(sh_rec_next(&rd, &o, &why), SH_REC_RECORD); /* CONFIG */
  copy[rd.off] = 0x7f;
  assert_int_equal(sh_rec_next(&rd, &o, &why), SH_REC_BAD);
  copy[SH_REC_HEADER_LEN] = 0x80; /* the CONFIG record as an annotation */
  assert_int_equal(sh_rec_open(&rd, copy, n, &why), 0);
  assert_int_equal(sh_rec_next(&rd, &o, &why), SH_REC_BAD); /* then 0x7f */
  sh_rec_fini(&r);
  hub_del(d.h);
}

static void test_sh_rec_digest_order_and_cache(void **state) {
  sh_digest a, b;
  hub_effect e1, e2;
  hub_buf *f;
  (void)state;
  f = malloc(sizeof(*f) + 4);
  assert_non_null(f);
  f->mem = hub_mem_default();
  f->ref = 1;
  f->payload_off = 0;
  f->len = 4;
  memcpy(f->data, "abcd", 4);
  memset(&e1, 0, sizeof(e1));
  e1.type = HUB_EFF_SEND;
  e1.conn = 1;
  e1.buf = f;
  e2 = e1;
  e2.conn = 2;
  sh_digest_init(&a);
  sh_digest_init(&b);
  sh_digest_effect(&a, &e1);
  sh_digest_effect(&a, &e2);
  sh_digest_effect(&b, &e2);
  sh_digest_effect(&b, &e1);
  assert_true(a.d != b.d);     /* order matters */
  assert_ptr_equal(a.last, f); /* the frame is cached, referenced */
  assert_int_equal(f->ref, 3);
  sh_digest_fini(&a);
  sh_digest_fini(&b);
  assert_int_equal(f->ref, 1);
  hub_buf_unref(f);
}

/* A small replay: a fresh hub through the records, popping what the
   shell popped, digesting the same way. */
static hub_auth *auths; /* when set: the auth session's checks */
static size_t nauth;
static void check_auth(const hub_auth *a, size_t k);

static void replay_check(const uint8_t *file, size_t len, size_t *events,
                         int *types) {
  sh_rec_reader rd;
  sh_rec_record o;
  sh_digest g;
  const char *why;
  hub *h = NULL;
  size_t n = 0;
  int rv, implied = 0;
  assert_int_equal(sh_rec_open(&rd, file, len, &why), 0);
  sh_digest_init(&g);
  while ((rv = sh_rec_next(&rd, &o, &why)) == SH_REC_RECORD) {
    const hub_effect *e;
    hub_conn_id id;
    const char *err;
    if (o.type == SH_REC_RESULT) {
      uint64_t c;
      for (c = 0; c < o.count; c++) {
        e = hub_effect_peek(h);
        assert_non_null(e);
        sh_digest_effect(&g, e);
        hub_effect_pop(h);
      }
      if (o.flags & SH_REC_QEMPTY) {
        assert_null(hub_effect_peek(h));
      }
      assert_true(g.d == o.digest);
      implied = 0;
      continue;
    }
    if (o.type == SH_REC_END) {
      break;
    }
    if (implied) {
      /* The implied result of the previous event: nothing queued. */
      assert_null(hub_effect_peek(h));
    }
    implied = 1;
    types[n++] = o.type;
    switch (o.type) {
    case SH_REC_CONFIG:
      assert_int_equal(hub_new(&h, &o.cfg, NULL, o.now), 0);
      break;
    case SH_REC_CONN_OPEN: {
      char addr[64];
      assert_true(o.l1 < sizeof(addr));
      memcpy(addr, o.p1, o.l1);
      addr[o.l1] = '\0';
      assert_string_equal(addr, "10.0.0.1:1");
      assert_int_equal(hub_on_conn_open(h, &id, addr, NULL, o.now), 0);
      break;
    }
    case SH_REC_CONN_OPEN_AUTH:
    case SH_REC_CONN_VERIFIED: {
      char text[64], chars[256];
      const char *globs[16];
      hub_auth a;
      const hub_auth *ap = NULL;
      assert_true(o.l1 < sizeof(text));
      memcpy(text, o.p1 != NULL ? o.p1 : (const uint8_t *)"", o.l1);
      text[o.l1] = '\0';
      if (o.a & SH_REC_AUTH_CLAIMS) {
        assert_int_equal(sh_rec_auth(&o, &a, chars, sizeof(chars), globs, 16),
                         0);
        ap = &a;
        if (auths != NULL) {
          auths[nauth] = a; /* the strings: checked before the next */
          check_auth(&a, nauth);
        }
      } else if (auths != NULL) {
        memset(&auths[nauth], 0, sizeof(auths[nauth]));
        check_auth(NULL, nauth);
      }
      nauth++;
      if (o.type == SH_REC_CONN_OPEN_AUTH) {
        assert_string_equal(text, "10.0.0.1:1");
        assert_int_equal(hub_on_conn_open_auth(h, &id, text, ap, NULL, o.now),
                         0);
      } else {
        assert_int_equal(
          hub_on_conn_verified(h, o.id, ap,
                               (o.a & SH_REC_AUTH_ERR) ? text : NULL, o.now),
          0);
      }
      break;
    }
    case SH_REC_CONN_MSG:
      assert_int_equal(
        hub_on_conn_msg(h, o.id, (int)(o.a & 1), o.p1, o.l1, o.now), 0);
      break;
    case SH_REC_CONN_WRITTEN:
      hub_on_conn_written(h, o.id, (size_t)o.a, (size_t)o.b, o.now);
      break;
    case SH_REC_CONN_CLOSED:
      hub_on_conn_closed(h, o.id, o.now);
      break;
    case SH_REC_PUBLISH:
      assert_int_equal(hub_publish(h, o.p1, o.l1, &err, o.now), 0);
      break;
    case SH_REC_CONN_PONG:
      hub_on_conn_pong(h, o.id, o.now);
      break;
    case SH_REC_EXPIRY:
      assert_int_equal(hub_handle_expiry(h, o.now), 0);
      break;
    case SH_REC_SHUTDOWN:
      hub_shutdown(h, o.now);
      break;
    case SH_REC_BP_CONGESTED:
      hub_on_bp_congested(h, (int)o.a, o.now);
      break;
    default:
      fail_msg("unexpected record %d", o.type);
    }
  }
  assert_int_equal(rv, SH_REC_RECORD); /* stopped at END */
  assert_int_equal(o.type, SH_REC_END);
  assert_int_equal(o.count, n - 1);
  *events = n;
  sh_digest_fini(&g);
  hub_del(h);
}

static void test_sh_rec_shell_records_every_call_once(void **state) {
  static uint8_t buf[1 << 15];
  sh_rec r;
  tsink t;
  tdrv d;
  hub_config cfg;
  int types[256];
  size_t n = 0, i, closed = 0, written = 0;
  (void)state;
  ts_init(&r, &t, buf, sizeof(buf), 0);
  td_start(&d, &cfg, &r);
  td_run(&d);
  assert_int_equal(sh_rec_end(&r), 0);
  replay_check(t.file, t.len, &n, types);
  for (i = 0; i < n; i++) {
    closed += types[i] == SH_REC_CONN_CLOSED;
    written += types[i] == SH_REC_CONN_WRITTEN;
  }
  /* The binary frame's CLOSE and the three shutdown CLOSEs were
     applied at once (SH_CLOSE_DONE): the shell's own conn_closed
     reports, each recorded once. */
  assert_int_equal(closed, 3);
  /* The early writes (the mark is 2 frames) were recorded too. */
  assert_true(written > 0);
  sh_rec_fini(&r);
  hub_del(d.h);
}

/* The driver's congestion reports go through the recorder too. */
static void test_sh_rec_shell_records_congestion(void **state) {
  static uint8_t buf[1 << 12];
  sh_rec r;
  tsink t;
  tdrv d;
  hub_config cfg;
  int types[16];
  size_t n = 0, i, congested = 0;
  (void)state;
  ts_init(&r, &t, buf, sizeof(buf), 0);
  td_start(&d, &cfg, &r);
  sh_bp_congested(&d.s, 1, 2000);
  sh_bp_congested(&d.s, 0, 3000);
  assert_int_equal(sh_rec_end(&r), 0);
  replay_check(t.file, t.len, &n, types);
  for (i = 0; i < n; i++) {
    congested += types[i] == SH_REC_BP_CONGESTED;
  }
  assert_int_equal(congested, 2);
  assert_string_equal(sh_rec_type_name(SH_REC_BP_CONGESTED), "bp_congested");
  sh_rec_fini(&r);
  hub_del(d.h);
}

static void test_sh_rec_alloc_failures_are_numbered(void **state) {
  sh_rec r;
  tsink t;
  uint8_t buf[1024];
  tdrv d;
  hub_config cfg;
  sh_rec_reader rd;
  sh_rec_record o;
  const char *why;
  (void)state;
  ts_init(&r, &t, buf, sizeof(buf), 0);
  td_start(&d, &cfg, &r);
  sh_rec_alloc(&r, 1); /* outside a core call: not counted */
  sh_rec_event(&r, SH_REC_PUBLISH, 2000, 0, 0, 0, "{}", 2, NULL, 0);
  sh_rec_alloc(&r, 0);
  sh_rec_alloc(&r, 0);
  sh_rec_alloc(&r, 1); /* the third allocation of the call fails */
  sh_rec_rc(&r, HUB_ERR_NOMEM);
  sh_rec_alloc(&r, 1); /* after the call: not counted */
  sh_rec_qempty(&r);
  assert_int_equal(sh_rec_end(&r), 0);
  assert_int_equal(sh_rec_open(&rd, t.file, t.len, &why), 0);
  assert_int_equal(sh_rec_next(&rd, &o, &why), SH_REC_RECORD); /* CONFIG */
  assert_int_equal(sh_rec_next(&rd, &o, &why), SH_REC_RECORD);
  assert_int_equal(o.type, SH_REC_PUBLISH);
  assert_int_equal(sh_rec_next(&rd, &o, &why), SH_REC_RECORD);
  assert_int_equal(o.type, SH_REC_ALLOC_FAIL);
  assert_int_equal(o.count, 3);
  assert_int_equal(sh_rec_next(&rd, &o, &why), SH_REC_RECORD);
  assert_int_equal(o.type, SH_REC_RESULT);
  assert_int_equal(o.rc, HUB_ERR_NOMEM);
  assert_int_equal(sh_rec_next(&rd, &o, &why), SH_REC_RECORD);
  assert_int_equal(o.type, SH_REC_END);
  sh_rec_fini(&r);
  hub_del(d.h);
}

/* The claims recorded are the ones given: k-th auth event of the
   session (the open, the refreshes in order). */
static void check_globs(const char *const *got, size_t ngot,
                        const char *const *want, size_t nwant) {
  size_t i;
  assert_int_equal(ngot, nwant);
  for (i = 0; i < nwant; i++) {
    assert_string_equal(got[i], want[i]);
  }
}

static void check_auth(const hub_auth *a, size_t k) {
  static const hub_auth *const want[] = {&ta_open, &ta_ok, NULL, &ta_other};
  const hub_auth *w;
  assert_true(k < sizeof(want) / sizeof(want[0]));
  w = want[k];
  if (w == NULL) {
    assert_null(a);
    return;
  }
  assert_non_null(a);
  assert_int_equal(a->sub_len, w->sub_len);
  assert_memory_equal(a->sub, w->sub, w->sub_len);
  check_globs(a->subscribe, a->nsubscribe, w->subscribe, w->nsubscribe);
  check_globs(a->publish, a->npublish, w->publish, w->npublish);
  assert_true(a->expires == w->expires);
}

/* An authenticated session through the shell: open with claims, a
   subscribe and a publish the grants refuse (permission denied), a
   refresh that verifies (its grants end a subscription), one that does
   not, one with another sub (refused by the core), then the token's
   expiry (CLOSE 4001 and the shell's own conn_closed).  Every call is
   recorded with its claims, and a replay gets the same effects. */
static void test_sh_rec_auth_session(void **state) {
  static uint8_t buf[1 << 15];
  static hub_auth got[8];
  sh_rec r;
  tsink t;
  tdrv d;
  hub_config cfg;
  int types[256];
  size_t n = 0, i, opens = 0, verified = 0, closed = 0;
  sh_rec_reader rd;
  sh_rec_record o;
  const char *why;
  (void)state;
  ts_init(&r, &t, buf, sizeof(buf), 0);
  td_start_auth(&d, &cfg, &r, 1);
  assert_int_equal(sh_conn_open_auth(&d.s, &d.conns[0].id, "10.0.0.1:1",
                                     &ta_open, &d.conns[0], 2000),
                   SH_OK);
  td_msg(&d, 0, "{\"type\":\"subscribe\",\"channel\":\"news.local\"}", 3000);
  td_msg(&d, 0, "{\"type\":\"subscribe\",\"channel\":\"alice.inbox\"}", 3100);
  td_msg(&d, 0, "{\"type\":\"subscribe\",\"channel\":\"secret\"}", 3200);
  td_msg(&d, 0, "{\"type\":\"publish\",\"channel\":\"secret\",\"data\":1}",
         3300);
  assert_int_equal(hub_channel_subscribers(d.h, "alice.inbox", 11), 1);
  assert_int_equal(hub_channel_subscribers(d.h, "secret", 6), 0);
  td_msg(&d, 0, "{\"type\":\"refresh\",\"token\":\"t-ok\"}", 4000);
  /* The new grants end the alice.inbox subscription. */
  assert_int_equal(hub_channel_subscribers(d.h, "alice.inbox", 11), 0);
  assert_int_equal(hub_channel_subscribers(d.h, "news.local", 10), 1);
  td_msg(&d, 0, "{\"type\":\"refresh\",\"token\":\"forged\"}", 5000);
  td_msg(&d, 0, "{\"type\":\"refresh\",\"token\":\"t-other\"}", 6000);
  assert_int_equal(hub_channel_subscribers(d.h, "news.local", 10), 1);
  sh_expiry(&d.s, 80000); /* past the first exp, before the refreshed */
  assert_int_equal(hub_channel_subscribers(d.h, "news.local", 10), 1);
  assert_int_equal(d.last_close, 0);
  sh_expiry(&d.s, 95000);
  assert_int_equal(d.last_close, 4001);
  assert_int_equal(hub_channel_subscribers(d.h, "news.local", 10), 0);
  assert_int_equal(sh_rec_end(&r), 0);

  /* Config: auth on. */
  assert_int_equal(sh_rec_open(&rd, t.file, t.len, &why), 0);
  assert_int_equal(sh_rec_next(&rd, &o, &why), SH_REC_RECORD);
  assert_int_equal(o.type, SH_REC_CONFIG);
  assert_int_equal(o.cfg.auth, 1);

  auths = got;
  nauth = 0;
  replay_check(t.file, t.len, &n, types);
  assert_int_equal(nauth, 4);
  auths = NULL;
  for (i = 0; i < n; i++) {
    opens += types[i] == SH_REC_CONN_OPEN_AUTH;
    verified += types[i] == SH_REC_CONN_VERIFIED;
    closed += types[i] == SH_REC_CONN_CLOSED;
  }
  assert_int_equal(opens, 1);
  assert_int_equal(verified, 3);
  assert_int_equal(closed, 1); /* after the 4001, the shell's report */
  sh_rec_fini(&r);
  hub_del(d.h);
}

/* A claims block the reader cannot read whole is a bad record, and
   sh_rec_auth refuses space that is too small. */
static void test_sh_rec_auth_reader(void **state) {
  static uint8_t buf[1024];
  sh_rec r;
  tsink t;
  tdrv d;
  hub_config cfg;
  sh_rec_reader rd;
  sh_rec_record o;
  const char *why = NULL;
  char chars[64];
  const char *globs[4];
  hub_auth a;
  size_t at;
  (void)state;
  ts_init(&r, &t, buf, sizeof(buf), 0);
  td_start_auth(&d, &cfg, &r, 1);
  sh_rec_event_auth(&r, SH_REC_CONN_OPEN_AUTH, 2000, 0, "a", &ta_open);
  sh_rec_rc(&r, 0);
  sh_rec_event_auth(&r, SH_REC_CONN_VERIFIED, 3000, 7, "nope", NULL);
  sh_rec_rc(&r, 0);
  assert_int_equal(sh_rec_end(&r), 0);
  assert_int_equal(sh_rec_open(&rd, t.file, t.len, &why), 0);
  assert_int_equal(sh_rec_next(&rd, &o, &why), SH_REC_RECORD); /* CONFIG */
  at = rd.off;
  assert_int_equal(sh_rec_next(&rd, &o, &why), SH_REC_RECORD);
  assert_int_equal(o.type, SH_REC_CONN_OPEN_AUTH);
  assert_int_equal(o.a, SH_REC_AUTH_CLAIMS);
  assert_int_equal(sh_rec_auth(&o, &a, chars, 8, globs, 4), -1);
  assert_int_equal(sh_rec_auth(&o, &a, chars, sizeof(chars), globs, 2), -1);
  assert_int_equal(sh_rec_auth(&o, &a, chars, sizeof(chars), globs, 4), 0);
  assert_true(a.expires == 50000);
  assert_string_equal(a.publish[0], "news");
  while (sh_rec_next(&rd, &o, &why) == SH_REC_RECORD &&
         o.type != SH_REC_CONN_VERIFIED) {
  }
  assert_int_equal(o.type, SH_REC_CONN_VERIFIED);
  assert_int_equal(o.id, 7);
  assert_int_equal(o.a, SH_REC_AUTH_ERR);
  assert_int_equal(o.l1, 4);
  assert_memory_equal(o.p1, "nope", 4);
  assert_int_equal(o.l2, 0);
  assert_int_equal(sh_rec_auth(&o, &a, chars, sizeof(chars), globs, 4), -1);
  /* The open's last glob count made larger than what follows. */
  t.file[at + 1] = (uint8_t)(t.file[at + 1] - 1); /* its length, shorter */
  assert_int_equal(sh_rec_open(&rd, t.file, t.len, &why), 0);
  assert_int_equal(sh_rec_next(&rd, &o, &why), SH_REC_RECORD);
  assert_int_equal(sh_rec_next(&rd, &o, &why), SH_REC_BAD);
  sh_rec_fini(&r);
  hub_del(d.h);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_sh_rec_hash_is_fixed),
    cmocka_unit_test(test_sh_rec_roundtrip),
    cmocka_unit_test(test_sh_rec_buffered),
    cmocka_unit_test(test_sh_rec_limit),
    cmocka_unit_test(test_sh_rec_sink_failure_stops),
    cmocka_unit_test(test_sh_rec_unwritten),
    cmocka_unit_test(test_sh_rec_reader_rejects),
    cmocka_unit_test(test_sh_rec_digest_order_and_cache),
    cmocka_unit_test(test_sh_rec_shell_records_every_call_once),
    cmocka_unit_test(test_sh_rec_shell_records_congestion),
    cmocka_unit_test(test_sh_rec_alloc_failures_are_numbered),
    cmocka_unit_test(test_sh_rec_auth_session),
    cmocka_unit_test(test_sh_rec_auth_reader),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
