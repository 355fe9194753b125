/*
 * hub_map.c - the seeded hash table (see hub_map.h).
 */
#include "hub_int.h"

#include <string.h>

#define HTAB_INIT_BUCKETS 64

int hub_htab_init(const hub_mem *mem, hub_htab *t) {
  t->b = hub_mem_malloc(mem, HTAB_INIT_BUCKETS * sizeof(*t->b));
  if (t->b == NULL) {
    return HUB_ERR_NOMEM;
  }
  memset(t->b, 0, HTAB_INIT_BUCKETS * sizeof(*t->b));
  t->nb = HTAB_INIT_BUCKETS;
  t->n = 0;
  return 0;
}

void hub_htab_free(const hub_mem *mem, hub_htab *t) {
  hub_mem_free(mem, t->b);
  t->b = NULL;
  t->nb = 0;
  t->n = 0;
}

/* Grows the table when it is full; if that allocation fails the table
   just stays longer-chained, so insertion itself never fails. */
void hub_htab_insert(const hub_mem *mem, hub_htab *t, hub_hnode *node) {
  size_t i;

  if (t->n >= t->nb) {
    size_t nb = t->nb * 2;
    hub_hnode **b = hub_mem_malloc(mem, nb * sizeof(*b));
    if (b != NULL) {
      memset(b, 0, nb * sizeof(*b));
      for (i = 0; i < t->nb; i++) {
        hub_hnode *p = t->b[i];
        while (p != NULL) {
          hub_hnode *next = p->next;
          size_t j = (size_t)(p->hash & (nb - 1));
          p->next = b[j];
          b[j] = p;
          p = next;
        }
      }
      hub_mem_free(mem, t->b);
      t->b = b;
      t->nb = nb;
    }
  }
  i = (size_t)(node->hash & (t->nb - 1));
  node->next = t->b[i];
  t->b[i] = node;
  t->n++;
}

void hub_htab_remove(hub_htab *t, hub_hnode *node) {
  hub_hnode **pp = &t->b[node->hash & (t->nb - 1)];
  while (*pp != node) {
    HUB_ASSERT(*pp != NULL);
    pp = &(*pp)->next;
  }
  *pp = node->next;
  t->n--;
}
