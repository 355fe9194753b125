/*
 * srv.h - the production server's internal interface (server/ only).
 *
 * One libev loop per process.  srv_main.c owns the process (flags, the
 * hub, the backplane, timers, signals, metrics); srv_conn.c owns sockets
 * (accept, WebSocket framing through wslay's frame API, the outbound
 * queue written with writev); srv_upgrade.c owns HTTP (http-parser, the
 * RFC 6455 handshake, the plain endpoints).
 */
#ifndef SRV_H
#define SRV_H

#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include <ev.h>
#include <http_parser.h>
#include <wslay/wslay.h>

#include "hub.h"
#include "bp.h"

/* Flags, as CONTRACT.md lists them (durations already in ns). */
typedef struct srv_config {
  char listen_host[256];
  int listen_port;
  const char *redis_url; /* NULL: embedded backplane */
  const char *redis_prefix;
  char instance_id[129];
  /* The hub's settings, set by flag name through hub_config_set;
     hub.registry is -1 until given (then: on with --redis). */
  hub_config hub;
  hub_tstamp shutdown_timeout_ns;
  hub_tstamp handshake_timeout_ns;
  uint64_t max_connections; /* 0: from the open-file limit */
  int sndbuf;               /* SO_SNDBUF for client sockets, 0 = default */
} srv_config;

/* Connection states. */
enum {
  SRV_HTTP = 0,    /* reading HTTP requests (maybe an upgrade) */
  SRV_WS,          /* an open WebSocket, known to the hub */
  SRV_FLUSH_CLOSE, /* last bytes (a response, a close frame) queued;
                      shut the write side once they are out */
  SRV_CLOSE_WAIT,  /* write side shut; waiting for the peer's EOF */
  SRV_DEAD         /* fd closed; freed by srv_reap */
};

/*
 * One queued write:
 * - SRV_OUT_SPAN: small SEND frames, copied once per message (not per
 *   delivery) into a shared batch (owner, an srv_batch) and queued as
 *   spans of it: consecutive messages to one connection that lie back to
 *   back in the batch share one entry (nmsgs frames) and leave as one
 *   iovec;
 * - SRV_OUT_HB: a large shared SEND frame (owner is the hub_buf);
 * - SRV_OUT_OWNED: bytes of our own (free p when done);
 * - SRV_OUT_STATIC: static bytes.
 */
typedef struct srv_out {
  const uint8_t *p;
  void *owner;
  uint32_t len;
  uint16_t kind;
  uint16_t nmsgs; /* SPAN: frames in it */
} srv_out;

enum { SRV_OUT_STATIC = 0, SRV_OUT_OWNED, SRV_OUT_HB, SRV_OUT_SPAN };

typedef struct srv_rx srv_rx;     /* a lent frame parser, srv_conn.c */
typedef struct srv_http srv_http; /* HTTP request state, srv_upgrade.c */

typedef struct srv_conn {
  /*
   * The fields srv_conn_send touches per delivery come first, together,
   * so that a delivery costs one miss on the connection: the outbound
   * queue's bookkeeping lives here, not behind its pointer.  The queue
   * (oq, an array of oq_cap entries, [oq_head, oq_tail) unsent) is
   * allocated only while something waits.
   */
  srv_out *oq;
  uint64_t oq_bytes;           /* bytes not yet written */
  struct srv_conn *dirty_next; /* the flush list */
  uint32_t oq_tail;            /* one past the last entry */
  uint32_t oq_cap;
  uint32_t oq_msgs; /* SEND frames not yet fully written */
  uint8_t state;
  uint8_t dirty;
  uint8_t urgent;               /* on the write-now list */
  uint8_t want_write;           /* io watches EV_WRITE */
  uint8_t in_list;              /* on a timed list */
  uint32_t oq_head;             /* first unsent entry */
  uint32_t oq_head_off;         /* bytes of oq[oq_head] already written */
  struct srv_conn *urgent_next; /* the write-now list (srv_pump) */
  ev_io io;
  struct srv_conn *prev, *next; /* the timed list (HTTP or close-wait) */
  hub_tstamp deadline;          /* for the timed list */
  hub_conn_id id;               /* 0 unless known to the hub */
  srv_http *http;               /* only while in SRV_HTTP */
  srv_rx *rx;                   /* only while a frame is partly read */
} srv_conn;

