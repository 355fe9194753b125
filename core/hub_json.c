/*
 * hub_json.c - a strict, allocation-free JSON validator.
 *
 * Why not jsmn: jsmn is a tokenizer.  It accepts text that is not JSON
 * ("[1 2]", trailing commas, "nul" as a literal, raw control characters
 * in strings) and needs a token array sized to the input.  The hub relays
 * `data` verbatim to every subscriber and into Redis, so it has to reject
 * what is not JSON; this recursive-descent checker does that in one pass
 * and remembers the top-level members, which is all the protocol needs.
 */
#include "hub_json.h"

#include <string.h>

typedef struct json_cur {
  const unsigned char *s;
  size_t len;
  size_t pos;
  int too_deep; /* the nesting limit, not the syntax, stopped it */
} json_cur;

static void skip_ws(json_cur *c) {
  while (c->pos < c->len) {
    unsigned char ch = c->s[c->pos];
    if (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r') {
      return;
    }
    c->pos++;
  }
}

/* Follows the table in RFC 3629, section 4. */
size_t hub_utf8_seq(const uint8_t *s, size_t len) {
  unsigned char b0 = s[0];
  unsigned char lo = 0x80, hi = 0xBF;
  size_t n, i;

  if (b0 < 0x80) {
    return 1;
  }
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    n = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    n = 3;
    if (b0 == 0xE0) {
      lo = 0xA0; /* overlong */
    } else if (b0 == 0xED) {
      hi = 0x9F; /* surrogates */
    }
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    n = 4;
    if (b0 == 0xF0) {
      lo = 0x90; /* overlong */
    } else if (b0 == 0xF4) {
      hi = 0x8F; /* past U+10FFFF */
    }
  } else {
    return 0;
  }
  if (len < n) {
    return 0;
  }
  if (s[1] < lo || s[1] > hi) {
    return 0;
  }
  for (i = 2; i < n; i++) {
    if (s[i] < 0x80 || s[i] > 0xBF) {
      return 0;
    }
  }
  return n;
}

int hub_utf8_valid(const uint8_t *s, size_t len) {
  size_t i = 0;

  while (i < len) {
    size_t n;
    if (s[i] < 0x80) {
      i++;
      continue;
    }
    n = hub_utf8_seq(s + i, len - i);
    if (n == 0) {
      return 0;
    }
    i += n;
  }
  return 1;
}

static int is_hex(unsigned char ch) {
  return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') ||
         (ch >= 'A' && ch <= 'F');
}

static int parse_string(json_cur *c) {
  c->pos++; /* opening quote */
  while (c->pos < c->len) {
    unsigned char ch = c->s[c->pos];
    if (ch == '"') {
      c->pos++;
      return 0;
    }
    if (ch < 0x20) {
      return -1;
    }
    if (ch == '\\') {
      if (c->pos + 1 >= c->len) {
        return -1;
      }
      switch (c->s[c->pos + 1]) {
      case '"':
      case '\\':
      case '/':
      case 'b':
      case 'f':
      case 'n':
      case 'r':
      case 't':
        c->pos += 2;
        break;
      case 'u':
        if (c->pos + 6 > c->len || !is_hex(c->s[c->pos + 2]) ||
            !is_hex(c->s[c->pos + 3]) || !is_hex(c->s[c->pos + 4]) ||
            !is_hex(c->s[c->pos + 5])) {
          return -1;
        }
        c->pos += 6;
        break;
      default:
        return -1;
      }
      continue;
    }
    if (ch < 0x80) {
      c->pos++;
    } else {
      size_t n = hub_utf8_seq(c->s + c->pos, c->len - c->pos);
      if (n == 0) {
        return -1;
      }
      c->pos += n;
    }
  }
  return -1;
}

static int is_digit(unsigned char ch) {
  return ch >= '0' && ch <= '9';
}

static int parse_number(json_cur *c) {
  size_t start;

  if (c->pos < c->len && c->s[c->pos] == '-') {
    c->pos++;
  }
  if (c->pos >= c->len || !is_digit(c->s[c->pos])) {
    return -1;
  }
  if (c->s[c->pos] == '0') {
    c->pos++;
  } else {
    while (c->pos < c->len && is_digit(c->s[c->pos])) {
      c->pos++;
    }
  }
  if (c->pos < c->len && c->s[c->pos] == '.') {
    c->pos++;
    start = c->pos;
    while (c->pos < c->len && is_digit(c->s[c->pos])) {
      c->pos++;
    }
    if (c->pos == start) {
      return -1;
    }
  }
  if (c->pos < c->len && (c->s[c->pos] == 'e' || c->s[c->pos] == 'E')) {
    c->pos++;
    if (c->pos < c->len && (c->s[c->pos] == '+' || c->s[c->pos] == '-')) {
      c->pos++;
    }
    start = c->pos;
    while (c->pos < c->len && is_digit(c->s[c->pos])) {
      c->pos++;
    }
    if (c->pos == start) {
      return -1;
    }
  }
  return 0;
}

