/*
 * test_proto.c - the client protocol of CONTRACT.md: replies, the id
 * echo, every error reply, and the closes for binary, bad UTF-8 and
 * oversized messages.  Embedded backplane throughout.
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void test_proto_subscribe_replies_subscribed(void **state) {
  th t;
  hub_conn_id a;
  th_eff *e;

  (void)state;
  th_init(&t);
  th_start(&t);
  a = th_open(&t);
  assert_int_equal(th_msg(&t, a,
                          "{\"type\":\"subscribe\",\"channel\":"
                          "\"news\",\"id\":1}"),
                   0);
  e = th_expect_reply(&t, a, "subscribed", "\"news\"", "1");
  assert_ptr_equal(e->conn_user, (void *)0x1000);
  th_expect_none(&t);
  assert_int_equal(hub_channel_subscribers(t.h, "news", 4), 1);
  th_fini(&t);
}

static void test_proto_reply_without_id_has_no_id(void **state) {
  th t;
  hub_conn_id a;

  (void)state;
  th_init(&t);
  th_start(&t);
  a = th_open(&t);
  th_msg(&t, a, "{\"type\":\"subscribe\",\"channel\":\"news\"}");
  th_expect_reply(&t, a, "subscribed", "\"news\"", NULL);
  th_msg(&t, a, "{\"type\":\"unsubscribe\",\"channel\":\"news\"}");
  th_expect_reply(&t, a, "unsubscribed", "\"news\"", NULL);
  th_msg(&t, a, "{\"type\":\"publish\",\"channel\":\"news\",\"data\":1}");
  th_expect_reply(&t, a, "published", "\"news\"", NULL);
  th_expect_none(&t);
  th_fini(&t);
}

/* Every kind of JSON value is a valid id and comes back as sent. */
static void test_proto_id_echoed_verbatim(void **state) {
  static const char *ids[] = {
    "7",    "-1.5e3", "\"abc\"",          "\"a\\\"b\\u00e9\"",         "null",
    "true", "false",  "[1,2,{\"x\":[]}]", "{\"k\":{\"n\":[1,\"2\"]}}", "0",
  };
  th t;
  hub_conn_id a;
  size_t i;

  (void)state;
  th_init(&t);
  th_start(&t);
  a = th_open(&t);
  for (i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
    char msg[256];

    snprintf(msg, sizeof(msg),
             "{\"id\":%s,\"type\":\"publish\",\"channel\":\"c\",\"data\":0}",
             ids[i]);
    assert_int_equal(th_msg(&t, a, msg), 0);
    th_expect_reply(&t, a, "published", "\"c\"", ids[i]);
    th_written_all(&t, a);
  }
  th_expect_none(&t);
  th_fini(&t);
}

/* Field order and whitespace in the request do not matter. */
static void test_proto_fields_in_any_order_with_whitespace(void **state) {
  th t;
  hub_conn_id a;

  (void)state;
  th_init(&t);
  th_start(&t);
  a = th_open(&t);
  th_msg(&t, a,
         " \n{ \"id\" : \"x\" ,\t\"channel\":\"news\", \"type\" : "
         "\"subscribe\" }\r\n");
  th_expect_reply(&t, a, "subscribed", "\"news\"", "\"x\"");
  th_expect_none(&t);
  th_fini(&t);
}

/* Each malformed request gets an error reply (with the id when there
   is one to echo) and the connection stays open. */
