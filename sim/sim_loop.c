/*
 * sim_loop.c - the virtual clock, the event heap, PRNG streams, interned
 * names and the trace.  See sim_loop.h.
 */
#include "sim_loop.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ PRNG */

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

void sim_rng_seed(sim_rng *r, uint64_t seed, uint64_t stream) {
  uint64_t x = seed ^ (stream * UINT64_C(0xd1b54a32d192ed03));
  int i;
  for (i = 0; i < 4; i++) {
    r->s[i] = splitmix64(&x);
  }
}

static uint64_t rotl(uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}

uint64_t sim_rng_next(sim_rng *r) {
  uint64_t *s = r->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

uint64_t sim_rng_below(sim_rng *r, uint64_t n) {
  return sim_rng_next(r) % n;
}

uint64_t sim_lat_redis(sim_rng *r) {
  return 100000 + sim_rng_below(r, 900000);
}

uint64_t sim_lat_client(sim_rng *r) {
  return 20000 + sim_rng_below(r, 280000);
}

/* ---------------------------------------------------------- blobs */

sim_blob *sim_blob_new(const void *data, size_t len) {
  sim_blob *b = malloc(sizeof(*b) + len + 1);
  if (b == NULL) {
    abort();
  }
  b->ref = 1;
  b->len = (uint32_t)len;
  b->t = 0;
  if (len) {
    memcpy(b->data, data, len);
  }
  b->data[len] = '\0';
  return b;
}

void sim_blob_ref(sim_blob *b) {
  b->ref++;
}

void sim_blob_unref(sim_blob *b) {
  if (b != NULL && --b->ref == 0) {
    free(b);
  }
}

/* ---------------------------------------------------- event heap */

static const char *ev_names[SIM_EV_TYPE_MAX] = {
  "?",         "stmt",      "timer",       "conn-open",  "conn-msg",
  "conn-pong", "conn-gone", "conn-closed", "frame",      "close",
  "read",      "redis-cmd", "bp-deliver",  "bp-connect", "bp-up",
  "bp-down",   "bp-retry",  "inst-exit",   "check-keys", "flush"};

const char *sim_ev_name(uint32_t type) {
  return type < SIM_EV_TYPE_MAX ? ev_names[type] : "?";
}

void sim_loop_init(sim_loop *l, uint64_t seed) {
  memset(l, 0, sizeof(*l));
  l->seed = seed;
}

static int ev_before(const sim_ev *x, const sim_ev *y) {
  return x->at < y->at || (x->at == y->at && x->seq < y->seq);
}

void sim_schedule(sim_loop *l, uint64_t at, uint32_t type, uint32_t a,
                  uint64_t b, uint64_t gen, void *p) {
  sim_ev ev;
  size_t i;
  if (l->nheap == l->capheap) {
    l->capheap = l->capheap ? 2 * l->capheap : 1024;
    l->heap = realloc(l->heap, l->capheap * sizeof(*l->heap));
    if (l->heap == NULL) {
      abort();
    }
  }
  ev.at = at < l->now ? l->now : at;
  ev.seq = l->seq++;
  ev.type = type;
  ev.a = a;
  ev.b = b;
  ev.gen = gen;
  ev.p = p;
  i = l->nheap++;
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!ev_before(&ev, &l->heap[parent])) {
      break;
    }
    l->heap[i] = l->heap[parent];
    i = parent;
  }
  l->heap[i] = ev;
}

static sim_ev heap_pop(sim_loop *l) {
  sim_ev top = l->heap[0];
  sim_ev last = l->heap[--l->nheap];
  size_t i = 0, n = l->nheap;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= n) {
      break;
    }
    if (c + 1 < n && ev_before(&l->heap[c + 1], &l->heap[c])) {
      c++;
    }
    if (!ev_before(&l->heap[c], &last)) {
      break;
    }
    l->heap[i] = l->heap[c];
    i = c;
  }
  if (n > 0) {
    l->heap[i] = last;
  }
  return top;
}

