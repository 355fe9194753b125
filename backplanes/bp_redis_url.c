/*
 * bp_redis_url.c - the credentials and socket forms of --redis, included
 * by bp_redis.c (it needs the bp_redis struct):
 *
 *   redis://[user:password@]host[:port][/db]   AUTH [user] password
 *   unix:///path/to/redis.sock[?db=N]          a unix socket
 *
 * User and password may be percent-encoded (a password holding '@' or
 * ':').  An empty user ("redis://:pw@host") authenticates as the default
 * user (AUTH password); otherwise AUTH user password (Redis 6 ACLs).
 */

/* Percent-decodes [s, e) into out (cap bytes with its NUL). */
static int bp_redis_unescape(const char *s, const char *e, char *out,
                             size_t cap) {
  size_t n = 0;
  for (; s < e; s++) {
    char ch = *s;
    if (ch == '%') {
      if (e - s < 3 || sh_hex_digit(s[1]) < 0 || sh_hex_digit(s[2]) < 0) {
        return -1;
      }
      ch = (char)(sh_hex_digit(s[1]) * 16 + sh_hex_digit(s[2]));
      s += 2;
    }
    if (n + 1 >= cap || ch == '\0') {
      return -1;
    }
    out[n++] = ch;
  }
  out[n] = '\0';
  return 0;
}

/* Reads the scheme and any user:password@ off *p.  Returns 1 (a
   redis:// URL, *p at the host), 0 (a unix:// URL, fully read) or -1. */
static int bp_redis_parse_auth(bp_redis *r, const char **p) {
  const char *s = *p, *at, *colon, *q;
  r->unix_path[0] = r->user[0] = r->pass[0] = '\0';
  r->has_auth = 0;
  r->db = 0;
  if (strncmp(s, "unix://", 7) == 0) {
    s += 7;
    q = strchr(s, '?');
    if (*s != '/' || bp_redis_unescape(s, q ? q : s + strlen(s), r->unix_path,
                                       sizeof(r->unix_path)) != 0) {
      return -1;
    }
    if (q != NULL) {
      char *end;
      long v;
      if (strncmp(q, "?db=", 4) != 0) {
        return -1;
      }
      v = strtol(q + 4, &end, 10);
      if (end == q + 4 || *end != '\0' || v < 0) {
        return -1;
      }
      r->db = (int)v;
    }
    return 0;
  }
  if (strncmp(s, "redis://", 8) != 0) {
    return -1;
  }
  s += 8;
  at = strrchr(s, '@');
  if (at != NULL) {
    colon = memchr(s, ':', (size_t)(at - s));
    if (colon == NULL ||
        bp_redis_unescape(s, colon, r->user, sizeof(r->user)) != 0 ||
        bp_redis_unescape(colon + 1, at, r->pass, sizeof(r->pass)) != 0 ||
        r->pass[0] == '\0') {
      return -1;
    }
    r->has_auth = 1;
    s = at + 1;
  }
  *p = s;
  return 1;
}
