/*
 * srv_tls.h - TLS (OpenSSL) for the listen port: wss:// and https://.
 *
 * With --tls-cert and --tls-key every accepted socket is a TLS server
 * connection.  The handshake is not a state of its own: the HTTP state's
 * reads go through SSL_read, which drives the handshake, so the
 * handshake timeout (the HTTP list's deadline) covers it too.  Writes go
 * through srv_tls_writev, the TLS stand-in for writev(2): the out-queue,
 * its accounting and the plain-TCP write path are unchanged.
 *
 * The certificate and key are reloaded on SIGHUP (srv_tls_reload): new
 * connections get the new ones, open connections keep theirs, and a
 * reload that fails keeps the old ones.
 */
#ifndef SRV_TLS_H
#define SRV_TLS_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "srv.h"

/*
 * srv_tls_load reads a PEM certificate chain and its private key and
 * checks that they match.  On failure returns NULL and writes why into
 * |err| (|errcap| bytes).  Free with srv_tls_ctx_free.
 */
struct ssl_ctx_st *srv_tls_load(const char *cert, const char *key, char *err,
                                size_t errcap);
void srv_tls_ctx_free(struct ssl_ctx_st *ctx);

/* Reloads s->cfg.tls_cert/tls_key into s->tls_ctx; 0, or -1 (logged,
   the old context kept). */
int srv_tls_reload(srv *s);

/* Makes |c| (socket |fd|) a TLS server connection; 0 or -1. */
int srv_tls_conn_new(srv *s, srv_conn *c, int fd);
/* Frees |c|'s TLS state (NULL-safe); call before closing the socket. */
void srv_tls_conn_free(srv_conn *c);

/* The most plaintext one TLS record carries (RFC 8446 5.1). */
#define SRV_TLS_RECORD_MAX 16384

/*
 * srv_tls_read reads decrypted bytes (driving the handshake first).
 * Returns the count, 0 at the peer's close (close_notify or EOF), or -1
 * with errno EAGAIN (wants more input, or output: then c->want_write is
 * asked through srv_tls_wants_write) or EPROTO (not TLS, a bad
 * handshake, a TLS error: drop the connection).
 */
ssize_t srv_tls_read(srv *s, srv_conn *c, void *buf, size_t len);
/* Whether OpenSSL holds decrypted bytes not read yet. */
int srv_tls_pending(const srv_conn *c);
/* Whether the last read stopped because TLS must write first. */
int srv_tls_read_wants_write(const srv_conn *c);

/*
 * srv_tls_writev writes |iov| in order with SSL_write, as writev would:
 * returns the bytes taken (maybe fewer than offered), or -1 with errno
 * EAGAIN (nothing taken; wait for EV_WRITE) or EPIPE (a TLS error).  A
 * write that returned WANT_WRITE is retried with the same bytes, as
 * OpenSSL requires: the caller's queue head does not move until taken.
 */
ssize_t srv_tls_writev(srv_conn *c, const struct iovec *iov, int n);

/* Sends close_notify if it can without waiting (before SHUT_WR). */
void srv_tls_shutdown(srv_conn *c);

#endif /* SRV_TLS_H */
