/*
 * harness.c - the scripted driver behind every unit test (harness.h).
 */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSMN_STATIC
#define JSMN_STRICT
#include <jsmn.h>

/* ------------------------------------------------------------ allocator */

static int mem_refuse(th_mem *m) {
  m->calls++;
  if (m->fail_at == 0) {
    return 0;
  }
  if (m->fail_at > 1) {
    m->fail_at--;
    return 0;
  }
  /* This is the one that fails. */
  if (!m->fail_all) {
    m->fail_at = 0;
  }
  m->failures++;
  return 1;
}

static void *mem_malloc(size_t size, void *user) {
  th_mem *m = user;
  void *p;

  if (mem_refuse(m)) {
    return NULL;
  }
  p = malloc(size ? size : 1);
  if (p != NULL) {
    m->allocs++;
    m->live++;
  }
  return p;
}

static void mem_free(void *ptr, void *user) {
  th_mem *m = user;

  if (ptr != NULL) {
    m->live--;
    free(ptr);
  }
}

static void *mem_realloc(void *ptr, size_t size, void *user) {
  th_mem *m = user;
  void *p;

  if (mem_refuse(m)) {
    return NULL;
  }
  p = realloc(ptr, size ? size : 1);
  if (p != NULL && ptr == NULL) {
    m->allocs++;
    m->live++;
  }
  return p;
}

void th_mem_init(th_mem *m) {
  memset(m, 0, sizeof(*m));
  m->mem.user = m;
  m->mem.malloc = mem_malloc;
  m->mem.free = mem_free;
  m->mem.realloc = mem_realloc;
}

void th_mem_fail_at(th_mem *m, uint64_t k, int fail_all) {
  m->fail_at = k;
  m->fail_all = fail_all;
}

/* ----------------------------------------------------------------- JSON */

static int tok_skip(const jsmntok_t *tok, int i) {
  int j = i + 1;
  int k;

  for (k = 0; k < tok[i].size; k++) {
    j = tok_skip(tok, j);
  }
  return j;
}

/* Parses |json| as exactly one JSON value; returns the token count or -1. */
static int json_parse(const char *json, size_t len, jsmntok_t *tok, int ntok) {
  jsmn_parser p;
  int n;
  size_t end;

  jsmn_init(&p);
  n = jsmn_parse(&p, json, len, tok, (unsigned int)ntok);
  if (n <= 0) {
    return -1;
  }
  /* Only whitespace may follow the first value. */
  if (tok_skip(tok, 0) != n) {
    return -1;
  }
  for (end = (size_t)tok[0].end; end < len; end++) {
    if (json[end] != ' ' && json[end] != '\t' && json[end] != '\n' &&
        json[end] != '\r') {
      return -1;
    }
  }
  return n;
}

#define TH_NTOK 4096

int th_json_get(const char *json, size_t len, const char *key, const char **val,
                size_t *vlen) {
  static jsmntok_t tok[TH_NTOK];
  int n, i, k;
  size_t klen = strlen(key);

  n = json_parse(json, len, tok, TH_NTOK);
  if (n < 0 || tok[0].type != JSMN_OBJECT) {
    return -1;
  }
  i = 1;
  for (k = 0; k < tok[0].size; k++) {
    const jsmntok_t *kt = &tok[i];
    const jsmntok_t *vt = &tok[i + 1];

    if (kt->type == JSMN_STRING && (size_t)(kt->end - kt->start) == klen &&
        memcmp(json + kt->start, key, klen) == 0) {
      if (vt->type == JSMN_STRING) {
        *val = json + vt->start - 1;
        *vlen = (size_t)(vt->end - vt->start) + 2;
      } else {
        *val = json + vt->start;
        *vlen = (size_t)(vt->end - vt->start);
      }
      return 1;
    }
    i = tok_skip(tok, i);
  }
  return 0;
}

int th_json_nkeys(const char *json, size_t len) {
  static jsmntok_t tok[TH_NTOK];
  int n = json_parse(json, len, tok, TH_NTOK);

  if (n < 0 || tok[0].type != JSMN_OBJECT) {
    return -1;
  }
  return tok[0].size;
}

