/*
 * srv_proc.c - process_* metrics from /proc/self/stat, /proc/stat (the
 * boot time), /proc/self/fd and getrlimit, computed at each scrape as
 * Prometheus's own client libraries do.
 */
#include "srv_proc.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static void srv_proc_put(char *buf, size_t cap, size_t *n, const char *name,
                         const char *type, const char *help, double v) {
  int w = snprintf(buf + *n, cap - *n, "# HELP %s %s\n# TYPE %s %s\n%s %.15g\n",
                   name, help, name, type, name, v);
  if (w > 0 && (size_t)w < cap - *n) {
    *n += (size_t)w;
  }
}

/* Seconds since the epoch at boot (the btime line of /proc/stat). */
static long long srv_proc_btime(void) {
  FILE *f = fopen("/proc/stat", "re");
  char line[256];
  long long bt = -1;
  if (f == NULL) {
    return -1;
  }
  while (fgets(line, sizeof(line), f) != NULL) {
    if (strncmp(line, "btime ", 6) == 0) {
      bt = strtoll(line + 6, NULL, 10);
      break;
    }
  }
  fclose(f);
  return bt;
}

void srv_proc_metrics(char *buf, size_t cap, size_t *n) {
  char st[1024];
  FILE *f;
  size_t len = 0;
  long tck = sysconf(_SC_CLK_TCK);
  long page = sysconf(_SC_PAGESIZE);
  struct rlimit rl;
  DIR *d;

  f = fopen("/proc/self/stat", "re");
  if (f != NULL) {
    len = fread(st, 1, sizeof(st) - 1, f);
    fclose(f);
  }
  st[len] = '\0';
  /* Fields after the command name, which is in parentheses and may hold
     spaces: the last ')' ends it.  Then field 3 (state) onwards. */
  if (len > 0 && tck > 0) {
    char *p = strrchr(st, ')');
    unsigned long long utime = 0, stime = 0, start = 0;
    long long rss = 0;
    int field;
    if (p != NULL) {
      p += 2;
      for (field = 3; *p && field <= 24; field++) {
        char *end;
        unsigned long long v = strtoull(p, &end, 10);
        if (field == 14) {
          utime = v;
        } else if (field == 15) {
          stime = v;
        } else if (field == 22) {
          start = v;
        } else if (field == 24) {
          rss = (long long)v;
        }
        p = strchr(p, ' ');
        if (p == NULL) {
          break;
        }
        p++;
      }
      srv_proc_put(buf, cap, n, "process_cpu_seconds_total", "counter",
                   "Total user and system CPU time spent in seconds.",
                   (double)(utime + stime) / (double)tck);
      if (page > 0) {
        srv_proc_put(buf, cap, n, "process_resident_memory_bytes", "gauge",
                     "Resident memory size in bytes.",
                     (double)rss * (double)page);
      }
      {
        long long bt = srv_proc_btime();
        if (bt > 0) {
          srv_proc_put(buf, cap, n, "process_start_time_seconds", "gauge",
                       "Start time of the process since unix epoch in "
                       "seconds.",
                       (double)bt + (double)start / (double)tck);
        }
      }
    }
  }
  d = opendir("/proc/self/fd");
  if (d != NULL) {
    long fds = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
      if (e->d_name[0] != '.') {
        fds++;
      }
    }
    closedir(d);
    /* Not counting the descriptor that read the directory. */
    srv_proc_put(buf, cap, n, "process_open_fds", "gauge",
                 "Number of open file descriptors.",
                 (double)(fds > 0 ? fds - 1 : 0));
  }
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    srv_proc_put(buf, cap, n, "process_max_fds", "gauge",
                 "Maximum number of open file descriptors.",
                 rl.rlim_cur == RLIM_INFINITY ? -1.0 : (double)rl.rlim_cur);
  }
}
