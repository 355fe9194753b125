/*
 * srv_upgrade.c - HTTP/1.1 on the WebSocket port: the RFC 6455 upgrade
 * and the plain endpoints (POST /publish, GET /healthz, GET /metrics,
 * GET /).  Requests are parsed with http-parser; SHA-1 and base64 come
 * from OpenSSL's libcrypto.  The state below exists only while a
 * connection speaks HTTP; an upgraded connection frees it.
 */
#include "srv.h"
#include "srv_auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "srv_demo.h" /* generated: build/gen/srv_demo.h */

#define SRV_HTTP_OUT_MAX (1 << 20) /* unread responses per connection */
#define SRV_HDR_MAX 8192           /* request line and headers */
#define SRV_BODY_MIN (1 << 20) /* POST bodies up to max(this, max-message) */

/* A string that grows as a header arrives: the request line and the
   Authorization header may carry a token of kilobytes, which most
   requests do not, and hundreds of handshakes may be in progress. */
typedef struct srv_str {
  char *p;
  size_t len;
  size_t cap;
} srv_str;

/* Appends; returns 0, -1 past |max| bytes, -2 out of memory. */
static int srv_str_append(srv_str *s, size_t max, const char *at, size_t n) {
  if (s->len + n >= max) {
    return -1;
  }
  if (s->len + n + 1 > s->cap) {
    size_t cap = s->cap ? s->cap : 64;
    char *p;
    while (cap < s->len + n + 1) {
      cap *= 2;
    }
    p = realloc(s->p, cap);
    if (p == NULL) {
      return -2;
    }
    s->p = p;
    s->cap = cap;
  }
  memcpy(s->p + s->len, at, n);
  s->len += n;
  s->p[s->len] = '\0';
  return 0;
}

static const char *srv_str_c(const srv_str *s) {
  return s->len > 0 ? s->p : "";
}

static void srv_str_clear(srv_str *s) {
  s->len = 0;
}

enum {
  H_OTHER = 0,
  H_UPGRADE,
  H_CONNECTION,
  H_KEY,
  H_VERSION,
  H_AUTHZ,
  H_ORIGIN,
  H_HOST
};

/* One answer owed on a connection: |req| the hub's request number (0:
   a response of ours), |resp| the whole HTTP response once known. */
typedef struct srv_api_ent {
  uint64_t req;
  uint8_t *resp;
  size_t len;
  int close;
  int done;
} srv_api_ent;

/* Requests one connection may have waiting for the hub before it stops
   reading (pipelining, as the load generator's publishers do). */
#define SRV_API_PIPELINE 64

struct srv_http {
  http_parser p;
  srv *s; /* the server, for the parser's callbacks */
  char remote[64];
  srv_str url; /* a token may ride in the query */
  char field[32];
  size_t field_len;
  int last_was_value;
  int hdr;
  char key[64];
  size_t key_len;
  char upgrade[32];
  size_t upgrade_len;
  char connection[128];
  size_t connection_len;
  char version[8];
  size_t version_len;
  srv_str authz; /* Authorization (a bearer token) */
  char origin[256];
  size_t origin_len;
  int has_origin;
  int has_host;
  size_t hdr_bytes;
  uint8_t *body;
  size_t body_len;
  size_t body_cap;
  int error_status; /* a limit was passed: answer with this */
  /* The answers owed, in request order (srv_api_*): API requests the
     hub has not answered yet, and the responses queued behind them;
     reading stops past SRV_API_PIPELINE of them, or at an upgrade behind
     them, and the bytes already read wait in the stash. */
  srv_conn *conn;
  srv_api_ent *q; /* a ring of qcap */
  uint32_t qhead, qlen, qcap;
  int upgrade_deferred; /* the parsed upgrade waits for the answers */
  int api_resume;       /* reading resumes from api_resume */
  int api_linked;
  srv_http *api_prev, *api_next; /* srv.api_list */
  uint8_t *stash;
  size_t stash_len;
};

/* The demo page (GET /, GET /demo.js) and the JS client it imports
   (GET /wshub.js): clients/demo/ and clients/js/wshub.js, compiled in as
   bytes by clients/demo/demo.mk.  Nothing is read from disk. */
typedef struct srv_asset {
  const char *path;
  const char *ctype;
  const unsigned char *body;
  size_t len;
} srv_asset;

static const srv_asset srv_assets[] = {SRV_DEMO_ASSETS};

static const srv_asset *srv_asset_find(const char *path) {
  size_t i;
  for (i = 0; i < sizeof(srv_assets) / sizeof(srv_assets[0]); i++) {
    if (strcmp(path, srv_assets[i].path) == 0) {
      return &srv_assets[i];
    }
  }
  return NULL;
}

