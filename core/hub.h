/*
 * hub.h - the wshub core: a pure, I/O-free pub/sub hub.
 *
 * The core is a value you call.  Events go in (a connection opened, a
 * message arrived, the backplane delivered, the clock passed a deadline),
 * each with the current time |now| passed in; effects come out through a
 * queue the caller drains (send these bytes, close that connection,
 * subscribe this channel).  The core never reads a clock, a socket or a
 * random source, so the same events give the same effects, byte for byte.
 *
 *   hub_on_xxx(h, ..., now);
 *   while ((e = hub_effect_peek(h)) != NULL) {
 *     apply(e);
 *     hub_effect_pop(h);     drops the effect's hub_buf references
 *   }
 *
 * Threading: none.  A hub and the hub_bufs it hands out belong to one
 * thread.  No function here may be called while another is running on
 * the same hub (there are no callbacks into the caller, so this only
 * matters for signal handlers).
 */
#ifndef HUB_H
#define HUB_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Monotonic time in nanoseconds.  The origin is the caller's choice. */
typedef uint64_t hub_tstamp;
#define HUB_TSTAMP_NONE UINT64_MAX
#define HUB_NS_PER_MS UINT64_C(1000000)
#define HUB_NS_PER_S UINT64_C(1000000000)

/*
 * Connection ids are assigned by the core, 1, 2, 3, ... in open order.
 * The id seen by users and the registry is "<instance-id>:<n>".
 */
typedef uint64_t hub_conn_id;

/* Error codes, grouped by class as wslay does. */
typedef enum hub_error {
  HUB_OK = 0,
  HUB_ERR_INVALID_ARGUMENT = -100,
  HUB_ERR_UNKNOWN_CONN = -101,
  HUB_ERR_BAD_REQUEST = -102, /* hub_publish: *errmsg says why */
  HUB_ERR_SHUT_DOWN = -103,   /* the hub is shutting down */
  /* hub_publish: the backplane's queue is full (hub_on_bp_congested) */
  HUB_ERR_UNAVAILABLE = -200,
  HUB_ERR_NOMEM = -500
} hub_error;

/* hub_strerror returns a static, human-readable text for |err|. */
const char *hub_strerror(int err);

/*
 * Allocator.  The core allocates only through this, so tests can count
 * allocations and make them fail.  |user| is passed back to each call.
 */
typedef struct hub_mem {
  void *user;
  void *(*malloc)(size_t size, void *user);
  void (*free)(void *ptr, void *user);
  void *(*realloc)(void *ptr, size_t size, void *user);
} hub_mem;

/* hub_mem_default returns an allocator over libc malloc/free/realloc. */
const hub_mem *hub_mem_default(void);

/*
 * hub_buf: an immutable, reference-counted byte buffer.  A message for N
 * subscribers is encoded once, as a complete WebSocket frame (header and
 * JSON envelope), and the N SEND effects share it.  Fields are read-only
 * to users; take a reference with hub_buf_ref to keep a buffer past
 * hub_effect_pop, and drop it with hub_buf_unref.  Not thread-safe.
 */
typedef struct hub_buf {
  const hub_mem *mem;
  uint32_t ref;
  uint32_t payload_off; /* for frames: where the payload starts */
  size_t len;           /* bytes in data[] */
  uint8_t data[];
} hub_buf;

void hub_buf_ref(hub_buf *b);
void hub_buf_unref(hub_buf *b); /* accepts NULL */

/* The WebSocket payload of a frame buffer (the whole buffer otherwise). */
static inline const uint8_t *hub_buf_payload(const hub_buf *b) {
  return b->data + b->payload_off;
}
static inline size_t hub_buf_payload_len(const hub_buf *b) {
  return b->len - b->payload_off;
}

