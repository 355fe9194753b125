/*
 * srv_main.c - build/wshub: flags, the hub, the backplane, the loop.
 *
 * Every hub event goes through the shell (shell/shell.h), which applies
 * the effects the core queued (SENDs to connection queues, CLOSEs to
 * sockets, backplane and registry effects to the bp), acts on every
 * error with its policy and re-arms the one ev_timer (srv_set_timer).
 * Queued bytes are written once per loop iteration from an ev_prepare
 * watcher (srv_flush_all), so a burst of deliveries to one socket leaves
 * in one writev; a connection past the shell's early-write mark is
 * written before the next event.
 */
#include "srv.h"
#include "srv_auth.h"
#include "bp_redis.h"
#include "srv_log.h"
#include "srv_proc.h"
#include "srv_tls.h"
#include "srv_version.h"
#include "srv_rec.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

hub_tstamp srv_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (hub_tstamp)ts.tv_sec * HUB_NS_PER_S + (hub_tstamp)ts.tv_nsec;
}

/* ------------------------------------------------------------ hub timer */

/* The shell's set_timer: one ev_timer at absolute time |at|. */
static void srv_set_timer(void *user, hub_tstamp at) {
  srv *s = user;
  hub_tstamp now;
  double delay;
  ev_timer_stop(s->loop, &s->hub_timer);
  if (at == HUB_TSTAMP_NONE) {
    return;
  }
  now = srv_now();
  delay = at > now ? (double)(at - now) / 1e9 : 0.0;
  /* ev_now() may lag the clock a little; never fire before |at|. */
  ev_timer_set(&s->hub_timer, delay + 0.0005, 0.0);
  ev_timer_start(s->loop, &s->hub_timer);
}

static void srv_hub_timer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  srv *s = ev_userdata(loop);
  (void)w;
  (void)revents;
  sh_expiry(&s->sh, srv_now());
}

/* The shell's verify hook: a refresh token, checked like the upgrade's. */
static int srv_verify(void *user, void *conn_user, hub_conn_id id,
                      const char *token, size_t len, const hub_auth **auth,
                      const char **err) {
  srv *s = user;
  (void)conn_user;
  (void)id;
  if (s->auth->alg == SRV_ALG_NONE || strlen(token) != len) {
    *err = "malformed token";
    return -1;
  }
  *auth = srv_auth_verify(s->auth, token, srv_now(), err);
  return *auth != NULL ? 0 : -1;
}

/* The shell's error hook: a hub call the server got wrong. */
static void srv_sh_error(void *user, const char *what, int err) {
  (void)user;
  srv_log(SRV_LOG_ERROR, "hub call failed", "what", what, "error",
          hub_strerror(err), (const char *)NULL);
}

/* ------------------------------------------------------------ backplane */

static void srv_claim(srv *s);

/* The backplane logs up and down itself, with its address and why. */
static void srv_bp_up(void *user) {
  srv *s = user;
  if (s->claiming) {
    /* The hub hears of it once the instance key is ours: until then it
       must not write the key (srv_claim_done). */
    srv_claim(s);
    return;
  }
  if (s->bp_ups++ > 0) {
    s->bp_reconnects++;
  }
  sh_bp_up(&s->sh, srv_now());
}

static void srv_bp_down(void *user) {
  srv *s = user;
  if (s->claiming) {
    return; /* the hub was never told it was up */
  }
  sh_bp_down(&s->sh, srv_now());
}

/* The backplane's log callback (bp_redis_config.log). */
static void srv_bp_log(void *user, int level, const char *msg,
                       const char *const *fields) {
  (void)user;
  srv_log_fields((srv_log_level)level, msg, fields);
}

static void srv_bp_msg(void *user, const char *channel, size_t channel_len,
                       const uint8_t *data, size_t len) {
  srv *s = user;
  sh_bp_msg(&s->sh, channel, channel_len, data, len, srv_now());
}

/* History answers (bp_hentry and hub_hentry have one layout). */
_Static_assert(sizeof(bp_hentry) == sizeof(hub_hentry) &&
                 offsetof(bp_hentry, offset) == offsetof(hub_hentry, offset) &&
                 offsetof(bp_hentry, data) == offsetof(hub_hentry, data) &&
                 offsetof(bp_hentry, len) == offsetof(hub_hentry, len),
               "bp_hentry and hub_hentry differ");
static void srv_bp_hpublished(void *user, uint64_t req, int ok, uint64_t offset,
                              const char *epoch, size_t epoch_len) {
  srv *s = user;
  sh_bp_hpublished(&s->sh, req, ok, offset, epoch, epoch_len, srv_now());
}

static void srv_bp_hread(void *user, uint64_t req, int ok, uint64_t offset,
                         const char *epoch, size_t epoch_len,
                         const bp_hentry *entries, size_t n) {
  srv *s = user;
  sh_bp_hread(&s->sh, req, ok, offset, epoch, epoch_len,
              (const hub_hentry *)(const void *)entries, n, srv_now());
}

static void srv_bp_subscribed(void *user, const char *channel,
                              size_t channel_len) {
  srv *s = user;
  sh_bp_subscribed(&s->sh, channel, channel_len, srv_now());
}

/* The shell's forced reconnect (out of memory for a backplane event). */
static void srv_bp_reset(void *user) {
  srv *s = user;
  srv_log(SRV_LOG_ERROR, "out of memory for the backplane: reconnecting",
          (const char *)NULL);
  if (s->bp != NULL) {
    bp_redis_reset(s->bp);
  }
}

/* ------------------------------------------------------------ metrics */

