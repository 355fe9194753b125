/*
 * sim.h - the deterministic simulator's shared types.
 *
 * One virtual clock, one event queue ordered by (time, sequence number),
 * one seed from which separate PRNG streams are derived (workload,
 * faults, latencies).  Instances run the real core (core/hub.h) and talk
 * to a simulated Redis (backplanes/bp_sim.c) through the ordinary
 * backplane interface (backplanes/bp.h).  Clients are simulated too: they
 * read at a configurable rate, so a slow reader fills its instance's
 * outbound queue the way a real TCP peer does.
 *
 * Nothing here reads a wall clock, iterates a pointer-keyed table or uses
 * unseeded randomness: the same seed and statements give the same trace.
 */
#ifndef SIM_H
#define SIM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "hub.h"
#include "../backplanes/bp.h"

#define SIM_MS UINT64_C(1000000)
#define SIM_S UINT64_C(1000000000)
#define SIM_FAST UINT32_MAX /* read-rate of a client that reads at once */

/* ------------------------------------------------------------ PRNG */

/* xoshiro256** seeded through splitmix64. */
typedef struct sim_rng {
  uint64_t s[4];
} sim_rng;

void sim_rng_seed(sim_rng *r, uint64_t seed, uint64_t stream);
uint64_t sim_rng_next(sim_rng *r);
/* Uniform in [0, n); n > 0. */
uint64_t sim_rng_below(sim_rng *r, uint64_t n);

/* ---------------------------------------------------- shared buffers */

/* An immutable, reference-counted byte string (message data, commands). */
typedef struct sim_blob {
  uint32_t ref;
  uint32_t len;
  uint64_t t;  /* when Redis processed a PUBLISH of it */
  char data[]; /* NUL-terminated */
} sim_blob;

sim_blob *sim_blob_new(const void *data, size_t len);
void sim_blob_ref(sim_blob *b);
void sim_blob_unref(sim_blob *b); /* accepts NULL */

/* ---------------------------------------------------------- events */

