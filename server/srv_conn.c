/*
 * srv_conn.c - sockets: accept, WebSocket framing, the outbound queue.
 *
 * Memory is the design constraint here.  An idle connection holds only
 * its srv_conn (an ev_io, list links and four pointers): no read buffer,
 * no write buffer, no wslay context.  Reads land in one process-wide
 * buffer and are parsed at once.  A wslay frame context (about 4 KB) is
 * lent from a pool while a frame or a fragmented message is partly read
 * and taken back as soon as none is.  The outbound queue holds
 * references to the core's shared, pre-encoded frames (no copy per
 * delivery) and exists only while bytes wait; it is written with writev,
 * many frames per syscall, once per loop iteration (from the ev_prepare
 * watcher), so a burst of publishes leaves in few syscalls.
 *
 * This file is the shell's transport (srv_transport): the shell applies
 * the hub's effects through srv_sh_send, srv_sh_ping, srv_sh_close and
 * srv_sh_write, and socket events reach the hub only through the
 * shell's wrappers (sh_conn_msg, sh_conn_closed, ...).  The shell's
 * out-queue accounting (c->q) counts what the queue holds.
 */
#define _GNU_SOURCE /* accept4 */
#include "srv.h"
#include "srv_log.h"
#include "srv_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SRV_IOV_MAX 128
/* The read budget: reads of SRV_RBUF_SIZE per connection per loop
   iteration.  Level-triggered, what is left is read in the next
   iteration, after every other ready socket had its turn: one flooding
   socket costs the others at most this much parsing per round. */
#define SRV_READS_PER_EVENT 2
#define SRV_RX_POOL_MAX 256
#define SRV_CLOSE_WAIT_NS (2 * HUB_NS_PER_S)

/* ------------------------------------------------------------ rx pool */

struct srv_rx {
  wslay_frame_context_ptr fc;
  srv_rx *next_free;
  const uint8_t *in; /* bytes not yet handed to wslay (borrowed) */
  size_t in_len;
  uint64_t fed;      /* bytes handed to wslay */
  uint64_t consumed; /* bytes of frames wslay finished */
  /* the frame being read */
  int in_frame;
  uint8_t f_op;
  uint8_t f_fin;
  uint8_t f_mask;
  uint64_t f_len;
  uint64_t f_off;
  /* the message being assembled (may span frames) */
  int msg_active;
  uint8_t msg_op;
  uint8_t *msg;
  size_t msg_len;
  size_t msg_cap;
  uint8_t ctl[125];
  size_t ctl_len;
};

static ssize_t srv_rx_recv_cb(uint8_t *buf, size_t len, int flags, void *user) {
  srv_rx *rx = user;
  size_t n = len < rx->in_len ? len : rx->in_len;
  (void)flags;
  if (n == 0) {
    return 0; /* wslay reads 0 as "want read" */
  }
  memcpy(buf, rx->in, n);
  rx->in += n;
  rx->in_len -= n;
  rx->fed += n;
  return (ssize_t)n;
}

static ssize_t srv_rx_send_cb(const uint8_t *data, size_t len, int flags,
                              void *user) {
  (void)data;
  (void)len;
  (void)flags;
  (void)user;
  return -1; /* the frame context is used for reading only */
}

static int srv_rx_genmask_cb(uint8_t *buf, size_t len, void *user) {
  (void)user;
  memset(buf, 0, len);
  return 0;
}

static const struct wslay_frame_callbacks srv_rx_callbacks = {
  srv_rx_send_cb, srv_rx_recv_cb, srv_rx_genmask_cb};

static srv_rx *srv_rx_get(srv *s) {
  srv_rx *rx = s->rx_free;
  if (rx != NULL) {
    s->rx_free = rx->next_free;
    s->rx_free_n--;
    s->rx_lent++;
    return rx;
  }
  rx = calloc(1, sizeof(*rx));
  if (rx == NULL) {
    return NULL;
  }
  if (wslay_frame_context_init(&rx->fc, &srv_rx_callbacks, rx) != 0) {
    free(rx);
    return NULL;
  }
  s->rx_lent++;
  return rx;
}

static int srv_rx_idle(const srv_rx *rx) {
  return !rx->in_frame && !rx->msg_active && rx->fed == rx->consumed;
}

/* Returns |rx| to the pool.  A context that still holds part of a frame
   cannot be reused by another connection, so it is freed instead. */
static void srv_rx_put(srv *s, srv_rx *rx) {
  s->rx_lent--;
  if (!srv_rx_idle(rx) || s->rx_free_n >= SRV_RX_POOL_MAX) {
    wslay_frame_context_free(rx->fc);
    free(rx->msg);
    free(rx);
    return;
  }
  rx->fed = rx->consumed = 0;
  rx->in = NULL;
  rx->in_len = 0;
  if (rx->msg_cap > 16384) {
    free(rx->msg);
    rx->msg = NULL;
    rx->msg_cap = 0;
  }
  rx->msg_len = 0;
  rx->next_free = s->rx_free;
  s->rx_free = rx;
  s->rx_free_n++;
}

/* ------------------------------------------------------------- lists */

void srv_list_remove(srv_conn *c) {
  if (!c->in_list) {
    return;
  }
  c->prev->next = c->next;
  c->next->prev = c->prev;
  c->prev = c->next = NULL;
  c->in_list = 0;
}

/* Appends |c| to a list kept in deadline order: every deadline on one
   list is now + a constant, so appending keeps the order. */