static void test_proto_errors_keep_connection_open(void **state) {
  static const struct {
    const char *msg;
    const char *id; /* raw id expected in the reply, NULL: none */
  } cases[] = {
    {"not json", NULL},
    {"{\"type\":\"subscribe\",\"channel\":\"news\"", NULL},
    {"", NULL},
    {"{}", NULL},
    {"[1,2,3]", NULL},
    {"\"subscribe\"", NULL},
    {"42", NULL},
    {"{\"type\":\"subscribe\",\"channel\":\"news\"}x", NULL},
    {"{\"channel\":\"news\",\"id\":1}", "1"},
    {"{\"type\":5,\"channel\":\"news\",\"id\":2}", "2"},
    {"{\"type\":null,\"channel\":\"news\",\"id\":2}", "2"},
    {"{\"type\":\"dance\",\"channel\":\"news\",\"id\":3}", "3"},
    {"{\"type\":\"Subscribe\",\"channel\":\"news\",\"id\":3}", "3"},
    {"{\"type\":\"subscribe\",\"id\":4}", "4"},
    {"{\"type\":\"unsubscribe\",\"id\":\"u\"}", "\"u\""},
    {"{\"type\":\"publish\",\"data\":1,\"id\":5}", "5"},
    {"{\"type\":\"subscribe\",\"channel\":7,\"id\":6}", "6"},
    {"{\"type\":\"subscribe\",\"channel\":[\"a\"],\"id\":6}", "6"},
    {"{\"type\":\"subscribe\",\"channel\":\"\",\"id\":7}", "7"},
    {"{\"type\":\"subscribe\",\"channel\":\"a b\",\"id\":8}", "8"},
    {"{\"type\":\"subscribe\",\"channel\":\"a*\",\"id\":8}", "8"},
    {"{\"type\":\"unsubscribe\",\"channel\":\"a#b\",\"id\":9}", "9"},
    {"{\"type\":\"publish\",\"channel\":\"a,b\",\"data\":1,\"id\":10}", "10"},
    {"{\"type\":\"publish\",\"channel\":\"news\",\"id\":11}", "11"},
    {"{\"type\":\"subscribe\",\"channel\":\"caf\\u00e9\",\"id\":12}", "12"},
  };
  th t;
  hub_conn_id a, b;
  hub_stats st;
  size_t i;

  (void)state;
  th_init(&t);
  th_start(&t);
  a = th_open(&t);
  b = th_open(&t);
  th_sub(&t, b, "news");
  for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    assert_int_equal(th_msg(&t, a, cases[i].msg), 0);
    if (th_count(&t, HUB_EFF_SEND, a) != 1) {
      fail_msg("case %zu (%s): %zu replies", i, cases[i].msg,
               th_count(&t, HUB_EFF_SEND, a));
    }
    th_expect_error(&t, a, cases[i].id);
    th_expect_none(&t);
    th_written_all(&t, a);
    th_clear(&t);
  }
  /* Nothing reached the subscriber, and the connection still works. */
  hub_get_stats(t.h, &st);
  assert_int_equal(st.conns, 2);
  assert_int_equal(hub_channel_subscribers(t.h, "news", 4), 1);
  th_msg(&t, a, "{\"type\":\"publish\",\"channel\":\"news\",\"data\":[1]}");
  th_expect_reply(&t, a, "published", "\"news\"", NULL);
  th_expect_message(&t, b, "news", "[1]");
  th_expect_none(&t);
  th_fini(&t);
}

/* An id longer than 256 bytes is refused with an error; one of exactly
   256 bytes is echoed. */
static void test_proto_id_too_long(void **state) {
  th t;
  hub_conn_id a;
  char id[300], msg[400];

  th_eff *e;
  const char *v;
  size_t vlen;

  (void)state;
  th_init(&t);
  th_start(&t);
  a = th_open(&t);

  /* "x...x" with quotes: 256 bytes. */
  id[0] = '"';
  memset(id + 1, 'x', 254);
  id[255] = '"';
  id[256] = '\0';
  snprintf(msg, sizeof(msg),
           "{\"type\":\"subscribe\",\"channel\":\"news\",\"id\":%s}", id);
  th_msg(&t, a, msg);
  th_expect_reply(&t, a, "subscribed", "\"news\"", id);
  th_expect_none(&t);

  /* 257 bytes inside the quotes: too long however it is counted. */
  memset(id + 1, 'y', 257);
  id[258] = '"';
  id[259] = '\0';
  snprintf(msg, sizeof(msg),
           "{\"type\":\"subscribe\",\"channel\":\"other\",\"id\":%s}", id);
  assert_int_equal(th_msg(&t, a, msg), 0);
  e = th_take(&t, HUB_EFF_SEND, a);
  assert_non_null(e);
  th_json_expect(e->data, "type", "\"error\"");
  /* The reply may leave the over-long id out, but never echoes it. */
  if (th_json_get(e->data, e->data_len, "id", &v, &vlen) == 1) {
    assert_true(vlen <= 256);
  }
  th_expect_none(&t);
  assert_int_equal(hub_channel_subscribers(t.h, "other", 5), 0);
  th_fini(&t);
}

