/*
 * test_map.c - the seeded hash table (core/hub_map.[ch]), as a data
 * structure of its own: lookups through growth, removal, a resize that
 * fails for memory (insertion still succeeds), and the seed changing
 * only the hashes.
 */
#include "harness.h"

#include <string.h>

#include "hub_int.h"

typedef struct item {
  hub_hnode node;
  uint64_t key;
} item;

static uint64_t hash_of(uint64_t seed, uint64_t key) {
  return hub_mix64(key ^ seed);
}

static item *find(const hub_htab *t, uint64_t seed, uint64_t key) {
  uint64_t h = hash_of(seed, key);
  hub_hnode *p;

  for (p = hub_htab_chain(t, h); p != NULL; p = p->next) {
    item *it = CONTAINER_OF(p, item, node);
    if (p->hash == h && it->key == key) {
      return it;
    }
  }
  return NULL;
}

static void fill(th_mem *m, hub_htab *t, item *items, size_t n, uint64_t seed) {
  size_t i;

  for (i = 0; i < n; i++) {
    items[i].key = 1000 + i;
    items[i].node.hash = hash_of(seed, items[i].key);
    hub_htab_insert(&m->mem, t, &items[i].node);
  }
}

/* Every key is found through several doublings; absent keys are not. */
static void test_map_insert_find_through_growth(void **state) {
  enum { N = 1000 };
  static item items[N];
  th_mem m;
  hub_htab t;
  size_t i;

  (void)state;
  th_mem_init(&m);
  assert_int_equal(hub_htab_init(&m.mem, &t), 0);
  fill(&m, &t, items, N, 7);
  assert_int_equal(t.n, N);
  assert_true(t.nb >= N);
  for (i = 0; i < N; i++) {
    assert_ptr_equal(find(&t, 7, 1000 + i), &items[i]);
  }
  assert_null(find(&t, 7, 999));
  assert_null(find(&t, 7, 1000 + N));
  hub_htab_free(&m.mem, &t);
  assert_int_equal(m.live, 0);
}

/* Removal unlinks exactly one node, from any place in its chain. */
static void test_map_remove(void **state) {
  enum { N = 300 };
  static item items[N];
  th_mem m;
  hub_htab t;
  size_t i;

  (void)state;
  th_mem_init(&m);
  assert_int_equal(hub_htab_init(&m.mem, &t), 0);
  fill(&m, &t, items, N, 3);
  for (i = 0; i < N; i += 2) {
    hub_htab_remove(&t, &items[i].node);
  }
  assert_int_equal(t.n, N / 2);
  for (i = 0; i < N; i++) {
    assert_ptr_equal(find(&t, 3, 1000 + i), i % 2 ? &items[i] : NULL);
  }
  hub_htab_free(&m.mem, &t);
  assert_int_equal(m.live, 0);
}

/* A resize refused by the allocator leaves the table longer-chained:
   insertion never fails and every key is still found. */
static void test_map_insert_without_memory(void **state) {
  enum { N = 500 };
  static item items[N];
  th_mem m;
  hub_htab t;
  size_t i, nb;

  (void)state;
  th_mem_init(&m);
  assert_int_equal(hub_htab_init(&m.mem, &t), 0);
  nb = t.nb;
  th_mem_fail_at(&m, 1, 1);
  fill(&m, &t, items, N, 11);
  assert_true(m.failures > 0);
  assert_int_equal(t.nb, nb);
  assert_int_equal(t.n, N);
  for (i = 0; i < N; i++) {
    assert_ptr_equal(find(&t, 11, 1000 + i), &items[i]);
  }
  th_mem_fail_at(&m, 0, 0);
  hub_htab_free(&m.mem, &t);
  assert_int_equal(m.live, 0);

  th_mem_fail_at(&m, 1, 0);
  assert_int_equal(hub_htab_init(&m.mem, &t), HUB_ERR_NOMEM);
  assert_int_equal(m.live, 0);
}

/* The seed changes the hashes (so chains), not what is found. */
static void test_map_seed_changes_hashes_only(void **state) {
  enum { N = 200 };
  static item a[N], b[N];
  th_mem m;
  hub_htab ta, tb;
  size_t i, same = 0;

  (void)state;
  th_mem_init(&m);
  assert_int_equal(hub_htab_init(&m.mem, &ta), 0);
  assert_int_equal(hub_htab_init(&m.mem, &tb), 0);
  fill(&m, &ta, a, N, 1);
  fill(&m, &tb, b, N, 2);
  for (i = 0; i < N; i++) {
    assert_ptr_equal(find(&ta, 1, 1000 + i), &a[i]);
    assert_ptr_equal(find(&tb, 2, 1000 + i), &b[i]);
    same += a[i].node.hash == b[i].node.hash;
  }
  assert_int_equal(same, 0);
  assert_true(hub_hash_str(1, "news", 4) != hub_hash_str(2, "news", 4));
  assert_int_equal(hub_hash_str(1, "news", 4), hub_hash_str(1, "news", 4));
  hub_htab_free(&m.mem, &ta);
  hub_htab_free(&m.mem, &tb);
  assert_int_equal(m.live, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_map_insert_find_through_growth),
    cmocka_unit_test(test_map_remove),
    cmocka_unit_test(test_map_insert_without_memory),
    cmocka_unit_test(test_map_seed_changes_hashes_only),
  };

  return cmocka_run_group_tests(tests, 0, 0);
}
