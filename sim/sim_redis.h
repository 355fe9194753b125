/*
 * sim_redis.h - the simulated Redis, over the loop interface only.
 *
 * One sim_redis per world is shared by every instance.  It is faithful to
 * real Redis where the hub depends on it:
 *
 *   - a SUBSCRIBE takes effect when Redis processes it, and is confirmed
 *     back on the subscriber connection;
 *   - messages to one subscriber connection arrive in publish order;
 *   - nothing is queued for a connection that is disconnected or
 *     partitioned (at-most-once: lost), and a dropped connection loses
 *     its subscriptions at once;
 *   - string keys carry a TTL that expires on the virtual clock.
 *
 * A client of it (sim_bp.c, one per instance) holds one sim_redis_conn:
 * a subscriber connection (SUBSCRIBE, UNSUBSCRIBE, confirmations and
 * messages) and a command connection (PUBLISH, SET, DEL), FIFO in each
 * direction, which connect and drop together.  Latencies are drawn from
 * the stream the client hands over at sim_redis_conn_new, so a client's
 * timing does not move when traffic elsewhere changes.  What Redis sends
 * back is delivered through the callbacks registered there, from the
 * loop's events (never from inside a sim_redis call).
 *
 * Checkers observe Redis through hooks (sim_redis_hooks); Redis never
 * calls a checker and knows nothing of the world.  Channels are the
 * loop's interned names, without the "ws:chan:" prefix; keys are stored
 * by their full name ("ws:conn:0:1").
 */
#ifndef SIM_REDIS_H
#define SIM_REDIS_H

#include "sim_loop.h"

typedef struct sim_redis sim_redis;
typedef struct sim_redis_conn sim_redis_conn;

/* What Redis delivers to one client.  Arguments are borrowed for the
   call.  A callback may call sim_redis_drop on its own connection. */
typedef struct sim_redis_conn_cbs {
  void *user;
  /* The answer to a connect arrives: both connections are established. */
  void (*on_connected)(void *user);
  /* Redis refused the connect (the link is partitioned); the refusal
     reaches the client |transit| ns from now. */
  void (*on_refused)(void *user, uint64_t transit);
  /* The client notices that its connections were dropped (after a
     sim_redis_drop with |notify|). */
  void (*on_lost)(void *user);
  /* A SUBSCRIBE to |chan| was confirmed. */
  void (*on_subscribed)(void *user, const char *chan, size_t chan_len);
  /* A message Redis published on |chan|. */
  void (*on_message)(void *user, const char *chan, size_t chan_len,
                     const uint8_t *data, size_t len);
  /* The answers to SIM_REDIS_HPUBLISH and SIM_REDIS_HREAD (on the command
     connection, in command order).  Entries are borrowed for the call. */
  void (*on_hpublished)(void *user, uint64_t req, uint64_t offset,
                        const char *epoch);
  void (*on_hread)(void *user, uint64_t req, uint64_t offset, const char *epoch,
                   const uint64_t *offsets, const char *const *data,
                   const size_t *lens, size_t n);
} sim_redis_conn_cbs;

/*
 * Hooks: what a checker may observe.  Every one is optional, runs
 * synchronously inside the model at the moment the fact happens, and must
 * not call back into the model.  |tag| is the connection's tag
 * (sim_redis_conn_new), or UINT32_MAX for a publish straight into Redis.
 */
typedef struct sim_redis_hooks {
  void *ctx;
  /* Redis is processing a PUBLISH on |chan| now, which will go to
     |receivers| subscriber connections; runs before any is scheduled. */
  void (*on_publish)(void *ctx, uint32_t chan, const sim_blob *data,
                     size_t receivers);
  /* A message published at |published_at| is being handed to |tag|'s
     on_message. */
  void (*on_deliver)(void *ctx, uint32_t tag, uint32_t chan,
                     uint64_t published_at);
  /* Redis processed a SUBSCRIBE (|on|) or UNSUBSCRIBE from |tag|. */
  void (*on_subscribe)(void *ctx, uint32_t tag, uint32_t chan, int on);
  void (*on_key_set)(void *ctx, uint32_t tag, const char *key, uint32_t ttl_s);
  void (*on_key_del)(void *ctx, uint32_t tag, const char *key);
  /* A key's TTL passed and Redis removed it. */
  void (*on_key_expired)(void *ctx, const char *key);
  /* Redis accepted |tag|'s connect. */
  void (*on_conn_accepted)(void *ctx, uint32_t tag);
  /* Redis dropped |tag|'s connections: its subscriptions are gone and
     every command and delivery in flight on them is lost. */
  void (*on_conn_dropped)(void *ctx, uint32_t tag);
} sim_redis_hooks;

int sim_redis_new(sim_redis **out, sim_loop *loop);
void sim_redis_del(sim_redis *r); /* accepts NULL */

/* Registers |h| (copied); hooks run in registration order.  Returns 0 or
   -1 when all SIM_REDIS_HOOKS_MAX slots are taken. */
#define SIM_REDIS_HOOKS_MAX 4
int sim_redis_hook(sim_redis *r, const sim_redis_hooks *h);

/* PUBLISH straight into Redis (the `redis publish` statement); |data| is
   referenced, not copied. */
