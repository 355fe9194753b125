/*
 * bp_redis.c - the Redis backplane (hiredis async API + adapters/libev.h).
 *
 * States: while both connections are established (and named) the
 * backplane is up and the ops send commands; otherwise it is down, the
 * ops fail at once (at-most-once: the hub delivers locally meanwhile)
 * and a timer reconnects with exponential backoff.  The hub re-subscribes
 * every channel it still needs when on_up is reported.
 *
 * The command connection loads the `wshub` function library
 * (backplanes/wshub.lua, compiled in as bp_redis_wshub_lua) with FUNCTION
 * LOAD REPLACE on every connect, before the backplane counts as up: the
 * history commands are FCALLs of it.  A refusal (Redis older than 7, or
 * an ACL without FUNCTION) is logged; with history configured it fails
 * the connect like a refused AUTH (retried with backoff).
 *
 * hiredis frees an async context itself after its disconnect callback,
 * so a context pointer is forgotten the moment that callback runs.  A
 * lost connection never tears the other down from inside a hiredis
 * callback: it is asked to disconnect, and its own callback finishes the
 * job.
 */
#include "bp_redis.h"
#include "sh_health.h"
#include "shell.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/adapters/libev.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

/* static const char bp_redis_wshub_lua[]: backplanes/wshub.lua, generated
   by server/server.mk into $(BUILD)/gen. */
#include "wshub_lua.h"

#define BP_REDIS_CONNECT_TIMEOUT_S 2.0

/* The reader's idle buffer is released past this (hiredis's default,
   made explicit).  hiredis 0.14 has no element or bulk-length limit that
   could turn a huge reply into a protocol error and a dropped
   connection; a 1.x reader gets maxelements raised to its ceiling. */
#define BP_REDIS_READER_MAXBUF (16 * 1024)

/* Which connection sh_health's index means. */
enum { BP_REDIS_SUB = 0, BP_REDIS_PUB = 1 };

typedef struct bp_redis {
  bp base;
  struct ev_loop *loop;
  char host[256];
  int port;
  int db;
  /* From the URL (bp_redis_auth.c): unix:// socket path ("" for TCP),
     and AUTH's user name ("": the default user) and password. */
  char unix_path[256];
  char user[256];
  char pass[256];
  int has_auth;
  char *prefix;
  size_t prefix_len;
  char *chan_prefix; /* prefix + "chan:" */
  size_t chan_prefix_len;
  char *name;
  redisAsyncContext *sub;
  redisAsyncContext *pub;
  int sub_ok, pub_ok;
  int up;
  int quitting;
  int freeing;    /* inside bp_redis_free: answers are not reported */
  int history;    /* FUNCTION LOAD must succeed (bp_redis_config) */
  int lib_told;   /* a refusal without history was logged once */
  int lib_reload; /* a FUNCTION LOAD after "Function not found" is out */
  sh_link link;   /* reconnect state and backoff (shell/sh_link.c) */
  ev_timer retry;
  ev_timer connect_timeout;
  ev_timer quit_poll;
  ev_timer reset_poll; /* a forced reconnect, run from the loop */
  void (*quit_done)(void *);
  void *quit_arg;
  char *scratch; /* prefixed names */
  size_t scratch_cap;
  /* The log: the address, and why the current attempt or link failed
     (kept until the retry is scheduled, then logged with its delay). */
  bp_redis_log_cb log;
  void *log_user;
  char addr[300];
  char reason[160];
  int lost_was_up;
  /* Liveness and congestion (shell/sh_health.h).  The subscriber is
     probed with a SUBSCRIBE and UNSUBSCRIBE of a channel of its own
     (health_chan), whose confirmation hiredis 0.14 routes to our
     callback in either mode; a PING's answer in subscribed mode is not
     routed reliably there.  The command connection is probed with PING. */
  sh_health health;
  ev_timer health_timer;
  ev_timer congest_poll; /* reports a congestion change from the loop */
  int congested_told;    /* what on_congested last said */
  void (*on_congested)(void *user, int congested);
  char *health_chan; /* prefix + "health:" + name */
  size_t health_chan_len;
  uint64_t max_msg_bytes;
  bp_redis_stats st;
} bp_redis;

/* Logs |msg| with addr= and the key/value strings that follow (NULL
   ends them; at most four pairs). */
static void bp_redis_log(bp_redis *r, int level, const char *msg, ...) {
  const char *fields[12];
  size_t n = 0;
  const char *k;
  va_list ap;
  if (r->log == NULL) {
    return;
  }
  fields[n++] = "addr";
  fields[n++] = r->addr;
  va_start(ap, msg);
  while ((k = va_arg(ap, const char *)) != NULL && n + 2 < 12) {
    fields[n++] = k;
    fields[n++] = va_arg(ap, const char *);
  }
  va_end(ap);
  fields[n] = NULL;
  r->log(r->log_user, level, msg, fields);
}

/* Why the link is going down; the first reason of a loss is kept. */
static void bp_redis_note(bp_redis *r, const char *reason) {
  if (r->reason[0] == '\0') {
    snprintf(r->reason, sizeof(r->reason), "%s",
             reason != NULL && *reason ? reason : "unknown");
  }
}

static bp_redis *bp_redis_of(const redisAsyncContext *ac) {
  return ac->data;
}

static const char *bp_redis_prefixed(bp_redis *r, const char *pre,
                                     size_t pre_len, const char *s, size_t len,
                                     size_t *out_len) {
  size_t need = pre_len + len + 1;
  if (need > r->scratch_cap) {
    char *p = realloc(r->scratch, need);
    if (p == NULL) {
      return NULL;
    }
    r->scratch = p;
    r->scratch_cap = need;
  }
  memcpy(r->scratch, pre, pre_len);
  memcpy(r->scratch + pre_len, s, len);
  r->scratch[pre_len + len] = '\0';
  *out_len = pre_len + len;
  return r->scratch;
}

static hub_tstamp bp_redis_now_ns(const bp_redis *r) {
  return (hub_tstamp)(ev_now(r->loop) * 1e9);
}

static void bp_redis_schedule(bp_redis *r) {
  hub_tstamp now, at;
  if (r->quitting || ev_is_active(&r->retry)) {
    return;
  }
  now = bp_redis_now_ns(r);
  at = sh_link_lost(&r->link, now);
  ev_timer_set(&r->retry, at > now ? (double)(at - now) / 1e9 : 0.0, 0.0);
  ev_timer_start(r->loop, &r->retry);
  {
    char retry[32];
    snprintf(retry, sizeof(retry), "%.3f",
             at > now ? (double)(at - now) / 1e9 : 0.0);
    bp_redis_log(r, BP_LOG_WARN,
                 r->lost_was_up ? "redis backplane down"
                                : "redis connect failed",
                 "reason", r->reason[0] ? r->reason : "unknown", "#retry_in_s",
                 retry, (const char *)NULL);
    r->reason[0] = '\0';
    r->lost_was_up = 0;
  }
}

