/*
 * fuzz_replay.c - libFuzzer target: the flight recorder's reader and the
 * replayer (wshub-sim --replay) over any bytes.
 *
 * The input is a recording file (docs/recording.md), mostly mutated from
 * the seeds in fuzz/corpus/replay/ (real recordings of build/wshub).  The
 * replayer must give a verdict - ok, diverged, truncated or not a
 * recording - and never crash, leak, hang or trip a core assertion.  Its
 * trace and messages are printed to /dev/null, so that the formatting
 * is exercised too.
 */
#include <stdio.h>

#include "sim_replay.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static FILE *devnull;
  sim_replay_opts o;
  int rc;
  if (devnull == NULL) {
    devnull = fopen("/dev/null", "w");
  }
  o.out = devnull;
  o.trace = 1;
  o.has_until = 0;
  o.until = 0;
  rc = sim_replay_buf(data, size, &o);
  if (rc < SIM_REPLAY_OK || rc > SIM_REPLAY_TRUNCATED) {
    __builtin_trap();
  }
  return 0;
}
