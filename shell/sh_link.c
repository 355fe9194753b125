/*
 * sh_link.c - the backplane link's reconnect/backoff state machine.
 *
 * Pure: the driver seeds the PRNG and passes the time.  The jitter keeps
 * instances that lost the same Redis at the same moment from coming back
 * in lock step; the doubling keeps a dead Redis from being hammered.
 */
#include "shell.h"

static uint64_t sh_link_next(sh_link *l) {
  /* splitmix64: one 64-bit state, any seed works. */
  uint64_t z = (l->rng += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

void sh_link_init(sh_link *l, uint64_t seed) {
  l->state = SH_LINK_DOWN;
  l->step_ns = SH_LINK_BACKOFF_MIN_NS;
  l->retry_at = HUB_TSTAMP_NONE;
  l->rng = seed;
  l->ups = 0;
}

int sh_link_connect(sh_link *l) {
  if (l->state == SH_LINK_CONNECTING || l->state == SH_LINK_UP) {
    return -1;
  }
  l->state = SH_LINK_CONNECTING;
  l->retry_at = HUB_TSTAMP_NONE;
  return 0;
}

void sh_link_up(sh_link *l) {
  l->state = SH_LINK_UP;
  l->step_ns = SH_LINK_BACKOFF_MIN_NS;
  l->retry_at = HUB_TSTAMP_NONE;
  l->ups++;
}

hub_tstamp sh_link_lost(sh_link *l, hub_tstamp now) {
  hub_tstamp half, wait_ns;
  if (l->state == SH_LINK_WAIT) {
    return l->retry_at;
  }
  /* Uniform in [step/2, step]. */
  half = l->step_ns / 2;
  wait_ns = half + sh_link_next(l) % (l->step_ns - half + 1);
  l->step_ns = l->step_ns * 2 > SH_LINK_BACKOFF_MAX_NS ? SH_LINK_BACKOFF_MAX_NS
                                                       : l->step_ns * 2;
  l->state = SH_LINK_WAIT;
  l->retry_at = now + wait_ns;
  return l->retry_at;
}