static void bp_redis_check_quit(bp_redis *r) {
  if (r->quitting && r->sub == NULL && r->pub == NULL && r->quit_done != NULL) {
    void (*done)(void *) = r->quit_done;
    r->quit_done = NULL;
    done(r->quit_arg);
  }
}

/* One connection is lost or failed: the backplane is down until both are
   re-established. */
static void bp_redis_lost(bp_redis *r) {
  int was_up = r->up;
  r->up = 0;
  r->lost_was_up |= was_up;
  ev_timer_stop(r->loop, &r->health_timer);
  ev_timer_stop(r->loop, &r->congest_poll);
  /* The hub forgets congestion with the down itself. */
  r->congested_told = 0;
  /* This attempt is over; the next one arms its own timeout (libev
     forbids re-setting an active timer). */
  ev_timer_stop(r->loop, &r->connect_timeout);
  if (r->sub != NULL && !(r->sub->c.flags & REDIS_DISCONNECTING)) {
    redisAsyncDisconnect(r->sub);
  }
  if (r->pub != NULL && !(r->pub->c.flags & REDIS_DISCONNECTING)) {
    redisAsyncDisconnect(r->pub);
  }
  if (was_up && !r->quitting && r->base.ev.on_down != NULL) {
    r->base.ev.on_down(r->base.ev.user);
  }
  if (r->sub == NULL && r->pub == NULL) {
    bp_redis_schedule(r);
  }
  bp_redis_check_quit(r);
}

static void bp_redis_disconnect_cb(const redisAsyncContext *ac, int status) {
  bp_redis *r = bp_redis_of(ac);
  bp_redis_note(r, status == REDIS_OK ? "connection closed" : ac->errstr);
  if (ac == r->sub) {
    r->sub = NULL;
    r->sub_ok = 0;
  } else if (ac == r->pub) {
    r->pub = NULL;
    r->pub_ok = 0;
  }
  bp_redis_lost(r);
}

/* AUTH's answer.  A refusal (wrong password or user) is logged and
   handled like any outage: the connection is dropped and the link
   retries with backoff. */
static void bp_redis_auth_cb(redisAsyncContext *ac, void *reply, void *priv) {
  bp_redis *r = priv;
  const redisReply *rep = reply;
  if (rep == NULL || (ac != r->sub && ac != r->pub)) {
    return; /* disconnected meanwhile */
  }
  if (rep->type == REDIS_REPLY_ERROR) {
    bp_redis_log(r, BP_LOG_ERROR,
                 "redis AUTH refused: check the user and password in --redis",
                 "reason", rep->str, (const char *)NULL);
    snprintf(r->reason, sizeof(r->reason), "AUTH refused: %s", rep->str);
    redisAsyncDisconnect(ac);
    return;
  }
  /* Accepted: CLIENT SETNAME's answer follows (bp_redis_hello_cb). */
}

static void bp_redis_ready(bp_redis *r, redisAsyncContext *ac);

static void bp_redis_connect_cb(const redisAsyncContext *ac, int status) {
  bp_redis *r = bp_redis_of(ac);
  if (status != REDIS_OK) {
    bp_redis_note(r, ac->errstr);
    /* hiredis frees |ac| after this callback. */
    if (ac == r->sub) {
      r->sub = NULL;
    } else if (ac == r->pub) {
      r->pub = NULL;
    }
    bp_redis_lost(r);
    return;
  }
  /* Connected is not up: a stopped Redis (or a stalled link) accepts
     the TCP connection and answers nothing.  The connection is up once
     its first command after AUTH (CLIENT SETNAME) is answered:
     bp_redis_hello_cb; the connect timeout covers the rest. */
}

/* CLIENT SETNAME's answer (queued after AUTH when there is one): |ac| is
   connected, authenticated and answering; up once both are (the command
   connection once FUNCTION LOAD is answered too: bp_redis_fload_cb). */
static void bp_redis_hello_cb(redisAsyncContext *ac, void *reply, void *priv) {
  bp_redis *r = priv;
  if (reply == NULL || r->quitting || (ac != r->sub && ac != r->pub) ||
      (ac->c.flags & REDIS_DISCONNECTING)) {
    return; /* freed before Redis answered, or AUTH refused */
  }
  if (ac == r->sub) {
    bp_redis_ready(r, ac);
  }
}

/* FUNCTION LOAD REPLACE's answer on the command connection: the library's
   name, or an error (Redis < 7: unknown command; an ACL: NOPERM). */
static void bp_redis_fload_cb(redisAsyncContext *ac, void *reply, void *priv) {
  bp_redis *r = priv;
  const redisReply *rep = reply;
  if (rep == NULL || r->quitting || ac != r->pub ||
      (ac->c.flags & REDIS_DISCONNECTING)) {
    return; /* freed before Redis answered, or AUTH refused */
  }
  if (rep->type == REDIS_REPLY_ERROR) {
    if (r->history) {
      bp_redis_log(r, BP_LOG_ERROR,
                   "redis FUNCTION LOAD refused: history needs Redis 7 or "
                   "newer and a user allowed FUNCTION and FCALL",
                   "reason", rep->str, (const char *)NULL);
      snprintf(r->reason, sizeof(r->reason), "FUNCTION LOAD refused: %s",
               rep->str);
      redisAsyncDisconnect(ac);
      return;
    }
    if (!r->lib_told) {
      r->lib_told = 1;
      bp_redis_log(r, BP_LOG_WARN,
                   "redis FUNCTION LOAD refused: the wshub function library "
                   "is not loaded (history is off, so the hub does not need "
                   "it)",
                   "reason", rep->str, (const char *)NULL);
    }
  } else if (rep->type != REDIS_REPLY_STRING) {
    bp_redis_log(r, BP_LOG_WARN, "malformed reply from redis", "command",
                 "FUNCTION LOAD", (const char *)NULL);
  }
  bp_redis_ready(r, ac);
}

/* |ac| is connected, authenticated and answering. */
static void bp_redis_ready(bp_redis *r, redisAsyncContext *ac) {
  if (ac == r->sub) {
    r->sub_ok = 1;
  } else if (ac == r->pub) {
    r->pub_ok = 1;
  }
  if (r->sub_ok && r->pub_ok && !r->up && !r->quitting) {
    ev_timer_stop(r->loop, &r->connect_timeout);
    r->up = 1;
    r->reason[0] = '\0';
    r->lost_was_up = 0;
    sh_link_up(&r->link);
    sh_health_up(&r->health, bp_redis_now_ns(r));
    r->congested_told = 0;
    if (sh_health_period(&r->health) > 0) {
      double p = (double)sh_health_period(&r->health) / 1e9;
      ev_timer_set(&r->health_timer, p, p);
      ev_timer_start(r->loop, &r->health_timer);
    }
    bp_redis_log(r, BP_LOG_INFO, "redis backplane up", (const char *)NULL);
    if (r->base.ev.on_up != NULL) {
      r->base.ev.on_up(r->base.ev.user);
    }
  }
}

