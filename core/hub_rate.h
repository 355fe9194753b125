/*
 * hub_rate.h - the per-connection publish limit (max_publish_rate).
 *
 * Internal to core/.  A token bucket of N publishes refilled at N per
 * second, kept as one timestamp in the manner of GCRA: |tat| is the time
 * at which the bucket would be full again.  Each publish moves it one
 * interval (1 s / N) later; a publish finds the bucket empty when |tat|
 * is more than N intervals ahead of |now|.  The clock is the hub's: no
 * timer, no allocation.
 */
#ifndef HUB_RATE_H
#define HUB_RATE_H

#include <stdint.h>

#include "hub.h"

typedef struct hub_rate {
  hub_tstamp tat; /* when the bucket is full again (0: full) */
} hub_rate;

/* 1 if a publish at |now| finds a token in the bucket of |per_s| (0: no
   limit), else 0.  Changes nothing: take it with hub_rate_take once the
   publish has succeeded. */
int hub_rate_allows(const hub_rate *r, uint32_t per_s, hub_tstamp now);

/* Takes one token (after hub_rate_allows said yes). */
void hub_rate_take(hub_rate *r, uint32_t per_s, hub_tstamp now);

#endif /* HUB_RATE_H */
