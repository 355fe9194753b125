/*
 * test_sh_health.c - the backplane link's read deadline and congestion
 * hysteresis (shell/sh_health.c).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "sh_health.h"

#define S HUB_NS_PER_S
#define MS HUB_NS_PER_MS

/* A connection that stops answering at |stop| is declared dead within
   1.75 timeouts of its last answer, probing once per quiet spell. */
static void test_sh_health_dead_within_twice_the_timeout(void **state) {
  sh_health hc;
  hub_tstamp t, period, dead_at = 0, stop = 10 * S;
  int probes_after_stop = 0;

  (void)state;
  sh_health_init(&hc, 3 * S, 0);
  sh_health_up(&hc, 0);
  period = sh_health_period(&hc);
  assert_int_equal(period, 750 * MS);
  for (t = period; t < 30 * S && dead_at == 0; t += period) {
    int v = sh_health_tick(&hc, 0, t);
    if (v == SH_HEALTH_PROBE) {
      if (t < stop) {
        sh_health_heard(&hc, 0, 1, t + MS); /* answered at once */
      } else {
        probes_after_stop++;
      }
    } else if (v == SH_HEALTH_DEAD) {
      dead_at = t;
    }
  }
  assert_true(dead_at > stop);
  assert_true(dead_at - stop <= 2 * 3 * S);
  assert_int_equal(probes_after_stop, 1);
}

/* Traffic keeps a connection alive without probes; a probe stuck behind
   a moving stream of replies is late, not dead. */
static void test_sh_health_traffic_is_life(void **state) {
  sh_health hc;
  hub_tstamp t;
  int probes = 0;

  (void)state;
  sh_health_init(&hc, 1 * S, 0);
  sh_health_up(&hc, 0);
  for (t = 100 * MS; t < 20 * S; t += 100 * MS) {
    sh_health_heard(&hc, 1, 0, t);
    if (t % (250 * MS) == 0) {
      int v = sh_health_tick(&hc, 1, t);
      assert_int_not_equal(v, SH_HEALTH_DEAD);
      probes += v == SH_HEALTH_PROBE;
    }
  }
  assert_int_equal(probes, 0);
  /* Now a probe goes out and its answer is slow, but replies flow. */
  assert_int_equal(sh_health_tick(&hc, 1, 21 * S), SH_HEALTH_PROBE);
  for (t = 21 * S; t < 25 * S; t += 100 * MS) {
    sh_health_heard(&hc, 1, 0, t);
    assert_int_equal(sh_health_tick(&hc, 1, t), SH_HEALTH_OK);
  }
  sh_health_heard(&hc, 1, 1, t);
  assert_int_equal(hc.c[1].probe_at, HUB_TSTAMP_NONE);
}

static void test_sh_health_off(void **state) {
  sh_health hc;

  (void)state;
  sh_health_init(&hc, 0, 0);
  assert_int_equal(sh_health_period(&hc), 0);
  assert_int_equal(sh_health_tick(&hc, 0, 1000 * S), SH_HEALTH_OK);
  assert_int_equal(sh_health_queue(&hc, UINT64_MAX), 0);
  assert_int_equal(hc.congested, 0);
}

static void test_sh_health_congestion_hysteresis(void **state) {
  sh_health hc;

  (void)state;
  sh_health_init(&hc, 3 * S, 1000);
  assert_int_equal(sh_health_queue(&hc, 1000), 0);
  assert_int_equal(sh_health_queue(&hc, 1001), 1);
  assert_int_equal(hc.congested, 1);
  assert_int_equal(sh_health_queue(&hc, 600), 0);
  assert_int_equal(hc.congested, 1);
  assert_int_equal(sh_health_queue(&hc, 499), 1);
  assert_int_equal(hc.congested, 0);
  assert_int_equal(sh_health_queue(&hc, 2000), 1);
  sh_health_up(&hc, 5 * S); /* a new link starts clear */
  assert_int_equal(hc.congested, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_sh_health_dead_within_twice_the_timeout),
    cmocka_unit_test(test_sh_health_traffic_is_life),
    cmocka_unit_test(test_sh_health_off),
    cmocka_unit_test(test_sh_health_congestion_hysteresis),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
