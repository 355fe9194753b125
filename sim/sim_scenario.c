/*
 * sim_scenario.c - the scenario language (docs/scenarios.md).
 *
 * Statements run in order at the current simulated time; only `run`,
 * `within` and `for` move the clock.  The first failing statement ends
 * the file.  Beyond the contract's statements the runner knows:
 *
 *   X send TEXT | X send-binary TEXT | X send-hex HEX | X send-big N
 *   X disconnect
 *   expect X received-reply TYPE          (subscribed, error, ...)
 *   expect X received-reply-count TYPE N
 *   invariants on|off                     (check the explorer's invariants)
 *   check liveness                        (invariant 8, now)
 */
#include "sim.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

typedef struct runner {
  sim_world w;
  int started;
  size_t ninsts;
  sim_result *r;
  int line;
  char **owned; /* `at` statements */
  size_t nowned, capowned;
  int at_failed;
} runner;

enum cond_kind {
  C_RECEIVED = 1,
  C_RECEIVED_COUNT,
  C_CLOSED,
  C_REDIS_SUB,
  C_REDIS_KEY,
  C_REPLY,
  C_REPLY_COUNT,
  C_REDIS_HISTORY,
  C_OFFSETS,
  C_RECOVERED,
  C_GAP,
  C_REDIS_READS
};

typedef struct cond {
  int kind;
  int client;
  uint32_t chan;
  char *data;
  uint64_t n;
  int code; /* -1: any */
  int inst;
  int yes;
  int rtype;
  uint64_t lo; /* offsets A..B */
  char key[256];
  size_t scanned;
} cond;

static int fail(runner *rn, const char *fmt, ...)
  __attribute__((format(printf, 2, 3)));

static int fail(runner *rn, const char *fmt, ...) {
  va_list ap;
  if (rn->r->failed) {
    return -1;
  }
  rn->r->failed = 1;
  rn->r->line = rn->line;
  va_start(ap, fmt);
  vsnprintf(rn->r->msg, sizeof(rn->r->msg), fmt, ap);
  va_end(ap);
  return -1;
}

static int check_viol(runner *rn) {
  if (rn->w.viol.inv != 0) {
    rn->r->inv = rn->w.viol.inv;
    rn->r->evno = rn->w.viol.evno;
    return fail(rn,
                "invariant %d violated at event %llu (%llu.%06llu ms): "
                "%s",
                rn->w.viol.inv, (unsigned long long)rn->w.viol.evno,
                (unsigned long long)(rn->w.viol.at / SIM_MS),
                (unsigned long long)(rn->w.viol.at % SIM_MS), rn->w.viol.what);
  }
  if (rn->at_failed) {
    return -1;
  }
  return 0;
}

/* One event at or before |until|: 1 stepped, 0 none due, -1 failure. */
static int step(runner *rn, uint64_t until) {
  if (!sim_step(&rn->w, until)) {
    return 0;
  }
  return check_viol(rn) ? -1 : 1;
}

/* ---------------------------------------------------------- lexing */

static char *skip_ws(char *p) {
  while (*p == ' ' || *p == '\t') {
    p++;
  }
  return p;
}

/* Cuts the next token off *p (NUL-terminating it); NULL at the end. */
static char *tok(char **p) {
  char *s = skip_ws(*p), *e;
  if (*s == '\0') {
    *p = s;
    return NULL;
  }
  e = s;
  while (*e && *e != ' ' && *e != '\t') {
    e++;
  }
  if (*e) {
    *e++ = '\0';
  }
  *p = e;
  return s;
}

static char *rest(char **p) {
  char *s = skip_ws(*p), *e = s + strlen(s);
  while (e > s && (e[-1] == ' ' || e[-1] == '\t')) {
    *--e = '\0';
  }
  *p = e;
  return s;
}

/* Cuts a JSON object off *p: from its '{' to the matching '}' (braces
   inside strings do not count); NULL if there is none. */
static char *json_arg(char **p) {
  char *s = skip_ws(*p), *e;
  int depth = 0, in_str = 0;
  if (*s != '{') {
    return NULL;
  }
  for (e = s; *e; e++) {
    if (in_str) {
      if (*e == '\\' && e[1] != '\0') {
        e++;
      } else if (*e == '"') {
        in_str = 0;
      }
    } else if (*e == '"') {
      in_str = 1;
    } else if (*e == '{') {
      depth++;
    } else if (*e == '}' && --depth == 0) {
      e++;
      if (*e) {
        *e++ = '\0';
      }
      *p = e;
      return s;
    }
  }
  return NULL;
}

static int parse_u64(const char *s, uint64_t *out) {
  return hub_parse_u64(s, out) == 0 ? 0 : -1;
}

/* "250ms", "2s", "1.5s", "100us"; a bare number is seconds. */
static int parse_dur(const char *s, uint64_t *out) {
  return hub_parse_duration(s, out) == 0 ? 0 : -1;
}

/* ------------------------------------------------------ statements */

static int ensure_started(runner *rn) {
  if (rn->started) {
    return 0;
  }
  rn->started = 1;
  if (sim_instances(&rn->w, rn->ninsts ? rn->ninsts : 1) != 0) {
    return fail(rn, "instances could not start");
  }
  return 0;
}

static int get_inst(runner *rn, const char *s, sim_inst **out) {
  uint64_t i;
  if (parse_u64(s, &i) != 0 || i >= rn->w.ninsts) {
    return fail(rn, "no instance %s", s ? s : "(missing)");
  }
  *out = &rn->w.insts[i];
  return 0;
}