static int bp_redis_health_reply(bp_redis *r, const redisReply *rep);
static void bp_redis_hello_cb(redisAsyncContext *ac, void *reply, void *priv);
static void bp_redis_queue_check(bp_redis *r);
static int bp_redis_health_init(bp_redis *r, const bp_redis_config *cfg);

/* Replies on the subscriber connection: subscribe confirmations and
   messages.  Unsubscribe confirmations need nothing. */
static void bp_redis_sub_cb(redisAsyncContext *ac, void *reply, void *priv) {
  bp_redis *r = priv;
  redisReply *rep = reply;
  const redisReply *kind, *chan;
  (void)ac;
  if (rep == NULL || !r->up) {
    return;
  }
  if (bp_redis_health_reply(r, rep)) {
    return;
  }
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 3) {
    return;
  }
  kind = rep->element[0];
  chan = rep->element[1];
  if (kind->type != REDIS_REPLY_STRING || chan->type != REDIS_REPLY_STRING ||
      (size_t)chan->len < r->chan_prefix_len ||
      memcmp(chan->str, r->chan_prefix, r->chan_prefix_len) != 0) {
    return;
  }
  if (strcmp(kind->str, "message") == 0) {
    const redisReply *data = rep->element[2];
    if (data->type == REDIS_REPLY_STRING && r->max_msg_bytes > 0 &&
        (uint64_t)data->len > r->max_msg_bytes) {
      /* Poison: delivering it would evict every reader of the channel
         (one frame past their queue limit). */
      r->st.dropped_big++;
      {
        char n[24], max[24];
        snprintf(n, sizeof(n), "%llu", (unsigned long long)data->len);
        snprintf(max, sizeof(max), "%llu",
                 (unsigned long long)r->max_msg_bytes);
        bp_redis_log(r, BP_LOG_WARN,
                     "dropped a message from redis over "
                     "--max-backplane-message-bytes",
                     "channel", chan->str + r->chan_prefix_len, "#bytes", n,
                     "#max_bytes", max, (const char *)NULL);
      }
      return;
    }
    if (data->type == REDIS_REPLY_STRING && r->base.ev.on_msg != NULL) {
      r->base.ev.on_msg(r->base.ev.user, chan->str + r->chan_prefix_len,
                        (size_t)chan->len - r->chan_prefix_len,
                        (const uint8_t *)data->str, (size_t)data->len);
    }
  } else if (strcmp(kind->str, "subscribe") == 0) {
    if (r->base.ev.on_subscribed != NULL) {
      r->base.ev.on_subscribed(r->base.ev.user, chan->str + r->chan_prefix_len,
                               (size_t)chan->len - r->chan_prefix_len);
    }
  }
}

static redisAsyncContext *bp_redis_open(bp_redis *r, const char *role) {
  redisAsyncContext *ac = r->unix_path[0] != '\0'
                            ? redisAsyncConnectUnix(r->unix_path)
                            : redisAsyncConnect(r->host, r->port);
  if (ac == NULL) {
    return NULL;
  }
  if (ac->err) {
    redisAsyncFree(ac);
    return NULL;
  }
  ac->data = r;
  if (ac->c.reader != NULL) {
    ac->c.reader->maxbuf = BP_REDIS_READER_MAXBUF;
#if HIREDIS_MAJOR >= 1
    ac->c.reader->maxelements = 0; /* no limit */
#endif
  }
  if (redisLibevAttach(r->loop, ac) != REDIS_OK) {
    redisAsyncFree(ac);
    return NULL;
  }
  redisAsyncSetConnectCallback(ac, bp_redis_connect_cb);
  redisAsyncSetDisconnectCallback(ac, bp_redis_disconnect_cb);
  /* Queued now, sent first once connected; AUTH before anything else
     (with ACLs, even CLIENT SETNAME needs it). */
  if (r->has_auth && (r->user[0] != '\0'
                        ? redisAsyncCommand(ac, bp_redis_auth_cb, r,
                                            "AUTH %s %s", r->user, r->pass)
                        : redisAsyncCommand(ac, bp_redis_auth_cb, r, "AUTH %s",
                                            r->pass)) != REDIS_OK) {
    redisAsyncFree(ac);
    return NULL;
  }
  /* Its answer makes the connection count as up. */
  (void)redisAsyncCommand(ac, bp_redis_hello_cb, r, "CLIENT SETNAME %s:%s",
                          r->name, role);
  if (r->db != 0) {
    (void)redisAsyncCommand(ac, NULL, NULL, "SELECT %d", r->db);
  }
  /* The command connection counts as up once the library is loaded. */
  if (strcmp(role, "pub") == 0 &&
      redisAsyncCommand(ac, bp_redis_fload_cb, r, "FUNCTION LOAD REPLACE %s",
                        bp_redis_wshub_lua) != REDIS_OK) {
    redisAsyncFree(ac);
    return NULL;
  }
  return ac;
}

static void bp_redis_connect(bp_redis *r) {
  if (r->quitting || r->sub != NULL || r->pub != NULL ||
      sh_link_connect(&r->link) != 0) {
    return;
  }
  r->sub_ok = r->pub_ok = 0;
  r->sub = bp_redis_open(r, "sub");
  r->pub = bp_redis_open(r, "pub");
  if (r->sub == NULL || r->pub == NULL) {
    bp_redis_note(r, "cannot create a connection");
    bp_redis_lost(r);
    return;
  }
  /* hiredis 0.14 has no connect timeout of its own. */
  ev_timer_set(&r->connect_timeout, BP_REDIS_CONNECT_TIMEOUT_S, 0.0);
  ev_timer_start(r->loop, &r->connect_timeout);
}

static void bp_redis_connect_timeout_cb(struct ev_loop *loop, ev_timer *w,
                                        int revents) {
  bp_redis *r = w->data;
  (void)loop;
  (void)revents;
  if (r->up || r->quitting) {
    return;
  }
  /* hiredis runs the disconnect callback only for a context that had
     connected, so forget both contexts here, before freeing them: no
     callback may see a freed sibling, and a retry must find none. */
  {
    redisAsyncContext *sub = r->sub, *pub = r->pub;
    r->sub = r->pub = NULL;
    r->sub_ok = r->pub_ok = 0;
    if (sub != NULL) {
      redisAsyncFree(sub);
    }
    if (pub != NULL) {
      redisAsyncFree(pub);
    }
  }
  {
    char why[64];
    snprintf(why, sizeof(why), "connect timed out after %.0f s",
             BP_REDIS_CONNECT_TIMEOUT_S);
    bp_redis_note(r, why);
  }
  bp_redis_lost(r);
}

static void bp_redis_retry_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  bp_redis *r = w->data;
  (void)loop;
  (void)revents;
  bp_redis_connect(r);
}

/* ------------------------------------------------------------ ops */

/*
 * Sends `CMD <pre><name> [args...]` on |ac| (the subscriber or the command
 * connection).  Every operation is one of these: the name gets its
 * prefix ("ws:chan:" for channels, "ws:" for keys), the extra arguments
 * go as they are.  At most three extra arguments.
 */