static int srv_append(char *dst, size_t *len, size_t cap, const char *s,
                      size_t n) {
  if (*len + n >= cap) {
    return -1;
  }
  memcpy(dst + *len, s, n);
  *len += n;
  dst[*len] = '\0';
  return 0;
}

static srv_http *srv_h(http_parser *p) {
  return ((srv_conn *)p->data)->http;
}

static int srv_count_hdr(srv_http *h, size_t n) {
  h->hdr_bytes += n;
  if (h->hdr_bytes > SRV_HDR_MAX) {
    h->error_status = 431;
    return -1;
  }
  return 0;
}

static int srv_on_message_begin(http_parser *p) {
  srv_http *h = srv_h(p);
  h->field_len = h->key_len = h->upgrade_len = 0;
  srv_str_clear(&h->url);
  srv_str_clear(&h->authz);
  h->connection_len = h->version_len = h->hdr_bytes = h->body_len = 0;
  h->key[0] = h->upgrade[0] = h->connection[0] = '\0';
  h->version[0] = '\0';
  h->origin_len = 0;
  h->origin[0] = '\0';
  h->has_origin = 0;
  h->has_host = 0;
  h->last_was_value = 0;
  h->hdr = H_OTHER;
  h->error_status = 0;
  return 0;
}

static int srv_on_url(http_parser *p, const char *at, size_t n) {
  srv_http *h = srv_h(p);
  if (srv_count_hdr(h, n) != 0) {
    return -1;
  }
  switch (srv_str_append(&h->url, SRV_HDR_MAX, at, n)) {
  case 0:
    break;
  case -1:
    h->error_status = 414;
    return -1;
  default:
    h->error_status = 500;
    return -1;
  }
  return 0;
}

static int srv_on_header_field(http_parser *p, const char *at, size_t n) {
  srv_http *h = srv_h(p);
  size_t i;
  if (srv_count_hdr(h, n) != 0) {
    return -1;
  }
  if (h->last_was_value) {
    h->field_len = 0;
    h->last_was_value = 0;
  }
  for (i = 0; i < n; i++) {
    if (h->field_len + 1 < sizeof(h->field)) {
      char ch = at[i];
      if (ch >= 'A' && ch <= 'Z') {
        ch = (char)(ch - 'A' + 'a');
      }
      h->field[h->field_len++] = ch;
    }
  }
  h->field[h->field_len] = '\0';
  return 0;
}

static int srv_on_header_value(http_parser *p, const char *at, size_t n) {
  srv_http *h = srv_h(p);
  if (srv_count_hdr(h, n) != 0) {
    return -1;
  }
  if (!h->last_was_value) {
    h->last_was_value = 1;
    if (strcmp(h->field, "upgrade") == 0) {
      h->hdr = H_UPGRADE;
    } else if (strcmp(h->field, "connection") == 0) {
      h->hdr = H_CONNECTION;
    } else if (strcmp(h->field, "sec-websocket-key") == 0) {
      h->hdr = H_KEY;
    } else if (strcmp(h->field, "sec-websocket-version") == 0) {
      h->hdr = H_VERSION;
    } else if (strcmp(h->field, "authorization") == 0) {
      h->hdr = H_AUTHZ;
    } else if (strcmp(h->field, "origin") == 0) {
      h->hdr = H_ORIGIN;
      h->has_origin = 1;
    } else if (strcmp(h->field, "host") == 0) {
      h->hdr = H_HOST;
      h->has_host = 1;
    } else {
      h->hdr = H_OTHER;
    }
  }
  switch (h->hdr) {
  case H_UPGRADE:
    (void)srv_append(h->upgrade, &h->upgrade_len, sizeof(h->upgrade), at, n);
    break;
  case H_CONNECTION:
    (void)srv_append(h->connection, &h->connection_len, sizeof(h->connection),
                     at, n);
    break;
  case H_KEY:
    (void)srv_append(h->key, &h->key_len, sizeof(h->key), at, n);
    break;
  case H_VERSION:
    (void)srv_append(h->version, &h->version_len, sizeof(h->version), at, n);
    break;
  case H_AUTHZ:
    if (srv_str_append(&h->authz, SRV_HDR_MAX, at, n) == -2) {
      h->error_status = 500;
      return -1;
    }
    break;
  case H_ORIGIN:
    /* One too long for the buffer is on no list: it is refused. */
    if (srv_append(h->origin, &h->origin_len, sizeof(h->origin), at, n) != 0) {
      h->origin_len = 0;
      strcpy(h->origin, "?");
    }
    break;
  default:
    break;
  }
  return 0;
}