void srv_metrics(srv *s, char *buf, size_t cap, size_t *len) {
  hub_stats st;
  size_t n = 0, i;
  int k;
  hub_get_stats(s->h, &st);
  {
    const struct {
      const char *name;
      const char *type;
      const char *help;
      unsigned long long value;
    } ms[] = {
      {"wshub_connections", "gauge", "Open WebSocket connections.", st.conns},
      {"wshub_subscriptions", "gauge", "(connection, channel) subscriptions.",
       st.subscriptions},
      {"wshub_channels", "gauge", "Channels with local subscribers.",
       st.channels},
      {"wshub_backplane_subscriptions", "gauge",
       "Channels subscribed on the backplane.", st.bp_subscriptions},
      {"wshub_messages_in_total", "counter", "Client messages received.",
       st.msgs_in},
      {"wshub_messages_out_total", "counter",
       "Message frames queued to clients.", st.msgs_out},
      {"wshub_publishes_total", "counter", "Publishes accepted.", st.publishes},
      {"wshub_history_reads_total", "counter",
       "History reads from Redis for subscribers and gap fills.",
       st.hist_reads},
      {"wshub_history_gaps_total", "counter",
       "gap frames sent (history could not fill).", st.hist_gaps},
      {"wshub_backplane_up", "gauge",
       "1 while the Redis backplane is connected.",
       s->bp != NULL ? (unsigned long long)hub_bp_is_up(s->h) : 0},
      {"wshub_backplane_reconnects_total", "counter",
       "Times the backplane came back.", s->bp_reconnects},
      {"wshub_upgrades_rejected_total", "counter",
       "Upgrades refused (401, 403, 503).", s->upgrades_rejected},
      {"wshub_protocol_errors_total", "counter",
       "Connections closed for a WebSocket protocol error.", s->proto_errors},
      {"wshub_http_requests_total", "counter", "Plain HTTP requests served.",
       s->http_requests},
      {"wshub_frames_written_total", "counter",
       "Message frames written to sockets.", s->frames_written},
      {"wshub_writev_calls_total", "counter", "writev() calls.",
       s->writev_calls},
      {"wshub_frame_parsers_lent", "gauge",
       "wslay frame contexts lent to connections that have a frame partly "
       "read.",
       s->rx_lent},
      {"wshub_out_queues", "gauge",
       "Connections with bytes waiting to be written.", s->outqs},
      {"wshub_sockets", "gauge", "Sockets held (HTTP, WebSocket, closing).",
       s->conns_total},
    };
#define M(...)                                                                 \
  do {                                                                         \
    int w_ = snprintf(buf + n, cap - n, __VA_ARGS__);                          \
    if (w_ > 0 && (size_t)w_ < cap - n) {                                      \
      n += (size_t)w_;                                                         \
    }                                                                          \
  } while (0)
    for (i = 0; i < sizeof(ms) / sizeof(ms[0]); i++) {
      M("# HELP %s %s\n# TYPE %s %s\n%s %llu\n", ms[i].name, ms[i].help,
        ms[i].name, ms[i].type, ms[i].name, ms[i].value);
    }
  }
  M("# HELP wshub_evictions_total Connections closed by the hub, by "
    "reason.\n# TYPE wshub_evictions_total counter\n");
  for (k = 0; k < HUB_CLOSE_KIND_MAX; k++) {
    M("wshub_evictions_total{reason=\"%s\"} %llu\n",
      hub_close_kind_name((hub_close_kind)k),
      (unsigned long long)st.evictions[k]);
  }
  M("# HELP wshub_build_info The version this server was built from.\n"
    "# TYPE wshub_build_info gauge\n"
    "wshub_build_info{version=\"%s\",revision=\"%s\"} 1\n",
    srv_version, srv_revision);
#undef M
  srv_proc_metrics(buf, cap, &n);
  srv_rel_metrics(s, buf, cap, &n);
  *len = n;
}

/* ------------------------------------------------------------ shutdown */

static void srv_bp_quit_done(void *arg) {
  srv *s = arg;
  ev_break(s->loop, EVBREAK_ALL);
}

static void srv_quit_timer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  (void)w;
  (void)revents;
  ev_break(loop, EVBREAK_ALL);
}

/* Every client socket is gone (or the shutdown timeout passed). */
static void srv_finish(srv *s) {
  if (s->finishing) {
    return;
  }
  s->finishing = 1;
  ev_timer_stop(s->loop, &s->shutdown_timer);
  if (s->bp != NULL) {
    /* Let the DELs and UNSUBSCRIBEs already sent be answered, briefly. */
    ev_timer_init(&s->quit_timer, srv_quit_timer_cb, 2.0, 0.0);
    ev_timer_start(s->loop, &s->quit_timer);
    bp_redis_quit(s->bp, srv_bp_quit_done, s);
  } else {
    ev_break(s->loop, EVBREAK_ALL);
  }
}

static void srv_check_done(srv *s) {
  if (s->shutting_down && s->conns_total == 0) {
    srv_finish(s);
  }
}

static void srv_shutdown_timer_cb(struct ev_loop *loop, ev_timer *w,
                                  int revents) {
  srv *s = ev_userdata(loop);
  (void)w;
  (void)revents;
  /* Peers that did not finish their close handshake in time. */
  while (s->cw_list.next != &s->cw_list) {
    srv_conn_abort(s, s->cw_list.next);
  }
  srv_close_http_conns(s);
  srv_finish(s);
}

static void srv_begin_shutdown(srv *s) {
  if (s->shutting_down) {
    /* A second signal: stop waiting for peers. */
    if (!s->finishing) {
      srv_log(SRV_LOG_WARN, "second signal, not waiting for peers",
              (const char *)NULL);
      srv_shutdown_timer_cb(s->loop, &s->shutdown_timer, 0);
    }
    return;
  }
  srv_log(SRV_LOG_INFO, "shutting down", (const char *)NULL);
  s->shutting_down = 1;
  ev_io_stop(s->loop, &s->listen_io);
  close(s->listen_fd);
  s->listen_fd = -1;
  srv_close_http_conns(s);
  sh_shutdown(&s->sh, srv_now());
  srv_api_shutdown(s);
  srv_rec_flush(); /* on disk even if the shutdown is cut short */
  ev_timer_init(&s->shutdown_timer, srv_shutdown_timer_cb,
                (double)s->cfg.shutdown_timeout_ns / 1e9, 0.0);
  ev_timer_start(s->loop, &s->shutdown_timer);
  srv_check_done(s);
}

