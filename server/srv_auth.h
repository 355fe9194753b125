/*
 * srv_auth.h - authentication in the server (srv_auth.c): JWT
 * verification on the upgrade and for refresh (libjwt), the claims the
 * core is handed (shell/sh_claims.c), the HTTP API key, allowed origins.
 */
#ifndef SRV_AUTH_H
#define SRV_AUTH_H

#include <stddef.h>

#include "hub.h"
#include "shell.h"

enum { SRV_ALG_NONE = 0, SRV_ALG_HS256, SRV_ALG_RS256, SRV_ALG_ES256 };

typedef struct srv_auth {
  int alg; /* the one algorithm tokens may use; NONE: authentication off */
  unsigned char *key; /* HS256 secret, or the PEM public key's bytes */
  size_t key_len;
  unsigned char api_key_sha[32]; /* SHA-256 of --api-key */
  int has_api_key;
  char *origins;    /* --allowed-origins, or NULL (any) */
  sh_claims claims; /* the last verified token's */
} srv_auth;

/* Sets |a| up from the flags (each may be NULL).  Returns 0, or -1 with
   a message in |err|. */
int srv_auth_init(srv_auth *a, const char *secret, const char *key_file,
                  const char *api_key, const char *origins, char *err,
                  size_t errlen);
void srv_auth_fini(srv_auth *a);

/* The token of an upgrade request: the `token` query parameter of |url|,
   else an "Authorization: Bearer" value |authz| (may be NULL).  Copies
   it into |out| (|cap| bytes); returns 0, or -1 if there is none (or it
   does not fit). */
int srv_auth_token(const char *url, const char *authz, char *out, size_t cap);

/* Verifies |token| (NUL-terminated) with the configured key and
   algorithm, checks exp and nbf against the wall clock and reads the
   claims.  Returns the claims, valid until the next call, with
   auth.expires on the monotonic clock of |now|; or NULL with *reason
   the 401's text. */
const hub_auth *srv_auth_verify(srv_auth *a, const char *token, hub_tstamp now,
                                const char **reason);

/* The HTTP API's verdict for Authorization header |authz| (may be NULL):
   0 allowed, 401 (wrong or no key) or 403 (authentication on, no
   --api-key).  Compares in constant time. */
int srv_auth_api(const srv_auth *a, const char *authz);

/* 1 if an upgrade with Origin |origin| (NULL: none) may proceed. */
int srv_auth_origin_ok(const srv_auth *a, const char *origin);

#endif /* SRV_AUTH_H */
