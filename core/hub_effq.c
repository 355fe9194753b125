/*
 * hub_effq.c - the effect queue and its reservation (see hub_effq.h).
 */
#include "hub_int.h"

#include <string.h>

size_t hub_effq_fact_reserve(const hub *h) {
  return hub_conn_fact_cost(h) + hub_topic_fact_cost(h) +
         hub_registry_fact_cost(h) + hub_hred_fact_cost(h);
}

int hub_effq_reserve(hub *h, size_t n) {
  size_t need, cap;
  hub_effect *effs;

  n += hub_effq_fact_reserve(h);
  if (h->eff_tail + n <= h->eff_cap) {
    return 0;
  }
  if (h->eff_head > 0) {
    memmove(h->effs, h->effs + h->eff_head,
            (h->eff_tail - h->eff_head) * sizeof(*h->effs));
    h->eff_tail -= h->eff_head;
    h->eff_base += h->eff_head;
    h->eff_head = 0;
    if (h->eff_tail + n <= h->eff_cap) {
      return 0;
    }
  }
  need = h->eff_tail + n;
  cap = h->eff_cap ? h->eff_cap : 64;
  while (cap < need) {
    cap *= 2;
  }
  effs = hub_mem_realloc(h->mem, h->effs, cap * sizeof(*effs));
  if (effs == NULL) {
    return HUB_ERR_NOMEM;
  }
  h->effs = effs;
  h->eff_cap = cap;
  return 0;
}

void hub_effq_push_name(hub *h, hub_effect_type type, hub_buf *name) {
  hub_effect *e = hub_effq_push(h, type);
  hub_buf_ref(name);
  e->name = name;
}

void hub_effq_release(hub_effect *e) {
  hub_buf_unref(e->name);
  hub_buf_unref(e->buf);
  e->name = NULL;
  e->buf = NULL;
  e->type = HUB_EFF_NONE;
}

/* The queue is searched only while this connection's last effect is
   still in it, so a transport that pops a CLOSE before reporting the
   close (the usual order) searches nothing. */
void hub_effq_discard_conn(hub *h, const hub_conn *c) {
  size_t i;

  for (i = h->eff_head;
       c->eff_last > h->eff_base + h->eff_head && i < h->eff_tail; i++) {
    hub_effect *e = &h->effs[i];
    if (e->conn == c->id &&
        (e->type == HUB_EFF_SEND || e->type == HUB_EFF_PING ||
         e->type == HUB_EFF_CLOSE || e->type == HUB_EFF_VERIFY)) {
      hub_effq_release(e);
    }
  }
}

void hub_effq_free(hub *h) {
  while (h->eff_head < h->eff_tail) {
    hub_effq_release(&h->effs[h->eff_head++]);
  }
  hub_mem_free(h->mem, h->effs);
  h->effs = NULL;
}

const hub_effect *hub_effect_peek(hub *h) {
  while (h->eff_head < h->eff_tail &&
         h->effs[h->eff_head].type == HUB_EFF_NONE) {
    h->eff_head++;
  }
  if (h->eff_head == h->eff_tail) {
    h->eff_base += h->eff_tail;
    h->eff_head = h->eff_tail = 0;
    return NULL;
  }
  return &h->effs[h->eff_head];
}

void hub_effect_pop(hub *h) {
  if (hub_effect_peek(h) == NULL) {
    return;
  }
  hub_effq_release(&h->effs[h->eff_head]);
  h->eff_head++;
  if (h->eff_head == h->eff_tail) {
    h->eff_base += h->eff_tail;
    h->eff_head = h->eff_tail = 0;
  }
}