static void srv_signal_cb(struct ev_loop *loop, ev_signal *w, int revents) {
  (void)w;
  (void)revents;
  srv_begin_shutdown(ev_userdata(loop));
}

/* SIGHUP: reload the TLS certificate and key; harmless otherwise. */
static void srv_sighup_cb(struct ev_loop *loop, ev_signal *w, int revents) {
  srv *s = ev_userdata(loop);
  (void)w;
  (void)revents;
  if (s->tls_ctx != NULL) {
    (void)srv_tls_reload(s); /* a failure is logged, the old one kept */
  } else {
    srv_log(SRV_LOG_INFO, "SIGHUP: nothing to reload (no --tls-cert)",
            (const char *)NULL);
  }
}

/* ------------------------------------------------------------ watchers */

static void srv_flush_idle_cb(struct ev_loop *loop, ev_idle *w, int revents) {
  (void)loop;
  (void)w;
  (void)revents; /* only keeps the next poll from waiting */
}

static void srv_prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents) {
  srv *s = ev_userdata(loop);
  (void)w;
  (void)revents;
  /*
   * Cork: the first time there is something to write, look at the
   * sockets once more (without waiting) before writing.  Publishes that
   * arrive while the first ones of a burst fan out then join the same
   * writev instead of costing every subscriber another syscall.  At most
   * one poll is skipped, so nothing waits behind a stream of input.
   */
  if (s->dirty != NULL && !s->flush_deferred) {
    s->flush_deferred = 1;
    ev_idle_start(loop, &s->flush_idle);
  } else {
    s->flush_deferred = 0;
    ev_idle_stop(loop, &s->flush_idle);
    srv_flush_all(s);
  }
  srv_reap(s);
  srv_check_done(s);
}

static void srv_tick_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  srv *s = ev_userdata(loop);
  (void)w;
  (void)revents;
  srv_tick(s);
  srv_rec_flush(); /* a SIGKILL loses at most a tick of the recording */
  if (!s->shutting_down && s->listen_fd >= 0 && s->claiming != 1 &&
      !ev_is_active(&s->listen_io)) {
    ev_io_start(loop, &s->listen_io); /* paused after EMFILE */
  }
}

/* ------------------------------------------------------------ flags */

static const char srv_usage[] =
  "usage: wshub [options]\n"
  "Every option can also be given as an environment variable: --max-"
  "message-bytes is\nWSHUB_MAX_MESSAGE_BYTES.  An option on the command "
  "line wins.\n\n"
  "  --listen HOST:PORT        where HTTP and WebSocket are served "
  "(127.0.0.1:8080)\n"
  "  --redis URL               redis://[user:password@]host:port[/db] or "
  "unix:///path.sock;\n"
  "                            absent = embedded backplane\n"
  "  --redis-prefix P          prefix of every Redis key and channel (ws:)\n"
  "  --instance-id ID          unique id of this instance "
  "(hostname-pid-random);\n"
  "                            with the registry on, claimed at start (the "
  "key\n"
  "                            <prefix>instance:ID, SET NX): a second "
  "instance with\n"
  "                            the same id refuses to start.  With the "
  "registry off\n"
  "                            nothing is claimed and nothing is checked\n"
  "  --registry on|off         connection registry and heartbeat (on with "
  "--redis)\n"
  "  --max-queue-msgs N        per-connection outbound queue limit, "
  "messages (256)\n"
  "  --max-queue-bytes N       per-connection outbound queue limit, bytes "
  "(4194304)\n"
  "  --max-message-bytes N     largest inbound WebSocket message (65536)\n"
  "  --ping-interval S         seconds between server pings (54)\n"
  "  --pong-timeout S          close a peer silent to pings this long (60);"
  "\n"
  "                            not below --ping-interval\n"
  "  --write-timeout S         close a peer whose socket takes no bytes "
  "this long (10)\n"
  "  --heartbeat-interval S    registry refresh period (10)\n"
  "  --shutdown-timeout S      longest wait for peers on shutdown (10)\n"
  "  --max-connections N       sockets held (HTTP, WebSocket, TLS); past it "
  "new ones\n"
  "                            get 503 (from ulimit -n)\n"
  "  --handshake-timeout S     drop a client not upgraded by then (10)\n"
  "  --sndbuf BYTES            SO_SNDBUF of client sockets (0 = OS "
  "default)\n"
  "  --tls-cert FILE           PEM certificate chain: serve wss:// and "
  "https://\n"
  "  --tls-key FILE            PEM private key of --tls-cert (both are "
  "reloaded on SIGHUP)\n"
  "  --log-level L             debug, info, warn or error (info); "
  "WSHUB_DEBUG=1 is\n"
  "                            --log-level debug\n"
  "  --log-format F            text or json, one line per event on stderr "
  "(text)\n"
  "  --version                 print the version and exit\n"
  "  --token-secret S          HS256 secret: WebSocket clients need a JWT "
  "(auth on)\n"
  "  --token-key FILE          PEM public key, RSA (RS256) or EC P-256 "
  "(ES256): auth on\n"
  "  --api-key K               POST /publish and GET /history need "
  "Authorization: Bearer K\n"
  "  --allowed-origins LIST    comma-separated origins allowed to upgrade "
  "(any)\n"
  "  --record FILE             record every input of the hub core to FILE "
  "(replay:\n"
  "                            wshub-sim --replay FILE)\n"
  "  --record-max-bytes N      stop recording when FILE would pass N bytes "
  "(1073741824)\n"
  "  --max-publish-rate N      publishes per second per WebSocket, a bucket "
  "of N;\n"
  "                            0 = no limit (1000)\n"
  "  --redis-timeout S         a Redis link that answers nothing this long is "
  "down (3)\n"
  "  --max-backplane-message-bytes N\n"
  "                            larger payloads from Redis are dropped\n"
  "                            (max(1 MiB, --max-message-bytes))\n"
  "  --redis-max-queue-bytes N bytes queued for Redis past which publishes "
  "get 503\n"
  "                            (16777216; 0 = no cap)\n"
  "  --max-connections-per-ip N\n"
  "                            sockets one client address may hold (0 = no "
  "limit)\n"
  "  --history-size N          messages kept per history channel (0 = no "
  "history)\n"
  "  --history-ttl S           kept messages dropped after no publish this "
  "long (300)\n"
  "  --history-meta-ttl S      a channel's offset and epoch outlive its last "
  "publish\n"
  "                            this long (86400)\n"
  "  --history-channels LIST   comma-separated globs of the channels that "
  "keep history (*);\n"
  "                            with --redis, history needs Redis 7 or newer\n"
  "  --help                    this text\n"
  "Durations take seconds (\"1.5\") or a unit (\"250ms\", \"2s\", "
  "\"1m\", \"1h\").\n"
  "An environment variable is not read when its option is on the command "
  "line.\n"
  "Signals: SIGTERM/SIGINT shut down gracefully; SIGHUP reloads the TLS "
  "files.\n"
  "The protocol and the operations reference: docs/protocol.md and "
  "docs/operations.md\n"
  "in the source tree.\n";