static int srv_on_body(http_parser *p, const char *at, size_t n) {
  srv_http *h = srv_h(p);
  const srv *s = h->s;
  size_t max = s->cfg.hub.max_message_bytes > SRV_BODY_MIN
                 ? (size_t)s->cfg.hub.max_message_bytes
                 : SRV_BODY_MIN;
  if (h->body_len + n > max) {
    h->error_status = 413;
    return -1;
  }
  if (h->body_len + n > h->body_cap) {
    size_t cap = h->body_cap ? h->body_cap : 1024;
    uint8_t *b;
    while (cap < h->body_len + n) {
      cap *= 2;
    }
    b = realloc(h->body, cap);
    if (b == NULL) {
      h->error_status = 500;
      return -1;
    }
    h->body = b;
    h->body_cap = cap;
  }
  memcpy(h->body + h->body_len, at, n);
  h->body_len += n;
  return 0;
}

/* A body the limit refuses is refused by its length, before it is sent:
   the client may be waiting for an answer (Expect: 100-continue) and a
   4 GiB promise would otherwise hold the connection until it times out. */
static int srv_on_headers_complete(http_parser *p) {
  srv_http *h = srv_h(p);
  const srv *s = h->s;
  uint64_t max = s->cfg.hub.max_message_bytes > SRV_BODY_MIN
                   ? s->cfg.hub.max_message_bytes
                   : SRV_BODY_MIN;
  if ((p->flags & F_CONTENTLENGTH) && p->content_length > max) {
    h->error_status = 413;
    return -1;
  }
  return 0;
}

static int srv_on_message_complete(http_parser *p) {
  /* Stop here so the request is answered before the next is parsed. */
  http_parser_pause(p, 1);
  return 0;
}

static const http_parser_settings srv_http_settings = {
  .on_message_begin = srv_on_message_begin,
  .on_url = srv_on_url,
  .on_header_field = srv_on_header_field,
  .on_header_value = srv_on_header_value,
  .on_headers_complete = srv_on_headers_complete,
  .on_body = srv_on_body,
  .on_message_complete = srv_on_message_complete,
};

int srv_http_new(srv *s, srv_conn *c) {
  srv_http *h = calloc(1, sizeof(*h));
  if (h == NULL) {
    return -1;
  }
  h->s = s;
  h->conn = c;
  http_parser_init(&h->p, HTTP_REQUEST);
  h->p.data = c;
  c->http = h;
  return 0;
}

static void srv_api_unlink(srv *s, srv_http *h) {
  if (!h->api_linked) {
    return;
  }
  h->api_linked = 0;
  if (h->api_prev != NULL) {
    h->api_prev->api_next = h->api_next;
  } else {
    s->api_list = h->api_next;
  }
  if (h->api_next != NULL) {
    h->api_next->api_prev = h->api_prev;
  }
  h->api_prev = h->api_next = NULL;
}

void srv_http_free(srv_conn *c) {
  if (c->http != NULL) {
    /* A request still waiting: its answer will find no one (dropped). */
    srv_api_unlink(c->http->s, c->http);
    while (c->http->qlen > 0) {
      free(c->http->q[c->http->qhead].resp);
      c->http->qhead = (c->http->qhead + 1) % c->http->qcap;
      c->http->qlen--;
    }
    free(c->http->q);
    free(c->http->stash);
    free(c->http->url.p);
    free(c->http->authz.p);
    free(c->http->body);
    free(c->http);
    c->http = NULL;
  }
}

char *srv_http_remote(srv_conn *c) {
  return c->http->remote;
}

static const char *srv_status_text(int status) {
  switch (status) {
  case 101:
    return "Switching Protocols";
  case 200:
    return "OK";
  case 400:
    return "Bad Request";
  case 401:
    return "Unauthorized";
  case 403:
    return "Forbidden";
  case 404:
    return "Not Found";
  case 405:
    return "Method Not Allowed";
  case 413:
    return "Payload Too Large";
  case 414:
    return "URI Too Long";
  case 426:
    return "Upgrade Required";
  case 431:
    return "Request Header Fields Too Large";
  case 500:
    return "Internal Server Error";
  case 503:
    return "Service Unavailable";
  default:
    return "Error";
  }
}

/* Queues one response; |close| ends the connection after it. */
/* The whole response (malloc'd, *len bytes), or NULL. */
static uint8_t *srv_format(int status, const char *ctype, const char *body,
                           size_t body_len, int close, size_t *len) {
  char head[256];
  uint8_t *buf;
  int hl = snprintf(head, sizeof(head),
                    "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
                    "Content-Length: %zu\r\nCache-Control: no-store\r\n%s\r\n",
                    status, srv_status_text(status), ctype, body_len,
                    close ? "Connection: close\r\n" : "");
  buf = malloc((size_t)hl + body_len);
  if (buf != NULL) {
    memcpy(buf, head, (size_t)hl);
    memcpy(buf + hl, body, body_len);
    *len = (size_t)hl + body_len;
  }
  return buf;
}

/* Sends response |buf| (|len| bytes, borrowed), then closes or waits for
   the next request. */
