/*
 * sh_rec.h - the flight recorder: the core's inputs, recorded at the
 * shell, and the reader that replays them (docs/recording.md).
 *
 * The core is pure, so the order of its inputs is the whole story of a
 * run.  The recorder writes the configuration and seed given to hub_new
 * (with its |now|), then every event call into the core with its
 * arguments and |now|, in call order, and after each event the result
 * of the call and a running digest of the effects drained until the next
 * one.  A replay (wshub-sim --replay) feeds a fresh core the same inputs
 * and checks that it drains the same effects.
 *
 * Like the rest of shell/, the recorder is pure: it fills a buffer the
 * driver gives it and hands full buffers to the driver's sink (no
 * syscall per event).  The core's event calls of shell.c go through the
 * sh_call_ functions at the end of this header, so each is recorded
 * exactly once, in order, whether a driver's event or one the shell
 * makes itself (hub_on_conn_closed after a CLOSE it applied, the forced
 * hub_on_bp_down, hub_on_conn_verified answering a VERIFY).  The auth
 * events carry the hub_auth claims as given (docs/recording.md).
 *
 * Threading: none.  sh_rec_unwritten may be called from a signal
 * handler that interrupted the recorder's thread.
 */
#ifndef SH_REC_H
#define SH_REC_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "hub.h"
#include "shell.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The file header (docs/recording.md). */
#define SH_REC_MAGIC "WSHUBREC"
#define SH_REC_VERSION 1
#define SH_REC_HEADER_LEN 20

/* Record types.  An event record is written before its call; the
   RESULT that follows it closes the event's effects. */
enum {
  SH_REC_CONFIG = 1, /* hub_new: event 0 */
  SH_REC_CONN_OPEN,
  SH_REC_CONN_MSG,
  SH_REC_CONN_PONG,
  SH_REC_CONN_WRITTEN,
  SH_REC_CONN_CLOSED,
  SH_REC_BP_MSG,
  SH_REC_BP_SUBSCRIBED,
  SH_REC_BP_UP,
  SH_REC_BP_DOWN,
  SH_REC_PUBLISH,
  SH_REC_EXPIRY,
  SH_REC_SHUTDOWN,
  SH_REC_CONN_OPEN_AUTH, /* 14: hub_on_conn_open_auth */
  SH_REC_CONN_VERIFIED,  /* 15: hub_on_conn_verified */
  SH_REC_BP_CONGESTED,   /* 16: hub_on_bp_congested */
  SH_REC_BP_HPUBLISHED,  /* 17: hub_on_bp_hpublished */
  SH_REC_BP_HREAD,       /* 18: hub_on_bp_hread */
  SH_REC_API_PUBLISH,    /* 19: hub_api_publish */
  SH_REC_API_HISTORY,    /* 20: hub_api_history */
  SH_REC_EVENT_MAX,
  SH_REC_RESULT = 32,
  SH_REC_END = 33,
  SH_REC_ALLOC_FAIL = 34 /* an allocation of the open call failed */
};

/* CONN_MSG flags. */
#define SH_REC_MSG_BINARY 1u
#define SH_REC_MSG_NODATA 2u /* refused by length, data not given */

/* CONN_OPEN_AUTH and CONN_VERIFIED flags. */
#define SH_REC_AUTH_CLAIMS 1u /* a hub_auth was given (else NULL) */
#define SH_REC_AUTH_ERR 2u    /* CONN_VERIFIED: an err text was given */

/* RESULT flags. */
#define SH_REC_QEMPTY 1u /* the effect queue was empty at the next event */

/* Why recording stopped (sh_rec.stopped, END reasons). */
enum {
  SH_REC_ON = 0,
  SH_REC_STOP_END,   /* sh_rec_end: the run ended */
  SH_REC_STOP_LIMIT, /* the file would have passed max_bytes */
  SH_REC_STOP_WRITE  /* the sink failed */
};

/* The worst case of a RESULT record and of an END record: kept free
   below max_bytes so that a stop at the limit still ends the file. */
#define SH_REC_RESULT_MAX 24
#define SH_REC_END_MAX 14