/* Why the core closed a connection; for metrics ("evictions by reason"). */
typedef enum hub_close_kind {
  HUB_CLOSE_SHUTDOWN = 0,  /* 1001 graceful shutdown */
  HUB_CLOSE_SLOW_MSGS,     /* 1008 queue passed max-queue-msgs */
  HUB_CLOSE_SLOW_BYTES,    /* 1008 queue passed max-queue-bytes */
  HUB_CLOSE_WRITE_TIMEOUT, /* 1008 no write progress for write-timeout */
  HUB_CLOSE_PONG_TIMEOUT,  /* 1008 no pong for pong-timeout */
  HUB_CLOSE_TOO_BIG,       /* 1009 inbound message too big */
  HUB_CLOSE_BINARY,        /* 1003 binary frame */
  HUB_CLOSE_BAD_UTF8,      /* 1007 invalid UTF-8 in a text frame */
  HUB_CLOSE_TOKEN_EXPIRED, /* 4001 the token's exp passed, no refresh */
  HUB_CLOSE_KIND_MAX
} hub_close_kind;

/* A stable lower-case name for |kind| ("slow_msgs", ...), for metrics. */
const char *hub_close_kind_name(hub_close_kind kind);

typedef enum hub_effect_type {
  HUB_EFF_NONE = 0, /* never returned by hub_effect_peek */
  /* Write |buf| (a complete WebSocket frame) to |conn|.  When its bytes
     have left, report them with hub_on_conn_written. */
  HUB_EFF_SEND,
  /* Send a ping control frame to |conn|; answer pongs with
     hub_on_conn_pong. */
  HUB_EFF_PING,
  /* Send a close frame with |close_code| and |reason| to |conn| if its
     socket takes it, else drop the connection at once; either way, report
     hub_on_conn_closed when the socket is gone.  The core has already
     released the connection's subscriptions; no SEND for it follows. */
  HUB_EFF_CLOSE,
  /* Backplane: SUBSCRIBE / UNSUBSCRIBE channel |name|; confirm a
     subscribe with hub_on_bp_subscribed. */
  HUB_EFF_BP_SUBSCRIBE,
  HUB_EFF_BP_UNSUBSCRIBE,
  /* Backplane: PUBLISH |buf| (the message's data JSON, verbatim) on
     channel |name|. */
  HUB_EFF_BP_PUBLISH,
  /* Registry: SET key |name| to |buf| with a TTL of |ttl_s| seconds. */
  HUB_EFF_REG_SET,
  /* Registry: DEL key |name|. */
  HUB_EFF_REG_DEL,
  /* Authentication (config.auth): verify the token in |buf| (the raw
     text of the refresh request's "token" string, NUL-terminated; not
     necessarily a well-formed token) for |conn|, then answer with
     hub_on_conn_verified.  The core checks no signatures. */
  HUB_EFF_VERIFY,
  /* History with an external backplane (CONTRACT.md "History and
     recovery"; /work/hist-design.md): FCALL wshub_publish of |buf| (the
     data JSON) on channel |name|, keeping |count| messages (history
     size), the stream's TTL |ttl_s| and the meta hash's |meta_ttl_s|.
     Answer exactly once with hub_on_bp_hpublished(|req|, ...). */
  HUB_EFF_BP_HPUBLISH,
  /* FCALL wshub_read on channel |name|: the meta's offset and epoch and
     up to |count| kept entries with offsets above |since| (|meta_ttl_s|
     for a meta it creates).  Answer exactly once with
     hub_on_bp_hread(|req|, ...). */
  HUB_EFF_BP_HREAD,
  /* The answer to the driver's hub_api_publish / hub_api_history
     request |req|: HTTP |status| (200, 400, 503) with JSON body |buf|. */
  HUB_EFF_API_REPLY
} hub_effect_type;

/*
 * One effect.  Channel names and registry keys are logical, without the
 * backplane's prefix: channel "news", key "instance:<id>" or
 * "conn:<conn-id>"; the backplane adds "ws:chan:" / "ws:".  Every pointer
 * is valid until the effect is popped.
 */
typedef struct hub_effect {
  hub_effect_type type;
  hub_close_kind close_kind; /* CLOSE */
  uint16_t close_code;       /* CLOSE */
  uint32_t ttl_s;            /* REG_SET */
  hub_conn_id conn;          /* SEND, PING, CLOSE, VERIFY */
  void *conn_user;           /* SEND, PING, CLOSE, VERIFY: as given at open */
  hub_buf *name;             /* BP_*: channel; REG_*: key */
  hub_buf *buf;       /* SEND: frame; BP_PUBLISH: data; REG_SET: value; VERIFY:
                         token */
  const char *reason; /* CLOSE: static text for the close frame */
  /* BP_HPUBLISH, BP_HREAD: the core's request number, given back in the
     answer; API_REPLY: the driver's, as given to hub_api_*. */
  uint64_t req;
  uint64_t since;      /* BP_HREAD */
  uint32_t count;      /* BP_HPUBLISH: history size; BP_HREAD: at most */
  uint32_t meta_ttl_s; /* BP_HPUBLISH, BP_HREAD */
  uint16_t status;     /* API_REPLY: 200, 400 or 503 */
} hub_effect;

