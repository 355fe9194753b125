/*
 * sim_explore.c - seeded random scenarios, invariant checking and
 * shrinking (`wshub-sim --explore --seeds A..B`).
 *
 * Each seed generates a scenario in the ordinary statement language, so
 * a failure is already a scenario file.  The workload and the faults
 * come from separate PRNG streams derived from the seed (and the
 * latencies from a third, inside the world), so changing the workload
 * generator does not reshuffle the faults.  On a violation the statements
 * are shrunk by delta debugging (ddmin over statements, then removal of
 * single statements) to the fewest that still violate the same
 * invariant, and written to <repro-dir>/explore-seed-<S>.scn.
 */
#include "sim.h"

#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct lines {
  char **v;
  size_t n, cap;
  size_t tail; /* v[tail..n): the liveness block (heals, the final run,
                  check liveness), kept whole by the shrinker */
} lines;

static void add(lines *l, const char *fmt, ...)
  __attribute__((format(printf, 2, 3)));

static void add(lines *l, const char *fmt, ...) {
  va_list ap;
  char buf[256];
  if (l->n == l->cap) {
    l->cap = l->cap ? 2 * l->cap : 256;
    l->v = realloc(l->v, l->cap * sizeof(*l->v));
    if (l->v == NULL) {
      abort();
    }
  }
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  l->v[l->n] = strdup(buf);
  if (l->v[l->n] == NULL) {
    abort();
  }
  l->n++;
}

static void lines_free(lines *l) {
  size_t i;
  for (i = 0; i < l->n; i++) {
    free(l->v[i]);
  }
  free(l->v);
  memset(l, 0, sizeof(*l));
}

#define MAX_INST 4
#define MAX_CLIENTS 50

/* One exploration's state. */
typedef struct explorer {
  const sim_explore_opts *o;
  uint64_t total_events;
  /* What the fatal-signal handler prints: written before each seed. */
  char crash_msg[160];
  size_t crash_len;
} explorer;

