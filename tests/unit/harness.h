/*
 * harness.h - scripted driver for the core's unit tests.
 *
 * A th (test hub) owns one hub, a counting allocator that can be told to
 * fail, a virtual clock and the list of effects the hub has emitted.
 * Every th_* event call drains the effect queue into that list, copying
 * what each effect points at (the pointers die at hub_effect_pop) and
 * checking every SEND frame's WebSocket header on the way.  Tests then
 * take effects out of the list by type and connection and finish with
 * th_expect_none, so nothing the hub emits goes unexamined.
 *
 * Every helper fails the running cmocka test on a broken expectation.
 */
#ifndef TH_HARNESS_H
#define TH_HARNESS_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "hub.h"

#define TH_MS(x) ((hub_tstamp)(x)*HUB_NS_PER_MS)
#define TH_S(x) ((hub_tstamp)(x)*HUB_NS_PER_S)

/* The time given to hub_new; tests move on from there. */
#define TH_T0 TH_S(1000)
/* cfg.unix_time_s at TH_T0. */
#define TH_UNIX0 INT64_C(1700000000)

/* A counting allocator.  fail_at = k > 0 makes the k-th allocation from
   now on fail (fail_all: and every one after it). */
typedef struct th_mem {
  hub_mem mem;
  uint64_t allocs;  /* successful malloc/realloc(NULL) calls */
  uint64_t calls;   /* allocation attempts (malloc and realloc) */
  int64_t live;     /* blocks outstanding */
  uint64_t fail_at; /* 0: never */
  int fail_all;
  uint64_t failures; /* allocations refused */
} th_mem;

void th_mem_init(th_mem *m);
/* Makes the k-th allocation attempt from now on fail (k >= 1). */
void th_mem_fail_at(th_mem *m, uint64_t k, int fail_all);

/* One recorded effect.  Strings are NUL-terminated copies. */
typedef struct th_eff {
  hub_effect_type type;
  hub_close_kind close_kind;
  uint16_t close_code;
  uint32_t ttl_s;
  hub_conn_id conn;
  void *conn_user;
  char *name; /* BP_*, REG_*: channel or key */
  char *data; /* SEND: the frame's payload; BP_PUBLISH, REG_SET: buf */
  size_t data_len;
  size_t frame_len;   /* SEND: the whole frame */
  const hub_buf *buf; /* identity only; do not dereference */
  uint32_t buf_ref;   /* buf->ref when peeked */
  char *reason;       /* CLOSE */
  uint64_t req;       /* BP_HPUBLISH, BP_HREAD, API_REPLY */
  uint64_t since;     /* BP_HREAD */
  uint32_t count;     /* BP_HPUBLISH, BP_HREAD */
  uint32_t meta_ttl_s;
  uint16_t status; /* API_REPLY */
  int taken;
} th_eff;

typedef struct th {
  hub *h;
  hub_config cfg;
  th_mem mem;
  hub_tstamp now;
  th_eff *effs;
  size_t n, cap;
  size_t next_user; /* for th_open's user pointers */
} th;

/* th_init: default config (instance "0", embedded, registry off). Change
   t->cfg, then th_start. */
void th_init(th *t);
void th_start(th *t);
/* th_init + th_start, with the backplane on and up (th_bp_up). */
void th_start_bp(th *t);
/* Deletes the hub, frees every record, checks that nothing leaked. */
void th_fini(th *t);

/* Drains the hub's effect queue into the record list. */
void th_drain(th *t);
/* Forgets every recorded effect. */
void th_clear(th *t);

/* Events.  Each drains and returns the hub's return code (the facts
   return nothing). */
int th_open_rc(th *t, hub_conn_id *id, const char *addr);
hub_conn_id th_open(th *t); /* asserts success */
int th_msg(th *t, hub_conn_id c, const char *json);
int th_msgn(th *t, hub_conn_id c, int binary, const void *data, size_t len);
void th_written(th *t, hub_conn_id c, size_t msgs, size_t bytes);
/* Reports everything queued for |c| written (hub_conn_backlog). */
void th_written_all(th *t, hub_conn_id c);
void th_closed(th *t, hub_conn_id c);
void th_pong(th *t, hub_conn_id c);
int th_bp_msg(th *t, const char *channel, const char *data);
void th_bp_subscribed(th *t, const char *channel);
int th_bp_up(th *t);
void th_bp_down(th *t);
int th_publish(th *t, const char *body, const char **errmsg);
void th_shutdown(th *t);
/* Fires every expiry up to |to| in order, then sets now = to. */
void th_advance_to(th *t, hub_tstamp to);
void th_advance(th *t, hub_tstamp by);

/* Checks hub_check. */
void th_check(th *t);

/* Subscribe |c| to |channel| with the embedded backplane or with the
   backplane confirming, consume the replies, and report them written. */
void th_sub(th *t, hub_conn_id c, const char *channel);

/* Record queries. */
size_t th_count(th *t, hub_effect_type type, hub_conn_id conn);
size_t th_count_all(th *t, hub_effect_type type);
size_t th_untaken(th *t);
/* First untaken effect of |type| for |conn| (conn 0: any); NULL if none.
   Marks it taken. */
th_eff *th_take(th *t, hub_effect_type type, hub_conn_id conn);
th_eff *th_take_named(th *t, hub_effect_type type, const char *name);
/* Index of an effect in the record list. */
size_t th_index(th *t, const th_eff *e);

/* Assertions that take the effect they check. */
/* A SEND reply to |c| of |type|; |channel| and |id| are raw JSON values
   ("\"news\"", "1") or NULL for "must be absent".  Checks the reply has
   no other field.  Returns the effect. */
th_eff *th_expect_reply(th *t, hub_conn_id c, const char *type,
                        const char *channel, const char *id);
/* An error reply to |c| with raw id |id| (NULL: absent). Returns the
   effect; its "error" is a non-empty string. */
th_eff *th_expect_error(th *t, hub_conn_id c, const char *id);
/* A message frame to |c| on |channel| whose data equals |data|
   (compared without insignificant whitespace). */
th_eff *th_expect_message(th *t, hub_conn_id c, const char *channel,
                          const char *data);
th_eff *th_expect_close(th *t, hub_conn_id c, uint16_t code,
                        hub_close_kind kind);
void th_expect_bp_sub(th *t, const char *channel);
void th_expect_bp_unsub(th *t, const char *channel);
void th_expect_bp_pub(th *t, const char *channel, const char *data);
th_eff *th_expect_reg_set(th *t, const char *key, uint32_t ttl_s);
void th_expect_reg_del(th *t, const char *key);
/* Fails listing every untaken effect. */
void th_expect_none(th *t);

/* JSON helpers over jsmn. */
/* Finds top-level |key| in object |json|; *val gets the raw value (with
   quotes for strings).  Returns 1 if found, 0 if not, -1 if |json| is not
   an object. */
int th_json_get(const char *json, size_t len, const char *key, const char **val,
                size_t *vlen);
/* Number of top-level keys of object |json|, -1 if not an object. */
int th_json_nkeys(const char *json, size_t len);
/* Asserts field |key| of |json| equals |raw| (whitespace-insensitive);
   |raw| NULL asserts the field is absent. */
void th_json_expect(const char *json, const char *key, const char *raw);
/* Copies |s| without whitespace outside strings into |out| (size outsz). */
void th_json_squeeze(const char *s, size_t len, char *out, size_t outsz);

/* The serialised record list, for determinism tests (malloc'd). */
char *th_dump(th *t, size_t *len);

#endif /* TH_HARNESS_H */