static void srv_send_response(srv *s, srv_conn *c, const uint8_t *buf,
                              size_t len, int close) {
  if (srv_conn_queue_own(s, c, buf, len) != 0) {
    srv_conn_drop(s, c);
    return;
  }
  if (close) {
    srv_conn_finish(s, c);
  } else {
    srv_list_push(&s->http_list, c, srv_now() + s->cfg.handshake_timeout_ns);
  }
}

static int srv_api_push(srv *s, srv_http *h, uint64_t req, uint8_t *resp,
                        size_t len, int close);

static void srv_respond(srv *s, srv_conn *c, int status, const char *ctype,
                        const char *body, size_t body_len, int close) {
  uint8_t *buf;
  size_t len = 0;
  if (s->shutting_down) {
    close = 1;
  }
  buf = srv_format(status, ctype, body, body_len, close, &len);
  if (buf == NULL) {
    srv_conn_drop(s, c);
    return;
  }
  if (c->state == SRV_HTTP && c->http != NULL && c->http->qlen > 0) {
    /* Behind answers the hub still owes: in request order. */
    if (srv_api_push(s, c->http, 0, buf, len, close) != 0) {
      free(buf);
      srv_conn_drop(s, c);
    }
    return;
  }
  srv_send_response(s, c, buf, len, close);
  free(buf);
}

static void srv_respond_json_error(srv *s, srv_conn *c, int status,
                                   const char *msg, int close) {
  char body[256];
  int n = snprintf(body, sizeof(body), "{\"error\":\"%s\"}", msg);
  srv_respond(s, c, status, "application/json", body, (size_t)n, close);
}

static int srv_token_in(const char *list, const char *tok) {
  size_t tl = strlen(tok);
  const char *s = list;
  while (*s) {
    while (*s == ' ' || *s == '\t' || *s == ',') {
      s++;
    }
    if (strncasecmp(s, tok, tl) == 0 &&
        (s[tl] == '\0' || s[tl] == ',' || s[tl] == ' ' || s[tl] == '\t')) {
      return 1;
    }
    while (*s && *s != ',') {
      s++;
    }
  }
  return 0;
}

static void srv_path(const srv_http *h, char *path, size_t cap) {
  const char *url = srv_str_c(&h->url);
  size_t n = strcspn(url, "?#");
  if (n >= cap) {
    n = cap - 1;
  }
  memcpy(path, url, n);
  path[n] = '\0';
}

/* The RFC 6455 handshake.  |rest| are bytes after the request (already
   WebSocket frames), borrowed. */