static void generate(const explorer *ex, uint64_t seed, lines *l) {
  sim_rng wk, ft, nf, hs;
  int hist;
  uint32_t ninst, nclients, nchan, created = 0, nops, op, i;
  uint32_t seq[MAX_CLIENTS + 1];
  int running[MAX_INST], parted[MAX_INST];

  sim_rng_seed(&wk, seed, 101);
  sim_rng_seed(&ft, seed, 102);
  /* Faults added later draw from a stream of their own, so the workload
     and the older faults of every seed stay as they were. */
  sim_rng_seed(&nf, seed, 103);
  /* History (sizes, TTLs, which channels, `recover`): a fourth stream. */
  sim_rng_seed(&hs, seed, 104);
  hist = sim_rng_below(&hs, 2) == 0;
  memset(seq, 0, sizeof(seq));
  ninst = 1 + (uint32_t)sim_rng_below(&wk, MAX_INST);
  nclients = 1 + (uint32_t)sim_rng_below(&wk, MAX_CLIENTS);
  nchan = 1 + (uint32_t)sim_rng_below(&wk, 4);
  for (i = 0; i < MAX_INST; i++) {
    running[i] = 1;
    parted[i] = 0;
  }
  add(l, "seed %llu", (unsigned long long)seed);
  add(l, "invariants on");
  add(l, "instances %u", ninst);
  add(l, "config max-queue-msgs %u", 4 + (uint32_t)sim_rng_below(&wk, 60));
  if (ex->o->alloc_fail != NULL) {
    /* Not drawn from |wk|: the rest of the scenario stays the same. */
    add(l, "config alloc-fail-rate %s", ex->o->alloc_fail);
  }
  if (sim_rng_below(&wk, 2)) {
    add(l, "config sndbuf %u", 256 + (uint32_t)sim_rng_below(&wk, 4096));
  }
  if (hist) {
    static const char *const globs[] = {"*", "ch0", "ch0,ch1", "ch1*,ch2"};
    add(l, "config history-size %u", 1 + (uint32_t)sim_rng_below(&hs, 40));
    add(l, "config history-ttl %us", 1 + (uint32_t)sim_rng_below(&hs, 400));
    if (sim_rng_below(&hs, 3) == 0) {
      add(l, "config history-meta-ttl %us",
          1 + (uint32_t)sim_rng_below(&hs, 600));
    }
    add(l, "config history-channels %s", globs[sim_rng_below(&hs, 4)]);
  }

  nops = 30 + (uint32_t)sim_rng_below(&wk, 250);
  for (op = 0; op < nops + nclients; op++) {
    uint64_t r = sim_rng_below(&wk, 100);
    uint32_t k = created ? (uint32_t)sim_rng_below(&wk, created) : 0;
    uint32_t ch = (uint32_t)sim_rng_below(&wk, nchan);

    if (created < nclients && (created == 0 || r < 15 || op < 3)) {
      uint64_t rr = sim_rng_below(&wk, 100);
      uint32_t in = (uint32_t)sim_rng_below(&wk, ninst);
      if (rr < 70) {
        add(l, "client c%u on %u", created, in);
      } else if (rr < 85) {
        add(l, "client c%u on %u read-rate 0", created, in);
      } else {
        add(l, "client c%u on %u read-rate %u", created, in,
            5 + (uint32_t)sim_rng_below(&wk, 2000));
      }
      created++;
    } else if (r < 45) {
      add(l, "c%u publish ch%u {\"p\":%u,\"s\":%u}", k, ch, k + 1,
          seq[k + 1]++);
    } else if (r < 50) {
      add(l, "redis publish ch%u {\"p\":0,\"s\":%u}", ch, seq[0]++);
    } else if (r < 72) {
      add(l, "c%u subscribe ch%u%s", k, ch,
          hist && sim_rng_below(&hs, 2) ? " recover" : "");
    } else if (r < 84) {
      add(l, "c%u unsubscribe ch%u", k, ch);
    } else if (r < 86) {
      add(l, "c%u disconnect", k);
    } else {
      /* A burst from one publisher fills slow readers' queues. */
      uint32_t m = 5 + (uint32_t)sim_rng_below(&wk, 40), j;
      for (j = 0; j < m; j++) {
        add(l, "c%u publish ch%u {\"p\":%u,\"s\":%u}", k, ch, k + 1,
            seq[k + 1]++);
      }
    }
    r = sim_rng_below(&wk, 100);
    if (r >= 40 && r < 85) {
      add(l, "run %ums", 1 + (uint32_t)sim_rng_below(&wk, 3));
    } else if (r >= 85) {
      add(l, "run %ums", 10 + (uint32_t)sim_rng_below(&wk, 300));
    }

    {
      uint64_t r3 = sim_rng_below(&nf, 1000);
      uint32_t in = (uint32_t)sim_rng_below(&nf, ninst);
      if (r3 < 3) {
        add(l, "redis restart");
      } else if (r3 < 15 && created > 0) {
        add(l, "c%u reconnect on %u", k, in);
        if (hist && sim_rng_below(&hs, 4) != 0) {
          /* Back with what it saw: recover every channel. */
          uint32_t j;
          add(l, "run %ums", (uint32_t)sim_rng_below(&hs, 5));
          for (j = 0; j < nchan; j++) {
            add(l, "c%u subscribe ch%u recover", k, j);
          }
        }
      }
    }
    if (sim_rng_below(&ft, 100) < 4) {
      uint32_t kind = (uint32_t)sim_rng_below(&ft, 5);
      uint32_t in = (uint32_t)sim_rng_below(&ft, ninst);
      switch (kind) {
      case 0:
        if (running[in]) {
          add(l, "crash %u", in);
          running[in] = 0;
        }
        break;
      case 1:
        if (!running[in]) {
          add(l, "restart %u", in);
          running[in] = 1;
        }
        break;
      case 2:
        if (!parted[in]) {
          add(l, "partition %u redis", in);
          parted[in] = 1;
        }
        break;
      case 3:
        if (parted[in]) {
          add(l, "heal %u redis", in);
          parted[in] = 0;
        }
        break;
      default:
        if (running[in] && !parted[in]) {
          add(l, "shutdown %u", in);
          running[in] = 0;
        }
        break;
      }
    }
  }
  l->tail = l->n;
  for (i = 0; i < ninst; i++) {
    if (parted[i]) {
      add(l, "heal %u redis", i);
    }
  }
  /* Liveness: with faults healed (allocation failures stopped too, a
     minute later) and traffic stopped, everything settles within the
     connection keys' TTL. */
  if (ex->o->alloc_fail != NULL) {
    /* A minute of timers (expiry, pings, registry refreshes) with the
       failures still on, then they stop too. */
    add(l, "run 60s");
    add(l, "config alloc-fail-rate 0");
  }
  add(l, "run 150s");
  add(l, "check liveness");
}