void srv_list_push(srv_conn *sentinel, srv_conn *c, hub_tstamp deadline) {
  srv_list_remove(c);
  c->deadline = deadline;
  c->prev = sentinel->prev;
  c->next = sentinel;
  sentinel->prev->next = c;
  sentinel->prev = c;
  c->in_list = 1;
}

/* ------------------------------------------------------------ queue */

static void srv_io_set(srv *s, srv_conn *c) {
  int events = (c->rd_paused ? 0 : EV_READ) | (c->want_write ? EV_WRITE : 0);
  ev_io_stop(s->loop, &c->io);
  if (events != 0) {
    ev_io_set(&c->io, c->io.fd, events);
    ev_io_start(s->loop, &c->io);
  }
}

static void srv_io_update(srv *s, srv_conn *c, int want_write) {
  if (c->state == SRV_DEAD || c->want_write == want_write) {
    return;
  }
  c->want_write = (uint8_t)want_write;
  srv_io_set(s, c);
}

void srv_conn_pause_read(srv *s, srv_conn *c, int paused) {
  if (c->state == SRV_DEAD || c->rd_paused == (paused != 0)) {
    return;
  }
  c->rd_paused = paused != 0;
  srv_io_set(s, c);
  if (!paused) {
    ev_feed_event(s->loop, &c->io, EV_READ);
  }
}

static void srv_mark_dirty(srv *s, srv_conn *c) {
  if (!c->dirty) {
    c->dirty = 1;
    c->dirty_next = s->dirty;
    s->dirty = c;
  }
}

/*
 * Queue arrays come in capacities SRV_OQ_CAP0 << k and are recycled
 * through one free list per capacity, up to SRV_OQ_POOL_BYTES in all.
 * At a high message rate every connection fills and empties its queue
 * once per loop iteration; without the pool each iteration would
 * malloc, grow by realloc (8, 16, 32, 64 entries) and free every queue.
 * A new queue takes the largest pooled array, so a connection usually
 * starts its round with room for what the last round needed.
 */
#define SRV_OQ_CAP0 8
#define SRV_OQ_POOL_BYTES ((size_t)16 << 20)

/* The class of capacity |cap|, or SRV_OQ_CLASSES if it is not pooled. */
static int srv_oq_class(uint32_t cap) {
  int k = 0;
  while (k < SRV_OQ_CLASSES && ((uint32_t)SRV_OQ_CAP0 << k) != cap) {
    k++;
  }
  return k;
}

static srv_out *srv_oq_pool_take(srv *s, int k) {
  srv_out *a = s->oq_pool[k];
  s->oq_pool[k] = a[0].owner; /* the free link */
  s->oq_pool_bytes -= ((size_t)SRV_OQ_CAP0 << k) * sizeof(srv_out);
  return a;
}

static void srv_oq_pool_put(srv *s, srv_out *a, uint32_t cap) {
  int k = srv_oq_class(cap);
  size_t sz = (size_t)cap * sizeof(srv_out);
  if (k == SRV_OQ_CLASSES || s->oq_pool_bytes + sz > SRV_OQ_POOL_BYTES) {
    free(a);
    return;
  }
  a[0].owner = s->oq_pool[k];
  s->oq_pool[k] = a;
  s->oq_pool_bytes += sz;
}

/* Gives |c| an empty queue. */
static int srv_oq_new(srv *s, srv_conn *c) {
  int k;
  for (k = SRV_OQ_CLASSES - 1; k >= 0; k--) {
    if (s->oq_pool[k] != NULL) {
      c->oq = srv_oq_pool_take(s, k);
      c->oq_cap = (uint32_t)SRV_OQ_CAP0 << k;
      break;
    }
  }
  if (k < 0) {
    c->oq = malloc(SRV_OQ_CAP0 * sizeof(srv_out));
    if (c->oq == NULL) {
      return -1;
    }
    c->oq_cap = SRV_OQ_CAP0;
  }
  c->oq_head = c->oq_tail = 0;
  c->oq_head_off = 0;
  c->q.bytes = 0;
  s->outqs++;
  return 0;
}

/* Frees or recycles an empty queue (its entries already released). */
static void srv_oq_recycle(srv *s, srv_conn *c) {
  srv_oq_pool_put(s, c->oq, c->oq_cap);
  c->oq = NULL;
  c->oq_head = c->oq_tail = c->oq_cap = 0;
  c->oq_head_off = 0;
  c->q.bytes = 0;
  c->q.msgs = 0;
  s->outqs--;
}

/* Makes room for one more entry at the tail. */
static int srv_oq_grow(srv *s, srv_conn *c) {
  uint32_t n = c->oq_tail - c->oq_head;
  uint32_t cap;
  srv_out *a;
  int k;
  if (c->oq_head > 0) {
    memmove(c->oq, c->oq + c->oq_head, n * sizeof(srv_out));
    c->oq_head = 0;
    c->oq_tail = n;
    return 0;
  }
  if (c->oq_cap > UINT32_MAX / 2) {
    return -1;
  }
  cap = c->oq_cap * 2;
  k = srv_oq_class(cap);
  if (k < SRV_OQ_CLASSES && s->oq_pool[k] != NULL) {
    a = srv_oq_pool_take(s, k);
    memcpy(a, c->oq, n * sizeof(srv_out));
    srv_oq_pool_put(s, c->oq, c->oq_cap);
  } else if (srv_oq_class(c->oq_cap) < SRV_OQ_CLASSES) {
    /* A pooled size: keep the old array for the pool. */
    a = malloc((size_t)cap * sizeof(srv_out));
    if (a == NULL) {
      return -1;
    }
    memcpy(a, c->oq, n * sizeof(srv_out));
    srv_oq_pool_put(s, c->oq, c->oq_cap);
  } else {
    a = realloc(c->oq, (size_t)cap * sizeof(srv_out));
    if (a == NULL) {
      return -1;
    }
  }
  c->oq = a;
  c->oq_cap = cap;
  return 0;
}