/* Channel names: every allowed character, and the 128-byte limit. */
static void test_proto_channel_name_rules(void **state) {
  static const char allowed[] = "ABCXYZabcxyz0189_-.:@/";
  char name[200];
  size_t i;

  (void)state;
  assert_true(hub_channel_valid(allowed, strlen(allowed)));
  assert_true(hub_channel_valid("a", 1));
  memset(name, 'n', 128);
  assert_true(hub_channel_valid(name, 128));
  assert_false(hub_channel_valid(name, 129));
  assert_false(hub_channel_valid(name, 0));
  for (i = 0; i < 256; i++) {
    char c = (char)i;
    int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
             (c >= '0' && c <= '9') || strchr("_-.:@/", c) != NULL;

    if (i == 0) {
      ok = 0;
    }
    name[0] = 'x';
    name[1] = c;
    if ((hub_channel_valid(name, 2) != 0) != ok) {
      fail_msg("hub_channel_valid with byte 0x%02zx: %d", i,
               hub_channel_valid(name, 2));
    }
  }
}

static void test_proto_channel_length_limit_on_the_wire(void **state) {
  th t;
  hub_conn_id a;
  char name[130], msg[300], raw[140];

  (void)state;
  th_init(&t);
  th_start(&t);
  a = th_open(&t);
  memset(name, 'q', 128);
  name[128] = '\0';
  snprintf(msg, sizeof(msg),
           "{\"type\":\"subscribe\",\"channel\":\"%s\",\"id\":1}", name);
  th_msg(&t, a, msg);
  snprintf(raw, sizeof(raw), "\"%s\"", name);
  th_expect_reply(&t, a, "subscribed", raw, "1");
  name[128] = 'q';
  name[129] = '\0';
  snprintf(msg, sizeof(msg),
           "{\"type\":\"subscribe\",\"channel\":\"%s\",\"id\":2}", name);
  th_msg(&t, a, msg);
  th_expect_error(&t, a, "2");
  th_expect_none(&t);
  th_fini(&t);
}

/* max_subs_per_conn: the one past the limit is refused, the others and a
   duplicate of an existing one still work. */
static void test_proto_too_many_subscriptions(void **state) {
  th t;
  hub_conn_id a;
  hub_stats st;

  (void)state;
  th_init(&t);
  t.cfg.max_subs_per_conn = 2;
  th_start(&t);
  a = th_open(&t);
  th_sub(&t, a, "c1");
  th_sub(&t, a, "c2");
  th_msg(&t, a, "{\"type\":\"subscribe\",\"channel\":\"c3\",\"id\":3}");
  th_expect_error(&t, a, "3");
  th_expect_none(&t);
  assert_int_equal(hub_channel_subscribers(t.h, "c3", 2), 0);
  th_msg(&t, a, "{\"type\":\"subscribe\",\"channel\":\"c2\",\"id\":4}");
  th_expect_reply(&t, a, "subscribed", "\"c2\"", "4");
  th_msg(&t, a, "{\"type\":\"unsubscribe\",\"channel\":\"c1\"}");
  th_expect_reply(&t, a, "unsubscribed", "\"c1\"", NULL);
  th_msg(&t, a, "{\"type\":\"subscribe\",\"channel\":\"c3\",\"id\":5}");
  th_expect_reply(&t, a, "subscribed", "\"c3\"", "5");
  th_expect_none(&t);
  hub_get_stats(t.h, &st);
  assert_int_equal(st.subscriptions, 2);
  assert_int_equal(st.conns, 1);
  th_fini(&t);
}

