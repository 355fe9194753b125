/*
 * fuzz_hub.h - the driver the core's fuzz targets share.
 *
 * A fuzz input is a script: each byte picks an event for one hub (open,
 * message, pong, written, closed, backplane up/down/message/confirmation,
 * publish, time passing, shutdown) and the bytes after it are its
 * arguments.  After every event the effects are drained as a transport
 * would (CLOSE is reported back as closed, SEND frames are checked and
 * sometimes reported written) and hub_check must hold.  An allocator that
 * fails on the input's say-so checks that every error leaves the hub
 * consistent.  Anything wrong aborts, which libFuzzer reports with the
 * input that did it.
 */
#ifndef FUZZ_HUB_H
#define FUZZ_HUB_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hub.h"
#include "hub_json.h"

#define FZ_CONNS 8

typedef struct fz_in {
  const uint8_t *p;
  size_t n;
} fz_in;

static inline unsigned fz_byte(fz_in *in) {
  unsigned b;
  if (in->n == 0) {
    return 0;
  }
  b = in->p[0];
  in->p++;
  in->n--;
  return b;
}

/* Up to |max| bytes, the length taken from the input. */
static inline const uint8_t *fz_bytes(fz_in *in, size_t max, size_t *len) {
  const uint8_t *s = in->p;
  size_t l = fz_byte(in);
  l = l * 256 + fz_byte(in);
  if (l > max) {
    l %= max + 1;
  }
  if (l > in->n) {
    l = in->n;
  }
  s = in->p;
  in->p += l;
  in->n -= l;
  *len = l;
  return s;
}

typedef struct fz_mem {
  hub_mem mem;
  uint64_t calls;
  uint64_t fail_at; /* 0: never */
  int fail_all;
} fz_mem;

static inline int fz_mem_fails(fz_mem *m) {
  m->calls++;
  if (m->fail_at != 0 && m->calls >= m->fail_at) {
    if (!m->fail_all) {
      m->fail_at = 0;
    }
    return 1;
  }
  return 0;
}

static inline void *fz_malloc(size_t size, void *user) {
  return fz_mem_fails(user) ? NULL : malloc(size);
}

static inline void fz_free(void *ptr, void *user) {
  (void)user;
  free(ptr);
}

static inline void *fz_realloc(void *ptr, size_t size, void *user) {
  return fz_mem_fails(user) ? NULL : realloc(ptr, size);
}

typedef struct fz_hub {
  hub *h;
  fz_mem m;
  hub_tstamp now;
  hub_conn_id conns[FZ_CONNS]; /* 0: slot free */
  int backplane;
} fz_hub;

static inline void fz_die(const char *what, const char *why) {
  fprintf(stderr, "fuzz: %s: %s\n", what, why ? why : "");
  abort();
}

static inline void fz_check(fz_hub *f, const char *after) {
  const char *why = NULL;
  if (hub_check(f->h, &why) != 0) {
    fz_die(after, why);
  }
}

/* A SEND frame: a final text frame, unmasked, its length right, and its
   payload one valid JSON object (the client can always parse it). */
static inline void fz_check_frame(const hub_buf *b) {
  hub_json_kind kind;
  const uint8_t *d = b->data;
  size_t plen = hub_buf_payload_len(b);
  if (b->len < 2 || d[0] != 0x81 || (d[1] & 0x80) != 0) {
    fz_die("SEND", "not an unmasked final text frame");
  }
  if (hub_json_parse((const char *)hub_buf_payload(b), plen, &kind, NULL, 0,
                     NULL) != 0 ||
      kind != HUB_JSON_OBJECT) {
    fz_die("SEND", "payload is not a JSON object");
  }
}

/* A reported close is a fact: afterwards the hub must not know the
   connection (the transport has freed what conn_user points at). */
static inline void fz_closed(fz_hub *f, hub_conn_id id) {
  size_t msgs, bytes;
  (void)hub_on_conn_closed(f->h, id, f->now);
  if (hub_conn_backlog(f->h, id, &msgs, &bytes) != HUB_ERR_UNKNOWN_CONN) {
    fz_die("hub_on_conn_closed", "the hub still knows the connection");
  }
}

static inline int fz_slot_of(fz_hub *f, hub_conn_id id) {
  int i;
  for (i = 0; i < FZ_CONNS; i++) {
    if (f->conns[i] == id) {
      return i;
    }
  }
  return -1;
}

/* Applies and pops every effect; reports closes after the pop. */
static inline void fz_drain(fz_hub *f, fz_in *in) {
  const hub_effect *e;
  while ((e = hub_effect_peek(f->h)) != NULL) {
    hub_conn_id closed = 0, written = 0;
    size_t wlen = 0;
    switch (e->type) {
    case HUB_EFF_SEND:
      fz_check_frame(e->buf);
      if (fz_byte(in) & 1) {
        written = e->conn;
        wlen = e->buf->len;
      }
      break;
    case HUB_EFF_CLOSE:
      closed = e->conn;
      break;
    case HUB_EFF_PING:
    case HUB_EFF_BP_SUBSCRIBE:
    case HUB_EFF_BP_UNSUBSCRIBE:
    case HUB_EFF_BP_PUBLISH:
    case HUB_EFF_REG_SET:
    case HUB_EFF_REG_DEL:
      break;
    default:
      fz_die("effect", "unknown type");
    }
    hub_effect_pop(f->h);
    if (written != 0) {
      (void)hub_on_conn_written(f->h, written, 1, wlen, f->now);
    }
    if (closed != 0) {
      int s = fz_slot_of(f, closed);
      fz_closed(f, closed);
      if (s >= 0) {
        f->conns[s] = 0;
      }
    }
  }
  fz_check(f, "drain");
}