void sim_redis_publish(sim_redis *r, uint32_t chan, sim_blob *data);

/* Redis lost all its data (the `redis restart` statement, after the
   world dropped every instance's connections): every key is gone at
   once.  No hook runs: a checker reads keys when it checks. */
void sim_redis_flush(sim_redis *r);

/* FCALL wshub_publish from outside (the `redis fcall wshub_publish`
   statement): the function's one atomic step over the history stream
   |hkey| and meta hash |mkey| (sim_stream.h), then the PUBLISH of
   `wshub:<offset>:<epoch>:<data>` on |chan|.  Returns the offset. */
uint64_t sim_redis_fcall_publish(sim_redis *r, uint32_t chan, const char *hkey,
                                 const char *mkey, const char *data, size_t len,
                                 uint32_t size, uint32_t ttl_s,
                                 uint32_t meta_ttl_s);

/* 1 if history stream |hkey| with meta |mkey| of |epoch| holds
   |offset| now. */
int sim_redis_history_holds(sim_redis *r, const char *hkey, const char *mkey,
                            const char *epoch, uint64_t offset);

/* XLEN of the history stream |hkey| (0: missing or expired). */
size_t sim_redis_history_len(sim_redis *r, const char *hkey);

/* 1 if |key| (a full key name) exists and has not expired. */
int sim_redis_key_present(sim_redis *r, const char *key);

/* Calls |cb| for every live key, in insertion order. */
void sim_redis_foreach_key(sim_redis *r, void (*cb)(void *arg, const char *key),
                           void *arg);

/*
 * sim_redis_conn_new makes a client's connection pair, disconnected.
 * |tag| is what its events carry and its trace lines and hooks name (the
 * instance index).  |lat| is borrowed until sim_redis_conn_free; |cbs| is
 * copied.  sim_redis_conn_free drops it silently and frees it; accepts
 * NULL.
 */
sim_redis_conn *sim_redis_conn_new(sim_redis *r, uint32_t tag, sim_rng *lat,
                                   const sim_redis_conn_cbs *cbs);
void sim_redis_conn_free(sim_redis_conn *c);

/* Starts a connect: it reaches Redis after one link latency. */
void sim_redis_connect(sim_redis_conn *c);
/* Drops both connections on the Redis side at once (subscriptions gone,
   everything in flight lost).  With |notify|, on_lost follows after one
   link latency. */
void sim_redis_drop(sim_redis_conn *c, int notify);
/* While partitioned every connect is refused. */
void sim_redis_set_partitioned(sim_redis_conn *c, int on);

enum sim_redis_cmd {
  SIM_REDIS_SUBSCRIBE = 1, /* arg: channel id; subscriber connection */
  SIM_REDIS_UNSUBSCRIBE,   /* arg: channel id; subscriber connection */
  SIM_REDIS_PUBLISH,       /* arg: channel id, p: data */
  SIM_REDIS_SET,           /* arg: TTL in s (0: none), p: full key */
  SIM_REDIS_DEL,           /* p: full key */
  /* FCALL wshub_publish / wshub_read: arg: channel id, p: a
     sim_redis_hcmd, then the history key, NUL, the meta key, NUL, and
     (HPUBLISH) the data.  Answered on the command connection. */
  SIM_REDIS_HPUBLISH,
  SIM_REDIS_HREAD
};

typedef struct sim_redis_hcmd {
  uint64_t req;
  uint64_t since; /* HREAD */
  uint32_t size;  /* HPUBLISH: history size; HREAD: count */
  uint32_t ttl_s; /* HPUBLISH */
  uint32_t meta_ttl_s;
  uint32_t pad;
} sim_redis_hcmd;

/* Reads so far (wshub_read calls from every instance), for scenarios
   that count how reads coalesce. */
uint64_t sim_redis_hreads(const sim_redis *r);

/* Sends one command; it reaches Redis after a link latency, behind the
   commands sent before it on the same connection.  Ownership of |p| is
   transferred (also on failure).  Returns 0, or -1 while disconnected
   (the command is lost). */
int sim_redis_send(sim_redis_conn *c, int cmd, uint32_t arg, sim_blob *p);

int sim_redis_connected(const sim_redis_conn *c); /* Redis holds them */
/* No command on the subscriber connection and no confirmation to it is
   in flight. */
int sim_redis_sub_idle(const sim_redis_conn *c);
/* No command at all is in flight. */
int sim_redis_idle(const sim_redis_conn *c);
/* Bumped whenever the connections are established or dropped. */
uint64_t sim_redis_epoch(const sim_redis_conn *c);
/* Redis's view: the subscriber connection holds |chan|. */
int sim_redis_subscribed(const sim_redis_conn *c, uint32_t chan);

/* Commands on the command connection not yet answered. */
uint64_t sim_redis_cmd_pending(const sim_redis_conn *c);

/* Handles SIM_EV_REDIS_CMD, SIM_EV_BP_DELIVER, SIM_EV_BP_CONNECT,
   SIM_EV_BP_UP and SIM_EV_BP_DOWN; returns 1 if |ev| was one. */
int sim_redis_event(sim_redis *r, const sim_ev *ev);

#endif /* SIM_REDIS_H */