static void srv_upgrade(srv *s, srv_conn *c, const uint8_t *rest,
                        size_t rest_len) {
  static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  srv_http *h = c->http;
  char path[512];
  char kbuf[64 + sizeof(guid)];
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int mdlen = 0;
  char accept[64];
  char resp[256];
  const hub_auth *auth = NULL;
  int n;
  int v;

  srv_path(h, path, sizeof(path));
  if (h->p.method != HTTP_GET) {
    srv_respond_json_error(s, c, 405, "method not allowed", 1);
    return;
  }
  if (strcmp(path, "/ws") != 0) {
    srv_respond_json_error(s, c, 404, "not found", 1);
    return;
  }
  /* RFC 6455 4.2.1: HTTP/1.1 or later, a Host, a key that is 16 bytes in
     base64. */
  if (strcasecmp(h->upgrade, "websocket") != 0 ||
      !srv_token_in(h->connection, "upgrade") ||
      !srv_ws_key_valid(h->key, h->key_len) || !h->has_host ||
      h->p.http_major < 1 || (h->p.http_major == 1 && h->p.http_minor < 1)) {
    srv_respond_json_error(s, c, 400, "bad websocket upgrade", 1);
    return;
  }
  if (strcmp(h->version, "13") != 0) {
    static const char r426[] =
      "HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\n"
      "Content-Length: 0\r\nConnection: close\r\n\r\n";
    if (srv_conn_queue_own(s, c, r426, sizeof(r426) - 1) == 0) {
      srv_conn_finish(s, c);
    } else {
      srv_conn_drop(s, c);
    }
    return;
  }
  if (s->shutting_down) {
    srv_respond_json_error(s, c, 503, "shutting down", 1);
    return;
  }
  if (!srv_auth_origin_ok(s->auth, h->has_origin ? h->origin : NULL)) {
    s->upgrades_rejected++;
    srv_respond_json_error(s, c, 403, "origin not allowed", 1);
    return;
  }
  if (s->auth->alg != SRV_ALG_NONE) {
    /* Verified before anything is queued: a refusal is a plain 401. */
    static char tok[SRV_HDR_MAX];
    const char *why = "missing token";
    if (srv_auth_token(srv_str_c(&h->url), h->authz.len > 0 ? h->authz.p : NULL,
                       tok, sizeof(tok)) != 0 ||
        (auth = srv_auth_verify(s->auth, tok, srv_now(), &why)) == NULL) {
      s->upgrades_rejected++;
      srv_respond_json_error(s, c, 401, why, 1);
      return;
    }
  }
  if (s->conns_ws >= s->max_conns) {
    s->upgrades_rejected++;
    srv_respond_json_error(s, c, 503, "too many connections", 1);
    return;
  }
  memcpy(kbuf, h->key, h->key_len);
  memcpy(kbuf + h->key_len, guid, sizeof(guid) - 1);
  if (EVP_Digest(kbuf, h->key_len + sizeof(guid) - 1, md, &mdlen, EVP_sha1(),
                 NULL) != 1 ||
      mdlen != 20) {
    srv_respond_json_error(s, c, 500, "internal error", 1);
    return;
  }
  EVP_EncodeBlock((unsigned char *)accept, md, 20);
  n = snprintf(resp, sizeof(resp),
               "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n",
               accept);
  /*
   * The 101 is queued first, and the connection is a WebSocket with its
   * id before the hub's effects for it are applied (the shell applies
   * them before sh_conn_open returns).  A refusal takes it all back.
   */
  if (srv_conn_queue_own(s, c, resp, (size_t)n) != 0) {
    srv_conn_drop(s, c); /* the hub never knew it */
    return;
  }
  c->state = SRV_WS;
  s->conns_ws++;
  v = auth != NULL
        ? sh_conn_open_auth(&s->sh, &c->id, h->remote, auth, c, srv_now())
        : sh_conn_open(&s->sh, &c->id, h->remote, c, srv_now());
  if (v == SH_BAD_REQUEST) {
    c->id = 0;
    s->conns_ws--;
    c->state = SRV_HTTP;
    srv_conn_unqueue(s, c);
    s->upgrades_rejected++;
    srv_respond_json_error(s, c, 401, "invalid claims", 1);
    return;
  }
  if (v != SH_OK) {
    /* Shutting down, or no memory for it (the shell's policy): 503. */
    c->id = 0;
    s->conns_ws--;
    c->state = SRV_HTTP;
    srv_conn_unqueue(s, c);
    srv_respond_json_error(
      s, c, 503,
      hub_strerror(v == SH_SHUT_DOWN ? HUB_ERR_SHUT_DOWN : HUB_ERR_NOMEM), 1);
    return;
  }
  if (c->state != SRV_WS) {
    return; /* closed by the open's own effects: on the close-wait list */
  }
  srv_list_remove(c);
  srv_http_free(c);
  srv_conn_ws_start(s, c, rest, rest_len);
}

/* The value of query parameter |name| in |url|, %XX-decoded into |out|;
   0 found, 1 absent, -1 malformed or too long. */
static int srv_query_param(const char *url, const char *name, char *out,
                           size_t cap) {
  const char *q = strchr(url, '?');
  size_t nl = strlen(name);

  while (q != NULL && *q != '\0' && *q != '#') {
    q++;
    if (strncmp(q, name, nl) == 0 && q[nl] == '=') {
      const char *v = q + nl + 1;
      size_t n = 0;
      while (*v != '\0' && *v != '&' && *v != '#') {
        int ch = (unsigned char)*v;
        if (ch == '%') {
          unsigned hi, lo;
          if (sscanf(v + 1, "%1x%1x", &hi, &lo) != 2) {
            return -1;
          }
          ch = (int)(hi * 16 + lo);
          v += 2;
        } else if (ch == '+') {
          ch = ' ';
        }
        if (n + 1 >= cap) {
          return -1;
        }
        out[n++] = (char)ch;
        v++;
      }
      out[n] = '\0';
      return 0;
    }
    q = strchr(q, '&');
  }
  return 1;
}

/* ------------------------------------------------------------ the API */

/*
 * POST /publish and GET /history go to the hub (sh_api_publish,
 * sh_api_history) under a number of ours; the answer comes through the
 * shell's api_reply (srv_api_reply), among the call's own effects or
 * later, once Redis answered.  A connection may pipeline: every request
 * gets its place in the connection's queue of answers owed (srv_http.q),
 * responses leave strictly in request order, and the connection has no
 * idle deadline while any is owed (the hub answers every accepted
 * request exactly once, at the latest when the backplane goes down or
 * at the shutdown).  Past SRV_API_PIPELINE of them, or at an upgrade
 * behind them, the connection stops reading until the answers caught
 * up; it resumes from a timer (api_resume), never inside the shell's
 * drain.  A connection that went away leaves the list with its srv_http,
 * and its answers find no one.  Lookups are linear over the connections
 * with answers owed and their queues.
 */

