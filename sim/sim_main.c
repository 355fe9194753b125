/*
 * sim_main.c - wshub-sim: runs scenario files, or explores random ones.
 *
 *   wshub-sim [--seed N] [--trace] [--stats] FILE...
 *   wshub-sim --explore --seeds A..B [--repro-dir DIR] [--keep-going]
 *             [--alloc-fail R]
 *   wshub-sim --replay FILE [--until K] [--trace]     (sim_replay.c)
 */
#include "sim.h"
#include "sim_replay.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(FILE *f) {
  fprintf(
    f, "usage: wshub-sim [--seed N] [--trace] [--stats] FILE...\n"
       "       wshub-sim [--seed N] --record OUT FILE   (OUT.<instance> "
       "per instance)\n"
       "       wshub-sim --explore --seeds A..B [--repro-dir DIR] "
       "[--keep-going] [--quiet] [--alloc-fail R]\n"
       "       wshub-sim --replay FILE [--until K] [--trace]\n"
       "Runs scenario files (see docs/scenarios.md), printing PASS or FAIL per "
       "file;\nexits non-zero if any failed.  --trace prints one line per "
       "event.\n");
}

static const char *base_name(const char *path, char *buf, size_t len) {
  const char *b = strrchr(path, '/');
  char *dot;
  snprintf(buf, len, "%s", b ? b + 1 : path);
  dot = strrchr(buf, '.');
  if (dot != NULL && strcmp(dot, ".scn") == 0) {
    *dot = '\0';
  }
  return buf;
}

int main(int argc, char **argv) {
  sim_opts o;
  sim_explore_opts eo;
  int explore = 0, stats = 0, i, failed = 0, nfiles = 0;

  for (i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--replay") == 0) {
      return sim_replay_main(argc, argv);
    }
  }
  memset(&o, 0, sizeof(o));
  memset(&eo, 0, sizeof(eo));
  eo.from = 1;
  eo.to = 100;
  for (i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--seed") == 0 && i + 1 < argc) {
      o.has_seed = 1;
      o.seed = strtoull(argv[++i], NULL, 10);
    } else if (strcmp(a, "--record") == 0 && i + 1 < argc) {
      o.record = argv[++i];
    } else if (strcmp(a, "--trace") == 0) {
      o.trace = stdout;
    } else if (strcmp(a, "--stats") == 0) {
      stats = 1;
    } else if (strcmp(a, "--check") == 0) {
      o.check = 1;
    } else if (strcmp(a, "--explore") == 0) {
      explore = 1;
    } else if (strcmp(a, "--seeds") == 0 && i + 1 < argc) {
      unsigned long long x, y;
      if (sscanf(argv[++i], "%llu..%llu", &x, &y) != 2 || y < x) {
        fprintf(stderr, "wshub-sim: --seeds wants A..B\n");
        return 2;
      }
      eo.from = x;
      eo.to = y;
    } else if (strcmp(a, "--repro-dir") == 0 && i + 1 < argc) {
      eo.repro_dir = argv[++i];
    } else if (strcmp(a, "--alloc-fail") == 0 && i + 1 < argc) {
      uint32_t ppb;
      eo.alloc_fail = argv[++i];
      if (sim_parse_rate(eo.alloc_fail, &ppb) != 0) {
        fprintf(stderr, "wshub-sim: --alloc-fail wants a probability such "
                        "as 0.001\n");
        return 2;
      }
    } else if (strcmp(a, "--keep-going") == 0) {
      eo.keep_going = 1;
    } else if (strcmp(a, "--dump") == 0) {
      eo.dump = 1;
      eo.quiet = 1;
    } else if (strcmp(a, "--quiet") == 0) {
      eo.quiet = 1;
    } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      return 0;
    } else if (a[0] == '-') {
      fprintf(stderr, "wshub-sim: unknown option %s\n", a);
      usage(stderr);
      return 2;
    } else {
      nfiles++;
    }
  }
  if (explore) {
    return sim_explore(&eo) == 0 ? 0 : 1;
  }
  if (nfiles == 0) {
    usage(stderr);
    return 2;
  }
  if (o.record != NULL && nfiles != 1) {
    fprintf(stderr, "wshub-sim: --record takes one scenario file\n");
    return 2;
  }
  for (i = 1; i < argc; i++) {
    sim_result r;
    char name[256];
    struct timespec t0, t1;
    if (argv[i][0] == '-') {
      if (strcmp(argv[i], "--seed") == 0 || strcmp(argv[i], "--seeds") == 0 ||
          strcmp(argv[i], "--repro-dir") == 0 ||
          strcmp(argv[i], "--alloc-fail") == 0 ||
          strcmp(argv[i], "--record") == 0) {
        i++;
      }
      continue;
    }
    base_name(argv[i], name, sizeof(name));
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (sim_run_file(argv[i], &o, &r) != 0) {
      failed = 1;
      printf("FAIL %s: line %d: %s\n", name, r.line, r.msg);
      printf("  replay: wshub-sim --seed %llu %s\n", (unsigned long long)r.seed,
             argv[i]);
    } else {
      printf("PASS %s\n", name);
    }
    if (stats) {
      double dt;
      clock_gettime(CLOCK_MONOTONIC, &t1);
      dt = (double)(t1.tv_sec - t0.tv_sec) +
           (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
      printf("  %s: %llu events in %.3f s, %.0f events/s\n", name,
             (unsigned long long)r.events, dt,
             dt > 0 ? (double)r.events / dt : 0.0);
    }
    fflush(stdout);
  }
  return failed;
}