/*
 * Configuration.  Fill with hub_config_default, then change fields.
 * Strings are copied by hub_new.
 */
typedef struct hub_config {
  /* 1..128 bytes of A-Z a-z 0-9 _ - . : @ / (it appears in keys and
     JSON values unescaped); hub_config_default sets "hub". */
  const char *instance_id;
  /* 0: embedded single-instance backplane (local delivery, nothing
     external); 1: an external backplane (Redis or the simulated one)
     driven through HUB_EFF_BP_* and hub_on_bp_*.  With 1, the backplane
     counts as down until hub_on_bp_up. */
  int backplane;
  int registry; /* emit REG_* effects (requires backplane) */
  uint32_t max_queue_msgs;
  uint64_t max_queue_bytes;
  uint64_t max_message_bytes;
  uint32_t max_subs_per_conn;
  /* Publishes per second per WebSocket connection, a bucket of this many
     refilled at this rate (0: no limit); one finding it empty gets an
     error reply "rate limited" and is not delivered. */
  uint32_t max_publish_rate;
  hub_tstamp ping_interval_ns;
  hub_tstamp pong_timeout_ns;
  hub_tstamp write_timeout_ns;
  hub_tstamp heartbeat_interval_ns;
  uint32_t instance_ttl_s;
  uint32_t conn_ttl_s;
  /* Unix time, in seconds, at the |now| given to hub_new; used only for
     the registry's started_at and connected_at fields. */
  int64_t unix_time_s;
  /* Seeds the core's hash function; any value works. */
  uint64_t seed;
  /* 1: authentication is on (`--token-secret`/`--token-key`; scenario
     `config auth on`): every connection opens with the claims of a
     verified token (hub_on_conn_open_auth), subscribes and publishes
     need a grant, and the token's expiry closes with 4001.  0: nothing
     is checked and everything is granted. */
  int auth;
  /* History (CONTRACT.md "History and recovery"; core/README.md):
     messages kept per history channel (`history-size`, 0 = off, at most
     HUB_HISTORY_SIZE_MAX), how long kept messages outlive a channel's
     last publish (`history-ttl`) and how long its offset and epoch do
     (`history-meta-ttl`), on the core's clock; and the comma-separated
     globs naming the history channels (`history-channels`, "*").  Only
     with the embedded backplane so far: with backplane 1 a history_size
     above 0 is HUB_ERR_INVALID_ARGUMENT in hub_new. */
  uint32_t history_size;
  hub_tstamp history_ttl_ns;
  hub_tstamp history_meta_ttl_ns;
  char history_channels[512];
} hub_config;

void hub_config_default(hub_config *cfg);

/*
 * hub_config_set sets the field of |cfg| named by the server flag |name|
 * (CONTRACT.md, without "--"): max-queue-msgs, max-queue-bytes,
 * max-message-bytes, ping-interval, pong-timeout, write-timeout,
 * heartbeat-interval (durations as hub_parse_duration reads them, not 0),
 * max-publish-rate (0: no limit), registry (on|off), auth (on|off),
 * history-size, history-ttl, history-meta-ttl and history-channels
 * (copied; at most 511 bytes of comma-separated globs).  Both strings are
 * borrowed.  Returns 0, HUB_ERR_INVALID_ARGUMENT for a bad value (|cfg|
 * unchanged), or 1 when |name| is not a hub setting (the caller's to
 * handle).
 */
int hub_config_set(hub_config *cfg, const char *name, const char *value);

/* A duration: a decimal number of seconds ("54", "1.5") or one with a
   unit ("250ms", "2s", "500us", "10ns", "1m").  Returns 0 or
   HUB_ERR_INVALID_ARGUMENT. */
int hub_parse_duration(const char *s, hub_tstamp *out);

/* A decimal unsigned integer, nothing else.  Returns 0 or
   HUB_ERR_INVALID_ARGUMENT. */