/* Appends an entry; the caller counts it (sh_oq_push). */
static int srv_outq_push(srv *s, srv_conn *c, const void *p, void *owner,
                         size_t len, int kind) {
  srv_out *o;
  if (c->oq == NULL) {
    if (srv_oq_new(s, c) != 0) {
      return -1;
    }
  } else if (c->oq_tail == c->oq_cap && srv_oq_grow(s, c) != 0) {
    return -1;
  }
  o = &c->oq[c->oq_tail++];
  o->p = p;
  o->owner = owner;
  o->len = (uint32_t)len;
  o->kind = (uint16_t)kind;
  o->nmsgs = kind == SRV_OUT_HB || kind == SRV_OUT_SPAN;
  return 0;
}

/*
 * Batches.  A small SEND frame is copied, once per message, into the
 * current batch; every connection it goes to queues a span of the batch.
 * A connection that receives consecutive messages (the common case: a
 * busy channel) has one span that grows by each frame, so the frames
 * leave in one iovec and a delivery costs no queue entry and no
 * reference count.  A batch is freed when the last span of it is
 * written.  Batches are small so that a slow reader pins little.
 */
#define SRV_BATCH_BYTES 8192
#define SRV_BATCH_MSGS 256
#define SRV_SPAN_MAX_FRAME 1024

struct srv_batch {
  uint32_t ref;
  uint32_t used;
  uint32_t nmsgs;
  uint32_t ends[SRV_BATCH_MSGS]; /* where each message ends in data[] */
  uint8_t data[SRV_BATCH_BYTES];
};

static void srv_batch_unref(srv_batch *b) {
  if (--b->ref == 0) {
    free(b);
  }
}

/* Copies |hb| into the current batch; returns where, or NULL. */
static const uint8_t *srv_batch_add(srv *s, hub_buf *hb) {
  srv_batch *b = s->batch_cur;
  uint8_t *p;
  if (b == NULL || b->used + hb->len > SRV_BATCH_BYTES ||
      b->nmsgs == SRV_BATCH_MSGS) {
    b = malloc(sizeof(*b));
    if (b == NULL) {
      return NULL;
    }
    b->ref = 1;
    b->used = 0;
    b->nmsgs = 0;
    if (s->batch_cur != NULL) {
      srv_batch_unref(s->batch_cur);
    }
    s->batch_cur = b;
  }
  p = b->data + b->used;
  memcpy(p, hb->data, hb->len);
  b->used += (uint32_t)hb->len;
  b->ends[b->nmsgs++] = b->used;
  if (s->batch_hb != NULL) {
    hub_buf_unref(s->batch_hb);
  }
  hub_buf_ref(hb);
  s->batch_hb = hb;
  s->batch_hb_p = p;
  return p;
}

/* The shell's drained: the effects are applied, the message last copied
   is not needed for matching anymore. */
static void srv_sh_drained(void *user) {
  srv *s = user;
  if (s->batch_hb != NULL) {
    hub_buf_unref(s->batch_hb);
    s->batch_hb = NULL;
    s->batch_hb_p = NULL;
  }
}

/* Messages of |b| that end at or before |off|. */
static uint32_t srv_batch_ends_upto(const srv_batch *b, uint32_t off) {
  uint32_t lo = 0, hi = b->nmsgs;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (b->ends[mid] <= off) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo;
}

/* Frames of the SEND entry |o| complete within its first |off| bytes. */
static uint32_t srv_out_done(const srv_out *o, uint32_t off) {
  const srv_batch *b = o->owner;
  uint32_t s;
  if (o->kind != SRV_OUT_SPAN) {
    return off == o->len ? o->nmsgs : 0;
  }
  s = (uint32_t)(o->p - b->data);
  return srv_batch_ends_upto(b, s + off) - srv_batch_ends_upto(b, s);
}

static void srv_out_release(srv_out *o) {
  if (o->kind == SRV_OUT_SPAN) {
    srv_batch_unref(o->owner);
  } else if (o->kind == SRV_OUT_HB) {
    hub_buf_unref(o->owner);
  } else if (o->kind == SRV_OUT_OWNED) {
    free((void *)(uintptr_t)o->p);
  }
}

static void srv_outq_free(srv *s, srv_conn *c) {
  uint32_t i;
  if (c->oq == NULL) {
    return;
  }
  for (i = c->oq_head; i < c->oq_tail; i++) {
    srv_out_release(&c->oq[i]);
  }
  srv_oq_recycle(s, c);
}

void srv_conn_unqueue(srv *s, srv_conn *c) {
  srv_outq_free(s, c);
}

/*
 * The shell's send: queues a SEND frame, a new reference or a copy into
 * the current batch (-1 when out of memory: nothing queued).  The
 * per-delivery path: it touches only the first fields of |c|.
 */
