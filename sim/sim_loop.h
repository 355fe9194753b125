/*
 * sim_loop.h - the loop interface: what a simulated model is given.
 *
 * One virtual clock (|now|, in ns), one heap of typed events ordered by
 * (time, sequence number), seeded PRNG streams, interned names (so an
 * event can carry a channel as a number) and the trace.  The world, the
 * simulated Redis (sim_redis.c) and its instance adapter (sim_bp.c) all
 * schedule onto one sim_loop; whoever owns an event type handles it
 * (see enum sim_ev_type).  Nothing here reads a wall clock or unseeded
 * randomness: the same seed gives the same events, byte for byte.
 */
#ifndef SIM_LOOP_H
#define SIM_LOOP_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define SIM_MS UINT64_C(1000000)
#define SIM_S UINT64_C(1000000000)

/* ------------------------------------------------------------ PRNG */

/* xoshiro256** seeded through splitmix64. */
typedef struct sim_rng {
  uint64_t s[4];
} sim_rng;

/* Seeds |r| with the stream |stream| of |seed|: different streams of one
   seed are independent, so each model draws from its own. */
void sim_rng_seed(sim_rng *r, uint64_t seed, uint64_t stream);
uint64_t sim_rng_next(sim_rng *r);
/* Uniform in [0, n); n > 0. */
uint64_t sim_rng_below(sim_rng *r, uint64_t n);

/* Redis links: 100 us to 1 ms.  Client links: 20 us to 300 us. */
uint64_t sim_lat_redis(sim_rng *r);
uint64_t sim_lat_client(sim_rng *r);

/* ---------------------------------------------------- shared buffers */

/* An immutable, reference-counted byte string (message data, commands). */
typedef struct sim_blob {
  uint32_t ref;
  uint32_t len;
  uint64_t t;  /* when Redis processed a PUBLISH of it */
  char data[]; /* NUL-terminated */
} sim_blob;

/* Copies |data|; aborts when out of memory (the simulator's own memory
   never fails; only the hubs' does, on purpose). */
sim_blob *sim_blob_new(const void *data, size_t len);
void sim_blob_ref(sim_blob *b);
void sim_blob_unref(sim_blob *b); /* accepts NULL */

/* ---------------------------------------------------------- events */

/* Every event type, with its owner (the module that handles it).  The
   trace names them (sim_ev_name) and prints |a| and |b|. */
enum sim_ev_type {
  SIM_EV_STMT = 1,     /* world: a statement scheduled with `at` */
  SIM_EV_INST_TIMER,   /* world: a = instance: sh_expiry */
  SIM_EV_CONN_OPEN,    /* world: a = client: its connect reaches it */
  SIM_EV_CONN_MSG,     /* world: a = client, p = message text */
  SIM_EV_CONN_PONG,    /* world: a = client */
  SIM_EV_CONN_GONE,    /* world: a = client: the peer went away */
  SIM_EV_CONN_CLOSED,  /* world: a = instance, b = conn */
  SIM_EV_CLIENT_FRAME, /* world: a = client, p = hub_buf (a reference) */
  SIM_EV_CLIENT_CLOSE, /* world: a = client, b = close code */
  SIM_EV_CLIENT_READ,  /* world: a = client: a finite reader reads */
  SIM_EV_REDIS_CMD,    /* redis: a = conn tag: a command reaches Redis */
  SIM_EV_BP_DELIVER,   /* redis: a = conn tag: Redis output arrives */
  SIM_EV_BP_CONNECT,   /* redis: a = conn tag: a connect reaches Redis */
  SIM_EV_BP_UP,        /* redis: a = conn tag: the connect's answer */
  SIM_EV_BP_DOWN,      /* redis: a = conn tag: the drop is noticed */
  SIM_EV_BP_RETRY,     /* bp: a = tag: reconnect backoff expired */
  SIM_EV_INST_EXIT,    /* world: a = instance: shutdown timeout */
  SIM_EV_CHECK_KEYS,   /* world: invariant 6: p = key prefix blob */
  SIM_EV_INST_FLUSH,   /* world: a = instance: end of a loop iteration */
  SIM_EV_TYPE_MAX
};

typedef struct sim_ev {
  uint64_t at;
  uint64_t seq;
  uint32_t type;
  uint32_t a;
  uint64_t b;
  uint64_t gen; /* generation of the object it targets */
  void *p;
} sim_ev;

const char *sim_ev_name(uint32_t type);

/* ------------------------------------------------------------ loop */

typedef struct sim_loop {
  uint64_t now;    /* virtual time, ns */
  uint64_t seq;    /* next event's sequence number */
  uint64_t events; /* processed */
  uint64_t seed;
  uint64_t uniq; /* sim_loop_unique's counter */
  sim_ev *heap;
  size_t nheap, capheap;
  char **names; /* interned names, indexed by id */
  size_t nnames, capnames;
  FILE *trace; /* NULL: no trace */
  char trace_buf[4096];
  size_t trace_len;
} sim_loop;

void sim_loop_init(sim_loop *l, uint64_t seed);
/* Frees the heap and the names; events still queued are handed to
   |drop| (which releases their |p|) first. */
void sim_loop_fini(sim_loop *l, void (*drop)(sim_ev *ev));

/* Schedules an event at |at| (clamped to now); FIFO among equal times. */
void sim_schedule(sim_loop *l, uint64_t at, uint32_t type, uint32_t a,
                  uint64_t b, uint64_t gen, void *p);
/* Removes the next event due at or before |until| into *ev and advances
   the clock to it; returns 0 if there is none (the clock is left
   alone). */
int sim_loop_pop(sim_loop *l, uint64_t until, sim_ev *ev);
uint64_t sim_next_at(const sim_loop *l);

/* A fresh generation base for an object's events: unique within the
   loop, with 2^32 generations to count up from it. */
uint64_t sim_loop_unique(sim_loop *l);

/* Interned names: the same name always has the same id, ids count from
   0 in first-use order. */
uint32_t sim_chan_intern(sim_loop *l, const char *name, size_t len);
int sim_chan_find(const sim_loop *l, const char *name, size_t len);
static inline const char *sim_chan_name(const sim_loop *l, uint32_t id) {
  return l->names[id];
}

/* The trace: one line per event, begun by sim_trace_begin, extended by
   sim_trace, written by sim_trace_end.  No-ops without a trace file. */
void sim_trace_begin(sim_loop *l, const sim_ev *ev);
void sim_trace(sim_loop *l, const char *fmt, ...)
  __attribute__((format(printf, 2, 3)));
void sim_trace_end(sim_loop *l);
void sim_trace_stmt(sim_loop *l, int line, const char *text);

#endif /* SIM_LOOP_H */
