/*
 * srv.h - the production server's internal interface (server/ only).
 *
 * One libev loop per process.  srv_main.c owns the process (flags, the
 * hub and the shell over it, the backplane, timers, signals, metrics);
 * srv_conn.c owns sockets (accept, WebSocket framing through wslay's
 * frame API, the outbound queue written with writev) and is the shell's
 * transport; srv_upgrade.c owns HTTP (http-parser, the RFC 6455
 * handshake, the plain endpoints).  Every hub event goes through the
 * shell (shell/shell.h), which applies the effects and the error
 * policies.
 *
 * There is no global: the server state (srv) reaches every callback
 * through ev_userdata() of the loop, a watcher's data, or the
 * transport's user pointer, and functions take it as their first
 * argument.
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
#include "shell.h"
#include "srv_rel.h"

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
  const char *tls_cert;     /* PEM files; both or neither (srv_tls.h) */
  const char *tls_key;
  int log_level; /* srv_log_level (srv_log.h) */
  int log_json;
  /* Authentication (srv_auth.c); NULL when not given. */
  const char *token_secret;
  const char *token_key;
  const char *api_key;
  const char *allowed_origins;
  const char *record_path; /* --record: NULL = not recording */
  uint64_t record_max_bytes;
  srv_rel_config rel; /* srv_rel.h */
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

typedef struct srv_rx srv_rx;       /* a lent frame parser, srv_conn.c */
typedef struct srv_http srv_http;   /* HTTP request state, srv_upgrade.c */
typedef struct srv_batch srv_batch; /* shared small frames, srv_conn.c */

typedef struct srv_conn {
  /*
   * The fields srv_conn_send touches per delivery come first, together,
   * so that a delivery costs one miss on the connection: the outbound
   * queue's bookkeeping lives here, not behind its pointer.  The queue
   * (oq, an array of oq_cap entries, [oq_head, oq_tail) unsent) is
   * allocated only while something waits.  q is the shell's accounting
   * of it (bytes unwritten, SEND frames unwritten, the write-now list).
   */
  srv_out *oq;
  sh_oq q;
  struct srv_conn *dirty_next; /* the flush list */
  uint32_t oq_tail;            /* one past the last entry */
  uint32_t oq_cap;
  uint8_t state;
  uint8_t dirty;
  uint8_t want_write;   /* io watches EV_WRITE */
  uint8_t in_list;      /* on a timed list */
  uint32_t oq_head;     /* first unsent entry */
  uint32_t oq_head_off; /* bytes of oq[oq_head] already written */
  /* Not per delivery: in what would be padding before io. */
  uint8_t tls_read_ww; /* the last TLS read wants EV_WRITE */
  uint8_t rd_paused;   /* not reading: an API request awaits its answer */
  ev_io io;
  /* With --tls-cert: the TLS state.  Next to io, whose fd every read and
     write touches: testing it costs plain connections no cache miss. */
  struct ssl_st *tls;
  struct srv_conn *prev, *next; /* the timed list (HTTP or close-wait) */
  hub_tstamp deadline;          /* for the timed list */
  hub_conn_id id;               /* 0 unless known to the hub */
  srv_http *http;               /* only while in SRV_HTTP */
  srv_rx *rx;                   /* only while a frame is partly read */
  srv_ip *ip;                   /* its address's count (srv_rel.h) */
} srv_conn;

#define SRV_RBUF_SIZE 65536
#define SRV_OQ_CLASSES 8 /* pooled out-queue capacities 8 .. 1024 entries */

