/*
 * sh_claims.c - a verified token's claims JSON turned into the hub_auth
 * the core takes, shared by the server (after libjwt has checked the
 * signature) and the simulator (which checks none), so both hand the
 * core the same claims.  A small strict reader of one JSON object: the
 * members it needs are decoded, every other value is skipped (to a
 * bounded depth).  No allocation: the strings land in the sh_claims.
 */
#include "shell.h"

#include <string.h>

typedef struct rd {
  const char *p, *end;
  sh_claims *c;
} rd;

static void ws(rd *r) {
  while (r->p < r->end &&
         (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r')) {
    r->p++;
  }
}

static int hex4(rd *r, uint32_t *u) {
  int i;
  *u = 0;
  if (r->end - r->p < 4) {
    return -1;
  }
  for (i = 0; i < 4; i++) {
    int v = sh_hex_digit(r->p[i]);
    if (v < 0) {
      return -1;
    }
    *u = (*u << 4) | (uint32_t)v;
  }
  r->p += 4;
  return 0;
}

/* Reads a string at r->p (a quote) into out (cap bytes, NUL-terminated;
   out NULL: skip).  Escapes are decoded; \u0000 is refused. */
static int str(rd *r, char *out, size_t cap, size_t *len) {
  size_t n = 0;
  if (r->p >= r->end || *r->p != '"') {
    return -1;
  }
  r->p++;
  for (;;) {
    char b[4];
    size_t bl = 1;
    if (r->p >= r->end) {
      return -1;
    }
    b[0] = *r->p++;
    if (b[0] == '"') {
      break;
    }
    if ((unsigned char)b[0] < 0x20) {
      return -1;
    }
    if (b[0] == '\\') {
      uint32_t u;
      if (r->p >= r->end) {
        return -1;
      }
      switch (*r->p++) {
      case '"':
        b[0] = '"';
        break;
      case '\\':
        b[0] = '\\';
        break;
      case '/':
        b[0] = '/';
        break;
      case 'b':
        b[0] = '\b';
        break;
      case 'f':
        b[0] = '\f';
        break;
      case 'n':
        b[0] = '\n';
        break;
      case 'r':
        b[0] = '\r';
        break;
      case 't':
        b[0] = '\t';
        break;
      case 'u':
        if (hex4(r, &u) != 0 || u == 0) {
          return -1;
        }
        if (u >= 0xd800 && u < 0xdc00) {
          uint32_t lo;
          if (r->end - r->p < 2 || r->p[0] != '\\' || r->p[1] != 'u') {
            return -1;
          }
          r->p += 2;
          if (hex4(r, &lo) != 0 || lo < 0xdc00 || lo >= 0xe000) {
            return -1;
          }
          u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
        } else if (u >= 0xdc00 && u < 0xe000) {
          return -1;
        }
        if (u < 0x80) {
          b[0] = (char)u;
        } else if (u < 0x800) {
          b[0] = (char)(0xc0 | (u >> 6));
          b[1] = (char)(0x80 | (u & 0x3f));
          bl = 2;
        } else if (u < 0x10000) {
          b[0] = (char)(0xe0 | (u >> 12));
          b[1] = (char)(0x80 | ((u >> 6) & 0x3f));
          b[2] = (char)(0x80 | (u & 0x3f));
          bl = 3;
        } else {
          b[0] = (char)(0xf0 | (u >> 18));
          b[1] = (char)(0x80 | ((u >> 12) & 0x3f));
          b[2] = (char)(0x80 | ((u >> 6) & 0x3f));
          b[3] = (char)(0x80 | (u & 0x3f));
          bl = 4;
        }
        break;
      default:
        return -1;
      }
    }
    if (out != NULL) {
      if (n + bl + 1 > cap) {
        return -2; /* too long */
      }
      memcpy(out + n, b, bl);
    }
    n += bl;
  }
  if (out != NULL) {
    out[n] = '\0';
  }
  if (len != NULL) {
    *len = n;
  }
  return 0;
}

static int skip(rd *r, int depth) {
  ws(r);
  if (r->p >= r->end || depth > 32) {
    return -1;
  }
  if (*r->p == '"') {
    return str(r, NULL, 0, NULL);
  }
  if (*r->p == '{' || *r->p == '[') {
    char close = *r->p == '{' ? '}' : ']';
    int obj = close == '}';
    r->p++;
    ws(r);
    if (r->p < r->end && *r->p == close) {
      r->p++;
      return 0;
    }
    for (;;) {
      if (obj) {
        ws(r);
        if (str(r, NULL, 0, NULL) != 0) {
          return -1;
        }
        ws(r);
        if (r->p >= r->end || *r->p++ != ':') {
          return -1;
        }
      }
      if (skip(r, depth + 1) != 0) {
        return -1;
      }
      ws(r);
      if (r->p >= r->end) {
        return -1;
      }
      if (*r->p == ',') {
        r->p++;
        continue;
      }
      if (*r->p++ != close) {
        return -1;
      }
      return 0;
    }
  }
  /* A number or a literal: its characters. */
  {
    const char *s = r->p;
    while (r->p < r->end && ((*r->p >= '0' && *r->p <= '9') || *r->p == '-' ||
                             *r->p == '+' || *r->p == '.' || *r->p == 'e' ||
                             *r->p == 'E' || (*r->p >= 'a' && *r->p <= 'z'))) {
      r->p++;
    }
    return r->p > s ? 0 : -1;
  }
}

/* A NumericDate: an integer, a fraction truncated; no exponent. */
static int num(rd *r, int64_t *v) {
  int neg = 0, digits = 0;
  uint64_t x = 0;
  ws(r);
  if (r->p < r->end && *r->p == '-') {
    neg = 1;
    r->p++;
  }
  while (r->p < r->end && *r->p >= '0' && *r->p <= '9') {
    if (x > (UINT64_C(1) << 62) / 10) {
      return -1;
    }
    x = x * 10 + (uint64_t)(*r->p++ - '0');
    digits++;
  }
  if (digits == 0) {
    return -1;
  }
  if (r->p < r->end && *r->p == '.') {
    r->p++;
    while (r->p < r->end && *r->p >= '0' && *r->p <= '9') {
      r->p++;
    }
  }
  if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
    return -1;
  }
  *v = neg ? -(int64_t)x : (int64_t)x;
  return 0;
}