static void test_proto_binary_closes_1003(void **state) {
  th t;
  hub_conn_id a, b;
  hub_stats st;

  (void)state;
  th_init(&t);
  th_start(&t);
  a = th_open(&t);
  b = th_open(&t);
  th_sub(&t, a, "news");
  th_sub(&t, b, "news");
  assert_int_equal(th_msgn(&t, a, 1, "{\"type\":\"x\"}", 12), 0);
  th_expect_close(&t, a, 1003, HUB_CLOSE_BINARY);
  th_expect_none(&t);
  assert_int_equal(hub_channel_subscribers(t.h, "news", 4), 1);
  hub_get_stats(t.h, &st);
  assert_int_equal(st.conns, 1);
  assert_int_equal(st.evictions[HUB_CLOSE_BINARY], 1);
  th_closed(&t, a);
  th_expect_none(&t);
  th_fini(&t);
}

static void test_proto_bad_utf8_closes_1007(void **state) {
  static const char *bad[] = {
    "{\"type\":\"publish\",\"channel\":\"c\",\"data\":\"\xff\"}",
    "{\"type\":\"publish\",\"channel\":\"c\",\"data\":\"\xc3\"}",     /* cut */
    "{\"type\":\"publish\",\"channel\":\"c\",\"data\":\"\xc0\xaf\"}", /* long */
    "{\"type\":\"publish\",\"channel\":\"c\",\"data\":\"\xed\xa0\x80\"}", /* surrogate
                                                                           */
    "{\"type\":\"publish\",\"channel\":\"c\",\"data\":\"\xf4\x90\x80\x80\"}",
  };
  size_t i;

  (void)state;
  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    th t;
    hub_conn_id a;
    hub_stats st;

    th_init(&t);
    th_start(&t);
    a = th_open(&t);
    assert_int_equal(th_msg(&t, a, bad[i]), 0);
    th_expect_close(&t, a, 1007, HUB_CLOSE_BAD_UTF8);
    th_expect_none(&t);
    hub_get_stats(t.h, &st);
    assert_int_equal(st.evictions[HUB_CLOSE_BAD_UTF8], 1);
    th_fini(&t);
  }
}

/* Valid multi-byte UTF-8 (2, 3 and 4 bytes) is accepted and delivered
   byte for byte. */
static void test_proto_valid_utf8_passes(void **state) {
  th t;
  hub_conn_id a;
  const char *msg = "{\"type\":\"publish\",\"channel\":\"c\",\"data\":"
                    "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"}";

  (void)state;
  th_init(&t);
  th_start(&t);
  a = th_open(&t);
  th_sub(&t, a, "c");
  assert_int_equal(th_msg(&t, a, msg), 0);
  th_expect_reply(&t, a, "published", "\"c\"", NULL);
  th_expect_message(&t, a, "c", "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"");
  th_expect_none(&t);
  th_fini(&t);
}

/* A message of exactly max_message_bytes is fine; one byte more closes
   with 1009. */
static void test_proto_too_big_closes_1009(void **state) {
  th t;
  hub_conn_id a;
  char *msg;
  size_t max = 200, head;
  hub_stats st;

  (void)state;
  th_init(&t);
  t.cfg.max_message_bytes = max;
  th_start(&t);
  a = th_open(&t);
  msg = malloc(max + 2);
  assert_non_null(msg);
  head = (size_t)sprintf(msg, "{\"type\":\"publish\",\"channel\":\"c\","
                              "\"data\":\"");
  memset(msg + head, 'z', max - head - 2);
  memcpy(msg + max - 2, "\"}", 3);
  assert_int_equal(strlen(msg), max);
  assert_int_equal(th_msg(&t, a, msg), 0);
  th_expect_reply(&t, a, "published", "\"c\"", NULL);
  th_expect_none(&t);
  th_written_all(&t, a);

  memset(msg + head, 'z', max - head - 1);
  memcpy(msg + max - 1, "\"}", 3);
  assert_int_equal(strlen(msg), max + 1);
  assert_int_equal(th_msg(&t, a, msg), 0);
  th_expect_close(&t, a, 1009, HUB_CLOSE_TOO_BIG);
  th_expect_none(&t);
  hub_get_stats(t.h, &st);
  assert_int_equal(st.evictions[HUB_CLOSE_TOO_BIG], 1);
  assert_int_equal(st.conns, 0);
  free(msg);
  th_fini(&t);
}