enum {
  O_LISTEN = 1,
  O_REDIS,
  O_PREFIX,
  O_INSTANCE,
  O_REGISTRY,
  O_MAXQM,
  O_MAXQB,
  O_MAXMSG,
  O_PING,
  O_PONG,
  O_WRITE,
  O_HEARTBEAT,
  O_SHUTDOWN,
  O_MAXCONN,
  O_HANDSHAKE,
  O_SNDBUF,
  O_TLS_CERT,
  O_TLS_KEY,
  O_LOG_LEVEL,
  O_LOG_FORMAT,
  O_VERSION,
  O_TOKEN_SECRET,
  O_TOKEN_KEY,
  O_API_KEY,
  O_ORIGINS,
  O_RECORD,
  O_RECORD_MAX,
  O_PUBRATE,
  O_REDIS_TIMEOUT, /* these four: srv_rel.c */
  O_MAXBPMSG,
  O_REDIS_QUEUE,
  O_PERIP,
  O_HISTORY_SIZE,
  O_HISTORY_TTL,
  O_HISTORY_META_TTL,
  O_HISTORY_CHANNELS,
  O_HELP
};

static const struct option srv_longopts[] = {
  {"listen", required_argument, NULL, O_LISTEN},
  {"redis", required_argument, NULL, O_REDIS},
  {"redis-prefix", required_argument, NULL, O_PREFIX},
  {"instance-id", required_argument, NULL, O_INSTANCE},
  {"registry", required_argument, NULL, O_REGISTRY},
  {"max-queue-msgs", required_argument, NULL, O_MAXQM},
  {"max-queue-bytes", required_argument, NULL, O_MAXQB},
  {"max-message-bytes", required_argument, NULL, O_MAXMSG},
  {"ping-interval", required_argument, NULL, O_PING},
  {"pong-timeout", required_argument, NULL, O_PONG},
  {"write-timeout", required_argument, NULL, O_WRITE},
  {"heartbeat-interval", required_argument, NULL, O_HEARTBEAT},
  {"shutdown-timeout", required_argument, NULL, O_SHUTDOWN},
  {"max-connections", required_argument, NULL, O_MAXCONN},
  {"handshake-timeout", required_argument, NULL, O_HANDSHAKE},
  {"sndbuf", required_argument, NULL, O_SNDBUF},
  {"tls-cert", required_argument, NULL, O_TLS_CERT},
  {"tls-key", required_argument, NULL, O_TLS_KEY},
  {"log-level", required_argument, NULL, O_LOG_LEVEL},
  {"log-format", required_argument, NULL, O_LOG_FORMAT},
  {"version", no_argument, NULL, O_VERSION},
  {"token-secret", required_argument, NULL, O_TOKEN_SECRET},
  {"token-key", required_argument, NULL, O_TOKEN_KEY},
  {"api-key", required_argument, NULL, O_API_KEY},
  {"allowed-origins", required_argument, NULL, O_ORIGINS},
  {"record", required_argument, NULL, O_RECORD},
  {"record-max-bytes", required_argument, NULL, O_RECORD_MAX},
  {"max-publish-rate", required_argument, NULL, O_PUBRATE},
  {"redis-timeout", required_argument, NULL, O_REDIS_TIMEOUT},
  {"max-backplane-message-bytes", required_argument, NULL, O_MAXBPMSG},
  {"redis-max-queue-bytes", required_argument, NULL, O_REDIS_QUEUE},
  {"max-connections-per-ip", required_argument, NULL, O_PERIP},
  {"history-size", required_argument, NULL, O_HISTORY_SIZE},
  {"history-ttl", required_argument, NULL, O_HISTORY_TTL},
  {"history-meta-ttl", required_argument, NULL, O_HISTORY_META_TTL},
  {"history-channels", required_argument, NULL, O_HISTORY_CHANNELS},
  {"help", no_argument, NULL, O_HELP},
  {NULL, 0, NULL, 0}};