int hub_parse_u64(const char *s, uint64_t *out);

typedef struct hub hub; /* opaque */

/*
 * hub_new creates a hub.  |mem| may be NULL for hub_mem_default(); it is
 * borrowed for the hub's lifetime.  With the registry on it queues the
 * instance key's REG_SET.  Returns 0, HUB_ERR_INVALID_ARGUMENT (|cfg| is
 * NULL or has a bad field) or HUB_ERR_NOMEM; after an error *out is NULL
 * and nothing is left allocated.
 */
int hub_new(hub **out, const hub_config *cfg, const hub_mem *mem,
            hub_tstamp now);

/* hub_del frees the hub and every queued effect, emitting nothing (a
   crash, or the end after hub_shutdown).  Accepts NULL. */
void hub_del(hub *h);

/*
 * Events.  Input from a client that is malformed is never an error: it
 * produces an "error" reply or a CLOSE effect.
 *
 * Events that report facts (a pong arrived, bytes were written, a
 * connection closed, a confirmation arrived, the backplane went down,
 * shut down) return nothing and cannot fail: the effect-queue space they
 * need is reserved while the state that needs it is created (per open
 * connection, per subscription, per waiting subscribe request), and
 * their replies are built when the request that needs them is accepted.
 * They allocate nothing.  (hub_on_conn_closed and hub_on_bp_down may try
 * one small allocation to remember a key whose REG_DEL was emitted while
 * the backplane is down, so that it is deleted again on reconnect; if it
 * fails, the key expires by its TTL.)  A fact about an unknown id is the
 * driver's mistake and is ignored.
 *
 * The other events are requests: each returns 0 or a negative hub_error,
 * and, libuv's rule, one that returns an error has done nothing: no
 * state changed, no effect queued (hub_handle_expiry excepted, see
 * there).  Each states the policy its caller applies to HUB_ERR_NOMEM.
 */

/* A connection opened.  |remote_addr| is copied; |user| is returned in
   this connection's effects.  *id receives the new connection's id.
   Returns 0, HUB_ERR_SHUT_DOWN (after hub_shutdown),
   HUB_ERR_INVALID_ARGUMENT (config.auth is on: use
   hub_on_conn_open_auth) or HUB_ERR_NOMEM; on an error there is no
   connection and *id is unchanged.  NOMEM: the driver refuses the
   connection. */
int hub_on_conn_open(hub *h, hub_conn_id *id, const char *remote_addr,
                     void *user, hub_tstamp now);

/*
 * Authentication.  The driver verifies a token (signature, exp, nbf:
 * the core checks none of them) and hands the core the claims it needs.
 * Every pointer is borrowed for the call; the core copies what it keeps.
 * Globs are NUL-terminated: `*` matches any run of characters and
 * `{sub}` stands for |sub|, taken literally.  An empty list grants
 * nothing.
 */
#define HUB_AUTH_SUB_MAX 128   /* bytes of sub */
#define HUB_AUTH_GLOBS_MAX 64  /* globs per list */
#define HUB_AUTH_GLOB_MAX 1024 /* bytes of one glob */

typedef struct hub_auth {
  const char *sub; /* 1..HUB_AUTH_SUB_MAX bytes (no NUL) */
  size_t sub_len;
  const char *const *subscribe; /* |nsubscribe| globs */
  size_t nsubscribe;
  const char *const *publish; /* |npublish| globs */
  size_t npublish;
  /* When the token expires, on the core's clock (the driver converts
     exp); HUB_TSTAMP_NONE: it does not. */
  hub_tstamp expires;
} hub_auth;

/* hub_on_conn_open with the claims of the connection's verified token
   (|auth|, borrowed for the call; required when config.auth is on,
   ignored when off).  Its sub goes into the registry value ("user").
   Returns what hub_on_conn_open returns, or HUB_ERR_INVALID_ARGUMENT
   when |auth| is missing (auth on) or breaks a HUB_AUTH_* limit (no
   connection; the server answers 401).  hub_on_conn_open on a hub with
   auth on is HUB_ERR_INVALID_ARGUMENT. */
int hub_on_conn_open_auth(hub *h, hub_conn_id *id, const char *remote_addr,
                          const hub_auth *auth, void *user, hub_tstamp now);