/*
 * The digest: a 64-bit hash over each effect's type, close code, close
 * kind, TTL, connection id, name, bytes and reason, chained in drain
 * order.  Hand-written (docs/recording.md gives the definition) rather
 * than taken from a library: shell/ links only libc memory and string
 * functions, the value is part of the file format and must never change
 * with a library version, and it is 20 lines.  The SEND frames of one
 * publish share one hub_buf: the digest keeps a reference to the last
 * frame it hashed with its hash, so a delivery costs a few multiplies.
 */
typedef struct sh_digest {
  uint64_t d;
  hub_buf *last; /* a reference held (sh_digest_fini drops it) */
  uint64_t last_hash;
} sh_digest;

#define SH_DIGEST_SEED UINT64_C(0x6a09e667f3bcc908)

static inline uint64_t sh_mix(uint64_t h, uint64_t v) {
  h = (h ^ v) * UINT64_C(0x9e3779b97f4a7c15);
  return h ^ (h >> 32);
}

/* The hash of |len| bytes at |p| (little-endian 8-byte words). */
uint64_t sh_hash(const void *p, size_t len);

void sh_digest_init(sh_digest *g);
/* Drops the frame reference: before the allocator of the hub is freed. */
void sh_digest_fini(sh_digest *g);
uint64_t sh_digest_buf(sh_digest *g, hub_buf *b);

static inline void sh_digest_effect(sh_digest *g, const hub_effect *e) {
  uint64_t d = g->d;
  d = sh_mix(d, (uint64_t)e->type | (uint64_t)e->close_code << 8 |
                  (uint64_t)e->close_kind << 24 | (uint64_t)e->ttl_s << 32);
  d = sh_mix(d, e->conn);
  if (e->type >= HUB_EFF_BP_HPUBLISH) {
    /* History effects only, so older recordings' digests are unchanged. */
    d = sh_mix(d, e->req);
    d = sh_mix(d, e->since);
    d = sh_mix(d, (uint64_t)e->count | (uint64_t)e->meta_ttl_s << 32);
    d = sh_mix(d, e->status);
  }
  if (e->name != NULL) {
    d = sh_mix(d, sh_hash(e->name->data, e->name->len));
  }
  if (e->buf != NULL) {
    d = sh_mix(d, e->buf == g->last ? g->last_hash : sh_digest_buf(g, e->buf));
  }
  if (e->reason != NULL) {
    d = sh_mix(d, sh_hash(e->reason, strlen(e->reason)));
  }
  g->d = d;
}

/*
 * The writer.  |write| gets whole records (the header first): it
 * returns 0, or -1 when it failed (recording stops: SH_REC_STOP_WRITE).
 * |stopped| (optional) is told once when recording stops for a reason
 * other than sh_rec_end, for a log line.  Neither may call the shell.
 */
typedef struct sh_rec_sink {
  void *user;
  int (*write)(void *user, const uint8_t *data, size_t len);
  void (*stopped)(void *user, int why);
} sh_rec_sink;

typedef struct sh_rec {
  uint8_t *buf;
  size_t cap;
  /* Whole records in buf[0..len); file_off bytes were handed to the sink
     before buf[0].  Read by sh_rec_unwritten from a signal handler. */
  volatile size_t len;
  volatile uint64_t file_off;
  uint64_t max_bytes;
  sh_rec_sink sink;
  int stopped; /* SH_REC_ON or the SH_REC_STOP_ reason */
  hub_tstamp last_now;
  uint64_t events; /* event records written after CONFIG */
  /* The open event: its result, the effects drained since it. */
  int seg_open;
  int seg_rc;
  uint64_t seg_count;
  int qempty;           /* the queue was found empty since the last effect */
  int in_call;          /* inside a core call (sh_rec_alloc counts) */
  uint64_t call_allocs; /* allocations of the hub in this call */
  int stop_pending;     /* an allocation failure passed the limit */
  sh_digest dg;
} sh_rec;