/* Runs a subset; returns the invariant violated (0 none, -1 another
   failure). */
static int run_subset(explorer *ex, char *const *v, size_t n, sim_result *r) {
  sim_opts o;
  memset(&o, 0, sizeof(o));
  o.check = 1;
  o.no_log = 1;
  sim_run_lines(v, NULL, n, &o, r);
  ex->total_events += r->events;
  if (r->inv) {
    return r->inv;
  }
  return r->failed ? -1 : 0;
}

/* Builds cand from cur's first |fixed| statements, the |m| after them
   but those in [skip_from, skip_to), then the tail; returns its size. */
static size_t shrink_cand(char **cand, char *const *cur, size_t fixed, size_t m,
                          size_t skip_from, size_t skip_to, char *const *tail,
                          size_t ntail) {
  size_t c = 0, j;
  for (j = 0; j < fixed + m; j++) {
    if (j < fixed || j - fixed < skip_from || j - fixed >= skip_to) {
      cand[c++] = cur[j];
    }
  }
  for (j = 0; j < ntail; j++) {
    cand[c++] = tail[j];
  }
  return c;
}

static size_t shrink(explorer *ex, lines *l, int inv, size_t *tests) {
  /* Statement 0 and 1 (seed, invariants on) stay, and so does the
     liveness block at the end: without its heals and its run, invariant
     8 fails on any subset ("not settled"), which is no reproducer. */
  size_t tail_at = l->tail > 2 && l->tail <= l->n ? l->tail : l->n;
  size_t ntail = l->n - tail_at;
  size_t fixed = 2, m = tail_at - fixed, gran = 2, i;
  char **cur = malloc(l->n * sizeof(*cur));
  char **cand = malloc(l->n * sizeof(*cand));
  char **tail = l->v + tail_at;
  sim_result r;
  const size_t budget = 3000;

  if (cur == NULL || cand == NULL) {
    abort();
  }
  memcpy(cur, l->v, tail_at * sizeof(*cur));
  while (m >= 2 && *tests < budget) {
    size_t chunk = (m + gran - 1) / gran;
    int reduced = 0;
    for (i = 0; i * chunk < m && *tests < budget; i++) {
      size_t st = i * chunk, e = st + chunk < m ? st + chunk : m;
      size_t c = shrink_cand(cand, cur, fixed, m, st, e, tail, ntail);
      (*tests)++;
      if (run_subset(ex, cand, c, &r) == inv) {
        memcpy(cur, cand, (c - ntail) * sizeof(*cur));
        m = c - ntail - fixed;
        gran = gran > 2 ? gran - 1 : 2;
        reduced = 1;
        break;
      }
    }
    if (!reduced) {
      if (gran >= m) {
        break;
      }
      gran = 2 * gran < m ? 2 * gran : m;
    }
  }
  /* One statement at a time, from the end. */
  i = m;
  while (i-- > 0 && *tests < budget) {
    size_t c = shrink_cand(cand, cur, fixed, m, i, i + 1, tail, ntail);
    (*tests)++;
    if (run_subset(ex, cand, c, &r) == inv) {
      memcpy(cur, cand, (c - ntail) * sizeof(*cur));
      m = c - ntail - fixed;
    }
  }
  /* Reorder l->v to cur and the tail, freeing what was dropped. */
  {
    size_t nkeep = fixed + m + ntail, j, k;
    char **keep = malloc(nkeep * sizeof(*keep));
    if (keep == NULL) {
      abort();
    }
    memcpy(keep, cur, (fixed + m) * sizeof(*keep));
    memcpy(keep + fixed + m, tail, ntail * sizeof(*keep));
    for (j = 0; j < l->n; j++) {
      int kept = 0;
      for (k = 0; k < nkeep; k++) {
        if (keep[k] == l->v[j]) {
          kept = 1;
          break;
        }
      }
      if (!kept) {
        free(l->v[j]);
      }
    }
    free(l->v);
    l->v = keep;
    l->n = l->cap = nkeep;
    l->tail = fixed + m;
  }
  free(cur);
  free(cand);
  return l->n;
}

