/*
 * fuzz_bp.c - libFuzzer target: payloads from the backplane.
 *
 * Whatever another publisher puts on a Redis channel reaches the hub as
 * hub_on_bp_msg.  Two acknowledged subscribers of "news" (one of them
 * slow enough to be evicted) receive the input, cut into payloads at
 * 0xff bytes: every frame they get must be a text frame holding one JSON
 * object, and hub_check must hold after each payload.
 */
#include "fuzz_hub.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const char sub[] = "{\"type\":\"subscribe\",\"channel\":\"news\"}";
  fz_in none = {NULL, 0};
  fz_hub f;
  size_t i, start = 0;
  int k;

  if (fz_hub_new(&f, 1) != 0) {
    return 0;
  }
  (void)hub_on_bp_up(f.h, f.now);
  for (k = 0; k < 2; k++) {
    (void)hub_on_conn_open(f.h, &f.conns[k], "127.0.0.1:1", NULL, f.now);
    (void)hub_on_conn_msg(f.h, f.conns[k], 0, (const uint8_t *)sub,
                          sizeof(sub) - 1, f.now);
  }
  fz_drain(&f, &none);
  (void)hub_on_bp_subscribed(f.h, "news", 4, f.now);
  fz_drain(&f, &none);
  for (i = 0; i <= size; i++) {
    if (i == size || data[i] == 0xff) {
      f.now += HUB_NS_PER_MS;
      (void)hub_on_bp_msg(f.h, "news", 4, data + start, i - start, f.now);
      /* Subscriber 0 reads everything; subscriber 1 never does. */
      fz_drain(&f, &none);
      {
        size_t msgs = 0, bytes = 0;
        if (f.conns[0] != 0 &&
            hub_conn_backlog(f.h, f.conns[0], &msgs, &bytes) == 0 && msgs > 0) {
          (void)hub_on_conn_written(f.h, f.conns[0], msgs, bytes, f.now);
        }
      }
      fz_check(&f, "bp payload");
      start = i + 1;
    }
  }
  fz_hub_end(&f, &none);
  return 0;
}