/* After its CLOSE a connection's messages are ignored and nothing more
   is sent to it. */
static void test_proto_closing_connection_is_ignored(void **state) {
  th t;
  hub_conn_id a, b;

  (void)state;
  th_init(&t);
  th_start(&t);
  a = th_open(&t);
  b = th_open(&t);
  th_sub(&t, a, "news");
  th_sub(&t, b, "news");
  th_msgn(&t, a, 1, "x", 1);
  th_expect_close(&t, a, 1003, HUB_CLOSE_BINARY);
  assert_int_equal(
    th_msg(&t, a, "{\"type\":\"publish\",\"channel\":\"news\",\"data\":1}"), 0);
  assert_int_equal(
    th_msg(&t, a, "{\"type\":\"subscribe\",\"channel\":\"x\",\"id\":1}"), 0);
  th_expect_none(&t);
  th_msg(&t, b, "{\"type\":\"publish\",\"channel\":\"news\",\"data\":2}");
  th_expect_reply(&t, b, "published", "\"news\"", NULL);
  th_expect_message(&t, b, "news", "2");
  th_expect_none(&t);
  th_closed(&t, a);
  th_fini(&t);
}

static void test_proto_unknown_connection(void **state) {
  th t;
  hub_conn_id a;

  (void)state;
  th_init(&t);
  th_start(&t);
  a = th_open(&t);
  assert_int_equal(th_msg(&t, a + 100, "{}"), HUB_ERR_UNKNOWN_CONN);
  /* Facts about an unknown connection (a driver's mistake) are ignored. */
  th_pong(&t, a + 100);
  th_written(&t, a + 100, 1, 1);
  th_closed(&t, a + 100);
  th_check(&t);
  th_closed(&t, a);
  th_closed(&t, a);
  th_check(&t);
  assert_int_equal(th_msg(&t, a, "{}"), HUB_ERR_UNKNOWN_CONN);
  th_expect_none(&t);
  th_fini(&t);
}

/* Connection ids count 1, 2, 3 in open order and are never reused. */
static void test_proto_conn_ids_in_open_order(void **state) {
  th t;

  (void)state;
  th_init(&t);
  th_start(&t);
  assert_int_equal(th_open(&t), 1);
  assert_int_equal(th_open(&t), 2);
  th_closed(&t, 1);
  assert_int_equal(th_open(&t), 3);
  th_fini(&t);
}

/* Unsubscribing from a channel one is not subscribed to is answered
   "unsubscribed" and changes nothing. */
static void test_proto_unsubscribe_not_subscribed(void **state) {
  th t;
  hub_conn_id a, b;

  (void)state;
  th_init(&t);
  th_start(&t);
  a = th_open(&t);
  b = th_open(&t);
  th_sub(&t, b, "news");
  th_msg(&t, a, "{\"type\":\"unsubscribe\",\"channel\":\"news\",\"id\":9}");
  th_expect_reply(&t, a, "unsubscribed", "\"news\"", "9");
  th_msg(&t, a, "{\"type\":\"unsubscribe\",\"channel\":\"none\"}");
  th_expect_reply(&t, a, "unsubscribed", "\"none\"", NULL);
  th_expect_none(&t);
  assert_int_equal(hub_channel_subscribers(t.h, "news", 4), 1);
  th_fini(&t);
}

/* A duplicate subscribe is answered but changes nothing: one delivery. */
static void test_proto_duplicate_subscribe_is_idempotent(void **state) {
  th t;
  hub_conn_id a;
  hub_stats st;

  (void)state;
  th_init(&t);
  th_start(&t);
  a = th_open(&t);
  th_sub(&t, a, "news");
  th_msg(&t, a, "{\"type\":\"subscribe\",\"channel\":\"news\",\"id\":2}");
  th_expect_reply(&t, a, "subscribed", "\"news\"", "2");
  hub_get_stats(t.h, &st);
  assert_int_equal(st.subscriptions, 1);
  th_msg(&t, a, "{\"type\":\"publish\",\"channel\":\"news\",\"data\":{}}");
  th_expect_reply(&t, a, "published", "\"news\"", NULL);
  th_expect_message(&t, a, "news", "{}");
  th_expect_none(&t);
  th_msg(&t, a, "{\"type\":\"unsubscribe\",\"channel\":\"news\"}");
  th_expect_reply(&t, a, "unsubscribed", "\"news\"", NULL);
  assert_int_equal(hub_channel_subscribers(t.h, "news", 4), 0);
  th_fini(&t);
}

