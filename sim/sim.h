/*
 * sim.h - the deterministic simulator's world: instances, clients, the
 * statement runner, the explorer and the checkers.
 *
 * One loop (sim_loop.h: a virtual clock, one event queue ordered by
 * (time, sequence number), one seed from which separate PRNG streams are
 * derived: workload, faults, latencies, allocation failures).  Instances run
 * the real core (core/hub.h) and talk to a simulated Redis (sim_redis.c)
 * through the ordinary backplane interface (backplanes/bp.h), implemented by
 * sim_bp.c.  Clients are simulated too: they read at a configurable rate, so a
 * slow reader fills its instance's outbound queue the way a real TCP peer does.
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
#include "shell.h"
#include "sim_loop.h"
#include "sim_redis.h"
#include "sim_bp.h"

#define SIM_FAST UINT32_MAX /* read-rate of a client that reads at once */

/* ------------------------------------------------------ the world */

typedef struct sim_world sim_world;
typedef struct sim_rec_file sim_rec_file; /* sim_rec.c: --record */

/* Server flags, as `config NAME VALUE` sets them. */
typedef struct sim_config {
  /* The hub's own settings, set by name through hub_config_set;
     instance_id and backplane are filled in per instance. */
  hub_config hub;
  uint64_t shutdown_timeout_ns;
  uint64_t sndbuf;
  /* `config alloc-fail-rate R`: each allocation of an instance's hub
     (and of its transport's and backplane's queues) fails with probability R,
     in parts per billion; 0: never. */
  uint32_t alloc_fail_ppb;
  char prefix[64]; /* --redis-prefix */
} sim_config;

/* One connection as an instance's transport sees it.  Allocated one by
   one (the shell's conn_user and write-now list point at it). */