/*
 * The answer to a HUB_EFF_VERIFY for connection |id|: |auth| holds the
 * refresh token's claims (borrowed for the call), or is NULL when it
 * failed to verify, with |err| a static reason for the error reply.  A
 * verified token with the connection's sub replaces its grants and
 * expiry: "refreshed" is sent, and each subscription the new grants no
 * longer allow ends with an "unsubscribed" frame whose reason is
 * "permission denied".  Otherwise an "error" reply is sent and nothing
 * changes.  Ignored (0) for a closing connection.  Returns 0,
 * HUB_ERR_UNKNOWN_CONN, HUB_ERR_INVALID_ARGUMENT (no refresh is waiting
 * on |id|: the driver's bug) or HUB_ERR_NOMEM (nothing changed, the
 * refresh still waits).  NOMEM: the driver closes that connection with
 * 1011, as for hub_on_conn_msg.
 */
int hub_on_conn_verified(hub *h, hub_conn_id id, const hub_auth *auth,
                         const char *err, hub_tstamp now);

/* One complete message.  |binary| is nonzero for a binary message.
   |data| is borrowed for the call.  When |len| is over max_message_bytes
   the message is refused by its length alone (CLOSE 1009) and |data| may
   be NULL, so a transport need not buffer an oversize message to report
   it.  Ignored (returns 0) for a closing connection.  Returns 0,
   HUB_ERR_UNKNOWN_CONN or HUB_ERR_NOMEM; on an error the message had no
   effect (it is only counted in hub_stats.msgs_in).  NOMEM: the driver
   closes that connection with 1011 and reports hub_on_conn_closed. */
int hub_on_conn_msg(hub *h, hub_conn_id id, int binary, const uint8_t *data,
                    size_t len, hub_tstamp now);

/* A pong arrived.  A fact: cannot fail. */
void hub_on_conn_pong(hub *h, hub_conn_id id, hub_tstamp now);

/* The transport wrote |bytes| more bytes of this connection's SEND frames
   to the socket, finishing |msgs| frames.  A fact: cannot fail, so a
   report the backlog (hub_conn_backlog: q_msgs frames, q_bytes bytes)
   shows to be impossible is ignored, changing nothing: one of more
   frames or bytes than are queued, and one that finishes every queued
   frame without every queued byte or every byte without every frame
   ((msgs == q_msgs) != (bytes == q_bytes)).  So is one for a closing
   connection.  The core keeps no frame lengths, so a report that splits
   the frames at the wrong byte but is otherwise consistent is taken as
   given; the next SEND still queues correctly. */
void hub_on_conn_written(hub *h, hub_conn_id id, size_t msgs, size_t bytes,
                         hub_tstamp now);

/* The connection is gone (peer closed, error, or after a CLOSE effect).
   Its subscriptions are released (UNSUBSCRIBE, REG_DEL as needed) and
   queued effects for it are discarded.  The id is invalid afterwards.  A
   fact: cannot fail; the driver may free its transport object first. */
void hub_on_conn_closed(hub *h, hub_conn_id id, hub_tstamp now);

/* The backplane delivered |data| on |channel|.  Both borrowed.  Returns 0
   or HUB_ERR_NOMEM (delivered to no one).  NOMEM: the driver forces a
   backplane reconnect (hub_on_bp_down, then hub_on_bp_up after its
   backoff), so the subscriptions are renewed. */
int hub_on_bp_msg(hub *h, const char *channel, size_t channel_len,
                  const uint8_t *data, size_t len, hub_tstamp now);

/* The backplane confirmed one SUBSCRIBE to |channel|: its waiting
   subscribers are acknowledged (their replies were built when they
   subscribed).  A fact: cannot fail. */
void hub_on_bp_subscribed(hub *h, const char *channel, size_t channel_len,
                          hub_tstamp now);

/* The backplane connected: re-subscribes every channel with local
   subscribers (creation order) and refreshes the registry.  A reconnect
   is reported as hub_on_bp_down then hub_on_bp_up; a second up without a
   down in between changes nothing.  Returns 0, HUB_ERR_INVALID_ARGUMENT
   on an embedded hub (config.backplane == 0), or HUB_ERR_NOMEM (the
   backplane still counts as down, nothing emitted).  NOMEM: the driver
   forces a reconnect (down, then up again after its backoff). */