static void srv_api_link(srv *s, srv_http *h) {
  if (h->api_linked) {
    return;
  }
  h->api_linked = 1;
  h->api_prev = NULL;
  h->api_next = s->api_list;
  if (s->api_list != NULL) {
    s->api_list->api_prev = h;
  }
  s->api_list = h;
}

/* Appends an answer owed: |req| waiting for the hub (|resp| NULL), or a
   response of ours (|resp| taken).  Returns 0 or -1 (no memory). */
static int srv_api_push(srv *s, srv_http *h, uint64_t req, uint8_t *resp,
                        size_t len, int close) {
  srv_api_ent *e;
  if (h->qlen == h->qcap) {
    uint32_t cap = h->qcap ? h->qcap * 2 : 4, i;
    srv_api_ent *q = malloc(cap * sizeof(*q));
    if (q == NULL) {
      return -1;
    }
    for (i = 0; i < h->qlen; i++) {
      q[i] = h->q[(h->qhead + i) % h->qcap];
    }
    free(h->q);
    h->q = q;
    h->qcap = cap;
    h->qhead = 0;
  }
  e = &h->q[(h->qhead + h->qlen) % h->qcap];
  h->qlen++;
  e->req = req;
  e->resp = resp;
  e->len = len;
  e->close = close;
  e->done = resp != NULL;
  srv_api_link(s, h);
  srv_list_remove(h->conn); /* no idle deadline while answers are owed */
  return 0;
}

static void srv_api_unlink(srv *s, srv_http *h);

/* Whether |h|'s connection may read again (see the section comment). */
static int srv_api_may_read(const srv_http *h) {
  return h->upgrade_deferred ? h->qlen == 0 : h->qlen < SRV_API_PIPELINE;
}

/* Sends the answers at the head of |h|'s queue that are known. */
static void srv_api_flush(srv *s, srv_http *h) {
  srv_conn *c = h->conn;
  while (h->qlen > 0 && h->q[h->qhead].done) {
    srv_api_ent e = h->q[h->qhead];
    h->qhead = (h->qhead + 1) % h->qcap;
    h->qlen--;
    if (e.close) {
      /* Nothing after a closing answer is sent. */
      while (h->qlen > 0) {
        free(h->q[h->qhead].resp);
        h->qhead = (h->qhead + 1) % h->qcap;
        h->qlen--;
      }
      srv_api_unlink(s, h);
      srv_conn_pause_read(s, c, 0); /* the close waits for the peer's EOF */
      srv_send_response(s, c, e.resp, e.len, 1); /* may free |h| */
      free(e.resp);
      return;
    }
    if (h->qlen > 0) {
      if (srv_conn_queue_own(s, c, e.resp, e.len) != 0) {
        free(e.resp);
        srv_conn_drop(s, c); /* frees |h| */
        return;
      }
    } else {
      srv_send_response(s, c, e.resp, e.len, 0); /* the idle deadline */
    }
    free(e.resp);
    if (c->state != SRV_HTTP) {
      return;
    }
  }
  if (c->rd_paused && srv_api_may_read(h)) {
    h->api_resume = 1;
    if (!ev_is_active(&s->api_resume)) {
      ev_timer_set(&s->api_resume, 0.0, 0.0);
      ev_timer_start(s->loop, &s->api_resume);
    }
  }
  if (h->qlen == 0 && !h->api_resume) {
    srv_api_unlink(s, h);
  }
}

/* A new request of |c|'s; returns its number, or 0 (no memory: answered
   503 already). */
static uint64_t srv_api_begin(srv *s, srv_conn *c, int close) {
  uint64_t req = ++s->api_req_next;
  if (srv_api_push(s, c->http, req, NULL, 0, close) != 0) {
    srv_respond_json_error(s, c, 503, hub_strerror(HUB_ERR_NOMEM), close);
    return 0;
  }
  return req;
}

/* Fills in request |req|'s answer, if still owed; returns its queue or
   NULL. */
static srv_http *srv_api_answer(srv *s, uint64_t req, int status,
                                const char *body, size_t len) {
  srv_http *h;
  uint32_t i;
  for (h = s->api_list; h != NULL; h = h->api_next) {
    for (i = 0; i < h->qlen; i++) {
      srv_api_ent *e = &h->q[(h->qhead + i) % h->qcap];
      if (e->req == req && !e->done) {
        if (s->shutting_down) {
          e->close = 1;
        }
        e->resp =
          srv_format(status, "application/json", body, len, e->close, &e->len);
        if (e->resp == NULL) {
          /* No memory for the answer: the connection cannot go on in
             order. */
          srv_conn_drop(s, h->conn);
          return NULL;
        }
        e->done = 1;
        return h;
      }
    }
  }
  return NULL; /* its connection went away: nobody to answer */
}

