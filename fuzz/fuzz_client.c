/*
 * fuzz_client.c - libFuzzer target: the client protocol through the core.
 *
 * The input is a script of events for one hub (fuzz_hub.h): connections
 * open, send raw or well-formed requests with fuzzed fields, answer
 * pings, report writes and closes; the backplane comes and goes; time
 * passes; allocations fail where the input says.  hub_check runs after
 * every event and every SEND frame must be a text frame holding one JSON
 * object.
 */
#include "fuzz_hub.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in = {data, size};
  fz_hub f;
  int steps = 0;

  if (fz_hub_new(&f, (int)(fz_byte(&in) & 1)) != 0) {
    return 0;
  }
  fz_drain(&f, &in);
  while (in.n > 0 && steps++ < 2000) {
    fz_step(&f, &in);
  }
  fz_hub_end(&f, &in);
  return 0;
}
