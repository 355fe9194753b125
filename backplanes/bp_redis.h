/*
 * bp_redis.h - the Redis backplane: hiredis's async API on a libev loop.
 *
 * Two connections per instance: one subscriber connection carrying every
 * channel's own SUBSCRIBE/UNSUBSCRIBE (never a pattern subscription) and
 * one command connection carrying PUBLISH, SET ... EX and DEL.  Both are
 * named with CLIENT SETNAME ("<client_name>:sub" and "<client_name>:pub")
 * so an operator can tell an instance's connections apart.  When either
 * connection is lost both are closed, on_down is reported, and both are
 * reconnected with the shell's backoff (sh_link: 100 ms doubling up to
 * 5 s, jittered); on_up is reported once both are connected again.
 */
#ifndef BP_REDIS_H
#define BP_REDIS_H

#include <stdint.h>

#include <ev.h>

#include "bp.h"

/* Log levels of bp_redis_log_cb (the server's SRV_LOG_* numbers). */
enum { BP_LOG_DEBUG = 0, BP_LOG_INFO, BP_LOG_WARN, BP_LOG_ERROR };

/*
 * bp_redis_log_cb reports one event: |msg| and |fields|, key/value
 * strings ended by NULL ("addr", "reason", "#retry_in_s"), all borrowed
 * for the call.  A key starting with '#' has a numeric value.  The backplane
 * does not depend on the server's logger.
 */
typedef void (*bp_redis_log_cb)(void *user, int level, const char *msg,
                                const char *const *fields);

typedef struct bp_redis_config {
  struct ev_loop *loop;    /* borrowed for the backplane's lifetime */
  const char *url;         /* redis://host:port[/db]; copied */
  const char *prefix;      /* "ws:"; copied */
  const char *client_name; /* CLIENT SETNAME base; copied */
  uint64_t seed;           /* the backoff jitter's PRNG */
  bp_redis_log_cb log;     /* NULL: no log */
  void *log_user;
  /* --redis-timeout: a connection that answers nothing, not even its
     health check, for this long is dropped and the backplane reported
     down (0: no check).  See shell/sh_health.h. */
  uint64_t timeout_ns;
  /* --max-backplane-message-bytes: larger payloads from Redis are
     dropped, counted and logged (0: no limit). */
  uint64_t max_msg_bytes;
  /* Commands queued for Redis and not yet written, in bytes, past which
     the backplane counts as congested (0: no cap). */
  uint64_t queue_bytes_max;
  /* Optional: the congestion state changed (|congested| 1: past the
     cap; 0: drained below half of it).  Called from the loop, never
     from inside an op; not called for the reset that a down implies. */
  void (*on_congested)(void *user, int congested);
  /* History is configured (--history-size > 0): the wshub function
     library must load (FUNCTION LOAD REPLACE, Redis 7 or newer) before
     the backplane counts as up; a refusal fails the connect, which is
     retried with backoff.  0: a refusal is logged once and ignored. */
  int history;
} bp_redis_config;

typedef struct bp_redis_stats {
  uint64_t dropped_big; /* payloads over max_msg_bytes, dropped */
  uint64_t timeouts;    /* links dropped for the read deadline */
  uint64_t congested;   /* times the queue passed its cap */
  uint64_t queue_bytes; /* bytes queued for Redis now */
  int is_congested;
} bp_redis_stats;

void bp_redis_get_stats(const bp *b, bp_redis_stats *st);

/*
 * bp_redis_new creates the backplane and starts connecting; |ev| is
 * copied and its callbacks run from |cfg->loop|.  Returns 0,
 * HUB_ERR_INVALID_ARGUMENT (a URL it cannot parse) or HUB_ERR_NOMEM.
 */
int bp_redis_new(bp **out, const bp_redis_config *cfg, const bp_events *ev);

/*
 * bp_redis_reset drops both connections and reconnects after backoff (a
 * forced reconnect: sh_transport.bp_reset).  The ops fail from the call
 * on; on_down is not reported for it (the caller tells the hub), on_up
 * is once the new connections are up.  The disconnect itself runs from
 * the loop, so this may be called from inside any bp_events callback.
 */
void bp_redis_reset(bp *b);

/* How many times the backplane came back up after being up before. */
uint64_t bp_redis_reconnects(const bp *b);

/*
 * bp_redis_quit stops reconnecting and disconnects once the commands
 * already sent have been answered (so a shutdown's DELs land), then
 * calls |done| from the loop.  on_up/on_down are not reported anymore.
 * Free the backplane with b->ops->free afterwards.  History commands
 * still in flight are answered as usual until then; ops->free answers
 * none (the owner is going away).
 */
void bp_redis_quit(bp *b, void (*done)(void *arg), void *arg);

/*
 * bp_redis_claim claims |key| (prefixed) atomically for this process:
 * `SET <prefix><key> <value> NX EX <ttl_s>` on the command connection.
 * |cb| is called once, from the loop: BP_CLAIM_OK (the key is ours now),
 * BP_CLAIM_TAKEN (it exists; |ttl_left_s| is its TTL, -1 if unknown) or
 * BP_CLAIM_ERROR (an error reply, or the connection was lost first).  A
 * taken key is never touched.  |key| and |value| are copied.  Returns 0,
 * HUB_ERR_INVALID_ARGUMENT (the backplane is not up: |cb| is not called)
 * or HUB_ERR_NOMEM.
 */
enum { BP_CLAIM_OK = 0, BP_CLAIM_TAKEN = 1, BP_CLAIM_ERROR = -1 };
typedef void (*bp_redis_claim_cb)(void *arg, int result, long long ttl_left_s);
int bp_redis_claim(bp *b, const char *key, const char *value, uint32_t ttl_s,
                   bp_redis_claim_cb cb, void *arg);

#endif /* BP_REDIS_H */