void th_json_squeeze(const char *s, size_t len, char *out, size_t outsz) {
  size_t i, o = 0;
  int in_str = 0;

  for (i = 0; i < len && o + 1 < outsz; i++) {
    char c = s[i];

    if (in_str) {
      out[o++] = c;
      if (c == '\\' && i + 1 < len && o + 1 < outsz) {
        out[o++] = s[++i];
      } else if (c == '"') {
        in_str = 0;
      }
    } else if (c == '"') {
      in_str = 1;
      out[o++] = c;
    } else if (c != ' ' && c != '\t' && c != '\n' && c != '\r') {
      out[o++] = c;
    }
  }
  out[o] = '\0';
}

void th_json_expect(const char *json, const char *key, const char *raw) {
  const char *v;
  size_t vlen;
  int r = th_json_get(json, strlen(json), key, &v, &vlen);

  if (r < 0) {
    fail_msg("not a JSON object: %s", json);
  }
  if (raw == NULL) {
    if (r == 1) {
      fail_msg("field \"%s\" should be absent in %s", key, json);
    }
    return;
  }
  if (r == 0) {
    fail_msg("field \"%s\" missing in %s (want %s)", key, json, raw);
  }
  {
    char *a = malloc(vlen + 1);
    char *b = malloc(strlen(raw) + 1);
    int same;

    assert_non_null(a);
    assert_non_null(b);
    th_json_squeeze(v, vlen, a, vlen + 1);
    th_json_squeeze(raw, strlen(raw), b, strlen(raw) + 1);
    same = strcmp(a, b) == 0;
    if (!same) {
      print_error("field \"%s\" is %s, want %s, in %s\n", key, a, b, json);
    }
    free(a);
    free(b);
    if (!same) {
      fail();
    }
  }
}

/* --------------------------------------------------------------- frames */

static char *dup_bytes(const uint8_t *p, size_t len) {
  char *s = malloc(len + 1);

  assert_non_null(s);
  if (len > 0) {
    memcpy(s, p, len);
  }
  s[len] = '\0';
  return s;
}

/* A SEND buffer must be one unmasked, final text frame with the shortest
   length encoding, its payload where payload_off says. */
static void check_frame(const hub_buf *b) {
  size_t plen, off;

  assert_true(b->len >= 2);
  if (b->data[0] != 0x81) {
    fail_msg("frame byte 0 is 0x%02x, want 0x81 (FIN, text)", b->data[0]);
  }
  assert_int_equal(b->data[1] & 0x80, 0); /* server frames are unmasked */
  plen = b->data[1] & 0x7f;
  off = 2;
  if (plen == 126) {
    assert_true(b->len >= 4);
    plen = ((size_t)b->data[2] << 8) | b->data[3];
    off = 4;
    assert_true(plen >= 126);
  } else if (plen == 127) {
    int i;

    assert_true(b->len >= 10);
    assert_int_equal(b->data[2] & 0x80, 0);
    plen = 0;
    for (i = 0; i < 8; i++) {
      plen = (plen << 8) | b->data[2 + i];
    }
    off = 10;
    assert_true(plen > 0xffff);
  }
  assert_int_equal(b->payload_off, off);
  assert_int_equal(b->len, off + plen);
  assert_int_equal(hub_buf_payload_len(b), plen);
}

/* ----------------------------------------------------------------- core */

void th_init(th *t) {
  memset(t, 0, sizeof(*t));
  th_mem_init(&t->mem);
  hub_config_default(&t->cfg);
  t->cfg.instance_id = "0";
  t->cfg.backplane = 0;
  t->cfg.registry = 0;
  t->cfg.unix_time_s = TH_UNIX0;
  t->cfg.seed = 7;
  t->now = TH_T0;
  t->next_user = 0x1000;
}

void th_start(th *t) {
  int rc = hub_new(&t->h, &t->cfg, &t->mem.mem, t->now);

  if (rc != 0) {
    fail_msg("hub_new: %d (%s)", rc, hub_strerror(rc));
  }
  assert_non_null(t->h);
  th_drain(t);
  th_check(t);
}

void th_start_bp(th *t) {
  th_init(t);
  t->cfg.backplane = 1;
  th_start(t);
  assert_int_equal(th_bp_up(t), 0);
  th_clear(t);
}

static void eff_free(th_eff *e) {
  free(e->name);
  free(e->data);
  free(e->reason);
}

void th_clear(th *t) {
  size_t i;

  for (i = 0; i < t->n; i++) {
    eff_free(&t->effs[i]);
  }
  t->n = 0;
}

