/*
 * shell.h - the layer between the pure core (hub.h) and a driver (the
 * libev server, the simulator): the one place where drivers call the
 * core.
 *
 * A driver fills an sh_transport (function pointers and a user pointer)
 * and feeds every event through one sh_ wrapper per hub event.  Each
 * wrapper calls the hub, acts on its error with the policy of
 * shell/README.md, applies the effects through the transport (SEND,
 * PING, CLOSE, backplane and registry effects through the bp's ops),
 * writes the connections whose backlog passed the early-write mark, and
 * re-arms the hub timer.  Like core/, the shell reads no clock, socket
 * or random source: every wrapper takes |now|, and the backoff PRNG is
 * seeded by the driver.
 *
 * Re-entrancy: a transport callback must not call an sh_ wrapper (it
 * returns what happened instead; the shell makes the hub calls).
 * Threading: none; an sh belongs to its hub's thread.
 */
#ifndef SHELL_H
#define SHELL_H

#include <stddef.h>
#include <stdint.h>

#include "hub.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct bp bp;         /* bp.h */
typedef struct sh_rec sh_rec; /* sh_rec.h: the flight recorder */

/* handle_expiry NOMEM: try again this much later. */
#define SH_EXPIRY_RETRY_NS (10 * HUB_NS_PER_MS)

/* Close frames: 2 bytes of header, 2 of code, up to 123 of reason. */
#define SH_CLOSE_FRAME_MAX 127

/*
 * sh_oq: the out-queue accounting of one connection, embedded in the
 * driver's connection (where its per-delivery fields are).  The driver
 * keeps its own queue of frames; it tells the shell what it queued and
 * what left with sh_oq_push / sh_oq_pop.  Members are read-only to the
 * driver.
 */
typedef struct sh_oq {
  uint64_t bytes;            /* queued, not yet written (every byte) */
  struct sh_oq *urgent_next; /* the shell's write-now list */
  uint32_t msgs;             /* SEND frames not fully written */
  uint8_t urgent;            /* on the write-now list */
} sh_oq;

/* What a transport's close did (sh_transport.close). */
enum {
  /* The close frame went out or the connection was dropped: the shell
     reports hub_on_conn_closed (after popping the effect). */
  SH_CLOSE_DONE = 0,
  /* Closing, reported later by the driver with sh_conn_closed. */
  SH_CLOSE_PENDING,
  /* Not an open connection of the driver's: nothing to report. */
  SH_CLOSE_UNKNOWN
};

/*
 * The transport.  |user| is passed back to every call; |conn_user| is
 * the pointer the driver gave sh_conn_open.  Arguments are borrowed for
 * the call.  No callback may call an sh_ wrapper.
 */
typedef struct sh_transport {
  void *user;
  /* Queue SEND frame |buf| (a complete WebSocket frame) behind what is
     queued; take a reference (hub_buf_ref) to keep it past the call, and
     count it with sh_oq_push(.., 1).  Returns 0, or -1 when out of memory
     (nothing queued): the shell then closes the connection 1011. */
  int (*send)(void *user, void *conn_user, hub_conn_id id, hub_buf *buf);
  /* Queue a ping control frame. */
  void (*ping)(void *user, void *conn_user, hub_conn_id id);
  /* Queue a close frame (sh_close_frame) behind what is queued and write
     now; if the socket does not take all of it, drop the connection at
     once.  |kind| is the hub's reason, HUB_CLOSE_KIND_MAX for a close the
     shell decided (1011).  Returns SH_CLOSE_*. */
  int (*close)(void *user, void *conn_user, hub_conn_id id, uint16_t code,
               const char *reason, hub_close_kind kind);
  /* Write now what the socket takes of the connection owning |q| (an
     sh_oq on the write-now list).  Sets *id to its hub id (0: no longer
     a hub connection, nothing to report), *msgs and *bytes to the SEND
     frames finished and the SEND bytes written (after sh_oq_pop).
     Returns 0, or -1 when the socket failed: the driver has dropped the
     connection, and the shell reports hub_on_conn_closed(*id). */
  int (*write)(void *user, sh_oq *q, hub_conn_id *id, size_t *msgs,
               size_t *bytes);
  /* Arm the driver's one-shot hub timer at absolute time |at| (replacing
     any earlier one), or disarm it (HUB_TSTAMP_NONE).  When it fires,
     call sh_expiry. */
  void (*set_timer)(void *user, hub_tstamp at);
  /* Drop the backplane link (forced reconnect): reconnect after backoff
     and report up (sh_bp_up) once back.  Report no down for it: the
     shell tells the hub itself.  May be NULL without a backplane. */
  void (*bp_reset)(void *user);
  /* Optional (may be NULL).  The effect queue is empty: release what
     was kept for the drain (the server's current batch). */
  void (*drained)(void *user);
  /* Authentication: verify refresh token |token| (|len| bytes, NUL-
     terminated; untrusted) for connection |id|.  Returns 0 and sets
     *auth to its claims (valid until the next call), or -1 and sets
     *err to a static reason.  The shell answers the hub
     (hub_on_conn_verified).  May be NULL when config.auth is off. */
  int (*verify)(void *user, void *conn_user, hub_conn_id id, const char *token,
                size_t len, const hub_auth **auth, const char **err);
  /* Optional.  A hub call failed in a way that is the driver's bug, not a
     policy case (HUB_ERR_UNKNOWN_CONN, HUB_ERR_INVALID_ARGUMENT): for a
     log line.  |what| is the hub function's name. */
  void (*error)(void *user, const char *what, int err);
  /* The answer to sh_api_publish / sh_api_history request |req| (the
     driver's number): HTTP |status| and the JSON body |buf| (take a
     reference to keep it past the call).  May be NULL for a driver that
     makes no API requests. */
  void (*api_reply)(void *user, uint64_t req, uint16_t status, hub_buf *buf);
} sh_transport;

