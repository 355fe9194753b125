/*
 * srv_tls.c - OpenSSL under the connection state machine of srv_conn.c.
 *
 * Every TLS socket is non-blocking, so every SSL_* call may stop with
 * SSL_ERROR_WANT_READ or SSL_ERROR_WANT_WRITE.  Reads: WANT_READ is
 * EAGAIN (the ev_io watches EV_READ always); WANT_WRITE (a handshake
 * flight the socket did not take) asks for EV_WRITE, and srv_conn.c
 * retries the read when it comes.  Writes: SSL_MODE_ENABLE_PARTIAL_WRITE
 * lets SSL_write return after each record, so a write reports progress
 * as writev does; SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER lets a retry after
 * WANT_WRITE pass the same bytes from a queue entry that has grown
 * (srv_sh_send appends frames to the last span).
 *
 * Plain HTTP sent to the TLS port fails the handshake (OpenSSL: "http
 * request"); the connection is dropped, nothing is answered.
 */
#include "srv_tls.h"
#include "srv_log.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

static void srv_tls_errstr(char *err, size_t errcap, const char *what) {
  unsigned long e = ERR_get_error();
  char buf[256] = "";
  if (e != 0) {
    ERR_error_string_n(e, buf, sizeof(buf));
  }
  ERR_clear_error();
  snprintf(err, errcap, "%s%s%s", what, buf[0] ? ": " : "", buf);
}

SSL_CTX *srv_tls_load(const char *cert, const char *key, char *err,
                      size_t errcap) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == NULL) {
    srv_tls_errstr(err, errcap, "cannot create a TLS context");
    return NULL;
  }
  (void)SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                          SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                          SSL_MODE_RELEASE_BUFFERS);
  /* No session tickets or cache: a hub's clients reconnect rarely, and
     the handshake cost we report is the full one. */
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
  if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
    char what[600];
    snprintf(what, sizeof(what), "--tls-cert %s", cert);
    srv_tls_errstr(err, errcap, what);
    SSL_CTX_free(ctx);
    return NULL;
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
    char what[600];
    /* OpenSSL 3 checks the pair here already. */
    int mismatch =
      ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH;
    snprintf(what, sizeof(what), "--tls-key %s%s", key,
             mismatch ? " does not match the --tls-cert certificate" : "");
    srv_tls_errstr(err, errcap, what);
    SSL_CTX_free(ctx);
    return NULL;
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    srv_tls_errstr(err, errcap,
                   "--tls-key does not match the --tls-cert certificate");
    SSL_CTX_free(ctx);
    return NULL;
  }
  return ctx;
}

void srv_tls_ctx_free(SSL_CTX *ctx) {
  SSL_CTX_free(ctx); /* NULL-safe; open connections hold references */
}

int srv_tls_reload(srv *s) {
  char err[512];
  SSL_CTX *ctx =
    srv_tls_load(s->cfg.tls_cert, s->cfg.tls_key, err, sizeof(err));
  if (ctx == NULL) {
    srv_log(SRV_LOG_ERROR, "tls reload failed, keeping the old certificate",
            "reason", err, (const char *)NULL);
    return -1;
  }
  SSL_CTX_free(s->tls_ctx);
  s->tls_ctx = ctx;
  srv_log(SRV_LOG_INFO, "tls certificate reloaded", "cert", s->cfg.tls_cert,
          "key", s->cfg.tls_key, (const char *)NULL);
  return 0;
}

int srv_tls_conn_new(srv *s, srv_conn *c, int fd) {
  SSL *ssl = SSL_new(s->tls_ctx);
  if (ssl == NULL) {
    ERR_clear_error();
    return -1;
  }
  if (SSL_set_fd(ssl, fd) != 1) {
    ERR_clear_error();
    SSL_free(ssl);
    return -1;
  }
  SSL_set_accept_state(ssl);
  c->tls = ssl;
  c->tls_read_ww = 0;
  return 0;
}

