/*
 * hub_buf.c - the allocator wrapper, refcounted buffers and the
 * assertion handler.
 */
#include "hub_int.h"

#include <stdlib.h>
#include <string.h>

static void *default_malloc(size_t size, void *user) {
  (void)user;
  return malloc(size);
}

static void default_free(void *ptr, void *user) {
  (void)user;
  free(ptr);
}

static void *default_realloc(void *ptr, size_t size, void *user) {
  (void)user;
  return realloc(ptr, size);
}

static const hub_mem mem_default = {NULL, default_malloc, default_free,
                                    default_realloc};

const hub_mem *hub_mem_default(void) {
  return &mem_default;
}

void *hub_mem_malloc(const hub_mem *mem, size_t size) {
  return mem->malloc(size, mem->user);
}

void *hub_mem_realloc(const hub_mem *mem, void *ptr, size_t size) {
  return mem->realloc(ptr, size, mem->user);
}

void hub_mem_free(const hub_mem *mem, void *ptr) {
  if (ptr != NULL) {
    mem->free(ptr, mem->user);
  }
}

_Noreturn void hub_assert_fail(const char *cond, const char *file, int line) {
  /* No stdio in core: the condition is kept where a debugger or a core
     dump shows it. */
  volatile const char *keep_cond = cond;
  volatile const char *keep_file = file;
  volatile int keep_line = line;
  (void)keep_cond;
  (void)keep_file;
  (void)keep_line;
  abort();
}

hub_buf *hub_buf_new(const hub_mem *mem, size_t len) {
  hub_buf *b;

  if (len > UINT32_MAX) {
    return NULL;
  }
  b = hub_mem_malloc(mem, sizeof(*b) + len + 1);
  if (b == NULL) {
    return NULL;
  }
  b->mem = mem;
  b->ref = 1;
  b->payload_off = 0;
  b->len = len;
  b->data[len] = 0;
  return b;
}

hub_buf *hub_buf_new_copy(const hub_mem *mem, const void *s, size_t len) {
  hub_buf *b = hub_buf_new(mem, len);
  if (b != NULL && len > 0) {
    memcpy(b->data, s, len);
  }
  return b;
}

void hub_buf_ref(hub_buf *b) {
  HUB_ASSERT(b->ref > 0 && b->ref < UINT32_MAX);
  b->ref++;
}

void hub_buf_unref(hub_buf *b) {
  if (b == NULL) {
    return;
  }
  HUB_ASSERT(b->ref > 0);
  if (--b->ref == 0) {
    hub_mem_free(b->mem, b);
  }
}