enum sim_ev_type {
  SIM_EV_STMT = 1,     /* a statement scheduled with `at` */
  SIM_EV_INST_TIMER,   /* a = instance: hub_handle_expiry */
  SIM_EV_CONN_OPEN,    /* a = client: its connect reaches the instance */
  SIM_EV_CONN_MSG,     /* a = client, p = message text */
  SIM_EV_CONN_PONG,    /* a = client */
  SIM_EV_CONN_GONE,    /* a = client: the peer went away */
  SIM_EV_CONN_CLOSED,  /* a = instance, b = conn: hub_on_conn_closed */
  SIM_EV_CLIENT_FRAME, /* a = client, p = hub_buf (a reference) */
  SIM_EV_CLIENT_CLOSE, /* a = client, b = close code */
  SIM_EV_CLIENT_READ,  /* a = client: a finite reader reads one frame */
  SIM_EV_REDIS_CMD,    /* a = instance: a command reaches Redis */
  SIM_EV_BP_DELIVER,   /* a = instance: Redis output reaches it */
  SIM_EV_BP_CONNECT,   /* a = instance: a connect reaches Redis */
  SIM_EV_BP_UP,        /* a = instance: the connect's answer arrives */
  SIM_EV_BP_DOWN,      /* a = instance: it notices the connection died */
  SIM_EV_BP_RETRY,     /* a = instance: reconnect backoff expired */
  SIM_EV_INST_EXIT,    /* a = instance: shutdown timeout */
  SIM_EV_CHECK_KEYS,   /* invariant 6: p = key prefix blob */
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

/* ------------------------------------------------------ the world */

typedef struct sim_world sim_world;
typedef struct bp_sim bp_sim;
typedef struct sim_redis sim_redis;

/* Server flags, as `config NAME VALUE` sets them. */
typedef struct sim_config {
  /* The hub's own settings, set by name through hub_config_set;
     instance_id and backplane are filled in per instance. */
  hub_config hub;
  uint64_t shutdown_timeout_ns;
  uint64_t sndbuf;
  char prefix[64]; /* --redis-prefix */
} sim_config;

/* One connection as an instance's transport sees it. */
typedef struct sim_conn {
  uint32_t client; /* index into w->clients */
  int open;        /* 0 once closed or closing on our side */
  hub_buf **q;     /* frames not yet read by the client, oldest first */
  size_t qhead, qlen, qcap;
  uint64_t qbytes;   /* bytes of all frames in q */
  uint64_t wpos;     /* bytes of q (from its head) in the socket */
  size_t wfin;       /* frames of q completely in the socket */
  uint64_t wfin_end; /* byte offset where frame wfin-1 ends */
  uint64_t sends;    /* SEND effects seen, for invariant 4 */
} sim_conn;

enum sim_inst_state {
  SIM_INST_NONE = 0, /* never started */
  SIM_INST_RUNNING,
  SIM_INST_SHUTTING, /* hub_shutdown called, waiting to exit */
  SIM_INST_DEAD      /* crashed or exited */
};

typedef struct sim_inst {
  int idx;
  int state;
  uint32_t restarts;
  uint64_t gen; /* incarnation, bumped at every start */
  char id[32];
  hub *h;
  bp_sim *bp;
  sim_conn *conns; /* indexed by hub_conn_id */
  size_t nconns;   /* highest id + 1 */
  size_t capconns;
  size_t open_conns;
  size_t closing;    /* CLOSE effects whose hub_on_conn_closed is pending */
  uint64_t timer_at; /* the INST_TIMER event in flight, or UINT64_MAX */
  int partitioned;
  int shutdown_clean; /* link up throughout the shutdown */
  uint64_t shutdown_at;
  uint64_t accept_last; /* FIFO of connects */
  uint32_t q_msgs_max;  /* the limits it was started with */
  uint64_t q_bytes_max;
} sim_inst;

/* Per-client, per-channel state. */
typedef struct sim_cstate {
  uint64_t recv;      /* message frames received */
  int acked;          /* holds `subscribed` (client's view) */
  int pending_unsubs; /* unsubscribes sent, not answered */
  uint64_t must_from; /* invariant 4: acked at, or UINT64_MAX */
  uint64_t must_epoch;
} sim_cstate;

enum sim_client_state { SIM_CL_CONNECTING = 1, SIM_CL_OPEN, SIM_CL_CLOSED };

typedef struct sim_seqmap {
  uint64_t *keys; /* 0 = empty; key = (pub+1) << 32 | chan */
  uint64_t *vals;
  size_t cap, len;
} sim_seqmap;

typedef struct sim_recv {
  uint32_t chan;
  char *data; /* normalized JSON */
} sim_recv;

typedef struct sim_client {
  char name[48];
  int inst;
  uint64_t inst_gen;
  uint64_t gen; /* bumped when it closes */
  hub_conn_id conn;
  int state;
  int close_code;    /* 0: closed without a code (crash, refused) */
  int was_open;      /* the hub accepted it */
  int shutdown_seen; /* was open when its instance began shutting down */
  int self_closed;   /* it disconnected on its own */
  uint32_t read_rate;
  int no_pong;
  sim_rng lat;        /* its own latency stream */
  uint64_t up_last;   /* FIFO client -> instance */
  uint64_t down_last; /* FIFO instance -> client */
  uint64_t next_read;
  int read_pending;
  sim_cstate *ch;
  size_t nch;
  uint64_t types[8]; /* replies by type, see sim_reply_type */
  sim_recv *log;
  size_t nlog, caplog;
  sim_seqmap seqs;
} sim_client;

enum sim_reply_type {
  SIM_R_MESSAGE = 0,
  SIM_R_SUBSCRIBED,
  SIM_R_UNSUBSCRIBED,
  SIM_R_PUBLISHED,
  SIM_R_ERROR,
  SIM_R_OTHER,
  SIM_R_MAX
};

typedef struct sim_violation {
  int inv; /* 0: none */
  uint64_t evno;
  uint64_t at;
  char what[256];
} sim_violation;

struct sim_world {
  uint64_t now;
  uint64_t seq;
  uint64_t events; /* processed */
  uint64_t seed;
  sim_ev *heap;
  size_t nheap, capheap;
  sim_config cfg;
  sim_inst *insts;
  size_t ninsts;
  sim_client *clients;
  size_t nclients, capclients;
  char **chans; /* interned logical channel names */
  size_t nchans, capchans;
  sim_redis *redis;
  FILE *trace;
  int check;    /* check invariants after every event */
  int keep_log; /* keep every message's data (scenario expects) */
  sim_violation viol;
  /* Set by the statement runner for SIM_EV_STMT. */
  void (*stmt_cb)(sim_world *w, void *stmt);
  void *stmt_arg;
};

/* sim_world.c */
int sim_world_init(sim_world *w, uint64_t seed);
void sim_world_fini(sim_world *w);
void sim_config_default(sim_config *c);
void sim_schedule(sim_world *w, uint64_t at, uint32_t type, uint32_t a,
                  uint64_t b, uint64_t gen, void *p);
/* Processes the next event if it is due at or before |until|; returns 1
   if one was processed, 0 otherwise (the clock is left alone). */
int sim_step(sim_world *w, uint64_t until);
uint64_t sim_next_at(const sim_world *w);
/* A jittered latency drawn from |r|. */
uint64_t sim_lat_redis(sim_rng *r);
uint64_t sim_lat_client(sim_rng *r);
uint32_t sim_chan_intern(sim_world *w, const char *name, size_t len);
int sim_chan_find(const sim_world *w, const char *name, size_t len);
void sim_trace_stmt(sim_world *w, int line, const char *text);
void sim_trace(sim_world *w, const char *fmt, ...)
  __attribute__((format(printf, 2, 3)));

int sim_instances(sim_world *w, size_t n);
int sim_inst_start(sim_world *w, sim_inst *in);
void sim_inst_crash(sim_world *w, sim_inst *in);
void sim_inst_shutdown(sim_world *w, sim_inst *in);
void sim_inst_partition(sim_world *w, sim_inst *in);
void sim_inst_heal(sim_world *w, sim_inst *in);

/* Returns the new client's index, or -1. */
int sim_client_new(sim_world *w, const char *name, int inst, uint32_t read_rate,
                   int no_pong);
int sim_client_find(const sim_world *w, const char *name);
/* Sends one text (or binary) message; a closed client sends nothing. */
void sim_client_send(sim_world *w, sim_client *c, const void *data, size_t len,
                     int binary);
void sim_client_disconnect(sim_world *w, sim_client *c);
sim_cstate *sim_client_cstate(sim_client *c, uint32_t chan);
/* Publishes straight into Redis. */
void sim_redis_publish_text(sim_world *w, const char *chan, size_t chan_len,
                            const char *data, size_t len);

/* Normalizes JSON text by removing whitespace outside strings. */
char *sim_json_norm(const char *s, size_t len);
/* Finds the top-level field |key| of a JSON object; returns 0 and its
   value's span, or -1. */
int sim_json_field(const char *s, size_t len, const char *key, const char **val,
                   size_t *vlen);
/* The same for |nkeys| keys in one pass; missing ones get NULL.  Returns
   how many were found. */
int sim_json_fields(const char *s, size_t len, size_t nkeys,
                    const char *const *keys, const char **vals, size_t *vlens);

/* sim_scenario.c: the statement runner. */
typedef struct sim_result {
  int failed;
  int line; /* of the failing statement, 0 if none */
  int inv;  /* the invariant violated, 0 if none */
  uint64_t evno;
  uint64_t events;
  uint64_t seed;
  char msg[768];
} sim_result;

typedef struct sim_opts {
  int has_seed;
  uint64_t seed;
  FILE *trace;
  int check;  /* check invariants even without `invariants on` */
  int no_log; /* keep no message log (no `received DATA` expects) */
} sim_opts;

/* Runs statements |lines| (|linenos| their line numbers, or NULL for
   1..n).  Returns 0 if every statement passed, -1 otherwise. */
int sim_run_lines(char *const *lines, const int *linenos, size_t n,
                  const sim_opts *o, sim_result *r);
/* Runs one scenario file. */
int sim_run_file(const char *path, const sim_opts *o, sim_result *r);

/* sim_explore.c */
typedef struct sim_explore_opts {
  uint64_t from, to;
  const char *repro_dir;
  int keep_going;
  int quiet;
  int dump; /* print the generated scenarios instead of running them */
} sim_explore_opts;
int sim_explore(const sim_explore_opts *o);

/* sim_check.c: invariants. */
void sim_violate(sim_world *w, int inv, const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));
void sim_check_inst(sim_world *w, sim_inst *in);
void sim_check_liveness(sim_world *w);
void sim_check_exit(sim_world *w, sim_inst *in);
void sim_check_keys_gone(sim_world *w, const char *prefix);
void sim_check_frame(sim_world *w, sim_client *c, int type, uint32_t chan,
                     const char *data, size_t len, uint64_t bflags);
void sim_check_queue(sim_world *w, sim_inst *in, sim_conn *k);
void sim_check_publish(sim_world *w, uint32_t chan);

#endif /* SIM_H */