void th_fini(th *t) {
  if (t->h != NULL) {
    th_check(t);
    th_drain(t);
    hub_del(t->h);
    t->h = NULL;
  }
  th_clear(t);
  free(t->effs);
  t->effs = NULL;
  t->cap = 0;
  if (t->mem.live != 0) {
    fail_msg("%lld allocation(s) leaked", (long long)t->mem.live);
  }
}

void th_check(th *t) {
  const char *why = NULL;

  if (hub_check(t->h, &why) != 0) {
    fail_msg("hub_check: %s", why ? why : "(no reason)");
  }
}

void th_drain(th *t) {
  const hub_effect *e;

  while ((e = hub_effect_peek(t->h)) != NULL) {
    th_eff *r;

    if (t->n == t->cap) {
      t->cap = t->cap ? t->cap * 2 : 64;
      t->effs = realloc(t->effs, t->cap * sizeof(*t->effs));
      assert_non_null(t->effs);
    }
    r = &t->effs[t->n++];
    memset(r, 0, sizeof(*r));
    assert_true(e->type > HUB_EFF_NONE && e->type <= HUB_EFF_API_REPLY);
    r->type = e->type;
    r->conn = e->conn;
    r->conn_user = e->conn_user;
    r->req = e->req;
    r->since = e->since;
    r->count = e->count;
    r->meta_ttl_s = e->meta_ttl_s;
    r->status = e->status;
    switch (e->type) {
    case HUB_EFF_SEND:
      assert_non_null(e->buf);
      check_frame(e->buf);
      r->data = dup_bytes(hub_buf_payload(e->buf), hub_buf_payload_len(e->buf));
      r->data_len = hub_buf_payload_len(e->buf);
      r->frame_len = e->buf->len;
      r->buf = e->buf;
      r->buf_ref = e->buf->ref;
      assert_true(e->buf->ref >= 1);
      if (th_json_nkeys(r->data, r->data_len) < 1) {
        fail_msg("SEND payload is not a JSON object: %s", r->data);
      }
      break;
    case HUB_EFF_PING:
      break;
    case HUB_EFF_CLOSE:
      r->close_code = e->close_code;
      r->close_kind = e->close_kind;
      assert_true(e->close_kind < HUB_CLOSE_KIND_MAX);
      r->reason = strdup(e->reason ? e->reason : "");
      assert_non_null(r->reason);
      break;
    case HUB_EFF_VERIFY:
      assert_non_null(e->buf);
      r->data = dup_bytes(e->buf->data, e->buf->len);
      r->data_len = e->buf->len;
      break;
    case HUB_EFF_API_REPLY:
      assert_non_null(e->buf);
      r->data = dup_bytes(e->buf->data, e->buf->len);
      r->data_len = e->buf->len;
      break;
    case HUB_EFF_BP_HREAD:
      assert_non_null(e->name);
      r->name = dup_bytes(e->name->data, e->name->len);
      break;
    case HUB_EFF_BP_HPUBLISH:
    case HUB_EFF_BP_PUBLISH:
    case HUB_EFF_REG_SET:
      assert_non_null(e->buf);
      r->data = dup_bytes(e->buf->data, e->buf->len);
      r->data_len = e->buf->len;
      r->buf = e->buf;
      r->ttl_s = e->ttl_s;
      /* fall through */
    case HUB_EFF_BP_SUBSCRIBE:
    case HUB_EFF_BP_UNSUBSCRIBE:
    case HUB_EFF_REG_DEL:
      assert_non_null(e->name);
      r->name = dup_bytes(e->name->data, e->name->len);
      break;
    default:
      fail_msg("unknown effect type %d", (int)e->type);
    }
    hub_effect_pop(t->h);
  }
}

int th_open_rc(th *t, hub_conn_id *id, const char *addr) {
  int rc = hub_on_conn_open(t->h, id, addr, (void *)t->next_user++, t->now);

  th_drain(t);
  return rc;
}

hub_conn_id th_open(th *t) {
  hub_conn_id id = 0;
  char addr[64];
  int rc;

  snprintf(addr, sizeof(addr), "127.0.0.1:%zu", 40000 + t->next_user % 1000);
  rc = th_open_rc(t, &id, addr);
  if (rc != 0) {
    fail_msg("hub_on_conn_open: %d (%s)", rc, hub_strerror(rc));
  }
  assert_true(id > 0);
  return id;
}