static int srv_sh_send(void *user, void *conn_user, hub_conn_id id,
                       hub_buf *hb) {
  srv *s = user;
  srv_conn *c = conn_user;
  const uint8_t *p;
  (void)id;
  if (c->state != SRV_WS) {
    return 0;
  }
  if (hb->len > SRV_SPAN_MAX_FRAME) {
    goto by_ref;
  }
  if (hb == s->batch_hb) {
    p = s->batch_hb_p;
  } else if ((p = srv_batch_add(s, hb)) == NULL) {
    goto by_ref;
  }
  if (c->oq_tail > c->oq_head) {
    srv_out *last = &c->oq[c->oq_tail - 1];
    if (last->kind == SRV_OUT_SPAN && last->owner == s->batch_cur &&
        last->p + last->len == p && last->nmsgs < UINT16_MAX) {
      last->len += (uint32_t)hb->len;
      last->nmsgs++;
      goto queued;
    }
  }
  if (srv_outq_push(s, c, p, s->batch_cur, hb->len, SRV_OUT_SPAN) != 0) {
    return -1;
  }
  s->batch_cur->ref++;
  goto queued;
by_ref:
  hub_buf_ref(hb);
  if (srv_outq_push(s, c, hb->data, hb, hb->len, SRV_OUT_HB) != 0) {
    hub_buf_unref(hb);
    return -1;
  }
queued:
  /* Counted, and put on the shell's write-now list past a quarter of a
     limit (writes are corked until the end of the loop iteration). */
  sh_oq_push(&s->sh, &c->q, hb->len, 1);
  srv_mark_dirty(s, c);
  return 0;
}

int srv_conn_queue_own(srv *s, srv_conn *c, const void *data, size_t len) {
  uint8_t *p = malloc(len);
  if (p == NULL) {
    return -1;
  }
  memcpy(p, data, len);
  if (srv_outq_push(s, c, p, NULL, len, SRV_OUT_OWNED) != 0) {
    free(p);
    return -1;
  }
  sh_oq_push(&s->sh, &c->q, len, 0);
  srv_mark_dirty(s, c);
  return 0;
}

/* The shell's ping. */
static void srv_sh_ping(void *user, void *conn_user, hub_conn_id id) {
  static const uint8_t ping[2] = {0x89, 0x00};
  srv *s = user;
  srv_conn *c = conn_user;
  (void)id;
  if (c->state != SRV_WS) {
    return;
  }
  if (srv_outq_push(s, c, ping, NULL, sizeof(ping), SRV_OUT_STATIC) == 0) {
    sh_oq_push(&s->sh, &c->q, sizeof(ping), 0);
    srv_mark_dirty(s, c);
  }
}

/*
 * Writes as much of the queue as the socket takes.  Reports the SEND
 * frames finished and their bytes in *msgs and *bytes (the caller tells
 * the hub through the shell).  Returns 0, or -1 when the socket failed
 * (the peer is gone).
 */
static int srv_flush(srv *s, srv_conn *c, size_t *msgs, size_t *bytes) {
  size_t total = 0;
  *msgs = 0;
  *bytes = 0;
  while (c->oq != NULL && c->oq_head < c->oq_tail) {
    srv_out *q = c->oq;
    struct iovec iov[SRV_IOV_MAX];
    int n = 0;
    uint32_t i, end = c->oq_tail;
    ssize_t w;
    size_t left;
    if (end - c->oq_head > SRV_IOV_MAX) {
      end = c->oq_head + SRV_IOV_MAX;
    }
    for (i = c->oq_head; i < end; i++, n++) {
      iov[n].iov_base = (void *)(uintptr_t)q[i].p;
      iov[n].iov_len = q[i].len;
    }
    iov[0].iov_base = (uint8_t *)iov[0].iov_base + c->oq_head_off;
    iov[0].iov_len -= c->oq_head_off;
    /* TLS connections take their own write path (srv_tls.h). */
    w = c->tls == NULL ? writev(c->io.fd, iov, n) : srv_tls_writev(c, iov, n);
    s->writev_calls++;
    if (w < 0) {
      if (errno == EINTR) {
        continue;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        break;
      }
      return -1;
    }
    left = (size_t)w;
    total += left;
    while (left > 0) {
      srv_out *o = &q[c->oq_head];
      size_t rest = o->len - c->oq_head_off;
      int send = o->kind == SRV_OUT_SPAN || o->kind == SRV_OUT_HB;
      if (left < rest) {
        if (send) {
          *bytes += left;
          *msgs += srv_out_done(o, c->oq_head_off + (uint32_t)left) -
                   srv_out_done(o, c->oq_head_off);
        }
        c->oq_head_off += (uint32_t)left;
        break;
      }
      left -= rest;
      if (send) {
        *bytes += rest;
        *msgs +=
          o->nmsgs - (c->oq_head_off > 0 ? srv_out_done(o, c->oq_head_off) : 0);
      }
      srv_out_release(o);
      c->oq_head++;
      c->oq_head_off = 0;
    }
    if (n == SRV_IOV_MAX && c->oq_head < c->oq_tail) {
      continue; /* more than one writev's worth */
    }
    if (c->oq_head < c->oq_tail) {
      break; /* the socket took less than offered */
    }
  }
  s->frames_written += *msgs;
  sh_oq_pop(&c->q, *msgs, total);
  if (c->oq != NULL && c->oq_head == c->oq_tail) {
    srv_oq_recycle(s, c);
  }
  srv_io_update(s, c, c->oq != NULL);
  return 0;
}