static int get_client(runner *rn, const char *name, sim_client **out) {
  int i = sim_client_find(&rn->w, name);
  if (i < 0) {
    return fail(rn, "unknown client %s", name);
  }
  *out = &rn->w.clients[i];
  return 0;
}

static int set_config(runner *rn, const char *name, const char *val) {
  sim_config *c = &rn->w.cfg;
  uint64_t v = 0;
  /* Server flags with nothing to simulate: no sockets, no TLS, no log,
     no Redis link health or queue (the simulated backplane has neither),
     and authentication is `config auth on` (tokens without signatures). */
  static const char *ignored[] = {"listen",
                                  "redis",
                                  "instance-id",
                                  "max-connections",
                                  "handshake-timeout",
                                  "record",
                                  "record-max-bytes",
                                  "tls-cert",
                                  "tls-key",
                                  "log-level",
                                  "log-format",
                                  "token-secret",
                                  "token-key",
                                  "api-key",
                                  "allowed-origins",
                                  "redis-timeout",
                                  "max-backplane-message-bytes",
                                  "redis-max-queue-bytes",
                                  "max-connections-per-ip"};
  size_t i;
  if (name == NULL || val == NULL) {
    return fail(rn, "config needs a name and a value");
  }
  for (i = 0; i < sizeof(ignored) / sizeof(ignored[0]); i++) {
    if (strcmp(name, ignored[i]) == 0) {
      return 0;
    }
  }
  switch (hub_config_set(&c->hub, name, val)) {
  case 0:
    return 0;
  case 1:
    break; /* not the hub's: one of the simulator's own */
  default:
    return fail(rn, "bad value for %s: %s", name, val);
  }
  if (strcmp(name, "redis-prefix") == 0) {
    if (strlen(val) >= sizeof(c->prefix)) {
      return fail(rn, "redis-prefix too long");
    }
    strcpy(c->prefix, val);
    return 0;
  }
  if (strcmp(name, "shutdown-timeout") == 0) {
    if (parse_dur(val, &v) != 0) {
      return fail(rn, "bad duration %s", val);
    }
    c->shutdown_timeout_ns = v;
  } else if (strcmp(name, "sndbuf") == 0) {
    if (parse_u64(val, &v) != 0) {
      return fail(rn, "bad number %s", val);
    }
    c->sndbuf = v;
  } else if (strcmp(name, "alloc-fail-rate") == 0) {
    if (sim_parse_rate(val, &c->alloc_fail_ppb) != 0) {
      return fail(rn, "bad rate %s (a probability such as 0.001)", val);
    }
    /* Running instances too: the explorer stops the failures with the
       other faults before it checks liveness. */
    for (i = 0; i < rn->w.ninsts; i++) {
      if (rn->w.insts[i].alloc != NULL) {
        rn->w.insts[i].alloc->fail_ppb = c->alloc_fail_ppb;
      }
    }
  } else {
    return fail(rn, "unknown config %s", name);
  }
  return 0;
}

/* `claims {...} [expires-in D]` after a client or refresh: the token's
   number, 0 on a bad statement (failed). */
static uint32_t claims_arg(runner *rn, char **p) {
  char *json = json_arg(p), *opt;
  uint64_t d = 0;
  int has_exp = 0;
  if (json == NULL) {
    fail(rn, "claims need a JSON object");
    return 0;
  }
  opt = skip_ws(*p);
  if (strncmp(opt, "expires-in", 10) == 0 &&
      (opt[10] == ' ' || opt[10] == '\t')) {
    (void)tok(p);
    if (parse_dur(tok(p), &d) != 0) {
      fail(rn, "expires-in needs a duration");
      return 0;
    }
    has_exp = 1;
  }
  return sim_auth_token(&rn->w, json, has_exp, d);
}

