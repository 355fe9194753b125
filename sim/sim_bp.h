/*
 * sim_bp.h - the backplane (bp.h's bp_ops) a simulated instance drives
 * the simulated Redis through.  It mirrors bp_redis.c: a subscriber and
 * a command connection that connect and drop together, on_up once both
 * are established, on_down when their loss is noticed, then reconnects
 * with the shell's backoff (sh_link: 100 ms doubling to 5 s, jittered
 * from a stream of the seed).  Keys get
 * the prefix; channels are handed to the model by their logical name.
 */
#ifndef SIM_BP_H
#define SIM_BP_H

#include "../backplanes/bp.h"
#include "sim_redis.h"

typedef struct sim_bp sim_bp;

/*
 * sim_bp_new creates a backplane on |r|, disconnected.  |tag| names it in
 * events and the trace (the instance index); its latencies come from
 * stream |stream| of the loop's seed.  |prefix| ("ws:") and |ev| are
 * copied; the callbacks run from loop events (never from inside a bp_ops
 * call).  Free with bp->ops->free.  Returns NULL when out of memory.
 */
sim_bp *sim_bp_new(sim_loop *loop, sim_redis *r, uint32_t tag, uint64_t stream,
                   const char *prefix, const bp_events *ev);
bp *sim_bp_bp(sim_bp *b);

/* Starts connecting; ev.on_up runs when the answer arrives. */
void sim_bp_connect(sim_bp *b);
/* The link breaks (Redis drops both connections at once, subscriptions
   gone, everything in flight lost).  With |notify| the instance sees the
   disconnect after one link latency and then reconnects with backoff;
   without it (a crash, an exit) nothing more happens. */
void sim_bp_drop(sim_bp *b, int notify);
/* The owner gives up on the link (its hub could not take what the link
   delivered): both connections are closed now, on_down is not reported
   (the owner tells its hub itself), and a reconnect follows after the
   backoff. */
void sim_bp_reconnect(sim_bp *b);
/* While partitioned every connect attempt fails. */
void sim_bp_set_partitioned(sim_bp *b, int on);

int sim_bp_connected(const sim_bp *b); /* Redis holds its connections */
int sim_bp_up_known(const sim_bp *b);  /* the instance was told "up" */
/* The model's connection pair, for queries (sim_redis_subscribed, ...). */
const sim_redis_conn *sim_bp_conn(const sim_bp *b);

/* Handles SIM_EV_BP_RETRY for this backplane; returns 1 if it was one. */
int sim_bp_event(sim_bp *b, const sim_ev *ev);

#endif /* SIM_BP_H */
