/*
 * hub_auth.h - authentication (hub_auth.c): a connection's grants and
 * token expiry, grant matching, the refresh request and its answer.
 * Internal to core/.  The core verifies nothing: the driver hands it
 * the claims of a verified token (hub.h, hub_auth).
 */
#ifndef HUB_AUTH_H
#define HUB_AUTH_H

/* 0 if |a| keeps the HUB_AUTH_* limits and its sub is valid UTF-8,
   else -1. */
int hub_auth_valid(const hub_auth *a);

/* 1 if the glob |g| (|glen| bytes; `*` any run, `{sub}` |sub| taken
   literally) matches |s| (|n| bytes), else 0. */
int hub_glob_match(const char *g, size_t glen, const char *sub, size_t sub_len,
                   const char *s, size_t n);

/* A copy of |a|'s sub and globs in one allocation, or NULL (NOMEM). */
hub_grants *hub_grants_new(hub *h, const hub_auth *a);
void hub_grants_free(hub *h, hub_grants *g);
/* The sub a connection's grants carry (|len| set), NULL without auth. */
const char *hub_auth_sub(const hub_conn *c, size_t *len);

/* 1 if |c| may subscribe to (|publish| 0) or publish on (1) channel
   |ch|: always with authentication off. */
int hub_auth_granted(const hub_conn *c, int publish, const char *ch,
                     size_t len);

/* Room in the expiry heap for one more connection (before a change that
   may add one).  Returns 0 or HUB_ERR_NOMEM. */
int hub_auth_reserve(hub *h);
/* |c| opened with |g| (ownership transferred) expiring at |expires|;
   puts it on the expiry heap (room reserved). */
void hub_auth_attach(hub *h, hub_conn *c, hub_grants *g, hub_tstamp expires);
/* |c| is retired: off the expiry heap. */
void hub_auth_conn_gone(hub *h, hub_conn *c);
/* Frees |c|'s grants and its waiting refresh (hub_on_conn_closed,
   hub_del). */
void hub_auth_conn_free(hub *h, hub_conn *c);

/* The "permission denied" reply to |req|.  Returns 0 or HUB_ERR_NOMEM. */
int hub_auth_deny(hub *h, hub_conn *c, const hub_req *req);
/* {"type":"refresh","token":...}: a HUB_EFF_VERIFY, or an error reply
   when one already waits.  Returns 0 or HUB_ERR_NOMEM. */
int hub_auth_refresh(hub *h, hub_conn *c, const hub_req *req);
/* hub_on_conn_verified for open connection |c|. */
int hub_auth_verified(hub *h, hub_conn *c, const hub_auth *a, const char *err);

/* Frees the expiry heap (hub_del). */
void hub_auth_free(hub *h);
/* 0 if the heap is consistent (hub_check). */
int hub_auth_check(const hub *h);

/* The token expiry timers: the earliest (or HUB_TSTAMP_NONE), and the
   4001 closes due at h->now.  hub_auth_handle_expiry returns 0 or
   HUB_ERR_NOMEM (the rest still due). */
hub_tstamp hub_auth_get_expiry(const hub *h);
int hub_auth_handle_expiry(hub *h);

#endif /* HUB_AUTH_H */
