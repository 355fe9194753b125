/*
 * hub_frame.c - encoders: server WebSocket frames, the client protocol's
 * replies and message envelope, and the bounded JSON writer they (and
 * the registry values) are written with.  Every encoder computes the
 * exact length first, allocates once, and asserts that it wrote exactly
 * that much.
 */
#include "hub_int.h"

#include <string.h>

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

hub_buf *hub_frame_new_wr(const hub_mem *mem, size_t payload_len, hub_wr *w) {
  hub_buf *b = hub_frame_new(mem, payload_len);

  if (b != NULL) {
    w->p = b->data + b->payload_off;
    w->end = b->data + b->len;
  }
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

/* ------------------------------------------------- client frames */

hub_buf *hub_frame_reply(hub *h, const char *type, const char *channel,
                         size_t channel_len, const char *id, size_t id_len) {
  size_t n = sizeof("{\"type\":\"") - 1 + strlen(type) +
             sizeof("\",\"channel\":\"") - 1 + channel_len + 2;
  hub_buf *b;
  hub_wr w;

  if (id != NULL) {
    n += sizeof(",\"id\":") - 1 + id_len;
  }
  b = hub_frame_new_wr(h->mem, n, &w);
  if (b == NULL) {
    return NULL;
  }
  hub_wr_str(&w, "{\"type\":\"");
  hub_wr_str(&w, type);
  hub_wr_str(&w, "\",\"channel\":\"");
  hub_wr_mem(&w, channel, channel_len);
  hub_wr_str(&w, "\"");
  if (id != NULL) {
    hub_wr_str(&w, ",\"id\":");
    hub_wr_mem(&w, id, id_len);
  }
  hub_wr_str(&w, "}");
  HUB_ASSERT(w.p == w.end);
  return b;
}

hub_buf *hub_frame_error(hub *h, const char *id, size_t id_len,
                         const char *msg) {
  size_t msg_len = strlen(msg);
  size_t n = sizeof("{\"type\":\"error\",\"error\":}") - 1 +
             hub_json_str_len(msg, msg_len);
  hub_buf *b;
  hub_wr w;

  if (id != NULL) {
    n += sizeof(",\"id\":") - 1 + id_len;
  }
  b = hub_frame_new_wr(h->mem, n, &w);
  if (b == NULL) {
    return NULL;
  }
  hub_wr_str(&w, "{\"type\":\"error\"");
  if (id != NULL) {
    hub_wr_str(&w, ",\"id\":");
    hub_wr_mem(&w, id, id_len);
  }
  hub_wr_str(&w, ",\"error\":");
  hub_wr_json_str(&w, msg, msg_len);
  hub_wr_str(&w, "}");
  HUB_ASSERT(w.p == w.end);
  return b;
}

hub_buf *hub_frame_message(hub *h, const char *channel, size_t channel_len,
                           const char *data, size_t data_len, int as_string) {
  size_t dl = as_string ? hub_json_str_len(data, data_len) : data_len;
  size_t n = sizeof("{\"type\":\"message\",\"channel\":\"\",\"data\":}") - 1 +
             channel_len + dl;
  hub_wr w;
  hub_buf *b = hub_frame_new_wr(h->mem, n, &w);

  if (b == NULL) {
    return NULL;
  }
  hub_wr_str(&w, "{\"type\":\"message\",\"channel\":\"");
  hub_wr_mem(&w, channel, channel_len);
  hub_wr_str(&w, "\",\"data\":");
  if (as_string) {
    hub_wr_json_str(&w, data, data_len);
  } else {
    hub_wr_mem(&w, data, data_len);
  }
  hub_wr_str(&w, "}");
  HUB_ASSERT(w.p == w.end);
  return b;
}