static int srv_set_option(srv_config *cfg, int opt, const char *val,
                          const char *name) {
  uint64_t u = 0;
  hub_tstamp *dur = NULL;
  const struct option *o;

  /* The hub's own settings are parsed by the hub, as the simulator's
     `config` statements are. */
  for (o = srv_longopts; o->name != NULL && o->val != opt; o++) {
  }
  if (o->name != NULL) {
    int rc = hub_config_set(&cfg->hub, o->name, val);
    if (rc == 0) {
      return 0;
    }
    if (rc < 0) {
      goto bad;
    }
  }
  switch (opt) {
  case O_LISTEN: {
    const char *colon = strrchr(val, ':');
    size_t hl;
    if (colon == NULL || hub_parse_u64(colon + 1, &u) != 0 || u > 65535) {
      goto bad;
    }
    hl = (size_t)(colon - val);
    if (hl >= sizeof(cfg->listen_host)) {
      goto bad;
    }
    if (hl >= 2 && val[0] == '[' && val[hl - 1] == ']') {
      memcpy(cfg->listen_host, val + 1, hl - 2);
      cfg->listen_host[hl - 2] = '\0';
    } else {
      memcpy(cfg->listen_host, val, hl);
      cfg->listen_host[hl] = '\0';
    }
    cfg->listen_port = (int)u;
    return 0;
  }
  case O_REDIS:
    cfg->redis_url = *val ? val : NULL;
    return 0;
  case O_PREFIX:
    cfg->redis_prefix = val;
    return 0;
  case O_INSTANCE:
    /* It appears unescaped in Redis keys and JSON values: the channel
       name alphabet, 1..128 bytes. */
    if (!hub_channel_valid(val, strlen(val))) {
      goto bad;
    }
    strcpy(cfg->instance_id, val);
    return 0;
  case O_MAXCONN:
    if (hub_parse_u64(val, &u) != 0) {
      goto bad;
    }
    cfg->max_connections = u;
    return 0;
  case O_SNDBUF:
    if (hub_parse_u64(val, &u) != 0 || u > (1u << 30)) {
      goto bad;
    }
    cfg->sndbuf = (int)u;
    return 0;
  case O_RECORD:
    cfg->record_path = *val ? val : NULL;
    return 0;
  case O_RECORD_MAX:
    if (hub_parse_u64(val, &u) != 0 || u == 0) {
      goto bad;
    }
    cfg->record_max_bytes = u;
    return 0;
  case O_TLS_CERT:
    cfg->tls_cert = *val ? val : NULL;
    return 0;
  case O_TLS_KEY:
    cfg->tls_key = *val ? val : NULL;
    return 0;
  case O_LOG_LEVEL: {
    srv_log_level l;
    if (srv_log_parse_level(val, &l) != 0) {
      goto bad;
    }
    cfg->log_level = (int)l;
    srv_log_setup(l, cfg->log_json); /* later errors in its format */
    return 0;
  }
  case O_LOG_FORMAT:
    if (srv_log_parse_format(val, &cfg->log_json) != 0) {
      goto bad;
    }
    srv_log_setup((srv_log_level)cfg->log_level, cfg->log_json);
    return 0;
  case O_TOKEN_SECRET:
    cfg->token_secret = val;
    return 0;
  case O_TOKEN_KEY:
    cfg->token_key = val;
    return 0;
  case O_API_KEY:
    cfg->api_key = val;
    return 0;
  case O_ORIGINS:
    cfg->allowed_origins = val;
    return 0;
  case O_SHUTDOWN:
    dur = &cfg->shutdown_timeout_ns;
    break;
  case O_HANDSHAKE:
    dur = &cfg->handshake_timeout_ns;
    break;
  default:
    if (o->name != NULL && srv_rel_set_option(cfg, o->name, val) == 0) {
      return 0;
    }
    goto bad;
  }
  if (hub_parse_duration(val, dur) != 0 || (*dur == 0 && opt != O_SHUTDOWN)) {
    goto bad;
  }
  return 0;
bad:
  srv_log(SRV_LOG_ERROR, "bad option value", "option", name, "value", val,
          (const char *)NULL);
  return -1;
}

static void srv_config_default(srv_config *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  strcpy(cfg->listen_host, "127.0.0.1");
  cfg->listen_port = 8080;
  cfg->redis_prefix = "ws:";
  hub_config_default(&cfg->hub);
  cfg->hub.registry = -1;
  cfg->shutdown_timeout_ns = 10 * HUB_NS_PER_S;
  cfg->handshake_timeout_ns = 10 * HUB_NS_PER_S;
  cfg->log_level = SRV_LOG_INFO;
  cfg->record_max_bytes = SRV_REC_MAX_BYTES_DEFAULT;
  srv_rel_config_default(&cfg->rel);
}

/* WSHUB_<FLAG> of an option ("max-message-bytes": WSHUB_MAX_MESSAGE_BYTES). */
static void srv_env_name(const char *flag, char *env, size_t cap) {
  size_t i, n = 0;
  const char *pre = "WSHUB_";
  while (*pre && n + 1 < cap) {
    env[n++] = *pre++;
  }
  for (i = 0; flag[i] && n + 1 < cap; i++) {
    char ch = flag[i];
    env[n++] = ch == '-' ? '_' : (char)(ch >= 'a' && ch <= 'z' ? ch - 32 : ch);
  }
  env[n] = '\0';
}

/*
 * The command line first (only collected), then the environment for the
 * options the command line does not give, then the command line's
 * values: an environment variable that a flag overrides is never parsed,
 * so a bad one cannot stop a start that does not use it.
 */