/* Publish data of every JSON kind arrives unchanged. */
static void test_proto_publish_data_kinds(void **state) {
  static const char *data[] = {
    "{\"any\":\"json\"}",
    "[1,[2,[3]]]",
    "\"str\\n\\\"q\\\"\"",
    "-0.25e-2",
    "true",
    "false",
    "null",
    "{\"nested\":{\"a\":[{},{\"b\":null}]}}",
  };
  th t;
  hub_conn_id a, b;
  size_t i;

  (void)state;
  th_init(&t);
  th_start(&t);
  a = th_open(&t);
  b = th_open(&t);
  th_sub(&t, b, "k");
  for (i = 0; i < sizeof(data) / sizeof(data[0]); i++) {
    char msg[256];

    snprintf(msg, sizeof(msg),
             "{\"type\":\"publish\",\"channel\":\"k\",\"data\":%s}", data[i]);
    assert_int_equal(th_msg(&t, a, msg), 0);
    th_expect_reply(&t, a, "published", "\"k\"", NULL);
    th_expect_message(&t, b, "k", data[i]);
    th_expect_none(&t);
    th_written_all(&t, a);
    th_written_all(&t, b);
  }
  th_fini(&t);
}

/* Frames of 125, 126 and 65536+ payload bytes use the right length
   encodings (the harness checks each frame header). */
static void test_proto_frame_length_encodings(void **state) {
  th t;
  hub_conn_id a, b;
  size_t sizes[] = {1, 60, 100, 130, 1000, 70000};
  size_t i;
  char *msg;

  (void)state;
  th_init(&t);
  t.cfg.max_message_bytes = 100000;
  th_start(&t);
  a = th_open(&t);
  b = th_open(&t);
  th_sub(&t, b, "c");
  msg = malloc(80000);
  assert_non_null(msg);
  for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
    size_t head = (size_t)sprintf(
      msg, "{\"type\":\"publish\",\"channel\":\"c\",\"data\":\"");
    th_eff *e;

    memset(msg + head, 'a', sizes[i]);
    strcpy(msg + head + sizes[i], "\"}");
    assert_int_equal(th_msg(&t, a, msg), 0);
    th_expect_reply(&t, a, "published", "\"c\"", NULL);
    e = th_take(&t, HUB_EFF_SEND, b);
    assert_non_null(e);
    assert_true(e->data_len > sizes[i]);
    th_expect_none(&t);
    th_written_all(&t, a);
    th_written_all(&t, b);
  }
  free(msg);
  th_fini(&t);
}

/* Malformed JSON of every shape gets an error reply (no id: the request
   could not be read) and the connection stays open. */