static int bp_redis_cmd(bp_redis *r, redisAsyncContext *ac, redisCallbackFn *cb,
                        const char *cmd, const char *pre, size_t pre_len,
                        const char *name, size_t name_len, int nextra,
                        const char *const *extra, const size_t *extra_len) {
  const char *argv[5];
  size_t lens[5];
  int i;
  if (!r->up || ac == NULL || nextra > 3 ||
      (ac->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING))) {
    return HUB_ERR_INVALID_ARGUMENT;
  }
  argv[0] = cmd;
  lens[0] = strlen(cmd);
  argv[1] = bp_redis_prefixed(r, pre, pre_len, name, name_len, &lens[1]);
  if (argv[1] == NULL) {
    return HUB_ERR_NOMEM;
  }
  for (i = 0; i < nextra; i++) {
    argv[2 + i] = extra[i];
    lens[2 + i] = extra_len[i];
  }
  if (redisAsyncCommandArgv(ac, cb, cb != NULL ? r : NULL, 2 + nextra, argv,
                            lens) != REDIS_OK) {
    return HUB_ERR_NOMEM;
  }
  return 0;
}

static int bp_redis_subscribe(bp *b, const char *channel, size_t len) {
  bp_redis *r = (bp_redis *)b;
  return bp_redis_cmd(r, r->sub, bp_redis_sub_cb, "SUBSCRIBE", r->chan_prefix,
                      r->chan_prefix_len, channel, len, 0, NULL, NULL);
}

static int bp_redis_unsubscribe(bp *b, const char *channel, size_t len) {
  bp_redis *r = (bp_redis *)b;
  return bp_redis_cmd(r, r->sub, NULL, "UNSUBSCRIBE", r->chan_prefix,
                      r->chan_prefix_len, channel, len, 0, NULL, NULL);
}

static int bp_redis_publish(bp *b, const char *channel, size_t len,
                            const uint8_t *data, size_t data_len) {
  bp_redis *r = (bp_redis *)b;
  const char *extra[1] = {(const char *)data};
  size_t extra_len[1] = {data_len};
  int rc = bp_redis_cmd(r, r->pub, NULL, "PUBLISH", r->chan_prefix,
                        r->chan_prefix_len, channel, len, 1, extra, extra_len);
  if (rc == 0) {
    bp_redis_queue_check(r);
  }
  return rc;
}

static int bp_redis_set(bp *b, const char *key, size_t key_len,
                        const uint8_t *val, size_t val_len, uint32_t ttl_s) {
  bp_redis *r = (bp_redis *)b;
  char ttl[16];
  int tl = snprintf(ttl, sizeof(ttl), "%u", (unsigned)ttl_s);
  const char *extra[3] = {(const char *)val, "EX", ttl};
  size_t extra_len[3] = {val_len, 2, (size_t)tl};
  return bp_redis_cmd(r, r->pub, NULL, "SET", r->prefix, r->prefix_len, key,
                      key_len, 3, extra, extra_len);
}

static int bp_redis_del(bp *b, const char *key, size_t key_len) {
  bp_redis *r = (bp_redis *)b;
  return bp_redis_cmd(r, r->pub, NULL, "DEL", r->prefix, r->prefix_len, key,
                      key_len, 0, NULL, NULL);
}

/* ------------------------------------------------------------ history */

/*
 * One FCALL in flight: hiredis calls its callback exactly once, with the
 * reply, or with NULL when the connection goes away first (it runs the
 * pending callbacks of a context it frees), so every op that returned 0
 * is answered exactly once from there.
 */
enum { BP_REDIS_HPUBLISH = 0, BP_REDIS_HREAD = 1 };

typedef struct bp_redis_hreq {
  bp_redis *r;
  uint64_t req;
  uint64_t since; /* hread: entries must be above it */
  uint32_t count; /* hread: at most this many */
  int kind;
  size_t channel_len;
  char channel[1]; /* for the log, allocated with the request */
} bp_redis_hreq;

/* An epoch as CONTRACT.md has it: 1 to 32 bytes of A-Z a-z 0-9. */
static int bp_redis_epoch_ok(const redisReply *e) {
  size_t i;
  if (e->type != REDIS_REPLY_STRING || e->len < 1 || e->len > 32) {
    return 0;
  }
  for (i = 0; i < (size_t)e->len; i++) {
    char ch = e->str[i];
    if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
          (ch >= '0' && ch <= '9'))) {
      return 0;
    }
  }
  return 1;
}

/* A decimal offset of |len| bytes at |p| (no sign, no leading zero
   unless "0", at most 2^63 - 1).  Returns 0 and sets *v, or -1. */
static int bp_redis_u64(const char *p, size_t len, uint64_t *v) {
  uint64_t n = 0;
  size_t i;
  if (len == 0 || len > 19 || (len > 1 && p[0] == '0')) {
    return -1;
  }
  for (i = 0; i < len; i++) {
    if (p[i] < '0' || p[i] > '9') {
      return -1;
    }
    n = n * 10 + (uint64_t)(p[i] - '0');
  }
  if (n > (uint64_t)INT64_MAX) {
    return -1;
  }
  *v = n;
  return 0;
}

/* A stream entry of XRANGE: [id "<offset>-0", [field, value, ...]] with
   the data in field d.  Returns 0 and fills *out, or -1. */
static int bp_redis_entry(const redisReply *e, bp_hentry *out) {
  const redisReply *id, *fv;
  size_t i, il;
  if (e->type != REDIS_REPLY_ARRAY || e->elements != 2) {
    return -1;
  }
  id = e->element[0];
  fv = e->element[1];
  if (id->type != REDIS_REPLY_STRING || fv->type != REDIS_REPLY_ARRAY ||
      fv->elements % 2 != 0) {
    return -1;
  }
  il = (size_t)id->len;
  if (il < 3 || id->str[il - 2] != '-' || id->str[il - 1] != '0' ||
      bp_redis_u64(id->str, il - 2, &out->offset) != 0) {
    return -1;
  }
  for (i = 0; i < fv->elements; i += 2) {
    const redisReply *f = fv->element[i], *v = fv->element[i + 1];
    if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING) {
      return -1;
    }
    if (f->len == 1 && f->str[0] == 'd') {
      out->data = (const uint8_t *)v->str;
      out->len = (size_t)v->len;
      return 0;
    }
  }
  return -1;
}

/* Entries of one answer kept on the stack; more are allocated. */
#define BP_REDIS_HENTRIES_STACK 64

/* wshub_read's answer [offset, epoch, [entry, ...]], checked strictly:
   entries oldest first, above the request's since, not above the
   offset, at most count of them.  Returns 1 when answered (ok or not),
   0 when malformed (nothing reported yet). */
