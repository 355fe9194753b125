/*
 * srv_log.h - the server's event log: one line per event on stderr.
 *
 * Every line carries an ISO-8601 UTC time with milliseconds, a level, a
 * message and the event's fields (key/value pairs).  Two formats:
 *
 *   text  2026-12-01T09:30:00.123Z info redis backplane up addr=127.0.0.1:6379
 *   json  {"ts":"2026-12-01T09:30:00.123Z","level":"info",
 *          "msg":"redis backplane up","addr":"127.0.0.1:6379"}
 *
 * In text, a value with a space, a quote or '=' is written in double
 * quotes (logfmt).  In JSON, the values of numeric fields (see srv_log)
 * are numbers, every other value is a string.
 *
 * The wall clock is read here, and only here: core/, shell/ and sim/
 * never see it.  The log's settings are process-wide (like syslog's):
 * they are set once, by main, before the loop starts.  Each line leaves
 * in one write(2), so lines never interleave.
 */
#ifndef SRV_LOG_H
#define SRV_LOG_H

#include <stdarg.h>

/* The same numbers as bp_redis.h's BP_LOG_* (the backplane's callback). */
typedef enum srv_log_level {
  SRV_LOG_DEBUG = 0,
  SRV_LOG_INFO = 1,
  SRV_LOG_WARN = 2,
  SRV_LOG_ERROR = 3
} srv_log_level;

/* Parses "debug", "info", "warn" or "error"; returns 0 or -1. */
int srv_log_parse_level(const char *s, srv_log_level *out);
/* Parses "text" or "json" (*json_out 0 or 1); returns 0 or -1. */
int srv_log_parse_format(const char *s, int *json_out);

/* Sets the lowest level written and the format (default: info, text). */
void srv_log_setup(srv_log_level min_level, int json);

/* Whether a line at |level| would be written. */
int srv_log_enabled(srv_log_level level);

/*
 * srv_log writes one line: |msg| and then the fields, given as key,
 * value string pairs and ended by NULL.  A key that starts with '#'
 * holds a number: JSON writes its value bare (when it is a plain
 * decimal number); the '#' itself is not written.  Every other value is
 * a string, whatever it looks like (an instance id "1" stays "1"):
 *
 *   srv_log(SRV_LOG_WARN, "redis connect failed", "addr", a,
 *           "reason", r, (const char *)NULL);
 *
 * Every string is borrowed for the call.  A NULL value is written as "".
 * A line longer than the internal buffer (8 KiB) is cut short.
 */
void srv_log(srv_log_level level, const char *msg, ...);
void srv_logv(srv_log_level level, const char *msg, va_list ap);

/* The same, with the fields as an array (key, value, ..., NULL). */
void srv_log_fields(srv_log_level level, const char *msg,
                    const char *const *fields);

#endif /* SRV_LOG_H */