static int client_cmd(runner *rn, sim_client *c, const char *verb, char *args) {
  char buf[512];
  char *p = args;
  if (strcmp(verb, "refresh") == 0) {
    uint32_t t = claims_arg(rn, &p);
    int n;
    if (t == 0) {
      return -1;
    }
    n = snprintf(buf, sizeof(buf),
                 "{\"type\":\"refresh\",\"token\":\"sim:%u\",\"id\":%u}",
                 (unsigned)t, (unsigned)t);
    sim_client_send(&rn->w, c, buf, (size_t)n, 0);
    return 0;
  }
  if (strcmp(verb, "subscribe") == 0 || strcmp(verb, "unsubscribe") == 0) {
    char *ch = tok(&p);
    int n;
    char *more = ch != NULL ? tok(&p) : NULL;
    if (ch == NULL) {
      return fail(rn, "%s needs a channel", verb);
    }
    if (more != NULL && (strcmp(more, "recover") != 0 || verb[0] == 'u')) {
      return fail(rn, "unexpected %s after the channel", more);
    }
    if (more != NULL) {
      /* since = the last offset and epoch the client saw on the channel
         (subscribed reply, message or gap frame); none seen: none. */
      sim_cstate *cs =
        sim_client_cstate(c, sim_chan_intern(&rn->w.loop, ch, strlen(ch)));
      if (cs->has_pos) {
        n = snprintf(buf, sizeof(buf),
                     "{\"type\":\"subscribe\",\"channel\":\"%s\",\"since\":"
                     "{\"offset\":%llu,\"epoch\":\"%s\"}}",
                     ch, (unsigned long long)cs->pos, cs->epoch);
        if (n < 0 || (size_t)n >= sizeof(buf)) {
          return fail(rn, "channel too long");
        }
        if (c->state != SIM_CL_CLOSED) {
          cs->rec_sent = 1;
          cs->rec_since = cs->pos;
          memcpy(cs->rec_epoch, cs->epoch, sizeof(cs->rec_epoch));
        }
        sim_client_send(&rn->w, c, buf, (size_t)n, 0);
        return 0;
      }
    }
    n = snprintf(buf, sizeof(buf), "{\"type\":\"%s\",\"channel\":\"%s\"}", verb,
                 ch);
    if (n < 0 || (size_t)n >= sizeof(buf)) {
      return fail(rn, "channel too long");
    }
    if (verb[0] == 'u' && c->state != SIM_CL_CLOSED) {
      sim_client_cstate(c, sim_chan_intern(&rn->w.loop, ch, strlen(ch)))
        ->pending_unsubs++;
    }
    sim_client_send(&rn->w, c, buf, (size_t)n, 0);
    return 0;
  }
  if (strcmp(verb, "publish") == 0) {
    char *ch = tok(&p), *data = rest(&p), *msg;
    size_t len;
    if (ch == NULL || *data == '\0') {
      return fail(rn, "publish needs a channel and data");
    }
    len = strlen(ch) + strlen(data) + 48;
    msg = malloc(len);
    if (msg == NULL) {
      abort();
    }
    len = (size_t)snprintf(msg, len,
                           "{\"type\":\"publish\",\"channel\":\"%s\","
                           "\"data\":%s}",
                           ch, data);
    sim_client_send(&rn->w, c, msg, len, 0);
    free(msg);
    return 0;
  }
  if (strcmp(verb, "send") == 0 || strcmp(verb, "send-binary") == 0) {
    char *text = rest(&p);
    sim_client_send(&rn->w, c, text, strlen(text), verb[4] == '-');
    return 0;
  }
  if (strcmp(verb, "send-hex") == 0) {
    char *hex = rest(&p);
    size_t n = 0, i, len = strlen(hex);
    uint8_t *bytes = malloc(len / 2 + 1);
    if (bytes == NULL) {
      abort();
    }
    for (i = 0; i < len; i++) {
      unsigned v;
      char two[3];
      if (hex[i] == ' ') {
        continue;
      }
      two[0] = hex[i];
      two[1] = i + 1 < len ? hex[i + 1] : '\0';
      two[2] = '\0';
      if (!isxdigit((unsigned char)two[0]) ||
          !isxdigit((unsigned char)two[1]) || sscanf(two, "%2x", &v) != 1) {
        free(bytes);
        return fail(rn, "bad hex %s", hex);
      }
      bytes[n++] = (uint8_t)v;
      i++;
    }
    sim_client_send(&rn->w, c, bytes, n, 0);
    free(bytes);
    return 0;
  }
  if (strcmp(verb, "send-big") == 0) {
    uint64_t n;
    char *msg;
    if (parse_u64(tok(&p), &n) != 0 || n < 64 || n > (64u << 20)) {
      return fail(rn, "send-big needs a size of 64 bytes to 64 MiB");
    }
    /* A valid publish padded to exactly n bytes. */
    msg = malloc(n + 1);
    if (msg == NULL) {
      abort();
    }
    memcpy(msg, "{\"type\":\"publish\",\"channel\":\"big\",\"data\":\"", 42);
    memset(msg + 42, 'x', n - 44);
    memcpy(msg + n - 2, "\"}", 2);
    sim_client_send(&rn->w, c, msg, n, 0);
    free(msg);
    return 0;
  }
  if (strcmp(verb, "disconnect") == 0) {
    sim_client_disconnect(&rn->w, c);
    return 0;
  }
  if (strcmp(verb, "reconnect") == 0) {
    char *on = tok(&p);
    sim_inst *in;
    if (on == NULL || strcmp(on, "on") != 0) {
      return fail(rn, "reconnect needs `on I`");
    }
    if (get_inst(rn, tok(&p), &in) != 0) {
      return -1;
    }
    sim_client_reconnect(&rn->w, c, in->idx);
    return 0;
  }
  return fail(rn, "unknown statement %s", verb);
}

/* `redis fcall wshub_publish C DATA N TTL META_TTL`: an outside
   publisher's FCALL (CONTRACT.md), with C's history and meta keys and
   the function's three numeric arguments last. */