static void test_proto_malformed_json_variants(void **state) {
  static const char *bad[] = {
    "{\"type\":\"subscribe\",\"channel\":\"a\x01\"}",
    "{\"type\":\"subscribe\",\"channel\":\"a\\q\"}",
    "{\"type\":\"subscribe\",\"channel\":\"\\u12\"}",
    "{\"type\":\"subscribe\",\"channel\":\"\\u12G4\"}",
    "{\"type\":\"subscribe\" \"channel\":\"a\"}",
    "{\"type\" \"subscribe\"}",
    "{type:\"subscribe\"}",
    "{\"type\":\"subscribe\",\"channel\":\"a\",}",
    "{\"type\":\"subscribe\",}",
    "{,}",
    "{\"type\":\"publish\",\"channel\":\"c\",\"data\":-}",
    "{\"type\":\"publish\",\"channel\":\"c\",\"data\":1.}",
    "{\"type\":\"publish\",\"channel\":\"c\",\"data\":1e}",
    "{\"type\":\"publish\",\"channel\":\"c\",\"data\":1e+}",
    "{\"type\":\"publish\",\"channel\":\"c\",\"data\":.5}",
    "{\"type\":\"publish\",\"channel\":\"c\",\"data\":01}",
    "{\"type\":\"publish\",\"channel\":\"c\",\"data\":+1}",
    "{\"type\":\"publish\",\"channel\":\"c\",\"data\":[1,]}",
    "{\"type\":\"publish\",\"channel\":\"c\",\"data\":[1 2]}",
    "{\"type\":\"publish\",\"channel\":\"c\",\"data\":[}",
    "{\"type\":\"publish\",\"channel\":\"c\",\"data\":{\"a\":1,}}",
    "{\"type\":\"publish\",\"channel\":\"c\",\"data\":{\"a\"}}",
    "{\"type\":\"publish\",\"channel\":\"c\",\"data\":{1:2}}",
    "{\"type\":\"publish\",\"channel\":\"c\",\"data\":tru}",
    "{\"type\":\"publish\",\"channel\":\"c\",\"data\":nul}",
    "{\"type\":\"publish\",\"channel\":\"c\",\"data\":False}",
    "{\"type\":\"publish\",\"channel\":\"c\",\"data\":\"open}",
    "{\"type\":\"publish\",\"channel\":\"c\",\"data\":\"x\\",
    "{\"type\":\"publish\",\"channel\":\"c\",\"data\":'x'}",
    "{\"type\":\"publish\",\"channel\":\"c\",\"data\":\"tab\there\"}",
    "{\"type\":\"publish\",\"channel\":\"c\",\"data\":",
    "{\"type\":\"publish\",\"channel\":\"c\",\"data\"",
    "{\"type\":\"publish\",\"channel\":\"c\",\"data\":1}}",
    "{\"type\":\"publish\",\"channel\":\"c\",\"data\":1} {}",
  };
  th t;
  hub_conn_id a, b;
  size_t i;

  (void)state;
  th_init(&t);
  th_start(&t);
  a = th_open(&t);
  b = th_open(&t);
  th_sub(&t, b, "c");
  th_clear(&t);
  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    assert_int_equal(th_msg(&t, a, bad[i]), 0);
    if (th_count(&t, HUB_EFF_SEND, a) != 1 ||
        th_count(&t, HUB_EFF_SEND, b) != 0) {
      fail_msg("case %zu (%s): not one error reply", i, bad[i]);
    }
    th_expect_error(&t, a, NULL);
    th_expect_none(&t);
    th_written_all(&t, a);
    th_clear(&t);
  }
  assert_int_equal(hub_channel_subscribers(t.h, "c", 1), 1);
  th_fini(&t);
}

/* Every JSON escape and number form is accepted and passed on as sent. */
static void test_proto_valid_json_forms(void **state) {
  static const char *data[] = {
    "\"\\ud83d\\ude00 \\/ \\b\\f\\n\\r\\t \\\" \\\\ \\u00E9\"",
    "0",
    "-0",
    "10.25",
    "1E5",
    "1e-5",
    "-2.5E+10",
    "[]",
    "{}",
    "[[[[[[[[[[1]]]]]]]]]]",
    "{\"\":\"\"}",
    "[null,true,false,\"\"]",
  };
  th t;
  hub_conn_id a;
  size_t i;

  (void)state;
  th_init(&t);
  th_start(&t);
  a = th_open(&t);
  th_sub(&t, a, "c");
  for (i = 0; i < sizeof(data) / sizeof(data[0]); i++) {
    char msg[256];

    snprintf(msg, sizeof(msg),
             "{\"type\":\"publish\",\"channel\":\"c\",\"data\":%s}", data[i]);
    assert_int_equal(th_msg(&t, a, msg), 0);
    th_expect_reply(&t, a, "published", "\"c\"", NULL);
    th_expect_message(&t, a, "c", data[i]);
    th_expect_none(&t);
    th_written_all(&t, a);
  }
  th_fini(&t);
}

/* UTF-8 is checked on the whole message, before JSON: a sequence cut
   at the end, or an overlong 3-byte form, closes with 1007. */