int th_msgn(th *t, hub_conn_id c, int binary, const void *data, size_t len) {
  int rc = hub_on_conn_msg(t->h, c, binary, data, len, t->now);

  th_drain(t);
  return rc;
}

int th_msg(th *t, hub_conn_id c, const char *json) {
  return th_msgn(t, c, 0, json, strlen(json));
}

void th_written(th *t, hub_conn_id c, size_t msgs, size_t bytes) {
  hub_on_conn_written(t->h, c, msgs, bytes, t->now);
  th_drain(t);
}

void th_written_all(th *t, hub_conn_id c) {
  size_t msgs = 0, bytes = 0;

  assert_int_equal(hub_conn_backlog(t->h, c, &msgs, &bytes), 0);
  if (msgs > 0 || bytes > 0) {
    th_written(t, c, msgs, bytes);
  }
}

void th_closed(th *t, hub_conn_id c) {
  hub_on_conn_closed(t->h, c, t->now);
  th_drain(t);
}

void th_pong(th *t, hub_conn_id c) {
  hub_on_conn_pong(t->h, c, t->now);
  th_drain(t);
}

int th_bp_msg(th *t, const char *channel, const char *data) {
  int rc = hub_on_bp_msg(t->h, channel, strlen(channel), (const uint8_t *)data,
                         strlen(data), t->now);

  th_drain(t);
  return rc;
}

void th_bp_subscribed(th *t, const char *channel) {
  hub_on_bp_subscribed(t->h, channel, strlen(channel), t->now);
  th_drain(t);
}

int th_bp_up(th *t) {
  int rc = hub_on_bp_up(t->h, t->now);

  th_drain(t);
  return rc;
}

void th_bp_down(th *t) {
  hub_on_bp_down(t->h, t->now);
  th_drain(t);
}

int th_publish(th *t, const char *body, const char **errmsg) {
  const char *dummy = NULL;
  int rc = hub_publish(t->h, (const uint8_t *)body, strlen(body),
                       errmsg ? errmsg : &dummy, t->now);

  th_drain(t);
  return rc;
}

void th_shutdown(th *t) {
  hub_shutdown(t->h, t->now);
  th_drain(t);
}

void th_advance_to(th *t, hub_tstamp to) {
  int guard = 0;

  assert_true(to >= t->now);
  for (;;) {
    hub_tstamp exp = hub_get_expiry(t->h);

    if (exp == HUB_TSTAMP_NONE || exp > to) {
      break;
    }
    if (exp > t->now) {
      t->now = exp;
    }
    assert_int_equal(hub_handle_expiry(t->h, t->now), 0);
    th_drain(t);
    /* Handling everything due must move the expiry past now. */
    exp = hub_get_expiry(t->h);
    if (exp != HUB_TSTAMP_NONE && exp <= t->now) {
      fail_msg("hub_get_expiry is %llu after hub_handle_expiry(%llu)",
               (unsigned long long)exp, (unsigned long long)t->now);
    }
    if (++guard > 100000) {
      fail_msg("expiry loop does not end");
    }
  }
  t->now = to;
}

void th_advance(th *t, hub_tstamp by) {
  th_advance_to(t, t->now + by);
}

/* -------------------------------------------------------------- queries */

static const char *type_name(hub_effect_type type) {
  switch (type) {
  case HUB_EFF_SEND:
    return "SEND";
  case HUB_EFF_PING:
    return "PING";
  case HUB_EFF_CLOSE:
    return "CLOSE";
  case HUB_EFF_BP_SUBSCRIBE:
    return "BP_SUBSCRIBE";
  case HUB_EFF_BP_UNSUBSCRIBE:
    return "BP_UNSUBSCRIBE";
  case HUB_EFF_BP_PUBLISH:
    return "BP_PUBLISH";
  case HUB_EFF_REG_SET:
    return "REG_SET";
  case HUB_EFF_REG_DEL:
    return "REG_DEL";
  default:
    return "?";
  }
}