/* The process-wide server state (srv_main.c). */
typedef struct srv {
  struct ev_loop *loop; /* its ev_userdata is this srv */
  srv_config cfg;
  hub *h;
  sh sh;                 /* every hub event goes through it */
  bp *bp;                /* NULL when embedded */
  struct srv_auth *auth; /* srv_auth.h; alg NONE: authentication off */
  int listen_fd;
  ev_io listen_io;
  ev_timer hub_timer; /* armed by the shell (set_timer) */
  ev_timer tick;      /* handshake and close-wait deadlines */
  ev_prepare prepare;
  ev_idle flush_idle; /* active while a flush is deferred: poll, no wait */
  int flush_deferred;
  ev_signal sigterm, sigint, sighup;
  struct ssl_ctx_st *tls_ctx; /* with --tls-cert (srv_tls.h) */
  int claiming; /* 1: not serving until the instance key is claimed;
                   2: serving, the claim waits for Redis (srv_main.c) */
  ev_timer claim_timer;
  int exit_code; /* main's, once the loop ends */
  ev_timer shutdown_timer;
  ev_timer quit_timer; /* the backplane's last answers, at exit */
  int shutting_down;
  int finishing;
  int debug;            /* WSHUB_DEBUG set: log closes */
  uint64_t conns_total; /* sockets we hold */
  uint64_t conns_ws;    /* open WebSockets */
  uint64_t max_conns;
  srv_conn http_list;  /* sentinel: HTTP connections by deadline */
  srv_conn cw_list;    /* sentinel: close-wait by deadline */
  srv_conn *dirty;     /* connections with bytes to flush */
  srv_conn *graveyard; /* closed, freed in srv_reap (linked by next) */
  /* srv_conn.c's pools and the delivery batch (one loop, one thread) */
  srv_rx *rx_free;
  size_t rx_free_n;
  srv_out *oq_pool[SRV_OQ_CLASSES];
  size_t oq_pool_bytes;
  srv_batch *batch_cur;        /* takes new messages; holds a reference */
  hub_buf *batch_hb;           /* the message last copied (a reference) */
  const uint8_t *batch_hb_p;   /* ... and where it is */
  uint8_t rbuf[SRV_RBUF_SIZE]; /* every read lands here, parsed at once */
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
  srv_rel rel; /* srv_rel.h */
  /* HTTP API requests waiting for the hub's answer (srv_upgrade.c): the
     connections stop reading until it comes (then resume from
     api_resume, outside any shell call). */
  srv_http *api_list;
  uint64_t api_req_next;
  ev_timer api_resume;
} srv;

/* srv_main.c */
hub_tstamp srv_now(void);
void srv_metrics(srv *s, char *buf, size_t cap, size_t *len);

/* srv_conn.c */
void srv_conn_init(srv *s);
void srv_conn_fini(srv *s);
/* The shell's transport over this server's sockets (user = s). */
void srv_transport(srv *s, sh_transport *t);
void srv_accept_cb(struct ev_loop *loop, ev_io *w, int revents);
int srv_conn_queue_own(srv *s, srv_conn *c, const void *data, size_t len);
void srv_conn_finish(srv *s, srv_conn *c); /* flush, then shut down */
void srv_conn_drop(srv *s, srv_conn *c);   /* close at once */
void srv_conn_abort(srv *s, srv_conn *c);  /* close at once with a reset */
/* Forgets the queued bytes of a connection that is not a WebSocket yet. */
void srv_conn_unqueue(srv *s, srv_conn *c);
void srv_conn_ws_start(srv *s, srv_conn *c, const uint8_t *rest,
                       size_t rest_len);
void srv_flush_all(srv *s);
void srv_reap(srv *s);
void srv_tick(srv *s); /* expire handshake and close-wait deadlines */
void srv_list_push(srv_conn *sentinel, srv_conn *c, hub_tstamp deadline);
void srv_list_remove(srv_conn *c);
void srv_close_http_conns(srv *s);
/* Stops (1) or resumes (0) reading |c|'s socket; resuming feeds a read
   event, so that bytes a TLS layer already holds are not forgotten. */
void srv_conn_pause_read(srv *s, srv_conn *c, int paused);

/* srv_upgrade.c */
int srv_http_new(srv *s, srv_conn *c);
void srv_http_free(srv_conn *c);
/* The peer's "host:port" (64 bytes, writable), kept until the upgrade. */
char *srv_http_remote(srv_conn *c);
/* Feeds bytes to the HTTP parser; may switch |c| to SRV_WS. */
void srv_http_feed(srv *s, srv_conn *c, const uint8_t *data, size_t len);
/* The HTTP API (POST /publish, GET /history): the shell's api_reply
   (sh_transport), the resume timer, and what is still waiting at
   shutdown (answered 503). */
void srv_api_init(srv *s);
void srv_api_reply(void *user, uint64_t req, uint16_t status, hub_buf *buf);
void srv_api_shutdown(srv *s);

#endif /* SRV_H */