/*
 * sh_rec_init prepares |r| over |buf| of |cap| bytes (borrowed for |r|'s
 * lifetime; at least 256), writing at most |max_bytes| in all (0: no
 * limit).  |sink| is copied.  Allocates nothing.
 */
void sh_rec_init(sh_rec *r, uint8_t *buf, size_t cap, uint64_t max_bytes,
                 const sh_rec_sink *sink);

/*
 * sh_record writes the header and the hub_new inputs (|cfg| exactly as
 * given to hub_new, and its |now|) and attaches |r| to |s|: call it after
 * sh_init and before the first sh_drain.  Returns 0, or -1 when nothing
 * could be written (the limit is below the header, or the sink failed;
 * |r| is not attached).
 */
int sh_record(sh *s, sh_rec *r, const hub_config *cfg, hub_tstamp now);

/* Hands the whole records buffered so far to the sink (shutdown, a
   periodic flush).  Returns 0 or -1 (the sink failed: recording stops). */
int sh_rec_flush(sh_rec *r);

/* The run is over: closes the last event, writes END, flushes and stops.
   Returns 0 or -1. */
int sh_rec_end(sh_rec *r);

/* Drops the digest's frame reference. */
void sh_rec_fini(sh_rec *r);

/*
 * For a fatal-signal handler: the whole records not yet in the file,
 * when the file (opened for the sink, written in order) is at offset
 * |file_pos| now.  Returns their length and sets *p.  A flush that the
 * signal interrupted is resumed where the file ends, so no byte is
 * written twice.  Async-signal-safe (it only reads).
 */
size_t sh_rec_unwritten(const sh_rec *r, uint64_t file_pos, const uint8_t **p);

/* Internal, through the sh_call_ functions below. */
void sh_rec_event(sh_rec *r, int type, hub_tstamp now, uint64_t id, uint64_t a,
                  uint64_t b, const void *p1, size_t l1, const void *p2,
                  size_t l2);

/* CONN_OPEN_AUTH (|text| the address) and CONN_VERIFIED (|id|, |text|
   the error or NULL), with the claims |auth| or NULL. */
void sh_rec_event_auth(sh_rec *r, int type, hub_tstamp now, uint64_t id,
                       const char *text, const hub_auth *auth);

/* BP_HREAD, with its entries. */
void sh_rec_event_hread(sh_rec *r, hub_tstamp now, uint64_t req, int ok,
                        uint64_t offset, const char *epoch, size_t epoch_len,
                        const hub_hentry *e, size_t ne);

static inline void sh_rec_effect(sh_rec *r, const hub_effect *e) {
  if (r != NULL && r->stopped == SH_REC_ON) {
    sh_digest_effect(&r->dg, e);
    r->seg_count++;
    r->qempty = 0;
  }
}

static inline void sh_rec_qempty(sh_rec *r) {
  if (r != NULL) {
    r->qempty = 1;
  }
}

/* The core call returned |rc| (0 for facts). */
static inline void sh_rec_rc(sh_rec *r, int rc) {
  if (r != NULL) {
    r->in_call = 0;
    if (rc != 0) {
      r->seg_rc = rc;
    }
  }
}

void sh_rec_alloc_failed(sh_rec *r);

/*
 * For the driver's allocator (the hub_mem given to hub_new): an
 * allocation was made, |failed| if it returned NULL.  Inside a core call
 * each is counted, and a failure is recorded with its number, so that a
 * replay fails the same allocation of the same call.  |r| may be NULL.
 */
static inline void sh_rec_alloc(sh_rec *r, int failed) {
  if (r != NULL && r->in_call) {
    r->call_allocs++;
    if (failed) {
      sh_rec_alloc_failed(r);
    }
  }
}

/*
 * The reader.  sh_rec_open checks the header of |data| (|len| bytes,
 * borrowed for the reader's lifetime); sh_rec_next decodes one record
 * into |out|, whose pointers point into |data| (or the reader, for the
 * instance id) until the next call.
 */