static int bp_redis_hread_reply(bp_redis_hreq *q, const redisReply *rep) {
  bp_redis *r = q->r;
  bp_hentry stack[BP_REDIS_HENTRIES_STACK], *v = stack;
  const redisReply *list;
  uint64_t offset, last;
  size_t i, n;
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 3 ||
      rep->element[0]->type != REDIS_REPLY_INTEGER ||
      rep->element[0]->integer < 0 || !bp_redis_epoch_ok(rep->element[1]) ||
      rep->element[2]->type != REDIS_REPLY_ARRAY) {
    return 0;
  }
  offset = (uint64_t)rep->element[0]->integer;
  list = rep->element[2];
  n = list->elements;
  if (n > q->count) {
    return 0;
  }
  if (n > BP_REDIS_HENTRIES_STACK) {
    v = malloc(n * sizeof(*v));
    if (v == NULL) {
      bp_redis_log(r, BP_LOG_WARN,
                   "out of memory for a history read from redis", "channel",
                   q->channel, (const char *)NULL);
      r->base.ev.on_hread(r->base.ev.user, q->req, 0, 0, NULL, 0, NULL, 0);
      return 1;
    }
  }
  last = q->since;
  for (i = 0; i < n; i++) {
    if (bp_redis_entry(list->element[i], &v[i]) != 0 || v[i].offset <= last ||
        v[i].offset > offset) {
      if (v != stack) {
        free(v);
      }
      return 0;
    }
    last = v[i].offset;
  }
  r->base.ev.on_hread(r->base.ev.user, q->req, 1, offset, rep->element[1]->str,
                      (size_t)rep->element[1]->len, n > 0 ? v : NULL, n);
  if (v != stack) {
    free(v);
  }
  return 1;
}

static void bp_redis_hfail(bp_redis_hreq *q) {
  bp_redis *r = q->r;
  if (q->kind == BP_REDIS_HPUBLISH) {
    r->base.ev.on_hpublished(r->base.ev.user, q->req, 0, 0, NULL, 0);
  } else {
    r->base.ev.on_hread(r->base.ev.user, q->req, 0, 0, NULL, 0, NULL, 0);
  }
}

/* After "ERR Function not found" (someone ran FUNCTION FLUSH, or Redis
   was replaced without a reconnect noticed): load the library again,
   once at a time. */
static void bp_redis_reload_cb(redisAsyncContext *ac, void *reply, void *priv) {
  bp_redis *r = priv;
  const redisReply *rep = reply;
  (void)ac;
  r->lib_reload = 0;
  if (rep != NULL && rep->type == REDIS_REPLY_STRING) {
    bp_redis_log(r, BP_LOG_INFO, "redis function library loaded again",
                 (const char *)NULL);
  }
}

static void bp_redis_hcall_cb(redisAsyncContext *ac, void *reply, void *priv) {
  bp_redis_hreq *q = priv;
  bp_redis *r = q->r;
  const redisReply *rep = reply;
  const char *fn =
    q->kind == BP_REDIS_HPUBLISH ? "wshub_publish" : "wshub_read";
  if (r->freeing || r->base.ev.on_hpublished == NULL ||
      r->base.ev.on_hread == NULL) {
    free(q); /* the owner is going away: nobody to tell */
    return;
  }
  if (rep == NULL) {
    bp_redis_hfail(q); /* the link went away first */
  } else if (rep->type == REDIS_REPLY_ERROR) {
    bp_redis_log(r, BP_LOG_WARN, "redis refused a history command", "function",
                 fn, "channel", q->channel, "reason", rep->str,
                 (const char *)NULL);
    if (strncmp(rep->str, "ERR Function not found", 22) == 0 &&
        !r->lib_reload && ac == r->pub && r->up &&
        redisAsyncCommand(ac, bp_redis_reload_cb, r, "FUNCTION LOAD REPLACE %s",
                          bp_redis_wshub_lua) == REDIS_OK) {
      r->lib_reload = 1;
    }
    bp_redis_hfail(q);
  } else if (q->kind == BP_REDIS_HPUBLISH) {
    if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
        rep->element[0]->type == REDIS_REPLY_INTEGER &&
        rep->element[0]->integer >= 1 && bp_redis_epoch_ok(rep->element[1])) {
      r->base.ev.on_hpublished(
        r->base.ev.user, q->req, 1, (uint64_t)rep->element[0]->integer,
        rep->element[1]->str, (size_t)rep->element[1]->len);
    } else {
      bp_redis_log(r, BP_LOG_WARN, "malformed reply from redis", "function", fn,
                   "channel", q->channel, (const char *)NULL);
      bp_redis_hfail(q);
    }
  } else if (!bp_redis_hread_reply(q, rep)) {
    bp_redis_log(r, BP_LOG_WARN, "malformed reply from redis", "function", fn,
                 "channel", q->channel, (const char *)NULL);
    bp_redis_hfail(q);
  }
  free(q);
}

/*
 * Sends FCALL |fn| with |nkeys| keys of |channel| (<prefix>history:,
 * <prefix>meta:, then <prefix>chan: when |nkeys| is 3) and |nargs|
 * arguments on the command connection, answered through |q| (taken: it
 * is freed on failure too).
 */
static int bp_redis_fcall(bp_redis *r, bp_redis_hreq *q, const char *fn,
                          int nkeys, int nargs, const char *const *args,
                          const size_t *args_len) {
  const char *argv[10];
  size_t lens[10];
  char *keys;
  size_t cl = q->channel_len, need, off = 0;
  int i, n = 0, rc;
  if (!r->up || r->pub == NULL ||
      (r->pub->c.flags & (REDIS_DISCONNECTING | REDIS_FREEING)) ||
      3 + nkeys + nargs > 10) {
    free(q);
    return HUB_ERR_INVALID_ARGUMENT;
  }
  need = 3 * r->prefix_len + 8 + 5 + 5 + 3 * cl;
  keys = malloc(need);
  if (keys == NULL) {
    free(q);
    return HUB_ERR_NOMEM;
  }
  argv[n] = "FCALL";
  lens[n++] = 5;
  argv[n] = fn;
  lens[n++] = strlen(fn);
  argv[n] = nkeys == 3 ? "3" : "2";
  lens[n++] = 1;
  for (i = 0; i < nkeys; i++) {
    static const char *const kind[3] = {"history:", "meta:", "chan:"};
    size_t kl = strlen(kind[i]);
    argv[n] = keys + off;
    memcpy(keys + off, r->prefix, r->prefix_len);
    memcpy(keys + off + r->prefix_len, kind[i], kl);
    memcpy(keys + off + r->prefix_len + kl, q->channel, cl);
    lens[n++] = r->prefix_len + kl + cl;
    off += r->prefix_len + kl + cl;
  }
  for (i = 0; i < nargs; i++) {
    argv[n] = args[i];
    lens[n++] = args_len[i];
  }
  rc = redisAsyncCommandArgv(r->pub, bp_redis_hcall_cb, q, n, argv, lens);
  free(keys); /* hiredis formatted the command into its buffer */
  if (rc != REDIS_OK) {
    free(q);
    return HUB_ERR_NOMEM;
  }
  bp_redis_queue_check(r);
  return 0;
}

