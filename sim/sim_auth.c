/*
 * sim_auth.c - the simulator's token "verifier": no signatures, only
 * the claims a statement gave (`client a on 0 claims {...} expires-in
 * 10s`, `a refresh {...} expires-in 20s`), read with the server's own
 * claims reader (shell/sh_claims.c), so the core is handed exactly what
 * the server would hand it for a verified token with those claims.
 */
#include "sim.h"

#include <stdlib.h>
#include <string.h>

#include "shell.h"

uint32_t sim_auth_token(sim_world *w, const char *claims, int has_exp,
                        uint64_t expires_in_ns) {
  sim_auth_tok *t;
  if (w->ntoks == w->captoks) {
    w->captoks = w->captoks ? 2 * w->captoks : 16;
    w->toks = realloc(w->toks, w->captoks * sizeof(*w->toks));
    if (w->toks == NULL) {
      abort();
    }
  }
  t = &w->toks[w->ntoks++];
  t->claims = strdup(claims);
  if (t->claims == NULL) {
    abort();
  }
  t->has_exp = has_exp;
  t->expires_in_ns = expires_in_ns;
  return (uint32_t)w->ntoks;
}

const hub_auth *sim_auth_verify(sim_world *w, uint32_t tok, const char **err) {
  sh_claims *c = &w->claims;
  const sim_auth_tok *t;
  if (tok == 0 || tok > w->ntoks) {
    *err = tok == 0 ? "missing token" : "malformed token";
    return NULL;
  }
  t = &w->toks[tok - 1];
  if (sh_claims_parse(c, t->claims, strlen(t->claims), err) != 0) {
    return NULL;
  }
  c->auth.expires =
    t->has_exp ? w->loop.now + t->expires_in_ns : HUB_TSTAMP_NONE;
  return &c->auth;
}

uint32_t sim_auth_token_num(const char *s, size_t len) {
  uint64_t v = 0;
  size_t i;
  if (len < 5 || len > 14 || memcmp(s, "sim:", 4) != 0) {
    return 0;
  }
  for (i = 4; i < len; i++) {
    if (s[i] < '0' || s[i] > '9') {
      return 0;
    }
    v = v * 10 + (uint64_t)(s[i] - '0');
  }
  return v <= UINT32_MAX ? (uint32_t)v : 0;
}

void sim_auth_fini(sim_world *w) {
  size_t i;
  for (i = 0; i < w->ntoks; i++) {
    free(w->toks[i].claims);
  }
  free(w->toks);
  w->toks = NULL;
  w->ntoks = w->captoks = 0;
}
