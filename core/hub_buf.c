/*
 * hub_buf.c - the allocator wrapper, refcounted buffers, and the small
 * bounded writer used to encode frames and registry values.
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

size_t hub_frame_header_len(size_t payload_len) {
  if (payload_len < 126) {
    return 2;
  }
  if (payload_len <= 0xFFFF) {
    return 4;
  }
  return 10;
}

hub_buf *hub_frame_new(const hub_mem *mem, size_t payload_len) {
  size_t hl = hub_frame_header_len(payload_len);
  hub_buf *b = hub_buf_new(mem, hl + payload_len);
  size_t i;

  if (b == NULL) {
    return NULL;
  }
  /* Server frames: FIN, text opcode, never masked (RFC 6455 5.1). */
  b->data[0] = 0x81;
  if (hl == 2) {
    b->data[1] = (uint8_t)payload_len;
  } else if (hl == 4) {
    b->data[1] = 126;
    b->data[2] = (uint8_t)(payload_len >> 8);
    b->data[3] = (uint8_t)payload_len;
  } else {
    b->data[1] = 127;
    for (i = 0; i < 8; i++) {
      b->data[2 + i] = (uint8_t)((uint64_t)payload_len >> (56 - 8 * i));
    }
  }
  b->payload_off = (uint32_t)hl;
  return b;
}

void hub_wr_mem(hub_wr *w, const void *s, size_t len) {
  HUB_ASSERT((size_t)(w->end - w->p) >= len);
  if (len > 0) {
    memcpy(w->p, s, len);
  }
  w->p += len;
}

void hub_wr_str(hub_wr *w, const char *s) {
  hub_wr_mem(w, s, strlen(s));
}

size_t hub_u64_len(uint64_t v) {
  size_t n = 1;
  while (v >= 10) {
    v /= 10;
    n++;
  }
  return n;
}

void hub_wr_u64(hub_wr *w, uint64_t v) {
  char tmp[20];
  size_t n = 0;
  do {
    tmp[n++] = (char)('0' + v % 10);
    v /= 10;
  } while (v != 0);
  HUB_ASSERT((size_t)(w->end - w->p) >= n);
  while (n > 0) {
    *w->p++ = (uint8_t)tmp[--n];
  }
}

size_t hub_i64_len(int64_t v) {
  if (v < 0) {
    return 1 + hub_u64_len((uint64_t)0 - (uint64_t)v);
  }
  return hub_u64_len((uint64_t)v);
}

void hub_wr_i64(hub_wr *w, int64_t v) {
  if (v < 0) {
    hub_wr_mem(w, "-", 1);
    hub_wr_u64(w, (uint64_t)0 - (uint64_t)v);
  } else {
    hub_wr_u64(w, (uint64_t)v);
  }
}

/* Bytes that JSON must escape: '"', '\\' and control characters. */
static size_t json_esc_len(unsigned char ch) {
  if (ch == '"' || ch == '\\' || ch == '\n' || ch == '\r' || ch == '\t' ||
      ch == '\b' || ch == '\f') {
    return 2;
  }
  return ch < 0x20 ? 6 : 1;
}

/* Bytes that are not valid UTF-8 become U+FFFD, so that what comes out
   is always valid in a text frame (RFC 6455 5.6) whatever came in. */
static const uint8_t replacement_char[3] = {0xEF, 0xBF, 0xBD};

size_t hub_json_str_len(const char *s, size_t len) {
  size_t n = 2, i = 0;
  while (i < len) {
    unsigned char ch = (unsigned char)s[i];
    if (ch < 0x80) {
      n += json_esc_len(ch);
      i++;
    } else {
      size_t k = hub_utf8_seq((const uint8_t *)s + i, len - i);
      n += k ? k : sizeof(replacement_char);
      i += k ? k : 1;
    }
  }
  return n;
}

void hub_wr_json_str(hub_wr *w, const char *s, size_t len) {
  static const char hex[] = "0123456789abcdef";
  size_t i;

  hub_wr_mem(w, "\"", 1);
  for (i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)s[i];
    char esc[6];
    if (ch >= 0x80) {
      size_t k = hub_utf8_seq((const uint8_t *)s + i, len - i);
      if (k == 0) {
        hub_wr_mem(w, replacement_char, sizeof(replacement_char));
      } else {
        hub_wr_mem(w, s + i, k);
        i += k - 1;
      }
      continue;
    }
    switch (ch) {
    case '"':
      hub_wr_mem(w, "\\\"", 2);
      break;
    case '\\':
      hub_wr_mem(w, "\\\\", 2);
      break;
    case '\n':
      hub_wr_mem(w, "\\n", 2);
      break;
    case '\r':
      hub_wr_mem(w, "\\r", 2);
      break;
    case '\t':
      hub_wr_mem(w, "\\t", 2);
      break;
    case '\b':
      hub_wr_mem(w, "\\b", 2);
      break;
    case '\f':
      hub_wr_mem(w, "\\f", 2);
      break;
    default:
      if (ch < 0x20) {
        esc[0] = '\\';
        esc[1] = 'u';
        esc[2] = '0';
        esc[3] = '0';
        esc[4] = hex[ch >> 4];
        esc[5] = hex[ch & 15];
        hub_wr_mem(w, esc, 6);
      } else {
        hub_wr_mem(w, &ch, 1);
      }
    }
  }
  hub_wr_mem(w, "\"", 1);
}