static bp_redis_hreq *bp_redis_hreq_new(uint64_t req, int kind,
                                        const char *channel, size_t len) {
  bp_redis_hreq *q = malloc(sizeof(*q) + len);
  if (q != NULL) {
    q->req = req;
    q->kind = kind;
    q->since = 0;
    q->count = 0;
    q->channel_len = len;
    memcpy(q->channel, channel, len);
    q->channel[len] = '\0';
  }
  return q;
}

static int bp_redis_hpublish(bp *b, uint64_t req, const char *channel,
                             size_t channel_len, const uint8_t *data,
                             size_t len, uint32_t size, uint32_t ttl_s,
                             uint32_t meta_ttl_s) {
  bp_redis *r = (bp_redis *)b;
  char a[3][16];
  const char *args[4];
  size_t args_len[4];
  bp_redis_hreq *q;
  if (!r->up) {
    return HUB_ERR_INVALID_ARGUMENT;
  }
  q = bp_redis_hreq_new(req, BP_REDIS_HPUBLISH, channel, channel_len);
  if (q == NULL) {
    return HUB_ERR_NOMEM;
  }
  q->r = r;
  args[0] = (const char *)data;
  args_len[0] = len;
  args_len[1] = (size_t)snprintf(a[0], sizeof(a[0]), "%u", (unsigned)size);
  args_len[2] = (size_t)snprintf(a[1], sizeof(a[1]), "%u", (unsigned)ttl_s);
  args_len[3] =
    (size_t)snprintf(a[2], sizeof(a[2]), "%u", (unsigned)meta_ttl_s);
  args[1] = a[0];
  args[2] = a[1];
  args[3] = a[2];
  return bp_redis_fcall(r, q, "wshub_publish", 3, 4, args, args_len);
}

static int bp_redis_hread(bp *b, uint64_t req, const char *channel,
                          size_t channel_len, uint64_t since, uint32_t count,
                          uint32_t meta_ttl_s) {
  bp_redis *r = (bp_redis *)b;
  char a[3][24];
  const char *args[3];
  size_t args_len[3];
  bp_redis_hreq *q;
  if (!r->up) {
    return HUB_ERR_INVALID_ARGUMENT;
  }
  q = bp_redis_hreq_new(req, BP_REDIS_HREAD, channel, channel_len);
  if (q == NULL) {
    return HUB_ERR_NOMEM;
  }
  q->r = r;
  q->since = since;
  q->count = count;
  args_len[0] =
    (size_t)snprintf(a[0], sizeof(a[0]), "%llu", (unsigned long long)since);
  args_len[1] = (size_t)snprintf(a[1], sizeof(a[1]), "%u", (unsigned)count);
  args_len[2] =
    (size_t)snprintf(a[2], sizeof(a[2]), "%u", (unsigned)meta_ttl_s);
  args[0] = a[0];
  args[1] = a[1];
  args[2] = a[2];
  return bp_redis_fcall(r, q, "wshub_read", 2, 3, args, args_len);
}

static void bp_redis_free(bp *b) {
  bp_redis *r = (bp_redis *)b;
  if (r == NULL) {
    return;
  }
  r->quitting = 1;
  r->freeing = 1;
  r->quit_done = NULL;
  ev_timer_stop(r->loop, &r->retry);
  ev_timer_stop(r->loop, &r->connect_timeout);
  ev_timer_stop(r->loop, &r->quit_poll);
  ev_timer_stop(r->loop, &r->reset_poll);
  ev_timer_stop(r->loop, &r->health_timer);
  ev_timer_stop(r->loop, &r->congest_poll);
  /* redisAsyncFree runs the disconnect callback, which forgets them. */
  if (r->sub != NULL) {
    redisAsyncFree(r->sub);
  }
  if (r->pub != NULL) {
    redisAsyncFree(r->pub);
  }
  free(r->prefix);
  free(r->chan_prefix);
  free(r->name);
  free(r->scratch);
  free(r->health_chan);
  free(r);
}

static const bp_ops bp_redis_ops = {.subscribe = bp_redis_subscribe,
                                    .unsubscribe = bp_redis_unsubscribe,
                                    .publish = bp_redis_publish,
                                    .set = bp_redis_set,
                                    .del = bp_redis_del,
                                    .hpublish = bp_redis_hpublish,
                                    .hread = bp_redis_hread,
                                    .free = bp_redis_free};

uint64_t bp_redis_reconnects(const bp *b) {
  const bp_redis *r = (const bp_redis *)b;
  return r->link.ups > 0 ? r->link.ups - 1 : 0;
}

/* Disconnects both connections from the loop, never from inside the
   hiredis callback that asked for the reset (an on_msg or on_up): hiredis
   may free a context that is disconnected while it still uses it. */
static void bp_redis_reset_poll_cb(struct ev_loop *loop, ev_timer *w,
                                   int revents) {
  bp_redis *r = w->data;
  (void)loop;
  (void)revents;
  ev_timer_stop(r->loop, &r->reset_poll);
  if (r->quitting) {
    return;
  }
  bp_redis_note(r, "forced reconnect (out of memory)");
  r->lost_was_up = 1;
  if (r->sub == NULL && r->pub == NULL) {
    bp_redis_schedule(r);
    return;
  }
  bp_redis_lost(r); /* up is 0: reports no down */
}

void bp_redis_reset(bp *b) {
  bp_redis *r = (bp_redis *)b;
  if (r->quitting) {
    return;
  }
  /* Down at once: the ops fail and incoming replies are ignored until
     the new connections are up. */
  r->up = 0;
  ev_timer_set(&r->reset_poll, 0.0, 0.0);
  ev_timer_start(r->loop, &r->reset_poll);
}

static void bp_redis_quit_poll_cb(struct ev_loop *loop, ev_timer *w,
                                  int revents) {
  bp_redis *r = w->data;
  (void)loop;
  (void)revents;
  ev_timer_stop(r->loop, &r->quit_poll);
  bp_redis_check_quit(r);
}

void bp_redis_quit(bp *b, void (*done)(void *arg), void *arg) {
  bp_redis *r = (bp_redis *)b;
  r->quitting = 1;
  r->up = 0;
  r->quit_done = done;
  r->quit_arg = arg;
  ev_timer_stop(r->loop, &r->retry);
  ev_timer_stop(r->loop, &r->connect_timeout);
  ev_timer_stop(r->loop, &r->reset_poll);
  ev_timer_stop(r->loop, &r->health_timer);
  ev_timer_stop(r->loop, &r->congest_poll);
  /* Disconnect after pending replies (the shutdown's DELs) arrive. */
  if (r->sub != NULL && !(r->sub->c.flags & REDIS_DISCONNECTING)) {
    redisAsyncDisconnect(r->sub);
  }
  if (r->pub != NULL && !(r->pub->c.flags & REDIS_DISCONNECTING)) {
    redisAsyncDisconnect(r->pub);
  }
  /* Report from the loop, never from inside this call. */
  ev_timer_set(&r->quit_poll, 0.0, 0.0);
  ev_timer_start(r->loop, &r->quit_poll);
}