typedef struct sim_conn {
  uint32_t client; /* index into w->clients */
  int open;        /* 0 once closed or closing on our side */
  hub_conn_id id;  /* its hub id */
  int dirty;       /* on its instance's flush list */
  sh_oq oq;        /* the shell's out-queue accounting */
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

/*
 * An instance's allocator: the hub's hub_mem (and its transport's queue
 * growth) fail with probability |fail_ppb| / 10^9 per allocation, drawn
 * from |rng|, a stream of its own keyed by instance and incarnation.
 * Allocated once per instance slot and kept until the world ends, since
 * hub_bufs (frames in flight) point at it after their hub is gone.
 */
typedef struct sim_alloc {
  hub_mem mem;
  sim_loop *loop;
  const char *id;   /* the instance's id, for the trace */
  const char *call; /* whose allocations are drawn now, for the trace */
  sim_rng rng;
  uint32_t fail_ppb;
  int armed; /* off while the hub is created */
  uint64_t allocs, fails;
  sh_rec *rec; /* --record: told of every hub allocation (sh_rec_alloc) */
} sim_alloc;

/* A list of key names (invariant 7's bookkeeping). */
typedef struct sim_strv {
  char **v;
  size_t n;
} sim_strv;

typedef struct sim_inst {
  sim_world *w; /* the world it lives in, for bp_events and hub_mem */
  int idx;
  int state;
  uint32_t restarts;
  uint64_t gen; /* incarnation, bumped at every start */
  char id[32];
  hub *h;
  sim_bp *bp;
  sh sh;            /* the driver layer: every hub call goes through it */
  bp *tap;          /* the bp the shell sees: traces, checks, forwards */
  sim_conn **conns; /* indexed by hub_conn_id (NULL: not ours) */
  sim_conn *spare;  /* the next connection, before its id is known */
  size_t nconns;    /* highest id + 1 */
  size_t capconns;
  size_t open_conns;
  size_t closing;    /* CLOSE effects whose hub_on_conn_closed is pending */
  uint64_t timer_at; /* the INST_TIMER event armed, or UINT64_MAX */
  int partitioned;
  int shutdown_clean; /* link up throughout the shutdown */
  uint64_t shutdown_at;
  uint64_t accept_last; /* FIFO of connects */
  uint32_t q_msgs_max;  /* the limits it was started with */
  uint64_t q_bytes_max;
  /* Connections with frames to flush at the end of this loop iteration
     (the SIM_EV_INST_FLUSH event, as the server's ev_prepare flush). */
  hub_conn_id *dirty;
  size_t ndirty, capdirty;
  int flush_pending;
  sim_alloc *alloc; /* its hub's allocator (one per slot) */
  int unchecked;    /* drained since hub_check last ran */
  /* Invariant 7: DELs the link lost (not sent, or dropped in flight)
     with no SET of the key sent since, and DELs in flight. */
  sim_strv lost_dels, pending_dels;
  sim_rec_file *rec; /* --record: this incarnation's file, or NULL */
} sim_inst;

/* Per-client, per-channel state. */
typedef struct sim_cstate {
  uint64_t recv;      /* message frames received */
  int acked;          /* holds `subscribed` (client's view) */
  int pending_unsubs; /* unsubscribes sent, not answered */
  uint64_t must_from; /* invariant 4: acked at, or UINT64_MAX */
  uint64_t must_epoch;
  /* History: the offsets of the message frames, in arrival order, over
     all the client's connections; the position the client holds (from
     the last subscribed reply, message or gap frame); the last
     subscribed reply's "recovered" (-1: none or no member); gap frames;
     the since of a `recover` subscribe not yet answered. */
  uint64_t *offs;
  size_t noffs, capoffs;
  int has_pos;
  uint64_t pos;
  char epoch[33];
  int recovered;
  uint64_t gaps;
  int rec_sent;
  uint64_t rec_since;
  char rec_epoch[33];
  /* A recovery from a since below the position the client had reached
     by the time the reply came (it sent the since before those messages
     reached it): the replay up to that position is what it asked for,
     so invariant 3 does not count it twice (10 checks its offsets).
     0: none. */
  uint64_t replay_until;
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
  uint32_t auth_tok; /* `claims ...`: its token (sim_auth.c), 0: none */
  int reopen_to;     /* `reconnect on I` pending: I + 1, else 0 */
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
  SIM_R_REFRESHED,
  SIM_R_GAP,
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
  sim_loop loop; /* the clock, the events, the seed, names, the trace */
  sim_config cfg;
  sim_inst *insts;
  size_t ninsts;
  sim_client *clients;
  size_t nclients, capclients;
  sim_redis *redis;
  int check;          /* check invariants after every event */
  int keep_log;       /* keep every message's data (scenario expects) */
  const char *record; /* --record FILE: each instance to FILE.<id> */
  sim_violation viol;
  /* Invariant 4's scratch: the Redis time of the message being delivered
     (from the on_deliver hook), and who must get it. */
  uint64_t deliver_t;
  hub_conn_id *must;
  uint64_t *must_sends;
  size_t capmust;
  /* Set by the statement runner for SIM_EV_STMT. */
  void (*stmt_cb)(sim_world *w, void *stmt);
  void *stmt_arg;
  /* The tokens of `claims` and `refresh` statements (sim_auth.c). */
  struct sim_auth_tok *toks;
  size_t ntoks, captoks;
  sh_claims claims; /* the last verified token's claims (sim_auth_verify) */
};

/* sim_auth.c: the simulator's stand-in for token verification.  A token
   is "sim:<n>", naming claims JSON a statement gave (and how long after
   its verification it expires); "verifying" it reads those claims as
   the server reads a verified token's (sh_claims_parse). */
typedef struct sim_auth_tok {
  char *claims;
  int has_exp;
  uint64_t expires_in_ns;
} sim_auth_tok;
/* Registers a token; returns its number (>= 1). */
uint32_t sim_auth_token(sim_world *w, const char *claims, int has_exp,
                        uint64_t expires_in_ns);
/* Token |tok| (0: none, as for a client without claims) verified now:
   its claims, valid until the next call, or NULL with *err the reason
   the server would give. */
const hub_auth *sim_auth_verify(sim_world *w, uint32_t tok, const char **err);
/* The number in a "sim:<n>" token, 0 for anything else. */
uint32_t sim_auth_token_num(const char *s, size_t len);
void sim_auth_fini(sim_world *w);

/* sim_world.c */
int sim_world_init(sim_world *w, uint64_t seed);
void sim_world_fini(sim_world *w);
void sim_config_default(sim_config *c);
/* Processes the next event if it is due at or before |until|; returns 1
   if one was processed, 0 otherwise (the clock is left alone). */
int sim_step(sim_world *w, uint64_t until);
/* Draws whether the next allocation of |a|'s instance fails (0 when
   |a| is NULL or injection is off). */
int sim_alloc_fails(sim_alloc *a);
/* Parses an allocation failure rate ("0.001": a probability per
   allocation, at most 9 decimals) into parts per billion; 0 or -1. */
int sim_parse_rate(const char *s, uint32_t *ppb);

int sim_instances(sim_world *w, size_t n);
int sim_inst_start(sim_world *w, sim_inst *in);
void sim_inst_crash(sim_world *w, sim_inst *in);
void sim_inst_shutdown(sim_world *w, sim_inst *in);
void sim_inst_partition(sim_world *w, sim_inst *in);
void sim_inst_heal(sim_world *w, sim_inst *in);
/* `redis restart`: every instance's Redis connections dropped, all of
   Redis's data lost; reconnects succeed (sim_world.c). */
void sim_redis_restart(sim_world *w);

/* Returns the new client's index, or -1. */
int sim_client_new(sim_world *w, const char *name, int inst, uint32_t read_rate,
                   int no_pong);
int sim_client_find(const sim_world *w, const char *name);
/* Sends one text (or binary) message; a closed client sends nothing. */
void sim_client_send(sim_world *w, sim_client *c, const void *data, size_t len,
                     int binary);
void sim_client_disconnect(sim_world *w, sim_client *c);
/* `X reconnect on I`: X's connection goes away (as with disconnect),
   then a new one opens on instance |inst|; X keeps what it received. */
void sim_client_reconnect(sim_world *w, sim_client *c, int inst);
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
  int check;          /* check invariants even without `invariants on` */
  int no_log;         /* keep no message log (no `received DATA` expects) */
  const char *record; /* --record FILE (sim_rec.h), or NULL */
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
  const char *alloc_fail; /* `config alloc-fail-rate` for every seed */
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
/* Invariants 10-12 (history): client |c| read a message (|off| > 0),
   `subscribed` (|type| SIM_R_SUBSCRIBED, |off| and |epoch| its offset
   and epoch, |recovered| -1/0/1) or `gap` frame on |chan|; called before
   the client's position is updated. */
void sim_check_hist(sim_world *w, sim_client *c, int type, uint32_t chan,
                    uint64_t off, const char *epoch, size_t elen,
                    int recovered);
/* Invariant 9 alone: hub_check; returns 0 or -1 (violated). */
int sim_check_hub(sim_world *w, sim_inst *in);
int sim_strv_has(const sim_strv *v, const char *key);
void sim_strv_clear(sim_strv *v);
/* Registers the checkers' hooks on the world's Redis. */
int sim_check_hooks(sim_world *w);
/* Invariant 7's bookkeeping: instance |in| applies registry effect
   |type| (HUB_EFF_REG_SET or _DEL) on key |name| (before the backplane
   sees it); |sent|: the command is queued on a connected link (else it
   is lost). */
void sim_check_reg_effect(sim_world *w, sim_inst *in, int type,
                          const char *name, size_t len, int sent);

#endif /* SIM_H */
