/*
 * srv_log.c - one line per event, text (logfmt) or JSON, on stderr.
 *
 * A line is built in a stack buffer and written with one write(2): a
 * line from this process never interleaves with another, and a failed
 * or short write loses at most that line (stderr may be a closed pipe;
 * the server must not care).
 */
#include "srv_log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SRV_LOG_LINE_MAX 8192
#define SRV_LOG_FIELDS_MAX 32

static srv_log_level srv_log_min = SRV_LOG_INFO;
static int srv_log_json;

static const char *const srv_log_names[] = {"debug", "info", "warn", "error"};

int srv_log_parse_level(const char *s, srv_log_level *out) {
  int i;
  for (i = 0; i < 4; i++) {
    if (strcmp(s, srv_log_names[i]) == 0) {
      *out = (srv_log_level)i;
      return 0;
    }
  }
  return -1;
}

int srv_log_parse_format(const char *s, int *json_out) {
  if (strcmp(s, "text") == 0) {
    *json_out = 0;
  } else if (strcmp(s, "json") == 0) {
    *json_out = 1;
  } else {
    return -1;
  }
  return 0;
}

void srv_log_setup(srv_log_level min_level, int json) {
  srv_log_min = min_level;
  srv_log_json = json;
}

int srv_log_enabled(srv_log_level level) {
  return level >= srv_log_min;
}

/* The line being built: |n| bytes used of |cap|; overflow is dropped. */
typedef struct srv_line {
  char buf[SRV_LOG_LINE_MAX];
  size_t n;
} srv_line;

static void srv_put(srv_line *l, const char *p, size_t len) {
  size_t room = sizeof(l->buf) - 1 - l->n; /* keep one byte for '\n' */
  if (len > room) {
    len = room;
  }
  memcpy(l->buf + l->n, p, len);
  l->n += len;
}

static void srv_puts(srv_line *l, const char *s) {
  srv_put(l, s, strlen(s));
}

static void srv_put_json_str(srv_line *l, const char *s) {
  static const char hex[] = "0123456789abcdef";
  srv_put(l, "\"", 1);
  for (; *s; s++) {
    unsigned char ch = (unsigned char)*s;
    if (ch == '"' || ch == '\\') {
      char e[2] = {'\\', (char)ch};
      srv_put(l, e, 2);
    } else if (ch == '\n') {
      srv_put(l, "\\n", 2);
    } else if (ch == '\t') {
      srv_put(l, "\\t", 2);
    } else if (ch < 0x20) {
      char e[6] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
      srv_put(l, e, 6);
    } else {
      srv_put(l, (const char *)&ch, 1);
    }
  }
  srv_put(l, "\"", 1);
}

/* A plain decimal number ("12", "-3", "0.25"): written bare in JSON. */
static int srv_is_number(const char *s) {
  int digits = 0, dot = 0;
  if (*s == '-') {
    s++;
  }
  if (s[0] == '0' && s[1] >= '0' && s[1] <= '9') {
    return 0; /* JSON forbids leading zeros */
  }
  for (; *s; s++) {
    if (*s >= '0' && *s <= '9') {
      digits++;
    } else if (*s == '.' && !dot && digits > 0) {
      dot = 1;
      if (s[1] < '0' || s[1] > '9') {
        return 0;
      }
    } else {
      return 0;
    }
  }
  return digits > 0 && digits <= 18;
}

static void srv_put_text_val(srv_line *l, const char *s) {
  if (*s != '\0' && strpbrk(s, " \"=\t\n\\") == NULL) {
    srv_puts(l, s);
    return;
  }
  srv_put(l, "\"", 1);
  for (; *s; s++) {
    if (*s == '"' || *s == '\\') {
      srv_put(l, "\\", 1);
      srv_put(l, s, 1);
    } else if (*s == '\n') {
      srv_put(l, "\\n", 2);
    } else {
      srv_put(l, s, 1);
    }
  }
  srv_put(l, "\"", 1);
}