static int parse_literal(json_cur *c, const char *word) {
  size_t n = strlen(word);
  if (c->len - c->pos < n || memcmp(c->s + c->pos, word, n) != 0) {
    return -1;
  }
  c->pos += n;
  return 0;
}

typedef struct json_top {
  const char *const *keys;
  size_t nkeys;
  hub_json_member *found;
} json_top;

static int parse_value(json_cur *c, int depth, hub_json_kind *kind,
                       json_top *top);

static int parse_object(json_cur *c, int depth, json_top *top) {
  c->pos++; /* '{' */
  skip_ws(c);
  if (c->pos < c->len && c->s[c->pos] == '}') {
    c->pos++;
    return 0;
  }
  for (;;) {
    hub_json_member m;
    size_t key_start;

    skip_ws(c);
    if (c->pos >= c->len || c->s[c->pos] != '"') {
      return -1;
    }
    key_start = c->pos + 1;
    if (parse_string(c) != 0) {
      return -1;
    }
    m.key.off = key_start;
    m.key.len = c->pos - 1 - key_start;
    skip_ws(c);
    if (c->pos >= c->len || c->s[c->pos] != ':') {
      return -1;
    }
    c->pos++;
    skip_ws(c);
    m.value.off = c->pos;
    if (parse_value(c, depth + 1, &m.kind, NULL) != 0) {
      return -1;
    }
    m.value.len = c->pos - m.value.off;
    if (top != NULL) {
      size_t i;
      for (i = 0; i < top->nkeys; i++) {
        if (strlen(top->keys[i]) == m.key.len &&
            memcmp(c->s + m.key.off, top->keys[i], m.key.len) == 0) {
          top->found[i] = m;
        }
      }
    }
    skip_ws(c);
    if (c->pos >= c->len) {
      return -1;
    }
    if (c->s[c->pos] == ',') {
      c->pos++;
      continue;
    }
    if (c->s[c->pos] == '}') {
      c->pos++;
      return 0;
    }
    return -1;
  }
}

static int parse_array(json_cur *c, int depth) {
  c->pos++; /* '[' */
  skip_ws(c);
  if (c->pos < c->len && c->s[c->pos] == ']') {
    c->pos++;
    return 0;
  }
  for (;;) {
    hub_json_kind kind;

    skip_ws(c);
    if (parse_value(c, depth + 1, &kind, NULL) != 0) {
      return -1;
    }
    skip_ws(c);
    if (c->pos >= c->len) {
      return -1;
    }
    if (c->s[c->pos] == ',') {
      c->pos++;
      continue;
    }
    if (c->s[c->pos] == ']') {
      c->pos++;
      return 0;
    }
    return -1;
  }
}

static int parse_value(json_cur *c, int depth, hub_json_kind *kind,
                       json_top *top) {
  if (depth > HUB_JSON_DEPTH_MAX) {
    c->too_deep = 1;
    return -1;
  }
  if (c->pos >= c->len) {
    return -1;
  }
  switch (c->s[c->pos]) {
  case '{':
    *kind = HUB_JSON_OBJECT;
    return parse_object(c, depth, top);
  case '[':
    *kind = HUB_JSON_ARRAY;
    return parse_array(c, depth);
  case '"':
    *kind = HUB_JSON_STRING;
    return parse_string(c);
  case 't':
    *kind = HUB_JSON_LITERAL;
    return parse_literal(c, "true");
  case 'f':
    *kind = HUB_JSON_LITERAL;
    return parse_literal(c, "false");
  case 'n':
    *kind = HUB_JSON_LITERAL;
    return parse_literal(c, "null");
  default:
    *kind = HUB_JSON_NUMBER;
    return parse_number(c);
  }
}

int hub_json_parse(const char *s, size_t len, hub_json_kind *kind,
                   const char *const *keys, size_t nkeys,
                   hub_json_member *found) {
  json_cur c;
  json_top top;
  size_t i;

  c.s = (const unsigned char *)s;
  c.len = len;
  c.pos = 0;
  c.too_deep = 0;
  top.keys = keys;
  top.nkeys = nkeys;
  top.found = found;
  for (i = 0; i < nkeys; i++) {
    memset(&found[i], 0, sizeof(found[i]));
  }
  *kind = HUB_JSON_NONE;
  skip_ws(&c);
  if (parse_value(&c, 0, kind, &top) != 0) {
    return c.too_deep ? HUB_JSON_TOO_DEEP : -1;
  }
  skip_ws(&c);
  return c.pos == c.len ? 0 : -1;
}