static int srv_parse_args(srv_config *cfg, int argc, char **argv) {
  const struct option *o;
  struct {
    int opt;
    const char *val;
  } * given;
  unsigned char seen[O_HELP + 1];
  int opt, i, ngiven = 0, rc = -1;

  memset(seen, 0, sizeof(seen));
  given = calloc((size_t)argc + 1, sizeof(*given));
  if (given == NULL) {
    srv_log(SRV_LOG_ERROR, "out of memory", (const char *)NULL);
    return -1;
  }
  while ((opt = getopt_long(argc, argv, "h", srv_longopts, NULL)) != -1) {
    if (opt == O_HELP || opt == 'h') {
      fputs(srv_usage, stdout);
      exit(0);
    }
    if (opt == O_VERSION) {
      if (srv_revision[0] != '\0') {
        printf("wshub %s (%s)\n", srv_version, srv_revision);
      } else {
        printf("wshub %s\n", srv_version);
      }
      exit(0);
    }
    if (opt == '?' || opt <= 0 || opt > O_HELP) {
      fputs(srv_usage, stderr);
      goto out;
    }
    given[ngiven].opt = opt;
    given[ngiven++].val = optarg;
    seen[opt] = 1;
  }
  if (optind < argc) {
    srv_log(SRV_LOG_ERROR, "unexpected argument", "argument", argv[optind],
            (const char *)NULL);
    goto out;
  }
  for (o = srv_longopts; o->name != NULL; o++) {
    char env[64];
    const char *val;
    if (o->val == O_HELP || o->val == O_VERSION || seen[o->val]) {
      continue;
    }
    srv_env_name(o->name, env, sizeof(env));
    val = getenv(env);
    if (val != NULL && srv_set_option(cfg, o->val, val, env) != 0) {
      goto out;
    }
  }
  /* WSHUB_DEBUG=1 (older than --log-level) is WSHUB_LOG_LEVEL=debug. */
  if (!seen[O_LOG_LEVEL] && getenv("WSHUB_LOG_LEVEL") == NULL) {
    const char *d = getenv("WSHUB_DEBUG");
    if (d != NULL && *d != '\0' && strcmp(d, "0") != 0) {
      cfg->log_level = SRV_LOG_DEBUG;
    }
  }
  for (i = 0; i < ngiven; i++) {
    char flag[64];
    for (o = srv_longopts; o->name != NULL && o->val != given[i].opt; o++) {
    }
    snprintf(flag, sizeof(flag), "--%s", o->name != NULL ? o->name : "?");
    if (srv_set_option(cfg, given[i].opt, given[i].val, flag) != 0) {
      goto out;
    }
  }
  rc = 0;
out:
  free(given);
  return rc;
}

static uint64_t srv_random(void) {
  uint64_t v = 0;
  int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    if (read(fd, &v, sizeof(v)) != (ssize_t)sizeof(v)) {
      v = 0;
    }
    close(fd);
  }
  if (v == 0) {
    v = (uint64_t)getpid() * 0x9e3779b97f4a7c15ull ^ srv_now();
  }
  return v;
}

/* ------------------------------------------------------------ main */

static int srv_listen(const srv_config *cfg) {
  struct addrinfo hints, *res = NULL, *ai;
  char port[16];
  int fd = -1, one = 1, rc;
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  snprintf(port, sizeof(port), "%d", cfg->listen_port);
  rc = getaddrinfo(cfg->listen_host[0] ? cfg->listen_host : NULL, port, &hints,
                   &res);
  if (rc != 0) {
    char addr[300];
    snprintf(addr, sizeof(addr), "%s:%d", cfg->listen_host, cfg->listen_port);
    srv_log(SRV_LOG_ERROR, "cannot resolve --listen", "listen", addr, "reason",
            gai_strerror(rc), (const char *)NULL);
    return -1;
  }
  for (ai = res; ai != NULL; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                ai->ai_protocol);
    if (fd < 0) {
      continue;
    }
    (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 4096) == 0) {
      break;
    }
    close(fd);
    fd = -1;
  }
  if (fd < 0) {
    char addr[300];
    snprintf(addr, sizeof(addr), "%s:%d", cfg->listen_host, cfg->listen_port);
    srv_log(SRV_LOG_ERROR, "cannot listen", "listen", addr, "reason",
            strerror(errno), (const char *)NULL);
  }
  freeaddrinfo(res);
  return fd;
}

static uint64_t srv_raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
    return 1024;
  }
  if (rl.rlim_cur < rl.rlim_max) {
    rlim_t want = rl.rlim_max;
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
      (void)getrlimit(RLIMIT_NOFILE, &rl);
    }
  }
  return (uint64_t)rl.rlim_cur;
}

/* The backoff jitter's seed: different for every instance, process and
   start, so instances that lose one Redis do not retry in step. */
static uint64_t srv_link_seed(const char *instance_id) {
  uint64_t x = UINT64_C(0xcbf29ce484222325);
  const char *p;
  for (p = instance_id; *p; p++) {
    x = (x ^ (uint8_t)*p) * UINT64_C(0x100000001b3);
  }
  return x ^ ((uint64_t)getpid() << 32) ^ srv_now() ^ (uint64_t)time(NULL);
}

/* ------------------------------------------------------------ claim */

/* "redis://host:port/db" without any "user:password@" part, for logs. */
static void srv_redis_addr(const char *url, char *out, size_t cap) {
  const char *p = strstr(url, "://");
  const char *at, *end;
  p = p != NULL ? p + 3 : url;
  at = strchr(p, '@');
  end = p + strcspn(p, "/?");
  if (at != NULL && at < end) {
    p = at + 1;
  }
  snprintf(out, cap, "%.*s", (int)(end - p), p);
}

/* Accepts connections from now on, and says so. */
static void srv_serve(srv *s) {
  char listen[300], redis[300] = "";
  if (s->listen_fd < 0 || ev_is_active(&s->listen_io)) {
    return;
  }
  ev_io_start(s->loop, &s->listen_io);
  snprintf(listen, sizeof(listen),
           strchr(s->cfg.listen_host, ':') != NULL ? "[%s]:%d" : "%s:%d",
           s->cfg.listen_host, s->cfg.listen_port);
  if (s->cfg.redis_url != NULL) {
    srv_redis_addr(s->cfg.redis_url, redis, sizeof(redis));
  }
  srv_log(SRV_LOG_INFO, "listening", "version", srv_version, "revision",
          srv_revision, "instance", s->cfg.instance_id, "listen", listen,
          "scheme", s->tls_ctx != NULL ? "https" : "http", "registry",
          s->cfg.hub.registry ? "on" : "off", "backplane",
          s->bp != NULL ? "redis" : "embedded",
          /* Last: embedded, the NULL key ends the fields here. */
          s->bp != NULL ? "redis_addr" : (const char *)NULL, redis,
          (const char *)NULL);
}