/* An array of strings into the claims' glob storage. */
static int globs(rd *r, const char **v, size_t *n, const char **err,
                 const char *what) {
  sh_claims *c = r->c;
  *n = 0;
  ws(r);
  if (r->p >= r->end || *r->p != '[') {
    *err = what;
    return -1;
  }
  r->p++;
  ws(r);
  if (r->p < r->end && *r->p == ']') {
    r->p++;
    return 0;
  }
  for (;;) {
    size_t len = 0;
    int rc;
    ws(r);
    if (*n >= HUB_AUTH_GLOBS_MAX) {
      *err = "too many grants";
      return -1;
    }
    rc = str(r, c->bytes + c->used, sizeof(c->bytes) - c->used, &len);
    if (rc == -2 || (rc == 0 && len > HUB_AUTH_GLOB_MAX)) {
      *err = "grants too long";
      return -1;
    }
    if (rc != 0) {
      *err = what;
      return -1;
    }
    v[(*n)++] = c->bytes + c->used;
    c->used += len + 1;
    ws(r);
    if (r->p < r->end && *r->p == ',') {
      r->p++;
      continue;
    }
    if (r->p < r->end && *r->p == ']') {
      r->p++;
      return 0;
    }
    *err = what;
    return -1;
  }
}

int sh_claims_parse(sh_claims *c, const char *json, size_t len,
                    const char **err) {
  rd r;
  int have_sub = 0;

  memset(&c->auth, 0, sizeof(c->auth));
  c->used = 0;
  c->has_exp = c->has_nbf = 0;
  c->exp = c->nbf = 0;
  c->auth.expires = HUB_TSTAMP_NONE;
  c->auth.subscribe = c->subscribe;
  c->auth.publish = c->publish;
  r.p = json;
  r.end = json + len;
  r.c = c;
  *err = "malformed claims";
  ws(&r);
  if (r.p >= r.end || *r.p++ != '{') {
    return -1;
  }
  ws(&r);
  if (r.p < r.end && *r.p == '}') {
    r.p++;
  } else {
    for (;;) {
      char key[16];
      const char *ks;
      size_t klen;
      int rc;
      ws(&r);
      /* The key as raw text: the claims this reads have no escapes in
         their names, so an escaped key is some other claim. */
      ks = r.p + 1;
      if (str(&r, NULL, 0, NULL) != 0) {
        *err = "malformed claims";
        return -1;
      }
      klen = (size_t)(r.p - 1 - ks);
      key[0] = '\0';
      if (klen < sizeof(key)) {
        memcpy(key, ks, klen);
        key[klen] = '\0';
      }
      ws(&r);
      if (r.p >= r.end || *r.p++ != ':') {
        return -1;
      }
      ws(&r);
      if (strcmp(key, "sub") == 0) {
        size_t sl;
        char sub[HUB_AUTH_SUB_MAX + 1];
        rc = r.p < r.end && *r.p == '"' ? str(&r, sub, sizeof(sub), &sl) : -1;
        if (rc != 0 || sl == 0) {
          *err = "sub must be a string of 1 to 128 bytes";
          return -1;
        }
        memcpy(c->sub, sub, sl + 1);
        c->auth.sub = c->sub;
        c->auth.sub_len = sl;
        have_sub = 1;
      } else if (strcmp(key, "subscribe") == 0) {
        if (globs(&r, c->subscribe, &c->auth.nsubscribe, err,
                  "subscribe must be an array of strings") != 0) {
          return -1;
        }
      } else if (strcmp(key, "publish") == 0) {
        if (globs(&r, c->publish, &c->auth.npublish, err,
                  "publish must be an array of strings") != 0) {
          return -1;
        }
      } else if (strcmp(key, "exp") == 0) {
        if (num(&r, &c->exp) != 0) {
          *err = "exp must be a number";
          return -1;
        }
        c->has_exp = 1;
      } else if (strcmp(key, "nbf") == 0) {
        if (num(&r, &c->nbf) != 0) {
          *err = "nbf must be a number";
          return -1;
        }
        c->has_nbf = 1;
      } else if (skip(&r, 0) != 0) {
        *err = "malformed claims";
        return -1;
      }
      ws(&r);
      if (r.p < r.end && *r.p == ',') {
        r.p++;
        continue;
      }
      if (r.p < r.end && *r.p == '}') {
        r.p++;
        break;
      }
      *err = "malformed claims";
      return -1;
    }
  }
  ws(&r);
  if (r.p != r.end) {
    *err = "malformed claims";
    return -1;
  }
  if (!have_sub) {
    *err = "missing sub";
    return -1;
  }
  *err = NULL;
  return 0;
}