typedef struct sh_rec_record {
  int type;
  uint64_t offset; /* of the record in the file */
  hub_tstamp now;  /* events and CONFIG */
  uint64_t id;     /* conn events: the connection */
  uint64_t a;      /* CONN_MSG, CONN_OPEN_AUTH, CONN_VERIFIED: flags;
                      CONN_WRITTEN: msgs */
  uint64_t b;      /* CONN_MSG: length; CONN_WRITTEN: bytes */
  /* Remote address, message, channel, body; CONN_VERIFIED: err. */
  const uint8_t *p1;
  size_t l1;
  /* BP_MSG: data; CONN_OPEN_AUTH, CONN_VERIFIED: the encoded claims
     (with SH_REC_AUTH_CLAIMS; read them with sh_rec_auth). */
  const uint8_t *p2;
  size_t l2;
  hub_config cfg; /* CONFIG */
  int rc;         /* RESULT */
  uint64_t count; /* RESULT: effects; END: events; BP_HREAD: entries */
  uint64_t flags; /* RESULT: SH_REC_QEMPTY; END: the reason */
  uint64_t digest;
} sh_rec_record;

typedef struct sh_rec_reader {
  const uint8_t *data;
  size_t len;
  size_t off;
  hub_tstamp now;
  char instance_id[129];
} sh_rec_reader;

/* Results of the reader (negative) */
enum {
  SH_REC_EOF = 0,        /* no more records */
  SH_REC_RECORD = 1,     /* *out holds one */
  SH_REC_TRUNCATED = -1, /* the last record is cut off */
  SH_REC_BAD = -2        /* not a recording / corrupted: *why says why */
};

/* Returns 0, or SH_REC_BAD with *why a static text. */
int sh_rec_open(sh_rec_reader *rd, const uint8_t *data, size_t len,
                const char **why);
/* Returns SH_REC_RECORD, SH_REC_EOF, SH_REC_TRUNCATED (out->type and
   out->offset say what was cut off) or SH_REC_BAD (*why). */
int sh_rec_next(sh_rec_reader *rd, sh_rec_record *out, const char **why);

/*
 * The claims of a CONN_OPEN_AUTH or CONN_VERIFIED record |o| (with
 * SH_REC_AUTH_CLAIMS), decoded into |out|: its strings are copied,
 * NUL-terminated, into |chars| (|nchars| bytes) and its glob lists point
 * into |globs| (|nglobs| entries).  SH_REC_AUTH_SPACE(o->l2) of each is
 * always enough.  Returns 0, or -1 when the space is too small (or the
 * record has no claims).  |out| is valid while the three are.
 */
#define SH_REC_AUTH_SPACE(l2) ((l2) + 1)
/* The entries of a BP_HREAD record (o->count of them; p2/l2 hold their
   encoding): the first |cap| into |out|, pointing into the record.
   Returns o->count. */
size_t sh_rec_hentries(const sh_rec_record *o, hub_hentry *out, size_t cap);
int sh_rec_auth(const sh_rec_record *o, hub_auth *out, char *chars,
                size_t nchars, const char **globs, size_t nglobs);

/* "conn_msg", "result", ... ("?" for an unknown type). */
const char *sh_rec_type_name(int type);

/*
 * The core's event calls, recorded: shell.c calls the core only through
 * these (and never hub_on_* itself), so every call is recorded exactly
 * once and in order.
 */
static inline int sh_call_conn_open(sh *s, hub_conn_id *id, const char *addr,
                                    void *conn_user, hub_tstamp now) {
  int rc;
  if (s->rec != NULL) {
    sh_rec_event(s->rec, SH_REC_CONN_OPEN, now, 0, 0, 0, addr,
                 addr != NULL ? strlen(addr) : 0, NULL, 0);
  }
  rc = hub_on_conn_open(s->h, id, addr, conn_user, now);
  sh_rec_rc(s->rec, rc);
  return rc;
}

static inline int sh_call_conn_open_auth(sh *s, hub_conn_id *id,
                                         const char *addr, const hub_auth *auth,
                                         void *conn_user, hub_tstamp now) {
  int rc;
  if (s->rec != NULL) {
    sh_rec_event_auth(s->rec, SH_REC_CONN_OPEN_AUTH, now, 0, addr, auth);
  }
  rc = hub_on_conn_open_auth(s->h, id, addr, auth, conn_user, now);
  sh_rec_rc(s->rec, rc);
  return rc;
}

