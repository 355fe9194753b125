/*
 * hub_int.h - declarations shared by the files of core/.  Not public.
 *
 * The hub's objects are defined here, because several modules walk them;
 * each module's functions are declared in its own header (hub_effq.h,
 * hub_frame.h, hub_proto.h, hub_topic.h, hub_conn.h, hub_registry.h),
 * all included at the end of this one.  README.md beside this file maps
 * the files and states the reservation rule.
 */
#ifndef HUB_INT_H
#define HUB_INT_H

#include <stddef.h>
#include <stdint.h>

#include "hub.h"
#include "hub_json.h"

/* Assertions stay on in every build: a broken invariant stops the
   process rather than corrupting subscriptions. */
#define HUB_ASSERT(cond)                                                       \
  do {                                                                         \
    if (!(cond)) {                                                             \
      hub_assert_fail(#cond, __FILE__, __LINE__);                              \
    }                                                                          \
  } while (0)

_Noreturn void hub_assert_fail(const char *cond, const char *file, int line);

#include "hub_list.h"
#include "hub_map.h"
#include "hub_rate.h"

/* Allocation through the hub's allocator (hub_buf.c). */
void *hub_mem_malloc(const hub_mem *mem, size_t size);
void *hub_mem_realloc(const hub_mem *mem, void *ptr, size_t size);
void hub_mem_free(const hub_mem *mem, void *ptr);

/* A new buffer of |len| bytes (contents uninitialised), reference 1. */
hub_buf *hub_buf_new(const hub_mem *mem, size_t len);
/* A new buffer holding a copy of |s| followed by a NUL that is not
   counted in len. */
hub_buf *hub_buf_new_copy(const hub_mem *mem, const void *s, size_t len);

/* 1 if |cfg| is usable (hub_config.c). */
int hub_config_valid(const hub_config *cfg);

/* ---------------------------------------------------------- objects */

typedef struct hub_topic hub_topic;
typedef struct hub_conn hub_conn;
typedef struct hub_grants hub_grants; /* hub_auth.c */
#define HUB_AUTH_NO_HEAP SIZE_MAX

/* A connection's authentication (hub_auth.c), allocated apart from the
   connection (most hubs run with authentication off): conn->auth is NULL
   with it off. */
typedef struct hub_conn_auth {
  hub_grants *grants;  /* never NULL */
  size_t heap_idx;     /* in hub->auth_heap while it expires, else
                          HUB_AUTH_NO_HEAP */
  hub_tstamp expires;  /* HUB_TSTAMP_NONE: never */
  hub_buf *refresh_id; /* the waiting refresh's raw id JSON, or NULL */
  int refreshing;      /* a VERIFY was emitted, not yet answered */
} hub_conn_auth;

typedef struct hub_sub {
  hub_link topic_link; /* in topic->acked or topic->pending */
  hub_link conn_link;  /* in conn->subs */
  hub_conn *conn;
  hub_topic *topic;
  uint32_t nframes;
  int acked;
  /* While pending: for every subscribe request waiting on this
     subscription, its "subscribed" reply and the "error" reply sent
     instead if the subscription is cancelled, built in advance so that
     acknowledging never allocates. frames[2i], frames[2i + 1].  On a
     history channel of an external backplane the reply is built when the
     read answers (frames[2i] is NULL) and |hw| holds the waiter. */
  hub_buf **frames;
  struct hub_hwait *hw; /* hub_hred.c; NULL otherwise */
} hub_sub;

struct hub_topic {
  hub_hnode hnode;
  hub_buf *name; /* channel name, NUL-terminated */
  hub_link all;  /* in hub->topics, creation order */
  hub_link acked;
  hub_link pending;
  size_t nsubs;  /* acked + pending */
  size_t nacked; /* length of acked */
  /* Acknowledged subscribers holding repeat subscribe requests that wait
     for a re-subscribe (after the backplane came back) to be confirmed. */
  size_t nwaiting;
  /* SUBSCRIBEs sent whose confirmation has not come back.  A topic with
     no subscribers lives on while this is nonzero, so that a stale
     confirmation is not taken for the current one. */
  uint32_t inflight;
  int bp_subscribed; /* a SUBSCRIBE is in force (sent, not unsubscribed) */
  int confirmed;     /* ... and Redis has confirmed it */
  /* History with an external backplane (hub_hred.c), else NULL. */
  struct hub_htopic *ht;
};

struct hub_conn {
  hub_hnode hnode;
  hub_conn_id id;
  void *user;
  hub_link all;        /* in hub->conns while open */
  hub_link ping_link;  /* ordered by next_ping */
  hub_link pong_link;  /* ordered by last_pong */
  hub_link write_link; /* while frames wait, ordered by last_progress */
  hub_link subs;
  hub_tstamp next_ping;
  hub_tstamp last_pong;
  hub_tstamp last_progress;
  uint64_t q_msgs;
  uint64_t q_bytes;
  size_t nsubs;
  hub_buf *key;   /* registry key "conn:<instance>:<n>" */
  hub_buf *value; /* registry value */
  /* 1 + the sequence number of the last SEND, PING or CLOSE queued for
     this connection (0: none), so that a close only searches the queue
     when something for it may still be there. */
  uint64_t eff_last;
  /* Deferred eviction during a fan-out: the next connection to evict,
     and (evict, below) the reason + 1. */
  hub_conn *evict_next;
  hub_conn_auth *auth;   /* NULL: authentication off, everything granted */
  hub_rate publish_rate; /* max_publish_rate's bucket (hub_rate.h) */
  int evict;
  uint8_t closing;
  uint8_t reg_live;
};

/* A connection key whose REG_DEL was emitted while the backplane was down
   and so was most likely lost: deleted again on every reconnect and at
   shutdown, until the key's TTL has surely run out. */
typedef struct hub_orphan {
  hub_link link;
  hub_buf *key;
  hub_tstamp expires;
} hub_orphan;

struct hub {
  const hub_mem *mem;
  hub_config cfg;
  char instance_id[129];
  size_t instance_id_len;
  hub_htab conn_tab;
  hub_htab topic_tab;
  hub_link conns;   /* open connections, open order */
  hub_link pings;   /* open connections by next ping */
  hub_link pongs;   /* open connections by last pong */
  hub_link writes;  /* open connections with frames waiting */
  hub_link topics;  /* creation order */
  hub_link orphans; /* hub_orphan, by expiry */
  /* Connections whose token expires: a binary min-heap by (expires,
     id), so any order of expiries costs O(log n) per change. */
  hub_conn **auth_heap;
  size_t auth_n;
  size_t auth_cap;
  size_t norphans;
  hub_conn_id next_conn_id;
  size_t nconns_open;
  size_t ntopics;
  size_t nsubs;
  size_t nchannels;
  size_t nbp;
  /* Subscribe requests waiting for their reply (frame pairs held by
     subscriptions): each owns one reserved effect (hub_effq.h). */
  size_t nreplies;
  int bp_up;
  /* The driver reported the backplane's command queue past its cap
     (hub_on_bp_congested): publishes are refused while it is up. */
  int bp_congested;
  int shut_down;
  hub_tstamp now;
  hub_tstamp t_start;
  hub_tstamp next_heartbeat;
  hub_buf *instance_key;
  hub_effect *effs;
  size_t eff_head;
  size_t eff_tail;
  size_t eff_cap;
  /* The absolute sequence number of effs[0]: effects are numbered in the
     order they are queued, across compactions. */
  uint64_t eff_base;
  hub_stats st;
  /* History (hub_history.c); hist_tab is allocated only with it on. */
  hub_htab hist_tab;
  hub_link hist_rings; /* records keeping messages, by ring deadline */
  hub_link hist_metas; /* every record, by record deadline */
  size_t nhist;
  uint64_t hist_rng;         /* draws the epochs */
  uint64_t hist_last_offset; /* of the last hub_publish */
  /* History with an external backplane (hub_hred.c): publishes and API
     requests waiting for the backplane (hub_hop), channels with a read
     in flight, the request numbers. */
  hub_link hops;
  hub_link hreads;
  hub_link hrings; /* channels whose ring holds frames, by its deadline */
  size_t nhops;
  size_t nhtopics;
  uint64_t next_hreq;
};

#include "hub_effq.h"
#include "hub_frame.h"
#include "hub_proto.h"
#include "hub_registry.h"
#include "hub_conn.h"
#include "hub_topic.h"
#include "hub_auth.h"
#include "hub_history.h"
#include "hub_hred.h"

#endif /* HUB_INT_H */