static int redis_fcall(runner *rn, char *p) {
  char *fn = tok(&p), *ch = tok(&p), *data = rest(&p), *nums[3], *e;
  char hkey[256], mkey[256];
  uint64_t v[3];
  int i;

  if (fn == NULL || strcmp(fn, "wshub_publish") != 0 || ch == NULL) {
    return fail(rn, "redis fcall needs wshub_publish C DATA N TTL META_TTL");
  }
  e = data + strlen(data);
  for (i = 2; i >= 0; i--) {
    while (e > data && e[-1] != ' ' && e[-1] != '\t') {
      e--;
    }
    nums[i] = e;
    if (e == data) {
      return fail(rn, "redis fcall needs wshub_publish C DATA N TTL META_TTL");
    }
    e[-1] = '\0';
    e--;
    while (e > data && (e[-1] == ' ' || e[-1] == '\t')) {
      *--e = '\0';
    }
  }
  for (i = 0; i < 3; i++) {
    if (hub_parse_u64(nums[i], &v[i]) != 0 || v[i] > UINT32_MAX ||
        (i > 0 && v[i] == 0)) {
      return fail(rn, "bad number in redis fcall: %s", nums[i]);
    }
  }
  if (*data == '\0') {
    return fail(rn, "redis fcall needs wshub_publish C DATA N TTL META_TTL");
  }
  snprintf(hkey, sizeof(hkey), "%shistory:%s", rn->w.cfg.prefix, ch);
  snprintf(mkey, sizeof(mkey), "%smeta:%s", rn->w.cfg.prefix, ch);
  sim_redis_fcall_publish(
    rn->w.redis, sim_chan_intern(&rn->w.loop, ch, strlen(ch)), hkey, mkey, data,
    strlen(data), (uint32_t)v[0], (uint32_t)v[1], (uint32_t)v[2]);
  return 0;
}

/* Parses a condition; |p| is the text after `expect` / `expect never`
   with any `within`/`for` removed. */
static int parse_cond(runner *rn, char *p, cond *cd) {
  char *a = tok(&p), *b;
  memset(cd, 0, sizeof(*cd));
  cd->code = -1;
  if (a == NULL) {
    return fail(rn, "empty expect");
  }
  if (strcmp(a, "redis-subscribed") == 0) {
    sim_inst *in;
    char *i = tok(&p), *ch = tok(&p), *yn = tok(&p);
    if (get_inst(rn, i, &in) != 0) {
      return -1;
    }
    if (ch == NULL || yn == NULL ||
        (strcmp(yn, "yes") != 0 && strcmp(yn, "no") != 0)) {
      return fail(rn, "redis-subscribed needs I C yes|no");
    }
    cd->kind = C_REDIS_SUB;
    cd->inst = in->idx;
    cd->chan = sim_chan_intern(&rn->w.loop, ch, strlen(ch));
    cd->yes = yn[0] == 'y';
    return 0;
  }
  if (strcmp(a, "redis-history") == 0) {
    char *ch = tok(&p), *n = tok(&p);
    if (ch == NULL || n == NULL || hub_parse_u64(n, &cd->n) != 0) {
      return fail(rn, "redis-history needs a channel and a count");
    }
    cd->kind = C_REDIS_HISTORY;
    snprintf(cd->key, sizeof(cd->key), "%shistory:%s", rn->w.cfg.prefix, ch);
    return 0;
  }
  if (strcmp(a, "redis-reads") == 0) {
    /* wshub_read calls Redis served so far (every instance), at most N */
    char *n = tok(&p);
    if (n == NULL || hub_parse_u64(n, &cd->n) != 0) {
      return fail(rn, "redis-reads needs a number");
    }
    cd->kind = C_REDIS_READS;
    return 0;
  }
  if (strcmp(a, "redis-key") == 0) {
    char *k = tok(&p), *pa = tok(&p);
    if (k == NULL || pa == NULL || strlen(k) >= sizeof(cd->key) ||
        (strcmp(pa, "present") != 0 && strcmp(pa, "absent") != 0)) {
      return fail(rn, "redis-key needs KEY present|absent");
    }
    cd->kind = C_REDIS_KEY;
    strcpy(cd->key, k);
    cd->yes = pa[0] == 'p';
    return 0;
  }
  {
    sim_client *c = NULL;
    if (get_client(rn, a, &c) != 0) {
      return -1;
    }
    cd->client = (int)(c - rn->w.clients);
  }
  b = tok(&p);
  if (b == NULL) {
    return fail(rn, "incomplete expect");
  }
  if (strcmp(b, "received") == 0 || strcmp(b, "received-count") == 0) {
    char *ch = tok(&p);
    if (ch == NULL) {
      return fail(rn, "%s needs a channel", b);
    }
    cd->chan = sim_chan_intern(&rn->w.loop, ch, strlen(ch));
    if (b[8] == '-') {
      cd->kind = C_RECEIVED_COUNT;
      if (parse_u64(tok(&p), &cd->n) != 0) {
        return fail(rn, "received-count needs a number");
      }
    } else {
      char *d = rest(&p);
      if (*d == '\0') {
        return fail(rn, "received needs data");
      }
      cd->kind = C_RECEIVED;
      cd->data = sim_json_norm(d, strlen(d));
    }
    return 0;
  }
  if (strcmp(b, "offsets") == 0 || strcmp(b, "recovered") == 0 ||
      strcmp(b, "received-gap") == 0) {
    char *ch = tok(&p), *arg;
    if (ch == NULL) {
      return fail(rn, "%s needs a channel", b);
    }
    cd->chan = sim_chan_intern(&rn->w.loop, ch, strlen(ch));
    if (strcmp(b, "recovered") == 0) {
      arg = tok(&p);
      if (arg == NULL || (strcmp(arg, "yes") != 0 && strcmp(arg, "no") != 0)) {
        return fail(rn, "recovered needs yes|no");
      }
      cd->kind = C_RECOVERED;
      cd->yes = arg[0] == 'y';
    } else if (b[0] == 'o') {
      char *dots;
      arg = tok(&p);
      dots = arg != NULL ? strstr(arg, "..") : NULL;
      if (dots == NULL) {
        return fail(rn, "offsets needs A..B");
      }
      *dots = '\0';
      if (hub_parse_u64(arg, &cd->lo) != 0 ||
          hub_parse_u64(dots + 2, &cd->n) != 0 || cd->lo > cd->n) {
        return fail(rn, "offsets needs A..B");
      }
      cd->kind = C_OFFSETS;
    } else {
      cd->kind = C_GAP;
    }
    return 0;
  }
  if (strcmp(b, "closed") == 0) {
    char *code = tok(&p);
    uint64_t v;
    cd->kind = C_CLOSED;
    if (code != NULL) {
      if (parse_u64(code, &v) != 0) {
        return fail(rn, "bad close code %s", code);
      }
      cd->code = (int)v;
    }
    return 0;
  }
  if (strcmp(b, "received-reply") == 0 ||
      strcmp(b, "received-reply-count") == 0) {
    static const char *types[] = {"message",   "subscribed", "unsubscribed",
                                  "published", "error",      "refreshed",
                                  "gap"};
    char *t = tok(&p);
    int i;
    cd->rtype = -1;
    for (i = 0; t && i < 7; i++) {
      if (strcmp(t, types[i]) == 0) {
        cd->rtype = i;
      }
    }
    if (cd->rtype < 0) {
      return fail(rn, "unknown reply type %s", t ? t : "(missing)");
    }
    cd->kind = C_REPLY;
    if (strlen(b) > 14) {
      cd->kind = C_REPLY_COUNT;
      if (parse_u64(tok(&p), &cd->n) != 0) {
        return fail(rn, "received-reply-count needs a number");
      }
    }
    return 0;
  }
  return fail(rn, "unknown expectation %s", b);
}