/* Counters of the policies applied, for tests and metrics. */
typedef struct sh_stats {
  uint64_t nomem_closes;   /* connections closed 1011 */
  uint64_t bp_resets;      /* forced backplane reconnects */
  uint64_t expiry_retries; /* handle_expiry NOMEM, retried */
  uint64_t refused;        /* conn_open / publish refused (NOMEM) */
  uint64_t early_writes;   /* write-now list connections written */
} sh_stats;

/*
 * The shell.  Members are private; they are in the header so that the
 * per-delivery helpers below inline.
 */
typedef struct sh {
  hub *h;
  bp *bp; /* NULL: embedded backplane */
  sh_transport t;
  sh_oq *urgent; /* backlog past the mark: write before the next event */
  uint64_t urgent_bytes;
  uint32_t urgent_msgs;
  hub_tstamp timer_at; /* what the driver's timer is armed at */
  hub_tstamp retry_at; /* handle_expiry retry, HUB_TSTAMP_NONE */
  uint32_t pong_max_frames;
  uint64_t pong_max_bytes;
  int bp_failed; /* a bp op ran out of memory during this drain */
  sh_stats st;
  sh_rec *rec; /* NULL, or recording every hub call (sh_record) */
} sh;

/*
 * sh_init prepares |s| over hub |h| (borrowed for |s|'s lifetime) and
 * backplane |b| (NULL when embedded; borrowed).  |t| is copied.  The
 * early-write marks are a quarter of |cfg|'s max_queue_msgs and
 * max_queue_bytes.  Allocates nothing; there is no sh_fini.  Call
 * sh_drain once afterwards for the effects hub_new queued.
 */
void sh_init(sh *s, hub *h, bp *b, const hub_config *cfg,
             const sh_transport *t);

/* The driver's transport |user| moved (the simulator's instance table
   grows by realloc): later callbacks get |user|.  Not from a callback. */
/* The value of hexadecimal digit |ch|, or -1: for the percent-decoding
   of URLs and tokens in the drivers and the JSON escapes of sh_claims. */
static inline int sh_hex_digit(char ch) {
  if (ch >= '0' && ch <= '9') {
    return ch - '0';
  }
  if (ch >= 'a' && ch <= 'f') {
    return ch - 'a' + 10;
  }
  if (ch >= 'A' && ch <= 'F') {
    return ch - 'A' + 10;
  }
  return -1;
}

static inline void sh_set_user(sh *s, void *user) {
  s->t.user = user;
}

/* Applies every queued effect, writes the write-now list, re-arms the
   timer.  Every wrapper ends with it; call it yourself only after
   hub_new. */
void sh_drain(sh *s, hub_tstamp now);

/* Verdicts of the calls a driver answers (an upgrade, POST /publish). */
enum {
  SH_OK = 0,
  SH_BAD_REQUEST = 1, /* publish: *errmsg says why (HTTP 400) */
  SH_UNAVAILABLE = 2, /* out of memory for it: try later (HTTP 503) */
  SH_SHUT_DOWN = 3,   /* shutting down (HTTP 503) */
  SH_BP_CONGESTED = 4 /* publish: the backplane's queue is full (503) */
};

/* The events, one wrapper per hub event (hub.h says what each means). */

