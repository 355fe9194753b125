/*
 * sh_health.c - a backplane link's liveness and congestion
 * (sh_health.h).
 */
#include "sh_health.h"

#include <string.h>

void sh_health_init(sh_health *hc, hub_tstamp timeout_ns,
                    uint64_t queue_bytes_max) {
  memset(hc, 0, sizeof(*hc));
  hc->timeout_ns = timeout_ns;
  hc->queue_bytes_max = queue_bytes_max;
  sh_health_up(hc, 0);
}

void sh_health_up(sh_health *hc, hub_tstamp now) {
  int i;
  for (i = 0; i < SH_HEALTH_CONNS; i++) {
    hc->c[i].probe_at = HUB_TSTAMP_NONE;
    hc->c[i].heard_at = now;
  }
  hc->congested = 0;
}

hub_tstamp sh_health_period(const sh_health *hc) {
  hub_tstamp p = hc->timeout_ns / SH_HEALTH_TICKS;
  if (hc->timeout_ns == 0) {
    return 0;
  }
  return p > HUB_NS_PER_MS ? p : HUB_NS_PER_MS;
}

int sh_health_tick(sh_health *hc, int i, hub_tstamp now) {
  sh_health_conn *c = &hc->c[i];
  hub_tstamp quiet;
  if (hc->timeout_ns == 0) {
    return SH_HEALTH_OK;
  }
  quiet = now > c->heard_at ? now - c->heard_at : 0;
  if (c->probe_at != HUB_TSTAMP_NONE) {
    hub_tstamp waited = now > c->probe_at ? now - c->probe_at : 0;
    /* Both: a probe queued behind a long but moving stream of replies
       is late, not lost. */
    return waited >= hc->timeout_ns && quiet >= hc->timeout_ns ? SH_HEALTH_DEAD
                                                               : SH_HEALTH_OK;
  }
  /* A connection that just answered something needs no probe; one tick
     of quiet is enough to ask. */
  if (quiet + 1 < sh_health_period(hc)) {
    return SH_HEALTH_OK;
  }
  c->probe_at = now;
  return SH_HEALTH_PROBE;
}

void sh_health_heard(sh_health *hc, int i, int probe, hub_tstamp now) {
  sh_health_conn *c = &hc->c[i];
  if (now > c->heard_at) {
    c->heard_at = now;
  }
  if (probe) {
    c->probe_at = HUB_TSTAMP_NONE;
  }
}

int sh_health_queue(sh_health *hc, uint64_t bytes) {
  int was = hc->congested;
  if (hc->queue_bytes_max == 0) {
    return 0;
  }
  if (!hc->congested && bytes > hc->queue_bytes_max) {
    hc->congested = 1;
  } else if (hc->congested && bytes < hc->queue_bytes_max / 2) {
    hc->congested = 0;
  }
  return hc->congested != was;
}
