/*
 * sh_health.h - a backplane link's liveness and congestion, as pure
 * state over the times the driver passes in (like sh_link, its
 * reconnect state machine).
 *
 * Liveness: each of the link's connections has a read deadline.  Every
 * SH_HEALTH_TICKS-th of the timeout the driver calls sh_health_tick per
 * connection; it answers "send a probe" (a PING, or whatever the
 * connection answers in its mode) when none is outstanding and the
 * connection has been quiet, and "dead" once a probe has gone unanswered
 * and nothing at all was heard for the whole timeout.  A connection that
 * stops answering is so declared dead at most 1.75 timeouts after its
 * last answer (up to two ticks until the probe goes out, the timeout,
 * one tick of granularity) - inside the contract's "within twice the
 * deadline".
 *
 * Congestion: the bytes of commands queued for the backplane and not yet
 * written; past |queue_bytes_max| the link is congested, and it is clear
 * again below half of it (hysteresis, so a queue hovering at the cap
 * does not flap).
 */
#ifndef SH_HEALTH_H
#define SH_HEALTH_H

#include <stdint.h>

#include "hub.h"

#define SH_HEALTH_CONNS 2 /* the subscriber and the command connection */
#define SH_HEALTH_TICKS 4 /* ticks per timeout */

enum { SH_HEALTH_OK = 0, SH_HEALTH_PROBE, SH_HEALTH_DEAD };

typedef struct sh_health_conn {
  hub_tstamp probe_at; /* the outstanding probe's send time, or NONE */
  hub_tstamp heard_at; /* the last reply of any kind */
} sh_health_conn;

typedef struct sh_health {
  hub_tstamp timeout_ns; /* 0: no liveness check */
  uint64_t queue_bytes_max;
  sh_health_conn c[SH_HEALTH_CONNS];
  int congested;
} sh_health;

/* |timeout_ns| 0 turns the liveness check off, |queue_bytes_max| 0 the
   congestion check. */
void sh_health_init(sh_health *hc, hub_tstamp timeout_ns,
                    uint64_t queue_bytes_max);
/* The link came up at |now|: nothing outstanding, everything heard,
   not congested. */
void sh_health_up(sh_health *hc, hub_tstamp now);
/* The driver's tick period (timeout / SH_HEALTH_TICKS, at least 1 ms),
   0 when the check is off. */
hub_tstamp sh_health_period(const sh_health *hc);
/* Connection |i|'s verdict at |now|: SH_HEALTH_OK, SH_HEALTH_PROBE (send
   one now; it is counted as sent) or SH_HEALTH_DEAD (drop the link). */
int sh_health_tick(sh_health *hc, int i, hub_tstamp now);
/* A reply arrived on connection |i|; |probe| is nonzero when it answers
   the probe. */
void sh_health_heard(sh_health *hc, int i, int probe, hub_tstamp now);
/* The driver's queue holds |bytes|.  Returns 1 when the congestion
   state changed (read it in hc->congested), else 0. */
int sh_health_queue(sh_health *hc, uint64_t bytes);

#endif /* SH_HEALTH_H */