static inline int sh_call_conn_verified(sh *s, hub_conn_id id,
                                        const hub_auth *auth, const char *err,
                                        hub_tstamp now) {
  int rc;
  if (s->rec != NULL) {
    sh_rec_event_auth(s->rec, SH_REC_CONN_VERIFIED, now, id, err, auth);
  }
  rc = hub_on_conn_verified(s->h, id, auth, err, now);
  sh_rec_rc(s->rec, rc);
  return rc;
}

static inline int sh_call_conn_msg(sh *s, hub_conn_id id, int binary,
                                   const uint8_t *data, size_t len,
                                   hub_tstamp now) {
  int rc;
  if (s->rec != NULL) {
    uint64_t fl =
      (binary ? SH_REC_MSG_BINARY : 0) | (data == NULL ? SH_REC_MSG_NODATA : 0);
    sh_rec_event(s->rec, SH_REC_CONN_MSG, now, id, fl, len, data,
                 data != NULL ? len : 0, NULL, 0);
  }
  rc = hub_on_conn_msg(s->h, id, binary, data, len, now);
  sh_rec_rc(s->rec, rc);
  return rc;
}

static inline void sh_call_conn_pong(sh *s, hub_conn_id id, hub_tstamp now) {
  if (s->rec != NULL) {
    sh_rec_event(s->rec, SH_REC_CONN_PONG, now, id, 0, 0, NULL, 0, NULL, 0);
  }
  hub_on_conn_pong(s->h, id, now);
  sh_rec_rc(s->rec, 0);
}

static inline void sh_call_conn_written(sh *s, hub_conn_id id, size_t msgs,
                                        size_t bytes, hub_tstamp now) {
  if (s->rec != NULL) {
    sh_rec_event(s->rec, SH_REC_CONN_WRITTEN, now, id, msgs, bytes, NULL, 0,
                 NULL, 0);
  }
  hub_on_conn_written(s->h, id, msgs, bytes, now);
  sh_rec_rc(s->rec, 0);
}

static inline void sh_call_conn_closed(sh *s, hub_conn_id id, hub_tstamp now) {
  if (s->rec != NULL) {
    sh_rec_event(s->rec, SH_REC_CONN_CLOSED, now, id, 0, 0, NULL, 0, NULL, 0);
  }
  hub_on_conn_closed(s->h, id, now);
  sh_rec_rc(s->rec, 0);
}

static inline int sh_call_bp_msg(sh *s, const char *channel, size_t clen,
                                 const uint8_t *data, size_t len,
                                 hub_tstamp now) {
  int rc;
  if (s->rec != NULL) {
    sh_rec_event(s->rec, SH_REC_BP_MSG, now, 0, 0, 0, channel, clen, data, len);
  }
  rc = hub_on_bp_msg(s->h, channel, clen, data, len, now);
  sh_rec_rc(s->rec, rc);
  return rc;
}

static inline void sh_call_bp_subscribed(sh *s, const char *channel,
                                         size_t clen, hub_tstamp now) {
  if (s->rec != NULL) {
    sh_rec_event(s->rec, SH_REC_BP_SUBSCRIBED, now, 0, 0, 0, channel, clen,
                 NULL, 0);
  }
  hub_on_bp_subscribed(s->h, channel, clen, now);
  sh_rec_rc(s->rec, 0);
}

static inline int sh_call_bp_up(sh *s, hub_tstamp now) {
  int rc;
  if (s->rec != NULL) {
    sh_rec_event(s->rec, SH_REC_BP_UP, now, 0, 0, 0, NULL, 0, NULL, 0);
  }
  rc = hub_on_bp_up(s->h, now);
  sh_rec_rc(s->rec, rc);
  return rc;
}

