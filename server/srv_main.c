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
#include "bp_redis.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <signal.h>
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

/* The shell's error hook: a hub call the server got wrong. */
static void srv_sh_error(void *user, const char *what, int err) {
  (void)user;
  fprintf(stderr, "wshub: %s: %s\n", what, hub_strerror(err));
}

/* ------------------------------------------------------------ backplane */

static void srv_bp_up(void *user) {
  srv *s = user;
  if (s->bp_ups++ > 0) {
    s->bp_reconnects++;
  }
  fprintf(stderr, "wshub: redis backplane up\n");
  sh_bp_up(&s->sh, srv_now());
}

static void srv_bp_down(void *user) {
  srv *s = user;
  fprintf(stderr, "wshub: redis backplane down\n");
  sh_bp_down(&s->sh, srv_now());
}

static void srv_bp_msg(void *user, const char *channel, size_t channel_len,
                       const uint8_t *data, size_t len) {
  srv *s = user;
  sh_bp_msg(&s->sh, channel, channel_len, data, len, srv_now());
}

static void srv_bp_subscribed(void *user, const char *channel,
                              size_t channel_len) {
  srv *s = user;
  sh_bp_subscribed(&s->sh, channel, channel_len, srv_now());
}

/* The shell's forced reconnect (out of memory for a backplane event). */
static void srv_bp_reset(void *user) {
  srv *s = user;
  fprintf(stderr, "wshub: out of memory for the backplane: reconnecting\n");
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
      {"wshub_backplane_up", "gauge",
       "1 while the Redis backplane is connected.",
       s->bp != NULL ? (unsigned long long)hub_bp_is_up(s->h) : 0},
      {"wshub_backplane_reconnects_total", "counter",
       "Times the backplane came back.", s->bp_reconnects},
      {"wshub_upgrades_rejected_total", "counter",
       "Upgrades answered 503 (--max-connections).", s->upgrades_rejected},
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
#undef M
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
      fprintf(stderr, "wshub: second signal, not waiting for peers\n");
      srv_shutdown_timer_cb(s->loop, &s->shutdown_timer, 0);
    }
    return;
  }
  fprintf(stderr, "wshub: shutting down\n");
  s->shutting_down = 1;
  ev_io_stop(s->loop, &s->listen_io);
  close(s->listen_fd);
  s->listen_fd = -1;
  srv_close_http_conns(s);
  sh_shutdown(&s->sh, srv_now());
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
  if (!s->shutting_down && s->listen_fd >= 0 && !ev_is_active(&s->listen_io)) {
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
  "  --redis URL               redis://host:port[/db]; absent = embedded "
  "backplane\n"
  "  --redis-prefix P          prefix of every Redis key and channel (ws:)\n"
  "  --instance-id ID          unique id of this instance "
  "(hostname-pid-random)\n"
  "  --registry on|off         connection registry and heartbeat (on with "
  "--redis)\n"
  "  --max-queue-msgs N        per-connection outbound queue limit, "
  "messages (256)\n"
  "  --max-queue-bytes N       per-connection outbound queue limit, bytes "
  "(4194304)\n"
  "  --max-message-bytes N     largest inbound WebSocket message (65536)\n"
  "  --ping-interval S         seconds between server pings (54)\n"
  "  --pong-timeout S          close a peer silent to pings this long (60)\n"
  "  --write-timeout S         close a peer whose socket takes no bytes "
  "this long (10)\n"
  "  --heartbeat-interval S    registry refresh period (10)\n"
  "  --shutdown-timeout S      longest wait for peers on shutdown (10)\n"
  "  --max-connections N       open WebSockets; past it upgrades get 503 "
  "(from ulimit -n)\n"
  "  --handshake-timeout S     drop a client not upgraded by then (10)\n"
  "  --sndbuf BYTES            SO_SNDBUF of client sockets (0 = OS "
  "default)\n"
  "  --max-publish-rate N      publishes per second per WebSocket, a bucket "
  "of N (1000; 0 = no limit)\n"
  "  --redis-timeout S         a Redis link silent this long is down (3)\n"
  "  --max-backplane-message-bytes N  larger Redis payloads are dropped "
  "(max(1 MiB, --max-message-bytes))\n"
  "  --redis-max-queue-bytes N commands queued for Redis past which "
  "publishes get 503 (16777216)\n"
  "  --max-connections-per-ip N  sockets one client address may hold "
  "(0 = no limit)\n"
  "  --help                    this text\n"
  "Durations take seconds (\"1.5\") or a unit (\"250ms\", \"2s\").\n";

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
  O_PUBRATE,
  O_REDIS_TIMEOUT, /* these four: srv_rel.c */
  O_MAXBPMSG,
  O_REDIS_QUEUE,
  O_PERIP,
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
  {"max-publish-rate", required_argument, NULL, O_PUBRATE},
  {"redis-timeout", required_argument, NULL, O_REDIS_TIMEOUT},
  {"max-backplane-message-bytes", required_argument, NULL, O_MAXBPMSG},
  {"redis-max-queue-bytes", required_argument, NULL, O_REDIS_QUEUE},
  {"max-connections-per-ip", required_argument, NULL, O_PERIP},
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
  fprintf(stderr, "wshub: bad value for %s: '%s'\n", name, val);
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
  srv_rel_config_default(&cfg->rel);
}