/* If the core aborts (HUB_ASSERT) or crashes, say which seed did it.  A
   signal handler is given no argument: this is the one process-wide
   pointer, set while sim_explore runs. */
static const explorer *fatal_ex;

static void on_fatal(int sig) {
  if (fatal_ex != NULL &&
      write(2, fatal_ex->crash_msg, fatal_ex->crash_len) < 0) {
    /* Nothing more can be done from here. */
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

static void arm_crash_msg(explorer *ex, uint64_t seed) {
  int n = snprintf(ex->crash_msg, sizeof(ex->crash_msg),
                   "\nexplore: seed %llu crashed the simulator; replay with "
                   "wshub-sim --explore --seeds %llu..%llu\n",
                   (unsigned long long)seed, (unsigned long long)seed,
                   (unsigned long long)seed);
  ex->crash_len = n > 0 ? (size_t)n : 0;
}

static double wall_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int sim_explore(const sim_explore_opts *o) {
  uint64_t seed, nseeds = 0, failures = 0;
  double t0 = wall_s(), t;
  sim_result r;
  explorer ex;

  memset(&ex, 0, sizeof(ex));
  ex.o = o;
  fatal_ex = &ex;
  signal(SIGABRT, on_fatal);
  signal(SIGSEGV, on_fatal);
  for (seed = o->from; seed <= o->to; seed++) {
    lines l;
    int inv;
    arm_crash_msg(&ex, seed);
    memset(&l, 0, sizeof(l));
    generate(&ex, seed, &l);
    nseeds++;
    if (o->dump) {
      size_t i;
      for (i = 0; i < l.n; i++) {
        printf("%s\n", l.v[i]);
      }
      lines_free(&l);
      continue;
    }
    inv = run_subset(&ex, l.v, l.n, &r);
    if (inv != 0) {
      size_t before = l.n, after, tests = 0;
      char path[1024];
      FILE *f;
      failures++;
      printf("explore: seed %llu: event %llu: invariant %d: %s\n",
             (unsigned long long)seed, (unsigned long long)r.evno, inv, r.msg);
      if (inv > 0) {
        after = shrink(&ex, &l, inv, &tests);
        snprintf(path, sizeof(path), "%s/explore-seed-%llu.scn",
                 o->repro_dir ? o->repro_dir : ".", (unsigned long long)seed);
        f = fopen(path, "w");
        if (f != NULL) {
          size_t i;
          fprintf(f,
                  "# Found by wshub-sim --explore: seed %llu violated "
                  "invariant %d.\n# Shrunk from %zu to %zu statements "
                  "(%zu runs).\n",
                  (unsigned long long)seed, inv, before, after, tests);
          for (i = 0; i < l.n; i++) {
            fprintf(f, "%s\n", l.v[i]);
          }
          fclose(f);
          printf("explore: seed %llu: shrunk %zu -> %zu statements in %zu "
                 "runs: %s\n",
                 (unsigned long long)seed, before, after, tests, path);
        } else {
          printf("explore: cannot write %s\n", path);
        }
        printf("explore: replay with: wshub-sim %s (or --explore --seeds "
               "%llu..%llu)\n",
               path, (unsigned long long)seed, (unsigned long long)seed);
      }
      lines_free(&l);
      if (!o->keep_going) {
        break;
      }
      continue;
    }
    lines_free(&l);
  }
  t = wall_s() - t0;
  if (!o->quiet || failures) {
    printf("explore: %llu seeds (%llu..%llu), %llu failing, %llu events, "
           "%.2f s, %.0f events/s, %.1f seeds/s\n",
           (unsigned long long)nseeds, (unsigned long long)o->from,
           (unsigned long long)(o->from + nseeds - 1),
           (unsigned long long)failures, (unsigned long long)ex.total_events, t,
           t > 0 ? (double)ex.total_events / t : 0.0,
           t > 0 ? (double)nseeds / t : 0.0);
  }
  fatal_ex = NULL;
  return failures ? -1 : 0;
}