int sim_loop_pop(sim_loop *l, uint64_t until, sim_ev *ev) {
  if (l->nheap == 0 || l->heap[0].at > until) {
    return 0;
  }
  *ev = heap_pop(l);
  l->now = ev->at;
  l->events++;
  return 1;
}

uint64_t sim_next_at(const sim_loop *l) {
  return l->nheap ? l->heap[0].at : UINT64_MAX;
}

uint64_t sim_loop_unique(sim_loop *l) {
  return ++l->uniq << 32;
}

void sim_loop_fini(sim_loop *l, void (*drop)(sim_ev *ev)) {
  size_t i;
  while (l->nheap) {
    sim_ev ev = heap_pop(l);
    if (drop != NULL) {
      drop(&ev);
    }
  }
  free(l->heap);
  for (i = 0; i < l->nnames; i++) {
    free(l->names[i]);
  }
  free(l->names);
  memset(l, 0, sizeof(*l));
}

/* ---------------------------------------------------------- names */

int sim_chan_find(const sim_loop *l, const char *name, size_t len) {
  size_t i;
  for (i = 0; i < l->nnames; i++) {
    if (strncmp(l->names[i], name, len) == 0 && l->names[i][len] == '\0') {
      return (int)i;
    }
  }
  return -1;
}

uint32_t sim_chan_intern(sim_loop *l, const char *name, size_t len) {
  int i = sim_chan_find(l, name, len);
  char *s;
  if (i >= 0) {
    return (uint32_t)i;
  }
  if (l->nnames == l->capnames) {
    l->capnames = l->capnames ? 2 * l->capnames : 16;
    l->names = realloc(l->names, l->capnames * sizeof(*l->names));
    if (l->names == NULL) {
      abort();
    }
  }
  s = malloc(len + 1);
  if (s == NULL) {
    abort();
  }
  memcpy(s, name, len);
  s[len] = '\0';
  l->names[l->nnames] = s;
  return (uint32_t)l->nnames++;
}

/* ---------------------------------------------------------- trace */

void sim_trace(sim_loop *l, const char *fmt, ...) {
  va_list ap;
  int n;
  if (l->trace == NULL || l->trace_len >= sizeof(l->trace_buf) - 8) {
    return;
  }
  l->trace_buf[l->trace_len++] = ' ';
  l->trace_buf[l->trace_len++] = '|';
  l->trace_buf[l->trace_len++] = ' ';
  va_start(ap, fmt);
  n = vsnprintf(l->trace_buf + l->trace_len,
                sizeof(l->trace_buf) - l->trace_len, fmt, ap);
  va_end(ap);
  if (n > 0) {
    l->trace_len += (size_t)n;
    if (l->trace_len >= sizeof(l->trace_buf)) {
      l->trace_len = sizeof(l->trace_buf) - 1;
    }
  }
}

void sim_trace_begin(sim_loop *l, const sim_ev *ev) {
  int n;
  if (l->trace == NULL) {
    return;
  }
  n = snprintf(
    l->trace_buf, sizeof(l->trace_buf), "%llu.%06llu #%llu %s %u %llu",
    (unsigned long long)(l->now / SIM_MS),
    (unsigned long long)(l->now % SIM_MS), (unsigned long long)l->events,
    sim_ev_name(ev->type), ev->a, (unsigned long long)ev->b);
  l->trace_len = n > 0 ? (size_t)n : 0;
}

void sim_trace_stmt(sim_loop *l, int line, const char *text) {
  if (l->trace == NULL) {
    return;
  }
  fprintf(l->trace, "%llu.%06llu stmt line %d: %s\n",
          (unsigned long long)(l->now / SIM_MS),
          (unsigned long long)(l->now % SIM_MS), line, text);
}

void sim_trace_end(sim_loop *l) {
  if (l->trace == NULL) {
    return;
  }
  fwrite(l->trace_buf, 1, l->trace_len, l->trace);
  fputc('\n', l->trace);
  l->trace_len = 0;
}
