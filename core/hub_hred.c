/*
 * hub_hred.c - history with an external backplane.  See hub_hred.h.
 */
#include "hub_int.h"

#include <string.h>

int hub_hred_publish(hub *h, hub_conn *c, uint64_t api_req, const hub_req *r) {
  (void)c;
  (void)r;
  if (hub_effq_reserve(h, 1) != 0) {
    return HUB_ERR_NOMEM;
  }
  {
    hub_buf *b = hub_api_error_body(h, "backplane unavailable");
    if (b == NULL) {
      return HUB_ERR_NOMEM;
    }
    hub_api_reply(h, api_req, 503, b);
  }
  return 0;
}

int hub_hred_api_history(hub *h, uint64_t api_req, const char *ch, size_t len,
                         uint64_t since, uint64_t limit) {
  (void)ch;
  (void)len;
  (void)since;
  (void)limit;
  return hub_hred_publish(h, NULL, api_req, NULL);
}

int hub_hred_on_hpublished(hub *h, uint64_t req, int ok, uint64_t offset,
                           const char *epoch, size_t epoch_len) {
  (void)h;
  (void)req;
  (void)ok;
  (void)offset;
  (void)epoch;
  (void)epoch_len;
  return 0;
}

int hub_hred_on_hread(hub *h, uint64_t req, int ok, uint64_t offset,
                      const char *epoch, size_t epoch_len,
                      const hub_hentry *entries, size_t n) {
  (void)h;
  (void)req;
  (void)ok;
  (void)offset;
  (void)epoch;
  (void)epoch_len;
  (void)entries;
  (void)n;
  return 0;
}

size_t hub_hred_fact_cost(const hub *h) {
  (void)h;
  return 0;
}

void hub_hred_fail_all(hub *h) {
  (void)h;
}

void hub_hred_free(hub *h) {
  (void)h;
}