static void srv_claim_done(void *arg, int result, long long ttl_left_s) {
  srv *s = arg;
  char key[300], ttl[32];
  if (!s->claiming) {
    return;
  }
  snprintf(key, sizeof(key), "%sinstance:%s", s->cfg.redis_prefix,
           s->cfg.instance_id);
  if (result == BP_CLAIM_TAKEN) {
    /* Another process holds the id.  Its key is left alone: this process
       never told the hub that the backplane is up, so it writes and
       deletes nothing. */
    char why[700];
    snprintf(ttl, sizeof(ttl), "%lld", ttl_left_s);
    snprintf(why, sizeof(why),
             "%s exists: another instance runs with this id (the key lives "
             "%lld s more and is refreshed every heartbeat while it runs; "
             "after a crash, start again once it expired, or choose another "
             "--instance-id)",
             key, ttl_left_s);
    srv_log(SRV_LOG_ERROR, "instance id in use, refusing to start", "instance",
            s->cfg.instance_id, "key", key, "#ttl_s", ttl, "reason", why,
            (const char *)NULL);
    s->exit_code = 1;
    ev_break(s->loop, EVBREAK_ALL);
    return;
  }
  if (result == BP_CLAIM_OK) {
    srv_log(SRV_LOG_INFO, "instance id claimed", "instance", s->cfg.instance_id,
            "key", key, (const char *)NULL);
  } else {
    srv_log(SRV_LOG_WARN,
            "could not claim the instance id (Redis error or link lost); "
            "going on without the check",
            "instance", s->cfg.instance_id, "key", key, (const char *)NULL);
  }
  s->claiming = 0;
  ev_timer_stop(s->loop, &s->claim_timer);
  srv_bp_up(s); /* now the hub's */
  srv_serve(s);
}

/* The backplane is up and the instance key is not claimed yet. */
static void srv_claim(srv *s) {
  char val[400], key[160];
  snprintf(key, sizeof(key), "instance:%s", s->cfg.instance_id);
  snprintf(val, sizeof(val),
           "{\"instance_id\":\"%s\",\"connections\":0,\"started_at\":%lld}",
           s->cfg.instance_id, (long long)s->started_unix);
  if (bp_redis_claim(s->bp, key, val, s->cfg.hub.instance_ttl_s, srv_claim_done,
                     s) != 0) {
    /* Out of memory: go on without the check rather than never serve. */
    srv_claim_done(s, BP_CLAIM_ERROR, -1);
  }
}

/* Redis did not come up in time: serve, claim when it does. */
static void srv_claim_timer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  srv *s = ev_userdata(loop);
  (void)w;
  (void)revents;
  if (s->claiming == 1) {
    s->claiming = 2;
    srv_log(SRV_LOG_WARN,
            "redis unreachable at start: serving before the instance id is "
            "claimed (it is claimed when Redis answers; a duplicate then "
            "stops this process)",
            "instance", s->cfg.instance_id, (const char *)NULL);
    srv_serve(s);
  }
}

