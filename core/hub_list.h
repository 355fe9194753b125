/*
 * hub_list.h - intrusive doubly linked lists (as wslay_queue and
 * uv__queue).  Internal to core/; included through hub_int.h.  Every operation
 * is O(1) and inline: the fan-out walks these lists once per delivery.
 */
#ifndef HUB_LIST_H
#define HUB_LIST_H

#include <stddef.h>

#ifndef HUB_ASSERT
#  error "include hub_int.h, which defines HUB_ASSERT, instead"
#endif

typedef struct hub_link {
  struct hub_link *prev;
  struct hub_link *next;
} hub_link;

#define CONTAINER_OF(ptr, type, field)                                         \
  ((type *)(void *)((char *)(ptr)-offsetof(type, field)))

static inline void hub_link_init(hub_link *l) {
  l->prev = l->next = l;
}

static inline int hub_link_empty(const hub_link *l) {
  return l->next == l;
}

/* A node that is in no list points at itself. */
static inline int hub_link_linked(const hub_link *n) {
  return n->next != n;
}

static inline void hub_link_remove(hub_link *n) {
  n->prev->next = n->next;
  n->next->prev = n->prev;
  hub_link_init(n);
}

static inline void hub_link_push_tail(hub_link *head, hub_link *n) {
  HUB_ASSERT(!hub_link_linked(n));
  n->prev = head->prev;
  n->next = head;
  head->prev->next = n;
  head->prev = n;
}

static inline void hub_link_move_tail(hub_link *head, hub_link *n) {
  if (hub_link_linked(n)) {
    hub_link_remove(n);
  }
  hub_link_push_tail(head, n);
}

static inline size_t hub_link_len(const hub_link *l) {
  size_t n = 0;
  const hub_link *p;
  for (p = l->next; p != l; p = p->next) {
    n++;
  }
  return n;
}

#endif /* HUB_LIST_H */