/* ------------------------------------------------------------ closing */

void srv_conn_drop(srv *s, srv_conn *c) {
  if (c->state == SRV_DEAD) {
    return;
  }
  if (c->id != 0) {
    /* Callers tell the hub first; this only keeps the count right. */
    s->conns_ws--;
    c->id = 0;
  }
  ev_io_stop(s->loop, &c->io);
  srv_tls_conn_free(c);
  close(c->io.fd);
  c->state = SRV_DEAD;
  s->conns_total--;
  srv_rel_release(s, c->ip);
  c->ip = NULL;
  srv_list_remove(c);
  srv_http_free(c);
  if (c->rx != NULL) {
    srv_rx_put(s, c->rx);
    c->rx = NULL;
  }
  srv_outq_free(s, c);
  c->next = s->graveyard;
  s->graveyard = c;
}

/*
 * Drops with a reset (SO_LINGER 0): a peer that stopped reading would
 * otherwise leave an orphaned socket holding its unsent bytes in the
 * kernel for minutes, and the peer would never see the end.
 */
void srv_conn_abort(srv *s, srv_conn *c) {
  struct linger lg = {1, 0};
  if (c->state == SRV_DEAD) {
    return;
  }
  (void)setsockopt(c->io.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  srv_conn_drop(s, c);
}

void srv_reap(srv *s) {
  srv_conn *keep = NULL;
  while (s->graveyard != NULL) {
    srv_conn *c = s->graveyard;
    s->graveyard = c->next;
    if (c->dirty || c->q.urgent) {
      /* Still on a flush list: freed once that list let go of it. */
      c->next = keep;
      keep = c;
      continue;
    }
    free(c);
  }
  s->graveyard = keep;
}

/* The socket failed or the peer went away: close, tell the hub. */
static void srv_conn_gone(srv *s, srv_conn *c) {
  hub_conn_id id = c->state == SRV_WS ? c->id : 0;
  srv_conn_drop(s, c);
  if (id != 0) {
    sh_conn_closed(&s->sh, id, srv_now());
  }
}

static void srv_conn_close_wait(srv *s, srv_conn *c) {
  srv_tls_shutdown(c);
  if (shutdown(c->io.fd, SHUT_WR) != 0) {
    srv_conn_drop(s, c);
    return;
  }
  c->state = SRV_CLOSE_WAIT;
  srv_list_push(&s->cw_list, c, srv_now() + SRV_CLOSE_WAIT_NS);
}

/* Sends what is queued, then shuts the write side and waits for EOF. */
void srv_conn_finish(srv *s, srv_conn *c) {
  size_t msgs, bytes;
  if (c->state == SRV_DEAD) {
    return;
  }
  c->state = SRV_FLUSH_CLOSE;
  srv_list_push(&s->cw_list, c, srv_now() + SRV_CLOSE_WAIT_NS);
  if (srv_flush(s, c, &msgs, &bytes) != 0) {
    srv_conn_drop(s, c);
    return;
  }
  if (c->oq == NULL) {
    srv_conn_close_wait(s, c);
  }
}

/*
 * Queues a close frame behind what is queued and tries to write it all
 * now.  If the socket does not take everything at once the connection
 * is dropped: a slow consumer never holds anything up.  The caller has
 * already told the hub (or the hub asked for this close).
 */
static void srv_conn_close_now(srv *s, srv_conn *c, uint16_t code,
                               const char *reason) {
  uint8_t f[SH_CLOSE_FRAME_MAX];
  size_t flen = sh_close_frame(f, code, reason);
  size_t msgs, bytes;
  if (c->id != 0) {
    s->conns_ws--;
    c->id = 0;
  }
  if (srv_conn_queue_own(s, c, f, flen) != 0) {
    srv_conn_drop(s, c);
    return;
  }
  c->state = SRV_FLUSH_CLOSE;
  if (srv_flush(s, c, &msgs, &bytes) != 0 || c->oq != NULL) {
    srv_conn_abort(s, c);
    return;
  }
  srv_conn_close_wait(s, c);
}

/* The shell's close: a CLOSE effect, or a close the shell decided.  The
   shell reports hub_on_conn_closed (after popping the effect). */
static int srv_sh_close(void *user, void *conn_user, hub_conn_id id,
                        uint16_t code, const char *reason,
                        hub_close_kind kind) {
  srv *s = user;
  srv_conn *c = conn_user;
  if (srv_log_enabled(SRV_LOG_DEBUG)) {
    char conn[160], scode[8];
    snprintf(conn, sizeof(conn), "%s:%llu", s->cfg.instance_id,
             (unsigned long long)id);
    snprintf(scode, sizeof(scode), "%u", code);
    srv_log(SRV_LOG_DEBUG, "close", "conn", conn, "#code", scode, "reason",
            kind < HUB_CLOSE_KIND_MAX ? hub_close_kind_name(kind) : reason,
            (const char *)NULL);
  }
  if (c->state != SRV_WS || c->id != id) {
    return SH_CLOSE_UNKNOWN;
  }
  srv_conn_close_now(s, c, code, reason);
  return SH_CLOSE_DONE;
}

/* A close the server decides (protocol error): close, then tell the hub. */
static void srv_conn_proto_close(srv *s, srv_conn *c, uint16_t code,
                                 const char *reason) {
  hub_conn_id id = c->id;
  s->proto_errors++;
  srv_conn_close_now(s, c, code, reason);
  if (id != 0) {
    sh_conn_closed(&s->sh, id, srv_now());
  }
}

/* ------------------------------------------------------------ reading */

static uint64_t srv_frame_hdr_len(uint64_t len, int mask) {
  uint64_t n = 2;
  if (len >= 65536) {
    n += 8;
  } else if (len >= 126) {
    n += 2;
  }
  return n + (mask ? 4 : 0);
}

/*
 * The message is over --max-message-bytes.  The hub decides the close
 * (1009, counted as an eviction) by the length alone, so the payload is
 * never buffered (hub.h: |data| may be NULL past the limit).
 */
static void srv_conn_too_big(srv *s, srv_conn *c) {
  sh_conn_msg(&s->sh, c->id, c, 0, NULL,
              (size_t)s->cfg.hub.max_message_bytes + 1, srv_now());
  if (c->state == SRV_WS) {
    /* The hub did not close it; the limit is ours to keep anyway. */
    srv_conn_proto_close(s, c, 1009, "message too big");
  }
}

static void srv_on_control(srv *s, srv_conn *c, srv_rx *rx) {
  switch (rx->f_op) {
  case WSLAY_PING: {
    uint8_t f[127];
    /* The shell's guard: a peer that pings without reading is closed
       (1008) rather than grow the queue of pongs without bound. */
    if (sh_conn_ping_in(&s->sh, c->id, c, &c->q,
                        c->oq != NULL ? c->oq_tail - c->oq_head : 0,
                        srv_now()) != 0) {
      s->proto_errors++;
      break;
    }
    f[0] = 0x8a;
    f[1] = (uint8_t)rx->ctl_len;
    memcpy(f + 2, rx->ctl, rx->ctl_len);
    if (srv_conn_queue_own(s, c, f, 2 + rx->ctl_len) != 0) {
      srv_conn_gone(s, c);
    }
    break;
  }
  case WSLAY_PONG:
    sh_conn_pong(&s->sh, c->id, srv_now());
    break;
  case WSLAY_CONNECTION_CLOSE: {
    /* Echo the peer's status code, tell the hub, close.  A one-byte
       payload or a code that may not appear on the wire is a protocol
       error (RFC 6455 5.5.1, 7.4). */
    hub_conn_id id = c->id;
    uint16_t code = 0;
    if (rx->ctl_len >= 2) {
      code = (uint16_t)((rx->ctl[0] << 8) | rx->ctl[1]);
    }
    if (rx->ctl_len == 1 ||
        (rx->ctl_len >= 2 &&
         !((code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999)))) {
      code = 1002;
    } else if (rx->ctl_len > 2 &&
               !srv_utf8_valid(rx->ctl + 2, rx->ctl_len - 2)) {
      code = 1007; /* the reason must be UTF-8 (RFC 6455 5.5.1, 8.1) */
    }
    srv_conn_close_now(s, c, code, NULL);
    sh_conn_closed(&s->sh, id, srv_now());
    break;
  }
  default:
    break;
  }
}

/* One piece of a frame from wslay.  Returns 0 to go on, -1 when |c| is no
   longer an open WebSocket. */
static int srv_on_chunk(srv *s, srv_conn *c, srv_rx *rx,
                        const struct wslay_frame_iocb *io) {
  if (!rx->in_frame) {
    rx->in_frame = 1;
    rx->f_op = io->opcode;
    rx->f_fin = io->fin;
    rx->f_mask = io->mask;
    rx->f_len = io->payload_length;
    rx->f_off = 0;
    rx->ctl_len = 0;
    if (io->rsv != 0 || !io->mask) {
      srv_conn_proto_close(s, c, 1002, "protocol error");
      return -1;
    }
    switch (io->opcode) {
    case WSLAY_CONTINUATION_FRAME:
      if (!rx->msg_active) {
        srv_conn_proto_close(s, c, 1002, "unexpected continuation");
        return -1;
      }
      break;
    case WSLAY_TEXT_FRAME:
    case WSLAY_BINARY_FRAME:
      if (rx->msg_active) {
        srv_conn_proto_close(s, c, 1002, "expected continuation");
        return -1;
      }
      rx->msg_active = 1;
      rx->msg_op = io->opcode;
      rx->msg_len = 0;
      break;
    case WSLAY_PING:
    case WSLAY_PONG:
    case WSLAY_CONNECTION_CLOSE:
      break;
    default:
      srv_conn_proto_close(s, c, 1002, "unknown opcode");
      return -1;
    }
    if (!wslay_is_ctrl_frame(io->opcode)) {
      uint64_t want = (uint64_t)rx->msg_len + rx->f_len;
      if (want > s->cfg.hub.max_message_bytes) {
        srv_conn_too_big(s, c);
        return -1;
      }
      if (want > rx->msg_cap) {
        size_t cap = rx->msg_cap ? rx->msg_cap : 256;
        uint8_t *m;
        while (cap < want) {
          cap *= 2;
        }
        m = realloc(rx->msg, cap);
        if (m == NULL) {
          srv_conn_proto_close(s, c, 1011, "out of memory");
          return -1;
        }
        rx->msg = m;
        rx->msg_cap = cap;
      }
    }
  }
  if (io->data_length > 0) {
    if (wslay_is_ctrl_frame(rx->f_op)) {
      memcpy(rx->ctl + rx->ctl_len, io->data, io->data_length);
      rx->ctl_len += io->data_length;
    } else {
      memcpy(rx->msg + rx->msg_len, io->data, io->data_length);
      rx->msg_len += io->data_length;
    }
  }
  rx->f_off += io->data_length;
  if (rx->f_off < rx->f_len) {
    return 0;
  }
  /* The frame is complete. */
  rx->in_frame = 0;
  rx->consumed += srv_frame_hdr_len(rx->f_len, rx->f_mask) + rx->f_len;
  if (wslay_is_ctrl_frame(rx->f_op)) {
    srv_on_control(s, c, rx);
    return c->state == SRV_WS ? 0 : -1;
  }
  if (rx->f_fin) {
    rx->msg_active = 0;
    sh_conn_msg(&s->sh, c->id, c, rx->msg_op == WSLAY_BINARY_FRAME, rx->msg,
                rx->msg_len, srv_now());
  }
  return c->state == SRV_WS ? 0 : -1;
}

/* Parses |len| bytes of WebSocket input (borrowed for the call). */
static void srv_ws_feed(srv *s, srv_conn *c, const uint8_t *data, size_t len) {
  srv_rx *rx = c->rx;
  if (rx == NULL) {
    rx = c->rx = srv_rx_get(s);
    if (rx == NULL) {
      srv_conn_proto_close(s, c, 1011, "out of memory");
      return;
    }
  }
  rx->in = data;
  rx->in_len = len;
  for (;;) {
    struct wslay_frame_iocb io;
    ssize_t r = wslay_frame_recv(rx->fc, &io);
    if (r == WSLAY_ERR_WANT_READ) {
      break;
    }
    if (r < 0) {
      srv_conn_proto_close(s, c, 1002, "protocol error");
      if (c->rx != NULL) {
        srv_rx_put(s, c->rx);
        c->rx = NULL;
      }
      return;
    }
    if (srv_on_chunk(s, c, rx, &io) != 0) {
      /* Closing: whatever else arrives is not parsed. */
      if (c->rx != NULL) {
        srv_rx_put(s, c->rx);
        c->rx = NULL;
      }
      return;
    }
  }
  rx->in = NULL;
  rx->in_len = 0;
  if (srv_rx_idle(rx)) {
    srv_rx_put(s, rx);
    c->rx = NULL;
  }
}

void srv_conn_ws_start(srv *s, srv_conn *c, const uint8_t *rest,
                       size_t rest_len) {
  if (rest_len > 0 && c->state == SRV_WS) {
    srv_ws_feed(s, c, rest, rest_len);
  }
}

static void srv_conn_io_cb(struct ev_loop *loop, ev_io *w, int revents) {
  srv *s = ev_userdata(loop);
  srv_conn *c = (srv_conn *)(void *)((char *)w - offsetof(srv_conn, io));
  int i;
  if ((revents & EV_WRITE) && c->state != SRV_DEAD) {
    srv_mark_dirty(s, c); /* written from the prepare watcher */
    srv_io_update(s, c, 0);
    if (c->tls != NULL && srv_tls_read_wants_write(c)) {
      revents |= EV_READ; /* a TLS read waited for this */
    }
  }
  if (!(revents & EV_READ) || c->rd_paused) {
    return;
  }
  for (i = 0; i < SRV_READS_PER_EVENT && c->state != SRV_DEAD && !c->rd_paused;
       i++) {
    ssize_t n = c->tls == NULL ? read(c->io.fd, s->rbuf, sizeof(s->rbuf))
                               : srv_tls_read(s, c, s->rbuf, sizeof(s->rbuf));
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        if (c->tls != NULL && srv_tls_read_wants_write(c)) {
          srv_io_update(s, c, 1);
        }
        break;
      }
      srv_conn_gone(s, c);
      break;
    }
    if (n == 0) {
      if (c->state == SRV_HTTP && c->q.bytes > 0) {
        /* The client shut its side after its requests: the answers it
           is owed still go out. */
        srv_conn_finish(s, c);
      } else {
        srv_conn_gone(s, c);
      }
      break;
    }
    switch (c->state) {
    case SRV_HTTP:
      srv_http_feed(s, c, s->rbuf, (size_t)n);
      break;
    case SRV_WS:
      srv_ws_feed(s, c, s->rbuf, (size_t)n);
      break;
    default:
      break; /* closing: input is discarded until EOF */
    }
    /* A short read drained the socket (a TLS read stops with room for
       less than a record: srv_tls_read); else the budget decides. */
    if (c->tls == NULL ? (size_t)n < sizeof(s->rbuf)
                       : (size_t)n + SRV_TLS_RECORD_MAX <= sizeof(s->rbuf) &&
                           !srv_tls_pending(c)) {
      break;
    }
  }
}