/* Evaluates |cd|; on 0 (does not hold) |what| says what is. */
static int eval_cond(runner *rn, cond *cd, char *what, size_t wlen) {
  sim_world *w = &rn->w;
  sim_client *c = cd->kind <= C_CLOSED ||
                      (cd->kind >= C_REPLY && cd->kind != C_REDIS_HISTORY &&
                       cd->kind != C_REDIS_READS)
                    ? &w->clients[cd->client]
                    : NULL;
  switch (cd->kind) {
  case C_RECEIVED: {
    size_t i;
    for (i = cd->scanned; i < c->nlog; i++) {
      if (c->log[i].chan == cd->chan && strcmp(c->log[i].data, cd->data) == 0) {
        snprintf(what, wlen, "%s received it", c->name);
        return 1;
      }
    }
    cd->scanned = c->nlog;
    snprintf(what, wlen,
             "%s received %llu messages on %s, none of them "
             "that one",
             c->name, (unsigned long long)sim_client_cstate(c, cd->chan)->recv,
             sim_chan_name(&w->loop, cd->chan));
    return 0;
  }
  case C_RECEIVED_COUNT: {
    uint64_t n = sim_client_cstate(c, cd->chan)->recv;
    snprintf(what, wlen, "%s received %llu messages on %s", c->name,
             (unsigned long long)n, sim_chan_name(&w->loop, cd->chan));
    return n == cd->n;
  }
  case C_CLOSED:
    if (c->state == SIM_CL_CLOSED &&
        (cd->code < 0 || cd->code == c->close_code)) {
      snprintf(what, wlen, "%s closed with %d", c->name, c->close_code);
      return 1;
    }
    if (c->state == SIM_CL_CLOSED) {
      snprintf(what, wlen, "%s closed with %d", c->name, c->close_code);
    } else {
      snprintf(what, wlen, "%s is %s", c->name,
               c->state == SIM_CL_OPEN ? "open" : "connecting");
    }
    return 0;
  case C_REDIS_SUB: {
    sim_inst *in = &w->insts[cd->inst];
    int sub =
      in->bp != NULL && sim_redis_subscribed(sim_bp_conn(in->bp), cd->chan);
    snprintf(what, wlen, "redis-subscribed %d %s is %s", cd->inst,
             sim_chan_name(&w->loop, cd->chan), sub ? "yes" : "no");
    return sub == cd->yes;
  }
  case C_REDIS_HISTORY: {
    size_t n = sim_redis_history_len(w->redis, cd->key);
    snprintf(what, wlen, "%s holds %zu entries", cd->key, n);
    return n == cd->n;
  }
  case C_OFFSETS: {
    sim_cstate *cs = sim_client_cstate(c, cd->chan);
    size_t i, k = 0, want = (size_t)(cd->n - cd->lo + 1);
    int ok = cs->noffs == want;
    for (i = 0; ok && i < cs->noffs; i++) {
      ok = cs->offs[i] == cd->lo + i;
    }
    k = (size_t)snprintf(what, wlen, "%s received offsets", c->name);
    for (i = 0; i < cs->noffs && k + 24 < wlen; i++) {
      k += (size_t)snprintf(what + k, wlen - k, "%s%llu", i ? "," : " ",
                            (unsigned long long)cs->offs[i]);
    }
    if (cs->noffs == 0 && k + 8 < wlen) {
      snprintf(what + k, wlen - k, " (none)");
    }
    return ok;
  }
  case C_RECOVERED: {
    sim_cstate *cs = sim_client_cstate(c, cd->chan);
    snprintf(what, wlen, "%s's latest subscribed on %s says %s", c->name,
             sim_chan_name(&w->loop, cd->chan),
             cs->recovered < 0
               ? "nothing"
               : (cs->recovered ? "recovered:true" : "recovered:false"));
    return cs->recovered == cd->yes;
  }
  case C_GAP: {
    sim_cstate *cs = sim_client_cstate(c, cd->chan);
    snprintf(what, wlen, "%s received %llu gap frames on %s", c->name,
             (unsigned long long)cs->gaps, sim_chan_name(&w->loop, cd->chan));
    return cs->gaps > 0;
  }
  case C_REDIS_READS: {
    uint64_t n = sim_redis_hreads(w->redis);
    snprintf(what, wlen, "Redis served %llu history reads",
             (unsigned long long)n);
    return n <= cd->n;
  }
  case C_REDIS_KEY: {
    int present = sim_redis_key_present(w->redis, cd->key);
    snprintf(what, wlen, "%s is %s", cd->key, present ? "present" : "absent");
    return present == cd->yes;
  }
  case C_REPLY:
  case C_REPLY_COUNT: {
    uint64_t n = c->types[cd->rtype];
    snprintf(what, wlen, "%s received %llu such replies", c->name,
             (unsigned long long)n);
    return cd->kind == C_REPLY ? n > 0 : n == cd->n;
  }
  default:
    return 0;
  }
}

