/*
 * srv_auth.c - token verification with libjwt (1.10, on OpenSSL), and
 * the HTTP API key and origin checks.
 *
 * Algorithm pinning.  libjwt takes the algorithm from the token's own
 * header and verifies with whatever key it is given, so an HS256 token
 * "signed" with the text of an RSA public key would verify against that
 * key as an HMAC secret (the classic algorithm-confusion hole), and
 * `none` needs no key at all.  The key kind fixes the one algorithm
 * accepted (a secret: HS256; an RSA key: RS256; an EC P-256 key:
 * ES256), and the header's alg is checked against it before the
 * signature is verified (a token is parsed once without a key, which
 * libjwt does without verifying) and again on the verified result
 * (jwt_get_alg), so nothing but that algorithm is ever trusted.
 */
#include "srv_auth.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jwt.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

/* Longest token accepted (an RS4096 signature alone is 683 bytes). */
#define SRV_TOKEN_MAX 8192

static const jwt_alg_t srv_jwt_alg[] = {JWT_ALG_NONE, JWT_ALG_HS256,
                                        JWT_ALG_RS256, JWT_ALG_ES256};

static void sha256(const void *p, size_t n, unsigned char out[32]) {
  unsigned int len = 0;
  if (EVP_Digest(p, n, out, &len, EVP_sha256(), NULL) != 1 || len != 32) {
    memset(out, 0, 32);
  }
}

static int read_file(const char *path, unsigned char **out, size_t *len) {
  FILE *f = fopen(path, "rb");
  unsigned char *b = NULL;
  size_t n = 0, cap = 0;
  if (f == NULL) {
    return -1;
  }
  for (;;) {
    size_t r;
    if (n + 4096 + 1 > cap) {
      unsigned char *nb;
      cap = cap ? 2 * cap : 8192;
      if (cap > (1u << 20) || (nb = realloc(b, cap)) == NULL) {
        free(b);
        fclose(f);
        return -1;
      }
      b = nb;
    }
    r = fread(b + n, 1, 4096, f);
    n += r;
    if (r < 4096) {
      break;
    }
  }
  fclose(f);
  b[n] = '\0';
  *out = b;
  *len = n;
  return 0;
}

/* RS256 for an RSA key, ES256 for an EC key on P-256, else none. */
static int key_alg(const unsigned char *pem, size_t len) {
  BIO *bio = BIO_new_mem_buf(pem, (int)len);
  EVP_PKEY *k = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
  int alg = SRV_ALG_NONE;
  if (k != NULL) {
    if (EVP_PKEY_base_id(k) == EVP_PKEY_RSA) {
      alg = SRV_ALG_RS256;
    } else if (EVP_PKEY_base_id(k) == EVP_PKEY_EC) {
      char curve[64];
      size_t cl = 0;
      if (EVP_PKEY_get_utf8_string_param(k, "group", curve, sizeof(curve),
                                         &cl) == 1 &&
          (strcmp(curve, "prime256v1") == 0 || strcmp(curve, "P-256") == 0)) {
        alg = SRV_ALG_ES256;
      }
    }
  }
  EVP_PKEY_free(k);
  BIO_free(bio);
  return alg;
}

int srv_auth_init(srv_auth *a, const char *secret, const char *key_file,
                  const char *api_key, const char *origins, char *err,
                  size_t errlen) {
  memset(a, 0, sizeof(*a));
  if (secret != NULL && key_file != NULL) {
    snprintf(err, errlen, "--token-secret and --token-key exclude each other");
    return -1;
  }
  if (secret != NULL) {
    if (*secret == '\0') {
      snprintf(err, errlen, "--token-secret is empty");
      return -1;
    }
    a->key_len = strlen(secret);
    a->key = (unsigned char *)strdup(secret);
    if (a->key == NULL) {
      snprintf(err, errlen, "out of memory");
      return -1;
    }
    a->alg = SRV_ALG_HS256;
  } else if (key_file != NULL) {
    if (read_file(key_file, &a->key, &a->key_len) != 0) {
      snprintf(err, errlen, "--token-key %s: %s", key_file, strerror(errno));
      return -1;
    }
    a->alg = key_alg(a->key, a->key_len);
    if (a->alg == SRV_ALG_NONE) {
      snprintf(err, errlen,
               "--token-key %s: not a PEM RSA or EC P-256 public key",
               key_file);
      srv_auth_fini(a);
      return -1;
    }
  }
  if (api_key != NULL) {
    if (*api_key == '\0') {
      snprintf(err, errlen, "--api-key is empty");
      srv_auth_fini(a);
      return -1;
    }
    sha256(api_key, strlen(api_key), a->api_key_sha);
    a->has_api_key = 1;
  }
  if (origins != NULL && *origins != '\0') {
    a->origins = strdup(origins);
    if (a->origins == NULL) {
      snprintf(err, errlen, "out of memory");
      srv_auth_fini(a);
      return -1;
    }
  }
  return 0;
}

void srv_auth_fini(srv_auth *a) {
  if (a->key != NULL) {
    OPENSSL_cleanse(a->key, a->key_len);
  }
  free(a->key);
  free(a->origins);
  a->key = NULL;
  a->origins = NULL;
}

