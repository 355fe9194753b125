/*
 * fuzz_scn.c - libFuzzer target: the scenario parser and runner
 * (sim/sim_scenario.c) over the whole simulated world.
 *
 * The input is scenario text.  What a scenario may ask for is bounded
 * before a line reaches the runner, so that every input finishes in
 * milliseconds: a line is dropped when it names a duration over 2 s (or,
 * in `config`, under 10 ms: a 1 ns ping interval is a flood of events),
 * a number over 100000, more than 4 instances or more than 20 repeats;
 * at most 48 lines of at most 200 bytes, and at most 10 s of `run`,
 * `within` and `for` in all.  A failing `expect` is a result, not a bug:
 * only crashes, sanitizer reports and leaks count.
 */
#include "sim.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FZ_LINES_MAX 48
#define FZ_LINE_MAX 200

/* A duration token in ns, or -1 if |t| is not one. */
static long long fz_duration(const char *t) {
  char *end;
  double v = strtod(t, &end);
  if (end == t || !(v >= 0)) {
    return -1;
  }
  if (v > 1e12) {
    return 1000000000000000000LL; /* too long for any unit */
  }
  if (strcmp(end, "ms") == 0) {
    return (long long)(v * 1e6);
  }
  if (strcmp(end, "s") == 0) {
    return (long long)(v * 1e9);
  }
  if (strcmp(end, "us") == 0) {
    return (long long)(v * 1e3);
  }
  if (strcmp(end, "ns") == 0) {
    return (long long)v;
  }
  if (strcmp(end, "m") == 0) {
    return (long long)(v * 60e9);
  }
  return -1;
}

/* 1 if the line may run; adds what it moves the clock to *clock_ns. */
static int fz_line_ok(const char *line, long long *clock_ns) {
  char buf[FZ_LINE_MAX + 1];
  char *save = NULL, *t, *first = NULL;
  int is_config = 0, idx = 0, prev_repeat = 0, prev_instances = 0;
  long long moves = 0;
  snprintf(buf, sizeof(buf), "%s", line);
  for (t = strtok_r(buf, " \t", &save); t != NULL;
       t = strtok_r(NULL, " \t", &save), idx++) {
    long long d = fz_duration(t);
    char *end;
    unsigned long long u = strtoull(t, &end, 10);
    if (t[0] == '#') {
      break;
    }
    if (idx == 0) {
      first = t;
      is_config = strcmp(t, "config") == 0;
    }
    if (d >= 0) {
      if (d > 2000000000LL || (is_config && d < 10000000LL)) {
        return 0;
      }
      moves += d;
    }
    if (end != t && *end == '\0') {
      if (u > 100000 || (prev_repeat && u > 20) || (prev_instances && u > 4) ||
          (is_config && idx == 2 && u == 0)) {
        return 0;
      }
      if (is_config && idx == 2 && u < 10 && d < 0) {
        /* a bare number of seconds in config: at least 10 ms */
        if (u == 0) {
          return 0;
        }
      }
    }
    prev_repeat = strcmp(t, "repeat") == 0;
    prev_instances = strcmp(t, "instances") == 0;
  }
  (void)first;
  *clock_ns += moves;
  return *clock_ns <= 10000000000LL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *lines[FZ_LINES_MAX];
  size_t n = 0, i = 0;
  long long clock_ns = 0;
  sim_opts o;
  sim_result r;

  while (i < size && n < FZ_LINES_MAX) {
    size_t j = i;
    char *l;
    while (j < size && data[j] != '\n') {
      j++;
    }
    if (j - i <= FZ_LINE_MAX && memchr(data + i, '\0', j - i) == NULL) {
      l = malloc(j - i + 1);
      if (l == NULL) {
        break;
      }
      memcpy(l, data + i, j - i);
      l[j - i] = '\0';
      if (fz_line_ok(l, &clock_ns)) {
        lines[n++] = l;
      } else {
        free(l);
      }
    }
    i = j + 1;
  }
  memset(&o, 0, sizeof(o));
  o.check = 1;
  (void)sim_run_lines(lines, NULL, n, &o, &r);
  for (i = 0; i < n; i++) {
    free(lines[i]);
  }
  return 0;
}