static int do_expect(runner *rn, char *p, const char *text) {
  char *words[64];
  size_t nw = 0;
  char *copy = strdup(p), *q = copy, *t;
  int never = 0, has_dur = 0, rv = 0;
  uint64_t dur = 0, deadline;
  cond cd;
  char what[512];

  if (copy == NULL) {
    abort();
  }
  /* Find a trailing "within D" / "for D" from the words. */
  while ((t = tok(&q)) != NULL && nw < 64) {
    words[nw++] = t;
  }
  if (nw >= 2 && (strcmp(words[nw - 2], "within") == 0 ||
                  strcmp(words[nw - 2], "for") == 0)) {
    if (parse_dur(words[nw - 1], &dur) != 0) {
      /* The words point into |copy|: report before freeing it. */
      rv = fail(rn, "bad duration %s", words[nw - 1]);
      free(copy);
      return rv;
    }
    has_dur = words[nw - 2][0] == 'w' ? 1 : 2;
    /* Cut the original text before " within"/" for". */
    {
      char *cut = p + (words[nw - 2] - copy);
      *cut = '\0';
    }
  }
  free(copy);
  p = skip_ws(p);
  if (strncmp(p, "never ", 6) == 0) {
    never = 1;
    p += 6;
  }
  if ((never && has_dur != 2) || (!never && has_dur == 2)) {
    return fail(rn, "use `expect never ... for D` or `expect ... within D`");
  }
  if (parse_cond(rn, p, &cd) != 0) {
    free(cd.data);
    return -1;
  }
  deadline = rn->w.loop.now + dur;
  if (never) {
    for (;;) {
      if (eval_cond(rn, &cd, what, sizeof(what))) {
        rv = fail(rn, "expected %s, but it happened at %llu.%06llu ms (%s)",
                  text, (unsigned long long)(rn->w.loop.now / SIM_MS),
                  (unsigned long long)(rn->w.loop.now % SIM_MS), what);
        break;
      }
      int s = step(rn, deadline);
      if (s < 0) {
        rv = -1;
        break;
      }
      if (s == 0) {
        rn->w.loop.now = deadline;
        break;
      }
    }
  } else {
    for (;;) {
      int s;
      if (eval_cond(rn, &cd, what, sizeof(what))) {
        break;
      }
      s = step(rn, deadline);
      if (s < 0) {
        rv = -1;
        break;
      }
      if (s == 0) {
        rn->w.loop.now = deadline;
        if (!eval_cond(rn, &cd, what, sizeof(what))) {
          rv = fail(rn, "expected %s, but %s", text, what);
        }
        break;
      }
    }
  }
  free(cd.data);
  return rv;
}

static int exec_stmt(runner *rn, const char *text);

static void at_cb(sim_world *w, void *stmt) {
  runner *rn = (runner *)((char *)w - offsetof(runner, w));
  sim_trace(&w->loop, "at: %s", (const char *)stmt);
  if (exec_stmt(rn, stmt) != 0) {
    rn->at_failed = 1;
  }
}