/* The process-wide server state (srv_main.c). */
typedef struct srv {
  struct ev_loop *loop;
  srv_config cfg;
  hub *h;
  bp *bp; /* NULL when embedded */
  int listen_fd;
  ev_io listen_io;
  ev_timer hub_timer;
  hub_tstamp hub_timer_at;
  ev_timer tick; /* handshake and close-wait deadlines */
  ev_prepare prepare;
  ev_idle flush_idle; /* active while a flush is deferred: poll, no wait */
  int flush_deferred;
  ev_signal sigterm, sigint;
  ev_timer shutdown_timer;
  int shutting_down;
  int in_pump;
  int debug;            /* WSHUB_DEBUG set: log closes */
  uint64_t conns_total; /* sockets we hold */
  uint64_t conns_ws;    /* open WebSockets */
  uint64_t max_conns;
  srv_conn http_list;   /* sentinel: HTTP connections by deadline */
  srv_conn cw_list;     /* sentinel: close-wait by deadline */
  srv_conn *dirty;      /* connections with bytes to flush */
  srv_conn *urgent;     /* backlog near the limits: write before the
                           next event */
  uint32_t urgent_msgs; /* thresholds for the write-now list */
  uint64_t urgent_bytes;
  srv_conn *graveyard; /* closed, freed in srv_reap (linked by next) */
  /* metrics the hub does not keep */
  uint64_t http_requests;
  uint64_t upgrades_rejected;
  uint64_t bp_reconnects;
  uint64_t bp_ups;
  uint64_t frames_written;
  uint64_t writev_calls;
  uint64_t proto_errors;
  uint64_t rx_lent; /* frame parsers lent to connections */
  uint64_t outqs;   /* out-queues allocated */
  int64_t started_unix;
} srv;

extern srv *srv_g;

/* srv_main.c */
hub_tstamp srv_now(void);
void srv_pump(void); /* drain hub effects, re-arm the hub timer */
void srv_metrics(char *buf, size_t cap, size_t *len);

/* srv_conn.c */
void srv_conn_init(void);
void srv_conn_fini(void);
void srv_accept_cb(struct ev_loop *loop, ev_io *w, int revents);
/* Queues a SEND frame (a new reference, or a copy into the current batch);
   -1 when out of memory (nothing queued). */
int srv_conn_send(srv_conn *c, hub_buf *hb);
void srv_conn_send_end(void); /* srv_pump: the effects are drained */
void srv_conn_ping(srv_conn *c);
void srv_conn_hub_close(srv_conn *c, uint16_t code, const char *reason);
int srv_conn_queue_own(srv_conn *c, const void *data, size_t len);
void srv_conn_finish(srv_conn *c); /* flush, then shut down the socket */
void srv_conn_drop(srv_conn *c);   /* close at once */
void srv_conn_abort(srv_conn *c);  /* close at once with a reset */
void srv_conn_ws_start(srv_conn *c, const uint8_t *rest, size_t rest_len);
void srv_flush_all(void);
/* Writes the connections on the write-now list and reports to the hub;
   returns 1 if it did anything (srv_pump only). */
int srv_flush_urgent(void);
void srv_reap(void);
void srv_tick(void); /* expire handshake and close-wait deadlines */
void srv_list_push(srv_conn *sentinel, srv_conn *c, hub_tstamp deadline);
void srv_list_remove(srv_conn *c);
void srv_close_http_conns(void);

/* srv_upgrade.c */
int srv_http_new(srv_conn *c);
void srv_http_free(srv_conn *c);
/* The peer's "host:port" (64 bytes, writable), kept until the upgrade. */
char *srv_http_remote(srv_conn *c);
/* Feeds bytes to the HTTP parser; may switch |c| to SRV_WS. */
void srv_http_feed(srv_conn *c, const uint8_t *data, size_t len);

#endif /* SRV_H */
