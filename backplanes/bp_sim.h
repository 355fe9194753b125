/*
 * bp_sim.h - the simulated Redis and the backplane that talks to it.
 *
 * One sim_redis per simulated world is shared by every instance.  It is
 * faithful to real Redis where the hub depends on it:
 *
 *   - a SUBSCRIBE takes effect when Redis processes it, and is confirmed
 *     back on the subscriber connection;
 *   - messages to one subscriber connection arrive in publish order;
 *   - nothing is queued for a connection that is disconnected or
 *     partitioned (at-most-once: lost), and a dropped connection loses
 *     its subscriptions at once;
 *   - string keys carry a TTL that expires on the virtual clock.
 *
 * Each instance owns one bp_sim: like the real server it has a subscriber
 * connection (SUBSCRIBE, UNSUBSCRIBE and message delivery) and a command
 * connection (PUBLISH, SET, DEL), each FIFO in each direction, with
 * seeded latency jitter.  Both connect and drop together.
 *
 * Channel ids are the world's interned logical channel names
 * (sim_chan_intern); keys are stored by their full name ("ws:conn:0:1").
 */
#ifndef BP_SIM_H
#define BP_SIM_H

#include "bp.h"
#include "../sim/sim.h"

int sim_redis_new(sim_redis **out, sim_world *w);
void sim_redis_del(sim_redis *r);

/* PUBLISH straight into Redis (the `redis publish` statement); |data| is
   referenced, not copied. */
void sim_redis_publish(sim_redis *r, uint32_t chan, sim_blob *data);

/* 1 if |key| (a full key name) exists and has not expired. */
int sim_redis_key_present(sim_redis *r, const char *key);

/* Calls |cb| for every live key, in a deterministic order. */
void sim_redis_foreach_key(sim_redis *r, void (*cb)(void *arg, const char *key),
                           void *arg);

/*
 * bp_sim_new creates instance |inst|'s backplane, disconnected.  |ev| is
 * copied; its callbacks run from sim event handlers (never from inside a
 * bp_ops call).  Free with bp->ops->free.
 */
bp_sim *bp_sim_new(sim_world *w, uint32_t inst, const bp_events *ev);
bp *bp_sim_bp(bp_sim *b);

/* Starts connecting; on success ev.on_up runs when the answer arrives. */
void bp_sim_connect(bp_sim *b);
/* Drops both connections on the Redis side at once (subscriptions gone,
   everything in flight lost).  With |notify| the instance sees the
   disconnect after one link latency and then reconnects with backoff;
   without it (a crash, an exit) nothing more happens. */
void bp_sim_drop(bp_sim *b, int notify);
/* While partitioned every connect attempt fails. */
void bp_sim_set_partitioned(bp_sim *b, int on);

int bp_sim_connected(const bp_sim *b); /* Redis holds its connections */
int bp_sim_up_known(const bp_sim *b);  /* the instance was told "up" */
/* No command on the subscriber connection and no confirmation to it is
   in flight. */
int bp_sim_sub_idle(const bp_sim *b);
/* No command at all is in flight. */
int bp_sim_idle(const bp_sim *b);
/* Bumped whenever the link connects or drops. */
uint64_t bp_sim_epoch(const bp_sim *b);
/* Redis's view: this instance's subscriber connection holds |chan|. */
int bp_sim_subscribed(const bp_sim *b, uint32_t chan);
/* The Redis processing time of the message being delivered by ev.on_msg
   right now. */
uint64_t bp_sim_msg_time(const bp_sim *b);

/* 1 if a DEL of |key| (a full key name) was lost because the link was
   down, and no SET of it was sent since. */
int bp_sim_del_lost(const bp_sim *b, const char *key);

/* Handles SIM_EV_REDIS_CMD, SIM_EV_BP_*; returns 1 if it was one. */
int bp_sim_event(sim_world *w, const sim_ev *ev);

#endif /* BP_SIM_H */