static int exec_stmt(runner *rn, const char *text) {
  char *copy = strdup(text), *p = copy, *a;
  int rv = 0;
  if (copy == NULL) {
    abort();
  }
  a = tok(&p);
  if (a == NULL) {
    goto out;
  }
  if (strcmp(a, "seed") == 0) {
    goto out; /* applied before the run */
  }
  if (strcmp(a, "instances") == 0) {
    uint64_t n;
    if (parse_u64(tok(&p), &n) != 0 || n == 0 || n > 64) {
      rv = fail(rn, "instances needs a number from 1 to 64");
      goto out;
    }
    rn->ninsts = (size_t)n;
    if (rn->started) {
      rv = sim_instances(&rn->w, rn->ninsts) == 0 ? 0 : fail(rn, "start");
    }
    goto out;
  }
  if (strcmp(a, "config") == 0) {
    char *name = tok(&p), *val = tok(&p);
    rv = set_config(rn, name, val);
    goto out;
  }
  if (strcmp(a, "invariants") == 0) {
    char *v = tok(&p);
    rn->w.check = v != NULL && strcmp(v, "on") == 0;
    goto out;
  }
  if (ensure_started(rn) != 0) {
    rv = -1;
    goto out;
  }
  sim_trace_stmt(&rn->w.loop, rn->line, text);
  if (strcmp(a, "client") == 0) {
    char *name = tok(&p), *on = tok(&p), *i = tok(&p), *opt;
    sim_inst *in;
    uint32_t rate = SIM_FAST, auth_tok = 0;
    int no_pong = 0, idx;
    if (name == NULL || on == NULL || strcmp(on, "on") != 0) {
      rv = fail(rn, "client needs NAME on I");
      goto out;
    }
    if (get_inst(rn, i, &in) != 0) {
      rv = -1;
      goto out;
    }
    while ((opt = tok(&p)) != NULL) {
      if (strcmp(opt, "read-rate") == 0) {
        uint64_t r;
        if (parse_u64(tok(&p), &r) != 0 || r >= SIM_FAST) {
          rv = fail(rn, "bad read-rate");
          goto out;
        }
        rate = (uint32_t)r;
      } else if (strcmp(opt, "no-pong") == 0) {
        no_pong = 1;
      } else if (strcmp(opt, "claims") == 0) {
        auth_tok = claims_arg(rn, &p);
        if (auth_tok == 0) {
          rv = -1;
          goto out;
        }
      } else {
        rv = fail(rn, "unknown client option %s", opt);
        goto out;
      }
    }
    idx = sim_client_new(&rn->w, name, in->idx, rate, no_pong);
    if (idx < 0) {
      rv = fail(rn, "bad client %s", name);
    } else {
      /* Read when the connection opens, after this statement. */
      rn->w.clients[idx].auth_tok = auth_tok;
    }
    goto out;
  }
  if (strcmp(a, "run") == 0) {
    uint64_t d, until;
    int s;
    if (parse_dur(tok(&p), &d) != 0) {
      rv = fail(rn, "run needs a duration");
      goto out;
    }
    until = rn->w.loop.now + d;
    while ((s = step(rn, until)) > 0) {
    }
    if (s < 0) {
      rv = -1;
      goto out;
    }
    rn->w.loop.now = until;
    goto out;
  }
  if (strcmp(a, "expect") == 0) {
    rv = do_expect(rn, p, text + (p - copy));
    goto out;
  }
  if (strcmp(a, "repeat") == 0) {
    uint64_t n, i;
    char *body;
    if (parse_u64(tok(&p), &n) != 0) {
      rv = fail(rn, "repeat needs a count");
      goto out;
    }
    body = rest(&p);
    for (i = 0; i < n && rv == 0; i++) {
      /* Substitute $i. */
      size_t cap = strlen(body) * 2 + 64, o = 0;
      char *s = malloc(cap), *b = body;
      if (s == NULL) {
        abort();
      }
      while (*b) {
        if (b[0] == '$' && b[1] == 'i') {
          char num[24];
          size_t nl =
            (size_t)snprintf(num, sizeof(num), "%llu", (unsigned long long)i);
          if (o + nl + 1 >= cap) {
            cap = 2 * cap + nl;
            s = realloc(s, cap);
            if (s == NULL) {
              abort();
            }
          }
          memcpy(s + o, num, nl);
          o += nl;
          b += 2;
        } else {
          if (o + 2 >= cap) {
            cap *= 2;
            s = realloc(s, cap);
            if (s == NULL) {
              abort();
            }
          }
          s[o++] = *b++;
        }
      }
      s[o] = '\0';
      rv = exec_stmt(rn, s);
      free(s);
    }
    goto out;
  }
  if (strcmp(a, "at") == 0) {
    uint64_t t;
    char *body, *dup;
    if (parse_dur(tok(&p), &t) != 0) {
      rv = fail(rn, "at needs a time");
      goto out;
    }
    body = rest(&p);
    if (strncmp(body, "expect", 6) == 0 || strncmp(body, "run", 3) == 0) {
      rv = fail(rn, "`at` takes an action, not %s", body);
      goto out;
    }
    dup = strdup(body);
    if (dup == NULL) {
      abort();
    }
    if (rn->nowned == rn->capowned) {
      rn->capowned = rn->capowned ? 2 * rn->capowned : 16;
      rn->owned = realloc(rn->owned, rn->capowned * sizeof(*rn->owned));
      if (rn->owned == NULL) {
        abort();
      }
    }
    rn->owned[rn->nowned++] = dup;
    sim_schedule(&rn->w.loop, t, SIM_EV_STMT, (uint32_t)rn->line, 0, 0, dup);
    goto out;
  }
  if (strcmp(a, "redis") == 0) {
    char *verb = tok(&p), *ch, *data;
    if (verb != NULL && strcmp(verb, "restart") == 0) {
      if (tok(&p) != NULL) {
        rv = fail(rn, "redis restart takes no argument");
        goto out;
      }
      sim_redis_restart(&rn->w);
      goto out;
    }
    if (verb != NULL && strcmp(verb, "fcall") == 0) {
      rv = redis_fcall(rn, p);
      goto out;
    }
    ch = tok(&p);
    data = rest(&p);
    if (verb == NULL || strcmp(verb, "publish") != 0 || ch == NULL ||
        *data == '\0') {
      rv = fail(rn, "redis publish needs a channel and data");
      goto out;
    }
    sim_redis_publish_text(&rn->w, ch, strlen(ch), data, strlen(data));
    goto out;
  }
  if (strcmp(a, "crash") == 0 || strcmp(a, "restart") == 0 ||
      strcmp(a, "shutdown") == 0 || strcmp(a, "partition") == 0 ||
      strcmp(a, "heal") == 0) {
    sim_inst *in;
    if (get_inst(rn, tok(&p), &in) != 0) {
      rv = -1;
      goto out;
    }
    if (a[0] == 'p' || a[0] == 'h') {
      char *r = tok(&p);
      if (r == NULL || strcmp(r, "redis") != 0) {
        rv = fail(rn, "%s needs `I redis`", a);
        goto out;
      }
      if (a[0] == 'p') {
        sim_inst_partition(&rn->w, in);
      } else {
        sim_inst_heal(&rn->w, in);
      }
    } else if (a[0] == 'c') {
      sim_inst_crash(&rn->w, in);
    } else if (a[0] == 's') {
      sim_inst_shutdown(&rn->w, in);
    } else {
      sim_inst_crash(&rn->w, in);
      in->restarts++;
      if (sim_inst_start(&rn->w, in) != 0) {
        rv = fail(rn, "restart failed");
      }
    }
    goto out;
  }
  if (strcmp(a, "check") == 0) {
    char *what = tok(&p);
    if (what == NULL || strcmp(what, "liveness") != 0) {
      rv = fail(rn, "check needs `liveness`");
      goto out;
    }
    sim_check_liveness(&rn->w);
    goto out;
  }
  {
    sim_client *c = NULL;
    char *verb;
    if (get_client(rn, a, &c) != 0) {
      rv = -1;
      goto out;
    }
    verb = tok(&p);
    if (verb == NULL) {
      rv = fail(rn, "statement needs a verb");
      goto out;
    }
    rv = client_cmd(rn, c, verb, p);
  }
out:
  free(copy);
  if (rv == 0) {
    rv = check_viol(rn);
  }
  return rv;
}