/* ------------------------------------------------------------ flushing */

/*
 * Writes every connection with queued bytes; runs from the ev_prepare
 * watcher, once per loop iteration, and reports progress to the hub.
 */
void srv_flush_all(srv *s) {
  while (s->dirty != NULL) {
    srv_conn *c = s->dirty;
    size_t msgs, bytes;
    s->dirty = c->dirty_next;
    c->dirty = 0;
    c->dirty_next = NULL;
    if (c->state == SRV_DEAD) {
      continue; /* srv_reap frees it */
    }
    if (srv_flush(s, c, &msgs, &bytes) != 0) {
      srv_conn_gone(s, c);
      continue;
    }
    if (c->state == SRV_WS && (msgs > 0 || bytes > 0)) {
      sh_conn_written(&s->sh, c->id, msgs, bytes, srv_now());
    } else if (c->state == SRV_FLUSH_CLOSE && c->oq == NULL) {
      srv_conn_close_wait(s, c);
    }
  }
}

/* The shell's write: a connection on the write-now list. */
static int srv_sh_write(void *user, sh_oq *q, hub_conn_id *id, size_t *msgs,
                        size_t *bytes) {
  srv *s = user;
  srv_conn *c = (srv_conn *)(void *)((char *)q - offsetof(srv_conn, q));
  if (c->state != SRV_WS) {
    return 0; /* *id stays 0 */
  }
  *id = c->id;
  if (srv_flush(s, c, msgs, bytes) != 0) {
    /* Gone: dropped here, reported by the shell. */
    srv_conn_drop(s, c);
    return -1;
  }
  return 0;
}