#include "bp_redis_url.c"

static int bp_redis_parse_url(bp_redis *r, const char *url) {
  const char *p = url, *colon, *slash;
  size_t hl;
  char *end;
  long v;
  int rc = bp_redis_parse_auth(r, &p);
  if (rc <= 0) {
    return rc; /* a unix:// URL (0), or a bad one */
  }
  slash = strchr(p, '/');
  colon = strchr(p, ':');
  if (colon != NULL && slash != NULL && colon > slash) {
    colon = NULL;
  }
  hl = colon ? (size_t)(colon - p) : slash ? (size_t)(slash - p) : strlen(p);
  if (hl == 0 || hl >= sizeof(r->host)) {
    return -1;
  }
  memcpy(r->host, p, hl);
  r->host[hl] = '\0';
  r->port = 6379;
  if (colon != NULL) {
    v = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || v <= 0 || v > 65535 ||
        (*end != '\0' && *end != '/')) {
      return -1;
    }
    r->port = (int)v;
  }
  r->db = 0;
  if (slash != NULL && slash[1] != '\0') {
    v = strtol(slash + 1, &end, 10);
    if (*end != '\0' || v < 0) {
      return -1;
    }
    r->db = (int)v;
  }
  return 0;
}

static char *bp_redis_strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = malloc(n);
  if (p != NULL) {
    memcpy(p, s, n);
  }
  return p;
}

int bp_redis_new(bp **out, const bp_redis_config *cfg, const bp_events *ev) {
  bp_redis *r = calloc(1, sizeof(*r));
  if (r == NULL) {
    return HUB_ERR_NOMEM;
  }
  r->base.ops = &bp_redis_ops;
  r->base.ev = *ev;
  r->loop = cfg->loop;
  r->log = cfg->log;
  r->log_user = cfg->log_user;
  r->history = cfg->history;
  if (bp_redis_parse_url(r, cfg->url) != 0) {
    free(r);
    return HUB_ERR_INVALID_ARGUMENT;
  }
  snprintf(r->addr, sizeof(r->addr), "%s:%d", r->host, r->port);
  r->prefix = bp_redis_strdup(cfg->prefix);
  r->name = bp_redis_strdup(cfg->client_name);
  r->prefix_len = r->prefix ? strlen(r->prefix) : 0;
  r->chan_prefix_len = r->prefix_len + 5;
  r->chan_prefix = malloc(r->chan_prefix_len + 1);
  if (r->prefix == NULL || r->name == NULL || r->chan_prefix == NULL) {
    free(r->prefix);
    free(r->name);
    free(r->chan_prefix);
    free(r);
    return HUB_ERR_NOMEM;
  }
  memcpy(r->chan_prefix, r->prefix, r->prefix_len);
  memcpy(r->chan_prefix + r->prefix_len, "chan:", 6);
  if (bp_redis_health_init(r, cfg) != 0) {
    free(r->prefix);
    free(r->name);
    free(r->chan_prefix);
    free(r);
    return HUB_ERR_NOMEM;
  }
  sh_link_init(&r->link, cfg->seed);
  ev_timer_init(&r->retry, bp_redis_retry_cb, 0.0, 0.0);
  r->retry.data = r;
  ev_timer_init(&r->quit_poll, bp_redis_quit_poll_cb, 0.0, 0.0);
  r->quit_poll.data = r;
  ev_timer_init(&r->connect_timeout, bp_redis_connect_timeout_cb, 0.0, 0.0);
  r->connect_timeout.data = r;
  ev_timer_init(&r->reset_poll, bp_redis_reset_poll_cb, 0.0, 0.0);
  r->reset_poll.data = r;
  *out = &r->base;
  bp_redis_connect(r);
  return 0;
}

/* ------------------------------------------------------------ claim */

typedef struct bp_redis_claim_req {
  bp_redis *r;
  bp_redis_claim_cb cb;
  void *arg;
  char key[1]; /* the prefixed key, allocated with the request */
} bp_redis_claim_req;

static void bp_redis_claim_ttl_cb(redisAsyncContext *ac, void *reply,
                                  void *priv) {
  bp_redis_claim_req *q = priv;
  redisReply *rep = reply;
  (void)ac;
  q->cb(q->arg, BP_CLAIM_TAKEN,
        rep != NULL && rep->type == REDIS_REPLY_INTEGER ? rep->integer : -1);
  free(q);
}

static void bp_redis_claim_set_cb(redisAsyncContext *ac, void *reply,
                                  void *priv) {
  bp_redis_claim_req *q = priv;
  redisReply *rep = reply;
  if (rep != NULL && rep->type == REDIS_REPLY_STATUS) {
    q->cb(q->arg, BP_CLAIM_OK, 0);
    free(q);
    return;
  }
  if (rep != NULL && rep->type == REDIS_REPLY_NIL && ac == q->r->pub &&
      redisAsyncCommand(ac, bp_redis_claim_ttl_cb, q, "TTL %s", q->key) ==
        REDIS_OK) {
    return; /* taken: the TTL says how long the key lives */
  }
  q->cb(q->arg, BP_CLAIM_ERROR, -1);
  free(q);
}

int bp_redis_claim(bp *b, const char *key, const char *value, uint32_t ttl_s,
                   bp_redis_claim_cb cb, void *arg) {
  bp_redis *r = (bp_redis *)b;
  size_t kl = strlen(key);
  bp_redis_claim_req *q;
  if (!r->up || r->pub == NULL) {
    return HUB_ERR_INVALID_ARGUMENT;
  }
  q = malloc(sizeof(*q) + r->prefix_len + kl);
  if (q == NULL) {
    return HUB_ERR_NOMEM;
  }
  q->r = r;
  q->cb = cb;
  q->arg = arg;
  memcpy(q->key, r->prefix, r->prefix_len);
  memcpy(q->key + r->prefix_len, key, kl + 1);
  if (redisAsyncCommand(r->pub, bp_redis_claim_set_cb, q, "SET %s %s NX EX %u",
                        q->key, value, (unsigned)ttl_s) != REDIS_OK) {
    free(q);
    return HUB_ERR_NOMEM;
  }
  return 0;
}

/* ------------------------------------------------------------ health */

/*
 * Drops both connections at once: a Redis that answers nothing would
 * never let redisAsyncDisconnect finish (it waits for the replies), so
 * the contexts are freed, as a connect timeout frees them.
 */
