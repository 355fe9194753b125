/*
 * hub_rate.c - the per-connection publish limit (hub_rate.h).
 */
#include "hub_rate.h"

static hub_tstamp rate_interval(uint32_t per_s) {
  hub_tstamp t = HUB_NS_PER_S / per_s;
  return t > 0 ? t : 1;
}

int hub_rate_allows(const hub_rate *r, uint32_t per_s, hub_tstamp now) {
  if (per_s == 0 || r->tat <= now) {
    return 1;
  }
  /* The bucket holds per_s tokens: full at tat <= now; one is left while
     taking it keeps tat at most per_s intervals ahead. */
  return r->tat - now <= rate_interval(per_s) * (per_s - 1);
}

void hub_rate_take(hub_rate *r, uint32_t per_s, hub_tstamp now) {
  if (per_s == 0) {
    return;
  }
  if (r->tat < now) {
    r->tat = now;
  }
  r->tat += rate_interval(per_s);
}