static inline void sh_call_bp_down(sh *s, hub_tstamp now) {
  if (s->rec != NULL) {
    sh_rec_event(s->rec, SH_REC_BP_DOWN, now, 0, 0, 0, NULL, 0, NULL, 0);
  }
  hub_on_bp_down(s->h, now);
  sh_rec_rc(s->rec, 0);
}

static inline void sh_call_bp_congested(sh *s, int congested, hub_tstamp now) {
  if (s->rec != NULL) {
    sh_rec_event(s->rec, SH_REC_BP_CONGESTED, now, 0, congested != 0, 0, NULL,
                 0, NULL, 0);
  }
  hub_on_bp_congested(s->h, congested, now);
  sh_rec_rc(s->rec, 0);
}

static inline int sh_call_publish(sh *s, const uint8_t *body, size_t len,
                                  const char **errmsg, hub_tstamp now) {
  int rc;
  if (s->rec != NULL) {
    sh_rec_event(s->rec, SH_REC_PUBLISH, now, 0, 0, 0, body, len, NULL, 0);
  }
  rc = hub_publish(s->h, body, len, errmsg, now);
  sh_rec_rc(s->rec, rc);
  return rc;
}

static inline int sh_call_bp_hpublished(sh *s, uint64_t req, int ok,
                                        uint64_t offset, const char *epoch,
                                        size_t epoch_len, hub_tstamp now) {
  int rc;
  if (s->rec != NULL) {
    sh_rec_event(s->rec, SH_REC_BP_HPUBLISHED, now, req, ok != 0, offset, epoch,
                 epoch != NULL ? epoch_len : 0, NULL, 0);
  }
  rc = hub_on_bp_hpublished(s->h, req, ok, offset, epoch, epoch_len, now);
  sh_rec_rc(s->rec, rc);
  return rc;
}

static inline int sh_call_bp_hread(sh *s, uint64_t req, int ok, uint64_t offset,
                                   const char *epoch, size_t epoch_len,
                                   const hub_hentry *e, size_t n,
                                   hub_tstamp now) {
  int rc;
  if (s->rec != NULL) {
    sh_rec_event_hread(s->rec, now, req, ok, offset, epoch, epoch_len, e, n);
  }
  rc = hub_on_bp_hread(s->h, req, ok, offset, epoch, epoch_len, e, n, now);
  sh_rec_rc(s->rec, rc);
  return rc;
}

static inline int sh_call_api_publish(sh *s, uint64_t req, const uint8_t *body,
                                      size_t len, hub_tstamp now) {
  int rc;
  if (s->rec != NULL) {
    sh_rec_event(s->rec, SH_REC_API_PUBLISH, now, req, 0, 0, body, len, NULL,
                 0);
  }
  rc = hub_api_publish(s->h, req, body, len, now);
  sh_rec_rc(s->rec, rc);
  return rc;
}

static inline int sh_call_api_history(sh *s, uint64_t req, const char *channel,
                                      size_t len, uint64_t since,
                                      uint64_t limit, hub_tstamp now) {
  int rc;
  if (s->rec != NULL) {
    sh_rec_event(s->rec, SH_REC_API_HISTORY, now, req, since, limit, channel,
                 len, NULL, 0);
  }
  rc = hub_api_history(s->h, req, channel, len, since, limit, now);
  sh_rec_rc(s->rec, rc);
  return rc;
}

static inline int sh_call_expiry(sh *s, hub_tstamp now) {
  int rc;
  if (s->rec != NULL) {
    sh_rec_event(s->rec, SH_REC_EXPIRY, now, 0, 0, 0, NULL, 0, NULL, 0);
  }
  rc = hub_handle_expiry(s->h, now);
  sh_rec_rc(s->rec, rc);
  return rc;
}

static inline void sh_call_shutdown(sh *s, hub_tstamp now) {
  if (s->rec != NULL) {
    sh_rec_event(s->rec, SH_REC_SHUTDOWN, now, 0, 0, 0, NULL, 0, NULL, 0);
  }
  hub_shutdown(s->h, now);
  sh_rec_rc(s->rec, 0);
}

#ifdef __cplusplus
}
#endif

#endif /* SH_REC_H */