static void bp_redis_drop_dead(bp_redis *r, int which) {
  redisAsyncContext *sub = r->sub, *pub = r->pub;
  int was_up = r->up;
  r->st.timeouts++;
  {
    char t[32];
    snprintf(t, sizeof(t), "%.3f", (double)r->health.timeout_ns / 1e9);
    bp_redis_log(r, BP_LOG_WARN,
                 "redis connection answered nothing (--redis-timeout)",
                 "connection", which == BP_REDIS_SUB ? "subscriber" : "command",
                 "#timeout_s", t, (const char *)NULL);
  }
  bp_redis_note(r, which == BP_REDIS_SUB
                     ? "subscriber connection timed out (--redis-timeout)"
                     : "command connection timed out (--redis-timeout)");
  r->lost_was_up |= was_up;
  r->up = 0;
  r->sub = r->pub = NULL;
  r->sub_ok = r->pub_ok = 0;
  ev_timer_stop(r->loop, &r->health_timer);
  if (sub != NULL) {
    redisAsyncFree(sub);
  }
  if (pub != NULL) {
    redisAsyncFree(pub);
  }
  if (was_up && !r->quitting && r->base.ev.on_down != NULL) {
    r->base.ev.on_down(r->base.ev.user);
  }
  bp_redis_lost(r); /* up is 0: schedules the reconnect, reports nothing */
}

/* The command connection's PING came back. */
static void bp_redis_pong_cb(redisAsyncContext *ac, void *reply, void *priv) {
  bp_redis *r = priv;
  (void)ac;
  if (reply == NULL || !r->up) {
    return; /* freed, or an old link */
  }
  sh_health_heard(&r->health, BP_REDIS_PUB, 1, bp_redis_now_ns(r));
}

/*
 * Every reply on the subscriber connection counts as life; the health
 * channel's own confirmations end a probe (and are not the hub's).
 * Returns 1 when |rep| was the probe's.
 */
static int bp_redis_health_reply(bp_redis *r, const redisReply *rep) {
  const redisReply *kind, *chan;
  int probe;
  sh_health_heard(&r->health, BP_REDIS_SUB, 0, bp_redis_now_ns(r));
  if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 2) {
    return 0;
  }
  kind = rep->element[0];
  chan = rep->element[1];
  if (kind->type != REDIS_REPLY_STRING || chan->type != REDIS_REPLY_STRING ||
      (size_t)chan->len != r->health_chan_len ||
      memcmp(chan->str, r->health_chan, r->health_chan_len) != 0) {
    return 0;
  }
  probe = strcmp(kind->str, "subscribe") == 0;
  if (probe) {
    sh_health_heard(&r->health, BP_REDIS_SUB, 1, bp_redis_now_ns(r));
    /* Held for one round trip only: the instance subscribes to nothing
       it has no subscriber for. */
    (void)redisAsyncCommand(r->sub, NULL, NULL, "UNSUBSCRIBE %b",
                            r->health_chan, r->health_chan_len);
  }
  return 1;
}

static void bp_redis_tell_congested(bp_redis *r) {
  if (r->up && r->health.congested != r->congested_told) {
    r->congested_told = r->health.congested;
    if (r->congested_told) {
      r->st.congested++;
      char q[24];
      snprintf(q, sizeof(q), "%llu", (unsigned long long)r->st.queue_bytes);
      bp_redis_log(r, BP_LOG_WARN,
                   "redis is not keeping up: refusing publishes",
                   "#queue_bytes", q, (const char *)NULL);
    } else {
      bp_redis_log(r, BP_LOG_INFO, "redis caught up: accepting publishes",
                   (const char *)NULL);
    }
    if (r->on_congested != NULL) {
      r->on_congested(r->base.ev.user, r->congested_told);
    }
  }
}

static uint64_t bp_redis_queue_bytes(const bp_redis *r) {
  uint64_t n = 0;
  if (r->pub != NULL && r->pub->c.obuf != NULL) {
    n += sdslen(r->pub->c.obuf);
  }
  if (r->sub != NULL && r->sub->c.obuf != NULL) {
    n += sdslen(r->sub->c.obuf);
  }
  return n;
}

/* After a command is queued: past the cap, report from the loop (the op
   runs inside the shell's drain, which no callback may re-enter). */
static void bp_redis_queue_check(bp_redis *r) {
  r->st.queue_bytes = bp_redis_queue_bytes(r);
  if (sh_health_queue(&r->health, r->st.queue_bytes) &&
      !ev_is_active(&r->congest_poll)) {
    ev_timer_set(&r->congest_poll, 0.0, 0.0);
    ev_timer_start(r->loop, &r->congest_poll);
  }
}

static void bp_redis_congest_poll_cb(struct ev_loop *loop, ev_timer *w,
                                     int revents) {
  bp_redis *r = w->data;
  (void)loop;
  (void)revents;
  ev_timer_stop(r->loop, &r->congest_poll);
  bp_redis_tell_congested(r);
}

static void bp_redis_health_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  bp_redis *r = w->data;
  hub_tstamp now = bp_redis_now_ns(r);
  int v;
  (void)loop;
  (void)revents;
  if (!r->up || r->quitting || r->sub == NULL || r->pub == NULL) {
    return;
  }
  v = sh_health_tick(&r->health, BP_REDIS_SUB, now);
  if (v == SH_HEALTH_DEAD) {
    bp_redis_drop_dead(r, BP_REDIS_SUB);
    return;
  }
  if (v == SH_HEALTH_PROBE) {
    (void)redisAsyncCommand(r->sub, bp_redis_sub_cb, r, "SUBSCRIBE %b",
                            r->health_chan, r->health_chan_len);
  }
  v = sh_health_tick(&r->health, BP_REDIS_PUB, now);
  if (v == SH_HEALTH_DEAD) {
    bp_redis_drop_dead(r, BP_REDIS_PUB);
    return;
  }
  if (v == SH_HEALTH_PROBE) {
    (void)redisAsyncCommand(r->pub, bp_redis_pong_cb, r, "PING");
  }
  /* The queue drains without telling us: look at it here too. */
  r->st.queue_bytes = bp_redis_queue_bytes(r);
  (void)sh_health_queue(&r->health, r->st.queue_bytes);
  bp_redis_tell_congested(r);
}

static int bp_redis_health_init(bp_redis *r, const bp_redis_config *cfg) {
  size_t nl = strlen(r->name);
  r->health_chan_len = r->prefix_len + 7 + nl;
  r->health_chan = malloc(r->health_chan_len + 1);
  if (r->health_chan == NULL) {
    return -1;
  }
  memcpy(r->health_chan, r->prefix, r->prefix_len);
  memcpy(r->health_chan + r->prefix_len, "health:", 7);
  memcpy(r->health_chan + r->prefix_len + 7, r->name, nl + 1);
  sh_health_init(&r->health, cfg->timeout_ns, cfg->queue_bytes_max);
  r->max_msg_bytes = cfg->max_msg_bytes;
  r->on_congested = cfg->on_congested;
  ev_timer_init(&r->health_timer, bp_redis_health_cb, 0.0, 0.0);
  r->health_timer.data = r;
  ev_timer_init(&r->congest_poll, bp_redis_congest_poll_cb, 0.0, 0.0);
  r->congest_poll.data = r;
  return 0;
}

void bp_redis_get_stats(const bp *b, bp_redis_stats *st) {
  const bp_redis *r = (const bp_redis *)b;
  *st = r->st;
  st->queue_bytes = bp_redis_queue_bytes(r);
  st->is_congested = r->congested_told;
}