/* Returns SH_OK (*id set), SH_UNAVAILABLE or SH_SHUT_DOWN: refuse the
   connection.  The open's effects are applied before it returns, after
   *id is set: |conn_user| must already take send and close (pass the
   connection's own id field as |id|). */
int sh_conn_open(sh *s, hub_conn_id *id, const char *remote_addr,
                 void *conn_user, hub_tstamp now);
/* sh_conn_open with the claims of a verified token (|auth| borrowed for
   the call).  Also returns SH_BAD_REQUEST: the claims break a HUB_AUTH_*
   limit (the server answers 401). */
int sh_conn_open_auth(sh *s, hub_conn_id *id, const char *remote_addr,
                      const hub_auth *auth, void *conn_user, hub_tstamp now);
void sh_conn_msg(sh *s, hub_conn_id id, void *conn_user, int binary,
                 const uint8_t *data, size_t len, hub_tstamp now);
void sh_conn_pong(sh *s, hub_conn_id id, hub_tstamp now);
/* The driver wrote |bytes| SEND bytes finishing |msgs| frames (already
   taken off |q| with sh_oq_pop). */
void sh_conn_written(sh *s, hub_conn_id id, size_t msgs, size_t bytes,
                     hub_tstamp now);
void sh_conn_closed(sh *s, hub_conn_id id, hub_tstamp now);
void sh_bp_msg(sh *s, const char *channel, size_t channel_len,
               const uint8_t *data, size_t len, hub_tstamp now);
void sh_bp_subscribed(sh *s, const char *channel, size_t channel_len,
                      hub_tstamp now);
void sh_bp_up(sh *s, hub_tstamp now);
void sh_bp_down(sh *s, hub_tstamp now);
/* History answers from the backplane (bp_events on_hpublished, on_hread;
   bp_hentry and hub_hentry have one layout).  hread NOMEM: a forced
   reconnect, as for sh_bp_msg. */
void sh_bp_hpublished(sh *s, uint64_t req, int ok, uint64_t offset,
                      const char *epoch, size_t epoch_len, hub_tstamp now);
void sh_bp_hread(sh *s, uint64_t req, int ok, uint64_t offset,
                 const char *epoch, size_t epoch_len, const hub_hentry *e,
                 size_t n, hub_tstamp now);
/* The HTTP API: answered through the transport's api_reply, now or
   later (exactly once), when this returns SH_OK; otherwise
   SH_UNAVAILABLE (no memory: answer 503 yourself) or SH_SHUT_DOWN. */
int sh_api_publish(sh *s, uint64_t req, const uint8_t *body, size_t len,
                   hub_tstamp now);
int sh_api_history(sh *s, uint64_t req, const char *channel, size_t len,
                   uint64_t since, uint64_t limit, hub_tstamp now);
/* The backplane's command queue passed its cap (1) or drained (0). */
void sh_bp_congested(sh *s, int congested, hub_tstamp now);
/* Returns SH_OK, SH_BAD_REQUEST (*errmsg: a static reason),
   SH_UNAVAILABLE, SH_SHUT_DOWN or SH_BP_CONGESTED. */
int sh_publish(sh *s, const uint8_t *body, size_t len, const char **errmsg,
               hub_tstamp now);
/* The driver's hub timer fired. */
void sh_expiry(sh *s, hub_tstamp now);
void sh_shutdown(sh *s, hub_tstamp now);

/*
 * A peer's ping arrived on the connection owning |q| with |frames|
 * entries queued: pongs are not counted by the hub, so a peer that pings
 * without reading must not grow the queue without bound.  Returns 0:
 * queue the pong; or -1: the shell closed the connection 1008 "slow
 * consumer" (transport close, then the hub told) - queue nothing.
 */
int sh_conn_ping_in(sh *s, hub_conn_id id, void *conn_user, const sh_oq *q,
                    size_t frames, hub_tstamp now);

/*
 * Claims: the payload JSON of a verified token (the server's, after
 * libjwt checked its signature; the simulator's, which has none) read
 * into the hub_auth the core takes.  sub is required (a string of 1 to
 * 128 bytes); subscribe and publish, when present, are arrays of
 * strings; exp and nbf are NumericDates (a fraction is truncated).
 * Other claims are ignored.  The driver converts exp into
 * auth.expires on the core's clock (it stays HUB_TSTAMP_NONE here).
 */