static void eff_print(const th_eff *e, size_t i) {
  print_error("  [%zu] %s conn=%llu code=%u ttl=%u name=%s data=%s%s%s\n", i,
              type_name(e->type), (unsigned long long)e->conn,
              (unsigned)e->close_code, (unsigned)e->ttl_s,
              e->name ? e->name : "-", e->data ? e->data : "-",
              e->reason ? " reason=" : "", e->reason ? e->reason : "");
}

static void dump_untaken(th *t) {
  size_t i;

  for (i = 0; i < t->n; i++) {
    if (!t->effs[i].taken) {
      eff_print(&t->effs[i], i);
    }
  }
}

size_t th_count(th *t, hub_effect_type type, hub_conn_id conn) {
  size_t i, n = 0;

  for (i = 0; i < t->n; i++) {
    if (t->effs[i].type == type && t->effs[i].conn == conn) {
      n++;
    }
  }
  return n;
}

size_t th_count_all(th *t, hub_effect_type type) {
  size_t i, n = 0;

  for (i = 0; i < t->n; i++) {
    if (t->effs[i].type == type) {
      n++;
    }
  }
  return n;
}

size_t th_untaken(th *t) {
  size_t i, n = 0;

  for (i = 0; i < t->n; i++) {
    n += !t->effs[i].taken;
  }
  return n;
}

th_eff *th_take(th *t, hub_effect_type type, hub_conn_id conn) {
  size_t i;

  for (i = 0; i < t->n; i++) {
    th_eff *e = &t->effs[i];

    if (!e->taken && e->type == type && (conn == 0 || e->conn == conn)) {
      e->taken = 1;
      return e;
    }
  }
  return NULL;
}

th_eff *th_take_named(th *t, hub_effect_type type, const char *name) {
  size_t i;

  for (i = 0; i < t->n; i++) {
    th_eff *e = &t->effs[i];

    if (!e->taken && e->type == type && e->name != NULL &&
        strcmp(e->name, name) == 0) {
      e->taken = 1;
      return e;
    }
  }
  return NULL;
}

size_t th_index(th *t, const th_eff *e) {
  return (size_t)(e - t->effs);
}

/* The first untaken SEND to |c| whose "type" is |type|. */
static th_eff *take_send(th *t, hub_conn_id c, const char *type) {
  char want[64];
  size_t i;

  snprintf(want, sizeof(want), "\"%s\"", type);
  for (i = 0; i < t->n; i++) {
    th_eff *e = &t->effs[i];
    const char *v;
    size_t vlen;

    if (e->taken || e->type != HUB_EFF_SEND || e->conn != c) {
      continue;
    }
    if (th_json_get(e->data, e->data_len, "type", &v, &vlen) == 1 &&
        vlen == strlen(want) && memcmp(v, want, vlen) == 0) {
      e->taken = 1;
      return e;
    }
  }
  print_error("no \"%s\" frame for conn %llu; untaken effects:\n", type,
              (unsigned long long)c);
  dump_untaken(t);
  fail();
  return NULL;
}

th_eff *th_expect_reply(th *t, hub_conn_id c, const char *type,
                        const char *channel, const char *id) {
  th_eff *e = take_send(t, c, type);
  int want = 1 + (channel != NULL) + (id != NULL);

  th_json_expect(e->data, "channel", channel);
  th_json_expect(e->data, "id", id);
  if (th_json_nkeys(e->data, e->data_len) != want) {
    fail_msg("reply has unexpected fields: %s", e->data);
  }
  return e;
}

th_eff *th_expect_error(th *t, hub_conn_id c, const char *id) {
  th_eff *e = take_send(t, c, "error");
  const char *v;
  size_t vlen;

  th_json_expect(e->data, "id", id);
  if (th_json_get(e->data, e->data_len, "error", &v, &vlen) != 1 ||
      v[0] != '"' || vlen < 3) {
    fail_msg("error reply without a reason: %s", e->data);
  }
  if (th_json_nkeys(e->data, e->data_len) != 2 + (id != NULL)) {
    fail_msg("error reply has unexpected fields: %s", e->data);
  }
  return e;
}

th_eff *th_expect_message(th *t, hub_conn_id c, const char *channel,
                          const char *data) {
  th_eff *e = take_send(t, c, "message");
  char ch[200];

  snprintf(ch, sizeof(ch), "\"%s\"", channel);
  th_json_expect(e->data, "channel", ch);
  th_json_expect(e->data, "data", data);
  if (th_json_nkeys(e->data, e->data_len) != 3) {
    fail_msg("message has unexpected fields: %s", e->data);
  }
  return e;
}