static void test_proto_bad_utf8_edges(void **state) {
  static const char *bad[] = {
    "{\"type\":\"x\"}\xe2\x82",
    "{\"type\":\"x\"}\xf0\x9f\x98",
    "{\"type\":\"x\",\"v\":\"\xe0\x80\xaf\"}",
    "{\"type\":\"x\",\"v\":\"\xf0\x80\x80\xaf\"}",
    "{\"type\":\"x\",\"v\":\"\xe2\x28\xa1\"}",
    "{\"type\":\"x\",\"v\":\"\x80\"}",
    "{\"type\":\"x\",\"v\":\"\xf8\x88\x80\x80\x80\"}",
  };
  size_t i;

  (void)state;
  for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    th t;
    hub_conn_id a;

    th_init(&t);
    th_start(&t);
    a = th_open(&t);
    assert_int_equal(th_msg(&t, a, bad[i]), 0);
    if (th_count(&t, HUB_EFF_CLOSE, a) != 1) {
      fail_msg("case %zu: no close", i);
    }
    th_expect_close(&t, a, 1007, HUB_CLOSE_BAD_UTF8);
    th_expect_none(&t);
    th_fini(&t);
  }
}

static void test_proto_stats_count_messages(void **state) {
  th t;
  hub_conn_id a, b, c;
  hub_stats st;

  (void)state;
  th_init(&t);
  th_start(&t);
  a = th_open(&t);
  b = th_open(&t);
  c = th_open(&t);
  th_sub(&t, b, "n");
  th_sub(&t, c, "n");
  th_sub(&t, c, "m");
  hub_get_stats(t.h, &st);
  assert_int_equal(st.conns, 3);
  assert_int_equal(st.subscriptions, 3);
  assert_int_equal(st.channels, 2);
  assert_int_equal(st.bp_subscriptions, 0);
  assert_int_equal(st.msgs_in, 3);
  assert_int_equal(st.publishes, 0);
  th_msg(&t, a, "{\"type\":\"publish\",\"channel\":\"n\",\"data\":1}");
  th_msg(&t, a, "{\"type\":\"publish\",\"channel\":\"m\",\"data\":1}");
  hub_get_stats(t.h, &st);
  assert_int_equal(st.msgs_in, 5);
  assert_int_equal(st.publishes, 2);
  th_fini(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_proto_subscribe_replies_subscribed),
    cmocka_unit_test(test_proto_reply_without_id_has_no_id),
    cmocka_unit_test(test_proto_id_echoed_verbatim),
    cmocka_unit_test(test_proto_fields_in_any_order_with_whitespace),
    cmocka_unit_test(test_proto_errors_keep_connection_open),
    cmocka_unit_test(test_proto_id_too_long),
    cmocka_unit_test(test_proto_channel_name_rules),
    cmocka_unit_test(test_proto_channel_length_limit_on_the_wire),
    cmocka_unit_test(test_proto_too_many_subscriptions),
    cmocka_unit_test(test_proto_binary_closes_1003),
    cmocka_unit_test(test_proto_bad_utf8_closes_1007),
    cmocka_unit_test(test_proto_valid_utf8_passes),
    cmocka_unit_test(test_proto_too_big_closes_1009),
    cmocka_unit_test(test_proto_closing_connection_is_ignored),
    cmocka_unit_test(test_proto_unknown_connection),
    cmocka_unit_test(test_proto_conn_ids_in_open_order),
    cmocka_unit_test(test_proto_unsubscribe_not_subscribed),
    cmocka_unit_test(test_proto_duplicate_subscribe_is_idempotent),
    cmocka_unit_test(test_proto_publish_data_kinds),
    cmocka_unit_test(test_proto_frame_length_encodings),
    cmocka_unit_test(test_proto_stats_count_messages),
    cmocka_unit_test(test_proto_malformed_json_variants),
    cmocka_unit_test(test_proto_valid_json_forms),
    cmocka_unit_test(test_proto_bad_utf8_edges),
  };

  return cmocka_run_group_tests(tests, 0, 0);
}