/* The sh_api_* call for request |req| returned verdict |v|. */
static void srv_api_called(srv *s, uint64_t req, int v) {
  srv_http *h;
  char body[96];
  int n;
  if (v == SH_OK || req == 0) {
    return; /* answered within the call, or later */
  }
  /* No answer will come from the hub: ours. */
  n =
    snprintf(body, sizeof(body), "{\"error\":\"%s\"}",
             v == SH_SHUT_DOWN ? "shutting down" : hub_strerror(HUB_ERR_NOMEM));
  h = srv_api_answer(s, req, 503, body, (size_t)n);
  if (h != NULL) {
    srv_api_flush(s, h);
  }
}

void srv_api_reply(void *user, uint64_t req, uint16_t status, hub_buf *buf) {
  srv *s = user;
  srv_http *h =
    srv_api_answer(s, req, status, (const char *)buf->data, buf->len);
  if (h != NULL) {
    srv_api_flush(s, h);
  }
}

static void srv_api_resume_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  srv *s = ev_userdata(loop);
  (void)w;
  (void)revents;
  for (;;) {
    srv_http *h;
    srv_conn *c;
    uint8_t *stash;
    size_t n;
    int upgrade;
    for (h = s->api_list; h != NULL && !h->api_resume; h = h->api_next) {
    }
    if (h == NULL) {
      break;
    }
    c = h->conn;
    stash = h->stash;
    n = h->stash_len;
    upgrade = h->upgrade_deferred;
    h->stash = NULL;
    h->stash_len = 0;
    h->api_resume = 0;
    h->upgrade_deferred = 0;
    if (h->qlen == 0) {
      srv_api_unlink(s, h);
    }
    if (upgrade) {
      srv_upgrade(s, c, stash, n); /* |stash|: frames after the request */
    } else if (stash != NULL) {
      srv_http_feed(s, c, stash, n); /* may begin the next requests */
    }
    free(stash);
    if (!(c->state == SRV_HTTP && c->http != NULL &&
          (c->http->stash != NULL || c->http->upgrade_deferred ||
           !srv_api_may_read(c->http)))) {
      srv_conn_pause_read(s, c, 0);
    }
  }
}

void srv_api_init(srv *s) {
  ev_timer_init(&s->api_resume, srv_api_resume_cb, 0.0, 0.0);
}

void srv_api_shutdown(srv *s) {
  srv_http *h;
  ev_timer_stop(s->loop, &s->api_resume);
  /* The hub answered what it had (503) at its shutdown; anything still
     owed is answered here, and every such connection closes. */
  while ((h = s->api_list) != NULL) {
    srv_conn *c = h->conn;
    uint32_t i;
    static const char gone[] = "{\"error\":\"shutting down\"}";
    h->api_resume = 0;
    h->upgrade_deferred = 0;
    for (i = 0; i < h->qlen; i++) {
      srv_api_ent *e = &h->q[(h->qhead + i) % h->qcap];
      e->close = 1;
      if (!e->done) {
        e->resp = srv_format(503, "application/json", gone, sizeof(gone) - 1, 1,
                             &e->len);
        e->done = e->resp != NULL;
      }
    }
    if (h->qlen == 0 || !h->q[h->qhead].done) {
      srv_api_unlink(s, h);
      srv_conn_drop(s, c);
      continue;
    }
    srv_api_flush(s, h); /* the first answer closes */
    if (c->state == SRV_HTTP && c->http == h && h->api_linked) {
      srv_api_unlink(s, h);
      srv_conn_drop(s, c);
    }
  }
}

/* GET /history?channel=C[&since=N][&limit=L] (CONTRACT.md), answered by
   the hub: from its memory (embedded) or after a read from Redis. */
static void srv_history(srv *s, srv_conn *c, int close) {
  const char *url = srv_str_c(&c->http->url);
  char ch[160], num[32];
  uint64_t since = 0, limit = 0, req;
  const char *err = "missing parameter: channel";
  int rc;

  if (srv_query_param(url, "channel", ch, sizeof(ch)) != 0) {
    srv_respond_json_error(s, c, 400, err, close);
    return;
  }
  rc = srv_query_param(url, "since", num, sizeof(num));
  if (rc < 0 || (rc == 0 && hub_parse_u64(num, &since) != 0)) {
    srv_respond_json_error(s, c, 400, "bad since", close);
    return;
  }
  rc = srv_query_param(url, "limit", num, sizeof(num));
  if (rc < 0 || (rc == 0 && (hub_parse_u64(num, &limit) != 0 || limit == 0))) {
    srv_respond_json_error(s, c, 400, "bad limit", close);
    return;
  }
  req = srv_api_begin(s, c, close);
  if (req == 0) {
    return;
  }
  rc = sh_api_history(&s->sh, req, ch, strlen(ch), since, limit, srv_now());
  srv_api_called(s, req, rc);
}