static inline int fz_hub_new(fz_hub *f, int backplane) {
  hub_config cfg;
  memset(f, 0, sizeof(*f));
  f->m.mem.user = &f->m;
  f->m.mem.malloc = fz_malloc;
  f->m.mem.free = fz_free;
  f->m.mem.realloc = fz_realloc;
  hub_config_default(&cfg);
  cfg.instance_id = "fz";
  cfg.backplane = backplane;
  cfg.registry = backplane;
  cfg.max_queue_msgs = 8;
  cfg.max_queue_bytes = 4096;
  cfg.max_message_bytes = 2048;
  cfg.max_subs_per_conn = 4;
  f->backplane = backplane;
  f->now = HUB_NS_PER_S;
  return hub_new(&f->h, &cfg, &f->m.mem, f->now);
}

/* Ends the run: a graceful shutdown, every close reported, then the hub
   is freed. */
static inline void fz_hub_end(fz_hub *f, fz_in *in) {
  int i;
  f->m.fail_at = 0;
  (void)hub_shutdown(f->h, f->now);
  fz_drain(f, in);
  for (i = 0; i < FZ_CONNS; i++) {
    if (f->conns[i] != 0) {
      fz_closed(f, f->conns[i]);
      f->conns[i] = 0;
    }
  }
  fz_drain(f, in);
  hub_del(f->h);
}

static const char *const fz_channels[] = {"a", "b", "news", "x.y:z"};

/* One event from the script.  |client| picks the message source: 1 for
   client messages built from the input, 0 for backplane payloads. */
static inline void fz_step(fz_hub *f, fz_in *in) {
  unsigned op = fz_byte(in);
  unsigned slot = fz_byte(in) % FZ_CONNS;
  hub_conn_id id = f->conns[slot];
  const char *ch = fz_channels[fz_byte(in) % 4];
  const uint8_t *s;
  size_t len;
  char msg[256];
  int n;

  if ((op & 0xf0) == 0xf0) {
    /* Fail the k-th allocation from now (sometimes every one after). */
    f->m.calls = 0;
    f->m.fail_at = 1 + (op & 0x07);
    f->m.fail_all = (op & 0x08) != 0;
  }
  switch (op % 16) {
  case 0:
    if (id == 0) {
      hub_conn_id nid;
      if (hub_on_conn_open(f->h, &nid, "127.0.0.1:1", NULL, f->now) == 0) {
        f->conns[slot] = nid;
      }
    }
    break;
  case 1: /* raw client bytes */
    if (id != 0) {
      s = fz_bytes(in, 4096, &len);
      (void)hub_on_conn_msg(f->h, id, 0, s, len, f->now);
    }
    break;
  case 2:
  case 3: /* a well-formed request around fuzzed fields */
    if (id != 0) {
      static const char *const types[] = {"subscribe", "unsubscribe", "publish",
                                          "bogus"};
      s = fz_bytes(in, 64, &len);
      n = snprintf(msg, sizeof(msg),
                   "{\"type\":\"%s\",\"channel\":\"%s\",\"id\":%u,"
                   "\"data\":%.*s}",
                   types[fz_byte(in) % 4], ch, fz_byte(in), (int)len,
                   (const char *)s);
      if (n > 0 && (size_t)n < sizeof(msg)) {
        (void)hub_on_conn_msg(f->h, id, 0, (const uint8_t *)msg, (size_t)n,
                              f->now);
      }
    }
    break;
  case 4:
    if (id != 0) {
      (void)hub_on_conn_msg(f->h, id, 1, NULL, 0, f->now);
    }
    break;
  case 5:
    if (id != 0) {
      (void)hub_on_conn_pong(f->h, id, f->now);
    }
    break;
  case 6:
    if (id != 0) {
      size_t msgs = 0, bytes = 0;
      if (hub_conn_backlog(f->h, id, &msgs, &bytes) == 0 && msgs > 0) {
        (void)hub_on_conn_written(f->h, id, 1, bytes / msgs, f->now);
      }
    }
    break;
  case 7:
    if (id != 0) {
      fz_closed(f, id);
      f->conns[slot] = 0;
    }
    break;
  case 8:
    if (f->backplane) {
      (void)hub_on_bp_up(f->h, f->now);
    }
    break;
  case 9:
    if (f->backplane) {
      (void)hub_on_bp_down(f->h, f->now);
    }
    break;
  case 10:
  case 11: /* backplane payload, raw bytes */
    s = fz_bytes(in, 4096, &len);
    (void)hub_on_bp_msg(f->h, ch, strlen(ch), s, len, f->now);
    break;
  case 12:
    if (f->backplane) {
      (void)hub_on_bp_subscribed(f->h, ch, strlen(ch), f->now);
    }
    break;
  case 13: {
    const char *err = NULL;
    s = fz_bytes(in, 512, &len);
    (void)hub_publish(f->h, s, len, &err, f->now);
    break;
  }
  case 14: /* time passes: up to about 70 s */
    f->now += (hub_tstamp)(fz_byte(in) + 1) * 271 * HUB_NS_PER_MS;
    (void)hub_handle_expiry(f->h, f->now);
    break;
  default: /* jump to the next expiry */
    if (hub_get_expiry(f->h) != HUB_TSTAMP_NONE &&
        hub_get_expiry(f->h) > f->now) {
      f->now = hub_get_expiry(f->h);
    }
    (void)hub_handle_expiry(f->h, f->now);
    break;
  }
  f->m.fail_at = 0;
  fz_drain(f, in);
}

#endif /* FUZZ_HUB_H */