th_eff *th_expect_close(th *t, hub_conn_id c, uint16_t code,
                        hub_close_kind kind) {
  th_eff *e = th_take(t, HUB_EFF_CLOSE, c);

  if (e == NULL) {
    print_error("no CLOSE for conn %llu; untaken effects:\n",
                (unsigned long long)c);
    dump_untaken(t);
    fail();
  }
  assert_int_equal(e->close_code, code);
  assert_int_equal(e->close_kind, kind);
  return e;
}

static th_eff *expect_named(th *t, hub_effect_type type, const char *name) {
  th_eff *e = th_take_named(t, type, name);

  if (e == NULL) {
    print_error("no %s %s; untaken effects:\n", type_name(type), name);
    dump_untaken(t);
    fail();
  }
  return e;
}

void th_expect_bp_sub(th *t, const char *channel) {
  (void)expect_named(t, HUB_EFF_BP_SUBSCRIBE, channel);
}

void th_expect_bp_unsub(th *t, const char *channel) {
  (void)expect_named(t, HUB_EFF_BP_UNSUBSCRIBE, channel);
}

void th_expect_bp_pub(th *t, const char *channel, const char *data) {
  th_eff *e = expect_named(t, HUB_EFF_BP_PUBLISH, channel);
  char *a = malloc(e->data_len + 1), *b = malloc(strlen(data) + 1);

  assert_non_null(a);
  assert_non_null(b);
  th_json_squeeze(e->data, e->data_len, a, e->data_len + 1);
  th_json_squeeze(data, strlen(data), b, strlen(data) + 1);
  if (strcmp(a, b) != 0) {
    print_error("BP_PUBLISH %s carries %s, want %s\n", channel, e->data, data);
    free(a);
    free(b);
    fail();
  }
  free(a);
  free(b);
}

th_eff *th_expect_reg_set(th *t, const char *key, uint32_t ttl_s) {
  th_eff *e = expect_named(t, HUB_EFF_REG_SET, key);

  assert_int_equal(e->ttl_s, ttl_s);
  if (th_json_nkeys(e->data, e->data_len) < 1) {
    fail_msg("REG_SET %s value is not a JSON object: %s", key, e->data);
  }
  return e;
}

void th_expect_reg_del(th *t, const char *key) {
  (void)expect_named(t, HUB_EFF_REG_DEL, key);
}

void th_expect_none(th *t) {
  if (th_untaken(t) != 0) {
    print_error("unexpected effects:\n");
    dump_untaken(t);
    fail();
  }
}

void th_sub(th *t, hub_conn_id c, const char *channel) {
  char msg[300], ch[200];
  th_eff *bp;

  snprintf(msg, sizeof(msg), "{\"type\":\"subscribe\",\"channel\":\"%s\"}",
           channel);
  assert_int_equal(th_msg(t, c, msg), 0);
  bp = th_take_named(t, HUB_EFF_BP_SUBSCRIBE, channel);
  if (bp != NULL) {
    th_bp_subscribed(t, channel);
  }
  snprintf(ch, sizeof(ch), "\"%s\"", channel);
  (void)th_expect_reply(t, c, "subscribed", ch, NULL);
  th_written_all(t, c);
}

char *th_dump(th *t, size_t *len) {
  size_t cap = 1024, n = 0, i;
  char *out = malloc(cap);

  assert_non_null(out);
  for (i = 0; i < t->n; i++) {
    const th_eff *e = &t->effs[i];
    size_t need = 128 + (e->name ? strlen(e->name) : 0) + e->data_len +
                  (e->reason ? strlen(e->reason) : 0);
    int w;

    while (n + need >= cap) {
      cap *= 2;
      out = realloc(out, cap);
      assert_non_null(out);
    }
    w = snprintf(out + n, cap - n, "%d|%llu|%u|%d|%u|%zu|%s|%s|%s\n",
                 (int)e->type, (unsigned long long)e->conn,
                 (unsigned)e->close_code, (int)e->close_kind,
                 (unsigned)e->ttl_s, e->frame_len, e->name ? e->name : "",
                 e->data ? e->data : "", e->reason ? e->reason : "");
    assert_true(w > 0);
    n += (size_t)w;
  }
  *len = n;
  return out;
}
