/*
 * hub_map.h - the seeded hash table behind the connection and channel
 * lookups.  Internal to core/.  Nodes are intrusive (hub_hnode inside the
 * owner); the table never allocates per entry, and a failed resize only
 * leaves chains longer, so insertion cannot fail.  The hash is seeded
 * from hub_config.seed, as ngtcp2_map is, so that the seed never changes
 * an effect: iteration order always comes from a list, never the table.
 */
#ifndef HUB_MAP_H
#define HUB_MAP_H

#include <stddef.h>
#include <stdint.h>

#include "hub.h"

typedef struct hub_hnode {
  struct hub_hnode *next;
  uint64_t hash;
} hub_hnode;

typedef struct hub_htab {
  hub_hnode **b;
  size_t nb; /* a power of two */
  size_t n;
} hub_htab;

/* Returns 0 or HUB_ERR_NOMEM (|t| then holds nothing to free). */
int hub_htab_init(const hub_mem *mem, hub_htab *t);
void hub_htab_free(const hub_mem *mem, hub_htab *t);
/* |node->hash| must be set. */
void hub_htab_insert(const hub_mem *mem, hub_htab *t, hub_hnode *node);
void hub_htab_remove(hub_htab *t, hub_hnode *node);

/* The first node of |hash|'s chain; the caller compares keys. */
static inline hub_hnode *hub_htab_chain(const hub_htab *t, uint64_t hash) {
  return t->b[hash & (t->nb - 1)];
}

static inline uint64_t hub_mix64(uint64_t x) {
  /* splitmix64's finaliser */
  x ^= x >> 30;
  x *= UINT64_C(0xbf58476d1ce4e5b9);
  x ^= x >> 27;
  x *= UINT64_C(0x94d049bb133111eb);
  x ^= x >> 31;
  return x;
}

static inline uint64_t hub_hash_str(uint64_t seed, const char *s, size_t len) {
  uint64_t h = UINT64_C(0xcbf29ce484222325) ^ seed;
  size_t i;
  for (i = 0; i < len; i++) {
    h ^= (unsigned char)s[i];
    h *= UINT64_C(0x100000001b3);
  }
  return hub_mix64(h);
}

#endif /* HUB_MAP_H */