void srv_transport(srv *s, sh_transport *t) {
  memset(t, 0, sizeof(*t));
  t->user = s;
  t->send = srv_sh_send;
  t->ping = srv_sh_ping;
  t->close = srv_sh_close;
  t->write = srv_sh_write;
  t->drained = srv_sh_drained;
}

/* ------------------------------------------------------------ deadlines */

void srv_tick(srv *s) {
  hub_tstamp now = srv_now();
  srv_conn *lists[2] = {&s->http_list, &s->cw_list};
  int i;
  for (i = 0; i < 2; i++) {
    srv_conn *l = lists[i];
    while (l->next != l && l->next->deadline <= now) {
      srv_conn *c = l->next;
      if (c->state == SRV_HTTP && c->oq == NULL) {
        srv_conn_drop(s, c); /* handshake timeout: nothing to lose */
      } else if (c->state == SRV_FLUSH_CLOSE || c->state == SRV_CLOSE_WAIT ||
                 c->state == SRV_HTTP) {
        srv_conn_abort(s, c);
      } else {
        srv_list_remove(c);
      }
    }
  }
}

void srv_close_http_conns(srv *s) {
  srv_conn *l = &s->http_list;
  while (l->next != l) {
    srv_conn_drop(s, l->next);
  }
}

/* ------------------------------------------------------------ accepting */