static void srv_timestamp(char *out, size_t cap) {
  struct timespec ts;
  struct tm tm;
  char day[32];
  if (clock_gettime(CLOCK_REALTIME, &ts) != 0 ||
      gmtime_r(&ts.tv_sec, &tm) == NULL) {
    snprintf(out, cap, "1970-01-01T00:00:00.000Z");
    return;
  }
  if (strftime(day, sizeof(day), "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
    day[0] = '\0';
  }
  snprintf(out, cap, "%.24s.%03dZ", day, (int)(ts.tv_nsec / 1000000) % 1000);
}

void srv_log_fields(srv_log_level level, const char *msg,
                    const char *const *fields) {
  srv_line l;
  char ts[64];
  size_t i;
  ssize_t w;
  size_t off = 0;
  if (!srv_log_enabled(level)) {
    return;
  }
  if ((unsigned)level > SRV_LOG_ERROR) {
    level = SRV_LOG_ERROR;
  }
  l.n = 0;
  srv_timestamp(ts, sizeof(ts));
  if (srv_log_json) {
    srv_puts(&l, "{\"ts\":\"");
    srv_puts(&l, ts);
    srv_puts(&l, "\",\"level\":\"");
    srv_puts(&l, srv_log_names[level]);
    srv_puts(&l, "\",\"msg\":");
    srv_put_json_str(&l, msg);
    for (i = 0; fields != NULL && fields[i] != NULL; i += 2) {
      const char *k = fields[i];
      const char *v = fields[i + 1] != NULL ? fields[i + 1] : "";
      int num = k[0] == '#';
      srv_put(&l, ",", 1);
      srv_put_json_str(&l, k + num);
      srv_put(&l, ":", 1);
      if (num && srv_is_number(v)) {
        srv_puts(&l, v);
      } else {
        srv_put_json_str(&l, v);
      }
    }
    srv_put(&l, "}", 1);
    /* A cut line is no longer JSON; end it so that it still parses. */
    if (l.n == sizeof(l.buf) - 1) {
      l.n = 0;
      srv_puts(&l, "{\"ts\":\"");
      srv_puts(&l, ts);
      srv_puts(&l, "\",\"level\":\"");
      srv_puts(&l, srv_log_names[level]);
      srv_puts(&l, "\",\"msg\":\"(log line too long)\"}");
    }
  } else {
    srv_puts(&l, ts);
    srv_put(&l, " ", 1);
    srv_puts(&l, srv_log_names[level]);
    srv_put(&l, " ", 1);
    srv_puts(&l, msg);
    for (i = 0; fields != NULL && fields[i] != NULL; i += 2) {
      srv_put(&l, " ", 1);
      srv_puts(&l, fields[i] + (fields[i][0] == '#'));
      srv_put(&l, "=", 1);
      srv_put_text_val(&l, fields[i + 1] != NULL ? fields[i + 1] : "");
    }
  }
  l.buf[l.n++] = '\n';
  while (off < l.n) {
    w = write(STDERR_FILENO, l.buf + off, l.n - off);
    if (w < 0 && errno == EINTR) {
      continue;
    }
    if (w <= 0) {
      break;
    }
    off += (size_t)w;
  }
}

void srv_logv(srv_log_level level, const char *msg, va_list ap) {
  const char *fields[2 * SRV_LOG_FIELDS_MAX + 1];
  size_t n = 0;
  const char *k;
  if (!srv_log_enabled(level)) {
    return;
  }
  while ((k = va_arg(ap, const char *)) != NULL) {
    const char *v = va_arg(ap, const char *);
    if (n + 2 < sizeof(fields) / sizeof(fields[0])) {
      fields[n++] = k;
      fields[n++] = v;
    }
  }
  fields[n] = NULL;
  srv_log_fields(level, msg, fields);
}

void srv_log(srv_log_level level, const char *msg, ...) {
  va_list ap;
  va_start(ap, msg);
  srv_logv(level, msg, ap);
  va_end(ap);
}
