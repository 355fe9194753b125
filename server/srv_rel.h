/*
 * srv_rel.h - the server's defences against exhaustion and a failing
 * backplane (server/ only): the flags --redis-timeout,
 * --max-backplane-message-bytes, --redis-max-queue-bytes and
 * --max-connections-per-ip, the admission of new sockets (every socket
 * counts against --max-connections; per-address limit; a spare
 * descriptor so that at EMFILE the queue is still answered), the Redis
 * backplane's liveness settings, and their metrics.
 */
#ifndef SRV_REL_H
#define SRV_REL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "hub.h"

typedef struct srv srv;
typedef struct srv_config srv_config;
typedef struct bp_redis_config bp_redis_config;

/* Defaults (CONTRACT.md). */
#define SRV_REDIS_TIMEOUT_NS (3 * HUB_NS_PER_S)
#define SRV_REDIS_QUEUE_BYTES (16u * 1024 * 1024)
#define SRV_BP_MSG_MIN (1024u * 1024)

typedef struct srv_rel_config {
  hub_tstamp redis_timeout_ns; /* 0: no health check */
  uint64_t max_bp_msg_bytes;   /* 0 until given: max(1 MiB, max-message) */
  uint64_t redis_queue_bytes;  /* 0: no cap */
  uint64_t max_conns_per_ip;   /* 0: no limit */
} srv_rel_config;

typedef struct srv_ip srv_ip; /* one client address's open sockets */

typedef struct srv_rel {
  srv_ip **tab; /* chained hash of addresses with open sockets */
  size_t cap;
  size_t n;
  int spare_fd;            /* held for EMFILE, -1 if it could not be opened */
  size_t refusing;         /* refused sockets waiting for their client EOF */
  uint64_t refused_full;   /* sockets refused: --max-connections */
  uint64_t refused_per_ip; /* sockets refused: --max-connections-per-ip */
  uint64_t emfile_shed;    /* accepted with the spare descriptor, refused */
} srv_rel;

void srv_rel_config_default(srv_rel_config *rc);
/* A flag of this module: 0 set, -1 bad value, 1 not one of these. */
int srv_rel_set_option(srv_config *cfg, const char *name, const char *val);

/* At start-up (after the flags) and at exit. */
int srv_rel_init(srv *s);
void srv_rel_fini(srv *s);

/* The Redis backplane's liveness, poison and congestion settings. */
void srv_rel_bp_config(srv *s, bp_redis_config *bc);

/*
 * A socket was accepted from |ss|: 0 and *ip set when it may stay
 * (release *ip with srv_rel_release when it closes), or -1 when it was
 * refused - answered 503 (best effort) and closed here.
 */
int srv_rel_admit(srv *s, int fd, const struct sockaddr_storage *ss,
                  srv_ip **ip);
void srv_rel_release(srv *s, srv_ip *ip);

/* accept() failed with EMFILE/ENFILE: accept one connection with the
   spare descriptor, answer it 503 and close it.  Returns 0 when one was
   shed (try accepting again), -1 otherwise (pause accepting). */
int srv_rel_shed(srv *s, int listen_fd);

/* Appends this module's metrics (Prometheus text) at buf + *n. */
void srv_rel_metrics(srv *s, char *buf, size_t cap, size_t *n);

/* Protocol checks (RFC 6455): a close frame's reason must be UTF-8
   (1007 otherwise); Sec-WebSocket-Key must be 16 base64-encoded bytes. */
int srv_utf8_valid(const uint8_t *s, size_t len);
int srv_ws_key_valid(const char *key, size_t len);

#endif /* SRV_REL_H */