static void srv_set_sockopts(const srv *s, int fd) {
  int one = 1;
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  if (s->cfg.sndbuf > 0) {
    int v = s->cfg.sndbuf;
    (void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v));
  }
}

void srv_accept_cb(struct ev_loop *loop, ev_io *w, int revents) {
  srv *s = ev_userdata(loop);
  int i;
  (void)revents;
  for (i = 0; i < 64; i++) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    srv_conn *c;
    srv_ip *ip;
    int fd =
      accept4(w->fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) {
        continue;
      }
      if ((errno == EMFILE || errno == ENFILE) && srv_rel_shed(s, w->fd) == 0) {
        continue; /* one answered 503 with the spare descriptor */
      }
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
          errno == ENOMEM) {
        /* Out of descriptors: pause accepting; srv_tick resumes it. */
        ev_io_stop(loop, w);
      }
      return;
    }
    if (srv_rel_admit(s, fd, &ss, &ip) != 0) {
      continue; /* refused, answered and closed */
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
      srv_rel_release(s, ip);
      close(fd);
      continue;
    }
    c->ip = ip;
    srv_set_sockopts(s, fd);
    if (s->tls_ctx != NULL && srv_tls_conn_new(s, c, fd) != 0) {
      srv_rel_release(s, ip);
      close(fd);
      free(c);
      continue;
    }
    ev_io_init(&c->io, srv_conn_io_cb, fd, EV_READ);
    c->state = SRV_HTTP;
    s->conns_total++;
    if (srv_http_new(s, c) != 0) {
      s->conns_total--;
      srv_tls_conn_free(c);
      srv_rel_release(s, ip);
      close(fd);
      free(c);
      continue;
    }
    {
      char host[INET6_ADDRSTRLEN] = "?";
      char *addr = NULL;
      int port = 0;
      if (ss.ss_family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
        port = ntohs(sin->sin_port);
      } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
        port = ntohs(sin6->sin6_port);
      }
      addr = srv_http_remote(c);
      snprintf(addr, 64, "%s:%d", host, port);
    }
    srv_list_push(&s->http_list, c, srv_now() + s->cfg.handshake_timeout_ns);
    ev_io_start(loop, &c->io);
  }
}

void srv_conn_init(srv *s) {
  s->http_list.next = s->http_list.prev = &s->http_list;
  s->cw_list.next = s->cw_list.prev = &s->cw_list;
}

void srv_conn_fini(srv *s) {
  while (s->rx_free != NULL) {
    srv_rx *rx = s->rx_free;
    s->rx_free = rx->next_free;
    wslay_frame_context_free(rx->fc);
    free(rx->msg);
    free(rx);
  }
  s->rx_free_n = 0;
  srv_sh_drained(s);
  if (s->batch_cur != NULL) {
    srv_batch_unref(s->batch_cur);
    s->batch_cur = NULL;
  }
  {
    int k;
    for (k = 0; k < SRV_OQ_CLASSES; k++) {
      while (s->oq_pool[k] != NULL) {
        free(srv_oq_pool_take(s, k));
      }
    }
  }
}