/* Strips a comment and surrounding blanks in place. */
static char *clean_line(char *s) {
  char *e;
  int in_str = 0;
  for (e = s; *e; e++) {
    if (*e == '"' && (e == s || e[-1] != '\\')) {
      in_str = !in_str;
    } else if (*e == '#' && !in_str) {
      *e = '\0';
      break;
    }
  }
  s = skip_ws(s);
  e = s + strlen(s);
  while (e > s &&
         (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n')) {
    *--e = '\0';
  }
  return s;
}

int sim_run_lines(char *const *lines, const int *linenos, size_t n,
                  const sim_opts *o, sim_result *r) {
  runner *rn = calloc(1, sizeof(*rn));
  uint64_t seed = 1;
  size_t i;
  int rv = 0;

  if (rn == NULL) {
    abort();
  }
  memset(r, 0, sizeof(*r));
  rn->r = r;
  for (i = 0; i < n; i++) {
    char buf[64], *p, *a, *v;
    uint64_t s;
    snprintf(buf, sizeof(buf), "%s", lines[i]);
    p = clean_line(buf);
    a = tok(&p);
    v = tok(&p);
    if (a && v && strcmp(a, "seed") == 0 && parse_u64(v, &s) == 0) {
      seed = s;
      break;
    }
  }
  if (o->has_seed) {
    seed = o->seed;
  }
  r->seed = seed;
  if (sim_world_init(&rn->w, seed) != 0) {
    free(rn);
    return -1;
  }
  rn->w.loop.trace = o->trace;
  rn->w.check = o->check;
  rn->w.record = o->record;
  /* Message data is kept only when some expectation looks at it. */
  rn->w.keep_log = 0;
  for (i = 0; i < n && !o->no_log; i++) {
    if (strstr(lines[i], " received ") != NULL) {
      rn->w.keep_log = 1;
      break;
    }
  }
  rn->w.stmt_cb = at_cb;
  for (i = 0; i < n && rv == 0; i++) {
    char *s = strdup(lines[i]), *c;
    if (s == NULL) {
      abort();
    }
    c = clean_line(s);
    rn->line = linenos ? linenos[i] : (int)(i + 1);
    if (*c) {
      rv = exec_stmt(rn, c);
    }
    free(s);
  }
  if (rv == 0 && !rn->started) {
    rv = ensure_started(rn);
  }
  r->events = rn->w.loop.events;
  sim_world_fini(&rn->w);
  for (i = 0; i < rn->nowned; i++) {
    free(rn->owned[i]);
  }
  free(rn->owned);
  free(rn);
  return rv;
}

int sim_run_file(const char *path, const sim_opts *o, sim_result *r) {
  FILE *f = fopen(path, "r");
  char **lines = NULL;
  int *nos = NULL;
  size_t n = 0, cap = 0, i;
  char *line = NULL;
  size_t lcap = 0;
  int no = 0, rv;

  if (f == NULL) {
    memset(r, 0, sizeof(*r));
    r->failed = 1;
    snprintf(r->msg, sizeof(r->msg), "cannot open %s", path);
    return -1;
  }
  while (getline(&line, &lcap, f) >= 0) {
    no++;
    if (n == cap) {
      cap = cap ? 2 * cap : 64;
      lines = realloc(lines, cap * sizeof(*lines));
      nos = realloc(nos, cap * sizeof(*nos));
      if (lines == NULL || nos == NULL) {
        abort();
      }
    }
    lines[n] = strdup(line);
    if (lines[n] == NULL) {
      abort();
    }
    nos[n++] = no;
  }
  free(line);
  fclose(f);
  rv = sim_run_lines(lines, nos, n, o, r);
  for (i = 0; i < n; i++) {
    free(lines[i]);
  }
  free(lines);
  free(nos);
  return rv;
}