int srv_auth_token(const char *url, const char *authz, char *out, size_t cap) {
  const char *q = strchr(url, '?');
  while (q != NULL) {
    q++;
    if (strncmp(q, "token=", 6) == 0) {
      size_t n = 0;
      for (q += 6; *q && *q != '&' && *q != '#'; q++) {
        char ch = *q;
        if (ch == '%' && sh_hex_digit(q[1]) >= 0 && sh_hex_digit(q[2]) >= 0) {
          ch = (char)(sh_hex_digit(q[1]) * 16 + sh_hex_digit(q[2]));
          q += 2;
        }
        if (n + 1 >= cap) {
          return -1;
        }
        out[n++] = ch;
      }
      out[n] = '\0';
      return n > 0 ? 0 : -1;
    }
    q = strchr(q, '&');
  }
  if (authz != NULL && strncasecmp(authz, "Bearer ", 7) == 0) {
    const char *t = authz + 7;
    size_t n;
    while (*t == ' ') {
      t++;
    }
    n = strlen(t);
    while (n > 0 && (t[n - 1] == ' ' || t[n - 1] == '\t')) {
      n--;
    }
    if (n == 0 || n + 1 > cap) {
      return -1;
    }
    memcpy(out, t, n);
    out[n] = '\0';
    return 0;
  }
  return -1;
}

/* Compact JWS: three base64url parts, two dots. */
static int well_formed(const char *t) {
  size_t n = 0, dots = 0;
  for (; t[n]; n++) {
    char ch = t[n];
    if (ch == '.') {
      dots++;
    } else if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
                 (ch >= '0' && ch <= '9') || ch == '-' || ch == '_')) {
      return 0;
    }
  }
  return dots == 2 && n <= SRV_TOKEN_MAX && t[0] != '.';
}

static double unix_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

const hub_auth *srv_auth_verify(srv_auth *a, const char *token, hub_tstamp now,
                                const char **reason) {
  jwt_t *j = NULL;
  jwt_alg_t want = srv_jwt_alg[a->alg];
  const char *hdr;
  char *json;
  double t;
  int rc;

  if (!well_formed(token)) {
    *reason = "malformed token";
    return NULL;
  }
  /* The header first, without a key: libjwt 1.10 then verifies nothing
     and reports the algorithm as none, so the header's own text is
     what is checked here. */
  if (jwt_decode(&j, token, NULL, 0) != 0 || j == NULL) {
    *reason = "malformed token";
    return NULL;
  }
  hdr = jwt_get_header(j, "alg");
  rc = hdr != NULL && strcmp(hdr, jwt_alg_str(want)) == 0;
  jwt_free(j);
  j = NULL;
  if (!rc) {
    *reason = "algorithm not allowed";
    return NULL;
  }
  if (jwt_decode(&j, token, a->key, (int)a->key_len) != 0 || j == NULL) {
    *reason = "bad signature";
    return NULL;
  }
  if (jwt_get_alg(j) != want) {
    jwt_free(j);
    *reason = "algorithm not allowed";
    return NULL;
  }
  json = jwt_get_grants_json(j, NULL);
  jwt_free(j);
  if (json == NULL) {
    *reason = "malformed token";
    return NULL;
  }
  rc = sh_claims_parse(&a->claims, json, strlen(json), reason);
  free(json);
  if (rc != 0) {
    return NULL;
  }
  t = unix_now();
  if (a->claims.has_nbf && t < (double)a->claims.nbf) {
    *reason = "token not yet valid";
    return NULL;
  }
  if (a->claims.has_exp) {
    double left = (double)a->claims.exp - t;
    if (left <= 0) {
      *reason = "token expired";
      return NULL;
    }
    if (left > 1e9) {
      /* Centuries ahead: far in the future, without overflow. */
      a->claims.auth.expires = now + (hub_tstamp)1e18;
    } else {
      /* exp on the hub's clock, through the offset between the clocks
         rounded up to a whole second: tokens with one exp get one
         deadline (the hub's timer heap then has ties, not a spread),
         never before exp and at most a second after it, and a step
         of the wall clock is followed. */
      struct timespec ts;
      int64_t d, d_s;
      clock_gettime(CLOCK_REALTIME, &ts);
      d = (int64_t)now - ((int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec);
      d_s = d >= 0 ? (d + 999999999) / 1000000000 : -((-d) / 1000000000);
      a->claims.auth.expires =
        (hub_tstamp)((a->claims.exp + d_s) * (int64_t)1000000000);
    }
  }
  return &a->claims.auth;
}

int srv_auth_api(const srv_auth *a, const char *authz) {
  unsigned char got[32];
  const char *k;
  if (!a->has_api_key) {
    return a->alg != SRV_ALG_NONE ? 403 : 0;
  }
  if (authz == NULL || strncasecmp(authz, "Bearer ", 7) != 0) {
    return 401;
  }
  k = authz + 7;
  /* Digests of equal length, compared in constant time: neither the
     key's bytes nor its length leak through the timing. */
  sha256(k, strlen(k), got);
  return CRYPTO_memcmp(got, a->api_key_sha, 32) == 0 ? 0 : 401;
}

int srv_auth_origin_ok(const srv_auth *a, const char *origin) {
  const char *p;
  size_t ol;
  if (a->origins == NULL || origin == NULL) {
    return 1;
  }
  ol = strlen(origin);
  for (p = a->origins; *p;) {
    const char *e;
    size_t n;
    while (*p == ' ' || *p == ',') {
      p++;
    }
    e = p;
    while (*e && *e != ',') {
      e++;
    }
    n = (size_t)(e - p);
    while (n > 0 && p[n - 1] == ' ') {
      n--;
    }
    if (n > 0 && n == ol && strncasecmp(p, origin, n) == 0) {
      return 1;
    }
    p = e;
  }
  return 0;
}