static void srv_handle_request(srv *s, srv_conn *c) {
  srv_http *h = c->http;
  char path[512];
  int keep = http_should_keep_alive(&h->p) ? 1 : 0;
  int close = !keep;
  int method = h->p.method;

  s->http_requests++;
  srv_path(h, path, sizeof(path));
  if (strcmp(path, "/publish") == 0 || strcmp(path, "/history") == 0) {
    int st = srv_auth_api(s->auth, h->authz.len > 0 ? h->authz.p : NULL);
    if (st != 0) {
      h->body_len = 0;
      srv_respond_json_error(
        s, c, st, st == 403 ? "the HTTP API needs --api-key" : "unauthorized",
        close);
      return;
    }
  }
  if (strcmp(path, "/publish") == 0) {
    int v;
    if (method != HTTP_POST) {
      srv_respond_json_error(s, c, 405, "method not allowed", close);
      return;
    }
    {
      uint64_t req = srv_api_begin(s, c, close);
      if (req == 0) {
        return;
      }
      v = sh_api_publish(&s->sh, req, h->body ? h->body : (const uint8_t *)"",
                         h->body_len, srv_now());
      /* |h| may be gone: answered within the call, and closed. */
      srv_api_called(s, req, v);
    }
    return;
  }
  if (method != HTTP_GET && method != HTTP_HEAD) {
    srv_respond_json_error(s, c, 405, "method not allowed", close);
    return;
  }
  if (strcmp(path, "/history") == 0) {
    srv_history(s, c, close);
  } else if (strcmp(path, "/healthz") == 0) {
    if (s->shutting_down) {
      srv_respond(s, c, 503, "text/plain", "shutting down\n", 14, 1);
    } else if (s->bp != NULL && !hub_bp_is_up(s->h)) {
      srv_respond(s, c, 503, "text/plain", "backplane down\n", 15, close);
    } else {
      srv_respond(s, c, 200, "text/plain", "ok", 2, close);
    }
  } else if (strcmp(path, "/metrics") == 0) {
    char buf[8192];
    size_t len = 0;
    srv_metrics(s, buf, sizeof(buf), &len);
    srv_respond(s, c, 200, "text/plain; version=0.0.4", buf, len, close);
  } else if (srv_asset_find(path) != NULL) {
    const srv_asset *a = srv_asset_find(path);
    srv_respond(s, c, 200, a->ctype, (const char *)a->body, a->len, close);
  } else if (strcmp(path, "/ws") == 0) {
    srv_respond_json_error(s, c, 426, "websocket upgrade required", close);
  } else {
    srv_respond_json_error(s, c, 404, "not found", close);
  }
}

/* Keeps |len| bytes read after what the connection can take now (its
   reading is paused): fed again from api_resume.  Returns 0 or -1 (the
   connection was dropped). */
static int srv_http_stash(srv *s, srv_conn *c, const uint8_t *data,
                          size_t len) {
  srv_http *h = c->http;
  if (len > 0) {
    uint8_t *p = realloc(h->stash, h->stash_len + len);
    if (p == NULL) {
      srv_conn_abort(s, c);
      return -1;
    }
    memcpy(p + h->stash_len, data, len);
    h->stash = p;
    h->stash_len += len;
  }
  srv_conn_pause_read(s, c, 1);
  return 0;
}

void srv_http_feed(srv *s, srv_conn *c, const uint8_t *data, size_t len) {
  while (len > 0 && c->state == SRV_HTTP) {
    srv_http *h = c->http;
    if (c->q.bytes > SRV_HTTP_OUT_MAX) {
      /* A client that sends requests but does not read the answers. */
      srv_conn_abort(s, c);
      return;
    }
    size_t n =
      http_parser_execute(&h->p, &srv_http_settings, (const char *)data, len);
    enum http_errno err = HTTP_PARSER_ERRNO(&h->p);
    if (n > len) {
      n = len;
    }
    if (h->p.upgrade && (err == HPE_OK || err == HPE_PAUSED)) {
      if (h->qlen > 0) {
        /* Its 101 must follow the answers still owed. */
        h->upgrade_deferred = 1;
        srv_api_link(s, h);
        (void)srv_http_stash(s, c, data + n, len - n);
        return;
      }
      srv_upgrade(s, c, data + n, len - n);
      return;
    }
    if (err == HPE_PAUSED) {
      http_parser_pause(&h->p, 0);
      data += n;
      len -= n;
      srv_handle_request(s, c);
      if (c->state == SRV_HTTP && !srv_api_may_read(c->http)) {
        /* Enough waiting for the hub: what follows is read later. */
        (void)srv_http_stash(s, c, data, len);
        return;
      }
      continue;
    }
    if (err != HPE_OK) {
      int status = h->error_status ? h->error_status : 400;
      srv_respond_json_error(s, c, status, http_errno_name(err), 1);
      return;
    }
    data += n;
    len -= n;
  }
}