typedef struct sh_claims {
  hub_auth auth; /* points into this struct */
  int has_exp, has_nbf;
  int64_t exp, nbf; /* Unix seconds */
  char sub[HUB_AUTH_SUB_MAX + 1];
  const char *subscribe[HUB_AUTH_GLOBS_MAX];
  const char *publish[HUB_AUTH_GLOBS_MAX];
  size_t used;
  char bytes[8192]; /* the globs, NUL-terminated */
} sh_claims;

/* Reads |json| (|len| bytes, borrowed) into |c|.  Returns 0, or -1 with
 *err a static reason (for a 401 or an error reply). */
int sh_claims_parse(sh_claims *c, const char *json, size_t len,
                    const char **err);

/* Encodes a close frame into |f| (SH_CLOSE_FRAME_MAX bytes); code 0
   gives an empty close frame.  Returns its length. */
size_t sh_close_frame(uint8_t *f, uint16_t code, const char *reason);

/* Takes |q| off the write-now list (a driver that frees a connection
   while it may be on it).  O(length of the list). */
void sh_oq_forget(sh *s, sh_oq *q);

/*
 * Out-queue accounting, on the per-delivery path: inline.
 *
 * sh_oq_push counts |len| bytes queued on |q|; |send| is 1 for a SEND
 * frame (counted by the hub), 0 for the driver's own bytes (control
 * frames, HTTP).  A connection whose backlog reaches a quarter of
 * max_queue_msgs or max_queue_bytes goes on the write-now list: the hub
 * counts everything unwritten against its limits, and a burst of events
 * handled before the driver's next write (hundreds of publishes in one
 * read) would otherwise evict a client that keeps up.
 */
static inline void sh_oq_push(sh *s, sh_oq *q, size_t len, int send) {
  q->bytes += len;
  if (send) {
    q->msgs++;
    if (!q->urgent &&
        (q->msgs >= s->urgent_msgs || q->bytes >= s->urgent_bytes)) {
      q->urgent = 1;
      q->urgent_next = s->urgent;
      s->urgent = q;
    }
  }
}

/* |bytes| (every kind) left the queue, finishing |msgs| SEND frames. */
static inline void sh_oq_pop(sh_oq *q, size_t msgs, size_t bytes) {
  q->bytes -= bytes;
  q->msgs -= (uint32_t)msgs;
}

/*
 * Frames finished by bytes written, for a queue of whole frames: the
 * head frame is |len| bytes long and *off of them were written before;
 * *left more bytes were written now.  Returns 1 when the frame is now
 * complete (*left reduced by the rest of it, *off back to 0), else 0
 * (*off advanced by *left, *left 0).
 */
static inline int sh_frame_consume(size_t len, size_t *off, size_t *left) {
  size_t rest = len - *off;
  if (*left < rest) {
    *off += *left;
    *left = 0;
    return 0;
  }
  *left -= rest;
  *off = 0;
  return 1;
}

/*
 * The backplane link's reconnect state machine (down -> wait -> connect
 * -> up), shared by the Redis backplane and the simulated one.  Waits
 * grow from SH_LINK_BACKOFF_MIN_NS, doubling per failed attempt, to
 * SH_LINK_BACKOFF_MAX_NS; each wait is drawn uniformly from [b/2, b] of
 * the current step b, from a PRNG the driver seeds (so instances that
 * lost the same Redis do not retry in step).
 */
#define SH_LINK_BACKOFF_MIN_NS (100 * HUB_NS_PER_MS)
#define SH_LINK_BACKOFF_MAX_NS (5 * HUB_NS_PER_S)

enum {
  SH_LINK_DOWN = 0,   /* not connected, no retry scheduled */
  SH_LINK_WAIT,       /* waiting for retry_at */
  SH_LINK_CONNECTING, /* an attempt is under way */
  SH_LINK_UP
};

typedef struct sh_link {
  int state;
  hub_tstamp step_ns;  /* the current backoff step */
  hub_tstamp retry_at; /* SH_LINK_WAIT: when to connect */
  uint64_t rng;
  uint64_t ups; /* times it came up */
} sh_link;

void sh_link_init(sh_link *l, uint64_t seed);
/* An attempt starts (from DOWN or WAIT).  Returns 0, or -1 if one is
   already under way or the link is up (do nothing). */
int sh_link_connect(sh_link *l);
/* The attempt succeeded: up, and the backoff starts over. */
void sh_link_up(sh_link *l);
/* The link was lost or an attempt failed: from UP, CONNECTING or DOWN
   it waits for the next step of backoff; in WAIT nothing changes.
   Returns retry_at: connect then (sh_link_connect). */
hub_tstamp sh_link_lost(sh_link *l, hub_tstamp now);

#ifdef __cplusplus
}
#endif

#endif /* SHELL_H */