int hub_on_bp_up(hub *h, hub_tstamp now);

/* The driver's backplane queue (commands not yet answered) passed its
   cap (|congested| 1) or drained below it again (0).  While congested
   and up, publishes are refused instead of queued: a WebSocket publish
   gets an error reply "backplane unavailable", hub_publish returns
   HUB_ERR_UNAVAILABLE.  hub_on_bp_down clears it.  A fact: cannot fail,
   emits nothing. */
void hub_on_bp_congested(hub *h, int congested, hub_tstamp now);

/* The backplane went away: its subscriptions are gone; subscribes are
   acknowledged at once and publishes delivered locally until it is up.
   A fact: cannot fail. */
void hub_on_bp_down(hub *h, hub_tstamp now);

/*
 * A publish from outside the WebSocket protocol (HTTP POST /publish):
 * |body| is {"channel":"...","data":<any JSON>}.  Returns 0,
 * HUB_ERR_BAD_REQUEST with *errmsg set to a static reason, HUB_ERR_SHUT_DOWN,
 * HUB_ERR_UNAVAILABLE (backplane congested) or HUB_ERR_NOMEM; on an error
 * nothing was published.  NOMEM and UNAVAILABLE: the driver answers 503.
 */
int hub_publish(hub *h, const uint8_t *body, size_t len, const char **errmsg,
                hub_tstamp now);

/*
 * History with an external backplane: the answers to HUB_EFF_BP_HPUBLISH
 * and HUB_EFF_BP_HREAD.  |req| is the effect's; an answer for a request
 * the core no longer waits for (the backplane went down meanwhile, or it
 * never asked) is ignored.  |ok| 0: the command failed or its link went
 * away (the other arguments are then 0/NULL).  |epoch| and the entries
 * are borrowed for the call.
 *
 * hub_on_bp_hpublished cannot fail (the replies it sends were built when
 * the publish was accepted) and returns 0.
 *
 * hub_on_bp_hread returns 0 or HUB_ERR_NOMEM (it builds the replayed
 * frames from the entries): then nothing changed, and the driver forces
 * a backplane reconnect, as for hub_on_bp_msg; hub_on_bp_down fails the
 * waiting state and hub_on_bp_up reads again.
 */
int hub_on_bp_hpublished(hub *h, uint64_t req, int ok, uint64_t offset,
                         const char *epoch, size_t epoch_len, hub_tstamp now);

typedef struct hub_hentry {
  uint64_t offset;
  const uint8_t *data;
  size_t len;
} hub_hentry;

int hub_on_bp_hread(hub *h, uint64_t req, int ok, uint64_t offset,
                    const char *epoch, size_t epoch_len,
                    const hub_hentry *entries, size_t n, hub_tstamp now);

/*
 * The HTTP API, both backplanes.  Each is answered by exactly one
 * HUB_EFF_API_REPLY carrying |req| (the driver's number), in this call's
 * effects or later (after the backplane answered; at the latest at
 * hub_on_bp_down or hub_shutdown, with 503).  Returns 0,
 * HUB_ERR_SHUT_DOWN or HUB_ERR_NOMEM: then no reply will come, and the
 * driver answers 503 itself.
 *
 * hub_api_publish: |body| is {"channel":"...","data":<any JSON>};
 * 200 {"ok":true} (with "offset" on a history channel), 400 {"error":..},
 * 503 {"error":"backplane unavailable"}.
 * hub_api_history: GET /history?channel=C&since=N&limit=L (CONTRACT.md).
 */
int hub_api_publish(hub *h, uint64_t req, const uint8_t *body, size_t len,
                    hub_tstamp now);
int hub_api_history(hub *h, uint64_t req, const char *channel, size_t len,
                    uint64_t since, uint64_t limit, hub_tstamp now);

/* The earliest time hub_handle_expiry has work, or HUB_TSTAMP_NONE. */
hub_tstamp hub_get_expiry(const hub *h);

/* Pings, pong and write timeouts, token expiry, registry heartbeat:
   everything due at
   or before |now|.  Returns 0 or HUB_ERR_NOMEM.  Unlike the other
   requests, NOMEM may come after partial progress: each timer's work is
   done whole or not at all, what was done is in the effects, and the
   rest is still due (hub_get_expiry stays <= now).  NOMEM: the driver
   calls it again after a short delay. */