void srv_tls_conn_free(srv_conn *c) {
  if (c->tls != NULL) {
    SSL_free(c->tls);
    c->tls = NULL;
  }
}

/*
 * One read of the connection's read budget (srv_conn.c): whole records
 * while |buf| has room for a full one (16 KiB of plaintext), so that a
 * TLS read is worth a plaintext read of |len| bytes and no decrypted
 * bytes are left inside OpenSSL, where no readiness of the socket would
 * bring them out, when the budget ends the round.  Returns the bytes read
 * (an error after some shows on the next call), 0 at the close, or -1.
 */
ssize_t srv_tls_read(srv *s, srv_conn *c, void *buf, size_t len) {
  size_t total = 0;
  int r, e;
  (void)s;
  c->tls_read_ww = 0;
  ERR_clear_error();
  for (;;) {
    size_t room = len - total;
    r = SSL_read(c->tls, (uint8_t *)buf + total,
                 room > (size_t)INT32_MAX ? INT32_MAX : (int)room);
    if (r <= 0) {
      break;
    }
    total += (size_t)r;
    if (len - total < SRV_TLS_RECORD_MAX || SSL_pending(c->tls) > 0) {
      return (ssize_t)total;
    }
  }
  e = SSL_get_error(c->tls, r);
  if (total > 0) {
    if (e == SSL_ERROR_WANT_WRITE) {
      c->tls_read_ww = 1;
    }
    ERR_clear_error();
    return (ssize_t)total; /* the rest (or the error) on the next call */
  }
  switch (e) {
  case SSL_ERROR_WANT_READ:
    errno = EAGAIN;
    return -1;
  case SSL_ERROR_WANT_WRITE:
    c->tls_read_ww = 1;
    errno = EAGAIN;
    return -1;
  case SSL_ERROR_ZERO_RETURN:
    return 0;
  default:
    if (srv_log_enabled(SRV_LOG_DEBUG)) {
      char err[256];
      srv_tls_errstr(err, sizeof(err), "tls error");
      srv_log(SRV_LOG_DEBUG, "tls connection dropped", "remote",
              c->http != NULL ? srv_http_remote(c) : "", "reason", err,
              (const char *)NULL);
    }
    ERR_clear_error();
    errno = EPROTO;
    return -1;
  }
}

int srv_tls_pending(const srv_conn *c) {
  return c->tls != NULL && SSL_pending(c->tls) > 0;
}

int srv_tls_read_wants_write(const srv_conn *c) {
  return c->tls != NULL && c->tls_read_ww;
}

ssize_t srv_tls_writev(srv_conn *c, const struct iovec *iov, int n) {
  size_t total = 0;
  int i;
  ERR_clear_error();
  for (i = 0; i < n; i++) {
    const uint8_t *p = iov[i].iov_base;
    size_t left = iov[i].iov_len;
    while (left > 0) {
      int chunk = left > (size_t)INT32_MAX ? INT32_MAX : (int)left;
      int r = SSL_write(c->tls, p, chunk);
      if (r > 0) {
        p += r;
        left -= (size_t)r;
        total += (size_t)r;
        continue;
      }
      switch (SSL_get_error(c->tls, r)) {
      case SSL_ERROR_WANT_WRITE:
      case SSL_ERROR_WANT_READ:
        if (total > 0) {
          return (ssize_t)total;
        }
        errno = EAGAIN;
        return -1;
      default:
        ERR_clear_error();
        if (total > 0) {
          return (ssize_t)total; /* the error shows on the next call */
        }
        errno = EPIPE;
        return -1;
      }
    }
  }
  return (ssize_t)total;
}

void srv_tls_shutdown(srv_conn *c) {
  if (c->tls != NULL && SSL_is_init_finished(c->tls)) {
    (void)SSL_shutdown(c->tls); /* close_notify, if the socket takes it */
    ERR_clear_error();
  }
}