static int srv_parse_args(srv_config *cfg, int argc, char **argv) {
  const struct option *o;
  int opt;
  /* Environment first, so that the command line wins. */
  for (o = srv_longopts; o->name != NULL; o++) {
    char env[64] = "WSHUB_";
    size_t i, n = strlen(env);
    const char *val;
    if (o->val == O_HELP) {
      continue;
    }
    for (i = 0; o->name[i] && n + 1 < sizeof(env); i++) {
      char ch = o->name[i];
      env[n++] =
        ch == '-' ? '_' : (char)(ch >= 'a' && ch <= 'z' ? ch - 32 : ch);
    }
    env[n] = '\0';
    val = getenv(env);
    if (val != NULL && srv_set_option(cfg, o->val, val, env) != 0) {
      return -1;
    }
  }
  while ((opt = getopt_long(argc, argv, "h", srv_longopts, NULL)) != -1) {
    if (opt == O_HELP || opt == 'h') {
      fputs(srv_usage, stdout);
      exit(0);
    }
    if (opt == '?') {
      fputs(srv_usage, stderr);
      return -1;
    }
    for (o = srv_longopts; o->name != NULL && o->val != opt; o++) {
    }
    if (srv_set_option(cfg, opt, optarg, o->name) != 0) {
      return -1;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "wshub: unexpected argument '%s'\n", argv[optind]);
    return -1;
  }
  return 0;
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
    fprintf(stderr, "wshub: --listen %s:%d: %s\n", cfg->listen_host,
            cfg->listen_port, gai_strerror(rc));
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
    fprintf(stderr, "wshub: cannot listen on %s:%d: %s\n", cfg->listen_host,
            cfg->listen_port, strerror(errno));
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

int main(int argc, char **argv) {
  /* Static storage: the state holds the 64 KiB read buffer and outlives
     every callback; it is reached only through the pointer below. */
  static srv state;
  srv *s = &state;
  hub_config hc;
  sh_transport t;
  uint64_t nofile;
  int rc;

  memset(s, 0, sizeof(*s));
  s->listen_fd = -1;
  srv_config_default(&s->cfg);
  if (srv_parse_args(&s->cfg, argc, argv) != 0) {
    return 2;
  }
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
    fprintf(stderr, "wshub: --registry on needs --redis\n");
    return 2;
  }
  nofile = srv_raise_nofile();
  s->max_conns = s->cfg.max_connections;
  if (s->max_conns == 0) {
    s->max_conns = nofile > 64 ? nofile - 32 : 32;
  }
  signal(SIGPIPE, SIG_IGN);
  s->debug = getenv("WSHUB_DEBUG") != NULL;

  s->loop = ev_default_loop(EVFLAG_AUTO);
  if (s->loop == NULL) {
    fprintf(stderr, "wshub: cannot start libev\n");
    return 1;
  }
  ev_set_userdata(s->loop, s);
  s->listen_fd = srv_listen(&s->cfg);
  if (s->listen_fd < 0) {
    return 1;
  }
  srv_conn_init(s);
  if (srv_rel_init(s) != 0) {
    fprintf(stderr, "wshub: out of memory\n");
    return 1;
  }

  hc = s->cfg.hub;
  hc.instance_id = s->cfg.instance_id;
  hc.backplane = s->cfg.redis_url != NULL;
  hc.unix_time_s = (int64_t)time(NULL);
  hc.seed = srv_random();
  s->started_unix = hc.unix_time_s;
  rc = hub_new(&s->h, &hc, NULL, srv_now());
  if (rc != 0) {
    fprintf(stderr, "wshub: %s\n", hub_strerror(rc));
    return 1;
  }
  ev_timer_init(&s->hub_timer, srv_hub_timer_cb, 0.0, 0.0);

  if (s->cfg.redis_url != NULL) {
    bp_redis_config bc;
    bp_events ev;
    char name[160];
    snprintf(name, sizeof(name), "wshub:%.128s", s->cfg.instance_id);
    memset(&ev, 0, sizeof(ev));
    ev.user = s;
    ev.on_up = srv_bp_up;
    ev.on_down = srv_bp_down;
    ev.on_msg = srv_bp_msg;
    ev.on_subscribed = srv_bp_subscribed;
    bc.loop = s->loop;
    bc.url = s->cfg.redis_url;
    bc.prefix = s->cfg.redis_prefix;
    bc.client_name = name;
    bc.seed = srv_link_seed(s->cfg.instance_id);
    srv_rel_bp_config(s, &bc);
    rc = bp_redis_new(&s->bp, &bc, &ev);
    if (rc != 0) {
      fprintf(stderr, "wshub: --redis %s: %s\n", s->cfg.redis_url,
              hub_strerror(rc));
      return 2;
    }
  }

  srv_transport(s, &t);
  t.set_timer = srv_set_timer;
  t.bp_reset = srv_bp_reset;
  t.error = srv_sh_error;
  sh_init(&s->sh, s->h, s->bp, &hc, &t);

  ev_io_init(&s->listen_io, srv_accept_cb, s->listen_fd, EV_READ);
  ev_io_start(s->loop, &s->listen_io);
  ev_timer_init(&s->tick, srv_tick_cb, 0.1, 0.1);
  ev_timer_start(s->loop, &s->tick);
  ev_prepare_init(&s->prepare, srv_prepare_cb);
  ev_prepare_start(s->loop, &s->prepare);
  ev_idle_init(&s->flush_idle, srv_flush_idle_cb);
  ev_signal_init(&s->sigterm, srv_signal_cb, SIGTERM);
  ev_signal_start(s->loop, &s->sigterm);
  ev_signal_init(&s->sigint, srv_signal_cb, SIGINT);
  ev_signal_start(s->loop, &s->sigint);

  sh_drain(&s->sh, srv_now()); /* what hub_new queued */
  fprintf(stderr, "wshub: instance %s listening on %s:%d (%s backplane)\n",
          s->cfg.instance_id, s->cfg.listen_host, s->cfg.listen_port,
          s->bp != NULL ? "redis" : "embedded");
  ev_run(s->loop, 0);

  if (s->bp != NULL) {
    s->bp->ops->free(s->bp);
    s->bp = NULL;
  }
  hub_del(s->h);
  srv_conn_fini(s);
  srv_rel_fini(s);
  fprintf(stderr, "wshub: bye\n");
  return 0;
}