int hub_handle_expiry(hub *h, hub_tstamp now);

/* Graceful shutdown: CLOSE 1001 to every connection, unsubscribe every
   backplane channel, delete this instance's keys.  Afterwards new
   connections and publishes are refused with HUB_ERR_SHUT_DOWN.  A fact:
   cannot fail (the space was reserved as the connections, subscriptions
   and keys were made); a second call does nothing. */
void hub_shutdown(hub *h, hub_tstamp now);

/* The effect queue.  hub_effect_peek returns the oldest effect or NULL;
   it is valid until hub_effect_pop or the next event call on |h|,
   whichever comes first (an event may grow the queue, and
   hub_on_conn_closed discards the closed connection's effects): pop an
   effect before feeding the hub an event that applying it caused. */
const hub_effect *hub_effect_peek(hub *h);
void hub_effect_pop(hub *h);

/*
 * Queries, for metrics, the simulator's invariants and tests.
 */
typedef struct hub_stats {
  uint64_t conns;            /* open, not closing */
  uint64_t subscriptions;    /* (connection, channel) pairs */
  uint64_t channels;         /* channels with at least one local subscriber */
  uint64_t bp_subscriptions; /* channels subscribed or subscribing on the
                                backplane */
  uint64_t msgs_in;          /* client messages received */
  uint64_t msgs_out;         /* message frames queued to clients */
  uint64_t publishes; /* publishes accepted (WebSocket and hub_publish) */
  uint64_t evictions[HUB_CLOSE_KIND_MAX];
  uint64_t rate_limited; /* publishes refused by max_publish_rate */
  uint64_t bp_refused;   /* publishes refused: backplane congested */
  /* History with an external backplane: HUB_EFF_BP_HREAD effects emitted
     (for subscribers and gap fills; API reads not counted), gap frames
     sent. */
  uint64_t hist_reads;
  uint64_t hist_gaps;
} hub_stats;

void hub_get_stats(const hub *h, hub_stats *st);

/* 1 if the backplane is up, 0 if down (always 0 when embedded). */
int hub_bp_is_up(const hub *h);

/* The instance id (NUL-terminated, owned by the hub). */
const char *hub_instance_id(const hub *h);

/* Local subscriber count of |channel| (acknowledged or not). */
size_t hub_channel_subscribers(const hub *h, const char *channel,
                               size_t channel_len);

/* Calls |cb| for every channel with local subscribers, in the order the
   channels were created; |channel| is valid for the call only. */
void hub_foreach_channel(const hub *h,
                         void (*cb)(void *arg, const char *channel,
                                    size_t channel_len, size_t subscribers),
                         void *arg);

/* Outbound backlog of a connection, as the core counts it. */
int hub_conn_backlog(const hub *h, hub_conn_id id, size_t *msgs, size_t *bytes);

/* Checks every internal invariant; returns 0, or -1 and leaves a reason
   in *why (static text).  For tests; O(size of the hub). */
int hub_check(const hub *h, const char **why);

/*
 * GET /history (CONTRACT.md): encodes
 * {"channel":..,"epoch":..,"offset":T,"messages":[{"offset":N,"data":..},...]}
 * for |channel| (borrowed): the first |limit| kept messages (0 or past
 * history_size: history_size) with offsets above |since|, as of |now|.
 * A channel without a record yet answers offset 0 and the epoch its
 * record will get.  A query: changes nothing (so the recorder need not
 * see it).  *out receives a new buffer (payload_off 0) to hub_buf_unref.
 * Returns 0, HUB_ERR_BAD_REQUEST (*errmsg: a bad channel name, or a
 * channel without history) or HUB_ERR_NOMEM.
 */
int hub_history_get(const hub *h, const char *channel, size_t len,
                    uint64_t since, uint64_t limit, hub_tstamp now,
                    hub_buf **out, const char **errmsg);

/* The offset the last publish accepted by hub_publish got, for the
   POST /publish answer; 0 when its channel has no history. */
uint64_t hub_last_publish_offset(const hub *h);

/* Validates a channel name: 1..128 bytes of A-Z a-z 0-9 _ - . : @ / */
int hub_channel_valid(const char *channel, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* HUB_H */