int main(int argc, char **argv) {
  /* Static storage: the state holds the 64 KiB read buffer and outlives
     every callback; it is reached only through the pointer below. */
  static srv state;
  static srv_auth auth;
  srv *s = &state;
  char err[256];
  hub_config hc;
  sh_transport t;
  hub_tstamp t0;
  uint64_t nofile;
  int rc;
  /* SIGHUP must never kill the server, not even in the moment between
     start and the installation of its watcher (a reload sent by a
     service manager right after start). */
  signal(SIGHUP, SIG_IGN);

  memset(s, 0, sizeof(*s));
  s->listen_fd = -1;
  srv_config_default(&s->cfg);
  if (srv_parse_args(&s->cfg, argc, argv) != 0) {
    return 2;
  }
  srv_log_setup((srv_log_level)s->cfg.log_level, s->cfg.log_json);
  if (s->cfg.instance_id[0] == '\0') {
    char host[64] = "wshub";
    (void)gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    snprintf(s->cfg.instance_id, sizeof(s->cfg.instance_id), "%s-%d-%08x", host,
             (int)getpid(), (unsigned)(srv_random() & 0xffffffffu));
  }
  if (s->cfg.hub.registry < 0) {
    s->cfg.hub.registry = s->cfg.redis_url != NULL;
  }
  if (s->cfg.hub.registry && s->cfg.redis_url == NULL) {
    srv_log(SRV_LOG_ERROR, "--registry on needs --redis", (const char *)NULL);
    return 2;
  }
  /* A peer is closed once it answered no ping for --pong-timeout; below
     the ping interval, every healthy peer would be closed between two
     pings.  That is a configuration mistake, not a choice. */
  if (s->cfg.hub.pong_timeout_ns < s->cfg.hub.ping_interval_ns) {
    srv_log(SRV_LOG_ERROR,
            "--pong-timeout is below --ping-interval: every peer would be "
            "closed between two pings",
            (const char *)NULL);
    return 2;
  }
  if ((s->cfg.tls_cert == NULL) != (s->cfg.tls_key == NULL)) {
    srv_log(SRV_LOG_ERROR, "--tls-cert and --tls-key go together",
            (const char *)NULL);
    return 2;
  }
  if (s->cfg.tls_cert != NULL) {
    s->tls_ctx =
      srv_tls_load(s->cfg.tls_cert, s->cfg.tls_key, err, sizeof(err));
    if (s->tls_ctx == NULL) {
      srv_log(SRV_LOG_ERROR, "cannot load the TLS certificate", "reason", err,
              (const char *)NULL);
      return 1;
    }
  }
  if (srv_auth_init(&auth, s->cfg.token_secret, s->cfg.token_key,
                    s->cfg.api_key, s->cfg.allowed_origins, err,
                    sizeof(err)) != 0) {
    srv_log(SRV_LOG_ERROR, "bad authentication settings", "reason", err,
            (const char *)NULL);
    return 2;
  }
  s->auth = &auth;
  s->cfg.hub.auth = auth.alg != SRV_ALG_NONE;
  nofile = srv_raise_nofile();
  s->max_conns = s->cfg.max_connections;
  if (s->max_conns == 0) {
    s->max_conns = nofile > 64 ? nofile - 32 : 32;
  }
  signal(SIGPIPE, SIG_IGN);
  s->debug = s->cfg.log_level == SRV_LOG_DEBUG;

  s->loop = ev_default_loop(EVFLAG_AUTO);
  if (s->loop == NULL) {
    srv_log(SRV_LOG_ERROR, "cannot start libev", (const char *)NULL);
    return 1;
  }
  ev_set_userdata(s->loop, s);
  s->listen_fd = srv_listen(&s->cfg);
  if (s->listen_fd < 0) {
    return 1;
  }
  srv_conn_init(s);
  if (srv_rel_init(s) != 0) {
    srv_log(SRV_LOG_ERROR, "out of memory", (const char *)NULL);
    return 1;
  }

  hc = s->cfg.hub;
  hc.instance_id = s->cfg.instance_id;
  hc.backplane = s->cfg.redis_url != NULL;
  hc.unix_time_s = (int64_t)time(NULL);
  hc.seed = srv_random();
  s->started_unix = hc.unix_time_s;
  t0 = srv_now();
  rc = hub_new(&s->h, &hc, s->cfg.record_path ? srv_rec_mem() : NULL, t0);
  if (rc != 0) {
    srv_log(SRV_LOG_ERROR, "cannot create the hub", "reason", hub_strerror(rc),
            (const char *)NULL);
    return 1;
  }
  ev_timer_init(&s->hub_timer, srv_hub_timer_cb, 0.0, 0.0);

  /* With the registry, the instance key is claimed before serving. */
  s->claiming = s->cfg.redis_url != NULL && s->cfg.hub.registry;
  if (s->cfg.redis_url != NULL) {
    bp_redis_config bc;
    bp_events ev;
    char name[160];
    snprintf(name, sizeof(name), "wshub:%.128s", s->cfg.instance_id);
    memset(&ev, 0, sizeof(ev));
    memset(&bc, 0, sizeof(bc));
    ev.user = s;
    ev.on_up = srv_bp_up;
    ev.on_down = srv_bp_down;
    ev.on_msg = srv_bp_msg;
    ev.on_subscribed = srv_bp_subscribed;
    ev.on_hpublished = srv_bp_hpublished;
    ev.on_hread = srv_bp_hread;
    bc.loop = s->loop;
    bc.url = s->cfg.redis_url;
    bc.prefix = s->cfg.redis_prefix;
    bc.client_name = name;
    bc.seed = srv_link_seed(s->cfg.instance_id);
    bc.log = srv_bp_log;
    bc.log_user = s;
    bc.history = s->cfg.hub.history_size > 0;
    srv_rel_bp_config(s, &bc);
    rc = bp_redis_new(&s->bp, &bc, &ev);
    if (rc != 0) {
      srv_log(SRV_LOG_ERROR, "bad --redis", "url", s->cfg.redis_url, "reason",
              hub_strerror(rc), (const char *)NULL);
      return 2;
    }
  }

  srv_transport(s, &t);
  t.set_timer = srv_set_timer;
  t.bp_reset = srv_bp_reset;
  t.verify = srv_verify;
  t.error = srv_sh_error;
  t.api_reply = srv_api_reply;
  srv_api_init(s);
  sh_init(&s->sh, s->h, s->bp, &hc, &t);
  if (s->cfg.record_path != NULL &&
      srv_rec_start(s->cfg.record_path, s->cfg.record_max_bytes, &s->sh, &hc,
                    t0) != 0) {
    return 2;
  }

  ev_io_init(&s->listen_io, srv_accept_cb, s->listen_fd, EV_READ);
  ev_timer_init(&s->tick, srv_tick_cb, 0.1, 0.1);
  ev_timer_start(s->loop, &s->tick);
  ev_prepare_init(&s->prepare, srv_prepare_cb);
  ev_prepare_start(s->loop, &s->prepare);
  ev_idle_init(&s->flush_idle, srv_flush_idle_cb);
  ev_signal_init(&s->sigterm, srv_signal_cb, SIGTERM);
  ev_signal_start(s->loop, &s->sigterm);
  ev_signal_init(&s->sigint, srv_signal_cb, SIGINT);
  ev_signal_start(s->loop, &s->sigint);
  ev_signal_init(&s->sighup, srv_sighup_cb, SIGHUP);
  ev_signal_start(s->loop, &s->sighup);

  sh_drain(&s->sh, srv_now()); /* what hub_new queued */
  if (s->claiming) {
    /* Longer than the backplane's connect timeout (2 s), so that a
       Redis that answers is always asked first. */
    ev_timer_init(&s->claim_timer, srv_claim_timer_cb, 2.5, 0.0);
    ev_timer_start(s->loop, &s->claim_timer);
  } else {
    srv_serve(s);
  }
  ev_run(s->loop, 0);
  srv_rec_end();

  if (s->bp != NULL) {
    s->bp->ops->free(s->bp);
    s->bp = NULL;
  }
  hub_del(s->h);
  srv_conn_fini(s);
  srv_rel_fini(s);
  srv_auth_fini(&auth);
  srv_tls_ctx_free(s->tls_ctx);
  srv_log(s->exit_code != 0 ? SRV_LOG_ERROR : SRV_LOG_INFO, "bye",
          (const char *)NULL);
  return s->exit_code;
}
