/*
 * shell.c - the event wrappers, the effect applier and the policies.
 *
 * Every wrapper has the same shape: call the hub, act on its error (the
 * policy table is in shell/README.md), then sh_drain.  The results of
 * the hub's fact events (closed, written, pong, subscribed, down,
 * shutdown) are never read: those cannot fail once the core reserves
 * their space ahead, and they are becoming void.
 *
 * The hub is called only through the sh_call_ functions of sh_rec.h
 * (never hub_on_* here), and every effect popped is shown to the
 * recorder first: with a recorder attached (sh_record), every core call
 * and the effects drained after it are in the recording, once, in order.
 */
#include "shell.h"

#include <string.h>

#include "bp.h"
#include "sh_rec.h"

void sh_init(sh *s, hub *h, bp *b, const hub_config *cfg,
             const sh_transport *t) {
  memset(s, 0, sizeof(*s));
  s->h = h;
  s->bp = b;
  s->t = *t;
  s->urgent_msgs = cfg->max_queue_msgs / 4 ? cfg->max_queue_msgs / 4 : 1;
  s->urgent_bytes = cfg->max_queue_bytes / 4 ? cfg->max_queue_bytes / 4 : 1;
  s->pong_max_frames = 2 * cfg->max_queue_msgs + 64;
  s->pong_max_bytes = 2 * cfg->max_queue_bytes;
  s->timer_at = HUB_TSTAMP_NONE;
  s->retry_at = HUB_TSTAMP_NONE;
}

static void sh_error(sh *s, const char *what, int err) {
  if (s->t.error != NULL) {
    s->t.error(s->t.user, what, err);
  }
}

/* Closes a connection through the transport; returns the id to report
   to the hub (once no effect is peeked), or 0. */
static hub_conn_id sh_close(sh *s, void *conn_user, hub_conn_id id,
                            uint16_t code, const char *reason,
                            hub_close_kind kind) {
  int r = s->t.close(s->t.user, conn_user, id, code, reason, kind);
  return r == SH_CLOSE_DONE ? id : 0;
}

/* The policy for a connection the shell gives up on (no memory for its
   message or its frame): close it 1011, so no loss passes silently. */
static hub_conn_id sh_close_internal(sh *s, void *conn_user, hub_conn_id id) {
  s->st.nomem_closes++;
  return sh_close(s, conn_user, id, 1011, "internal error", HUB_CLOSE_KIND_MAX);
}

/* Backplane and registry effects.  A command that could not be queued
   for want of memory leaves the hub believing in a subscription or a
   key that will never be: the link is reset (after this drain). */
static void sh_apply_bp(sh *s, const hub_effect *e) {
  bp *b = s->bp;
  const char *name;
  size_t name_len;
  int rc;
  if (b == NULL) {
    return;
  }
  name = e->name != NULL ? (const char *)e->name->data : NULL;
  name_len = e->name != NULL ? e->name->len : 0;
  switch (e->type) {
  case HUB_EFF_BP_SUBSCRIBE:
    rc = b->ops->subscribe(b, name, name_len);
    break;
  case HUB_EFF_BP_UNSUBSCRIBE:
    rc = b->ops->unsubscribe(b, name, name_len);
    break;
  case HUB_EFF_BP_PUBLISH:
    rc = b->ops->publish(b, name, name_len, e->buf->data, e->buf->len);
    break;
  case HUB_EFF_REG_SET:
    rc = b->ops->set(b, name, name_len, e->buf->data, e->buf->len, e->ttl_s);
    break;
  case HUB_EFF_REG_DEL:
    rc = b->ops->del(b, name, name_len);
    break;
  case HUB_EFF_BP_HPUBLISH:
    rc = b->ops->hpublish != NULL
           ? b->ops->hpublish(b, e->req, name, name_len, e->buf->data,
                              e->buf->len, e->count, e->ttl_s, e->meta_ttl_s)
           : HUB_ERR_SHUT_DOWN;
    break;
  case HUB_EFF_BP_HREAD:
    rc = b->ops->hread != NULL
           ? b->ops->hread(b, e->req, name, name_len, e->since, e->count,
                           e->meta_ttl_s)
           : HUB_ERR_SHUT_DOWN;
    break;
  default:
    return;
  }
  /* Any other failure means the link is down: the command is lost
     (at-most-once) and the backplane reports the down itself; for a
     history command that down is what ends the hub's wait (it fails
     every waiting read and publish). */
  if (rc == HUB_ERR_NOMEM) {
    s->bp_failed = 1;
  }
}

/* The forced reconnect: drop the link, tell the hub it is down (its
   subscriptions are gone with the link), reconnect after backoff. */
static void sh_bp_reset(sh *s, hub_tstamp now) {
  s->st.bp_resets++;
  if (s->t.bp_reset != NULL) {
    s->t.bp_reset(s->t.user);
  }
  sh_call_bp_down(s, now);
}

/* Writes the connections whose backlog passed the early-write mark. */
static void sh_write_urgent(sh *s, hub_tstamp now) {
  while (s->urgent != NULL) {
    sh_oq *q = s->urgent;
    hub_conn_id id = 0;
    size_t msgs = 0, bytes = 0;
    int rc;
    s->urgent = q->urgent_next;
    q->urgent = 0;
    q->urgent_next = NULL;
    s->st.early_writes++;
    rc = s->t.write(s->t.user, q, &id, &msgs, &bytes);
    if (id == 0) {
      continue;
    }
    if (rc != 0) {
      sh_call_conn_closed(s, id, now);
    } else if (msgs > 0 || bytes > 0) {
      sh_call_conn_written(s, id, msgs, bytes, now);
    }
  }
}

static void sh_arm_timer(sh *s) {
  /* After a failed expiry the work is overdue: wait for the retry rather
     than spin on a full memory. */
  hub_tstamp at =
    s->retry_at != HUB_TSTAMP_NONE ? s->retry_at : hub_get_expiry(s->h);
  if (at != s->timer_at) {
    s->timer_at = at;
    s->t.set_timer(s->t.user, at);
  }
}

/* The answer to a VERIFY.  NOMEM: close that connection 1011, as for a
   message (the refresh cannot be served). */
static void sh_verified(sh *s, hub_conn_id id, void *conn_user,
                        const hub_auth *auth, const char *err, hub_tstamp now) {
  int rc = sh_call_conn_verified(s, id, auth, err, now);
  if (rc == HUB_ERR_NOMEM) {
    hub_conn_id closed = sh_close_internal(s, conn_user, id);
    if (closed != 0) {
      sh_call_conn_closed(s, closed, now);
    }
  } else if (rc != 0 && rc != HUB_ERR_UNKNOWN_CONN) {
    sh_error(s, "hub_on_conn_verified", rc);
  }
}

void sh_drain(sh *s, hub_tstamp now) {
  const hub_effect *e;
  hub_conn_id vid = 0;
  void *vuser = NULL;
  const hub_auth *vauth = NULL;
  const char *verr = NULL;
  for (;;) {
    while ((e = hub_effect_peek(s->h)) != NULL) {
      hub_conn_id closed = 0;
      sh_rec_effect(s->rec, e);
      switch (e->type) {
      case HUB_EFF_SEND:
        if (s->t.send(s->t.user, e->conn_user, e->conn, e->buf) != 0) {
          closed = sh_close_internal(s, e->conn_user, e->conn);
        }
        break;
      case HUB_EFF_PING:
        s->t.ping(s->t.user, e->conn_user, e->conn);
        break;
      case HUB_EFF_CLOSE:
        closed = sh_close(s, e->conn_user, e->conn, e->close_code, e->reason,
                          e->close_kind);
        break;
      case HUB_EFF_API_REPLY:
        if (s->t.api_reply != NULL) {
          s->t.api_reply(s->t.user, e->req, e->status, e->buf);
        }
        break;
      case HUB_EFF_VERIFY:
        /* Verified now, answered after the pop (the answer is an event
           and |e| is one of the effects it may discard). */
        vid = e->conn;
        vuser = e->conn_user;
        vauth = NULL;
        verr = "token verification unavailable";
        if (s->t.verify != NULL &&
            s->t.verify(s->t.user, e->conn_user, e->conn,
                        (const char *)e->buf->data, e->buf->len, &vauth,
                        &verr) != 0) {
          vauth = NULL;
        }
        break;
      default:
        sh_apply_bp(s, e);
        break;
      }
      hub_effect_pop(s->h);
      if (closed != 0) {
        /* Only now: the report discards the connection's queued
           effects, and |e| was one of them. */
        sh_call_conn_closed(s, closed, now);
      }
      if (vid != 0) {
        sh_verified(s, vid, vuser, vauth, verr, now);
        vid = 0;
      }
    }
    sh_rec_qempty(s->rec);
    if (s->t.drained != NULL) {
      s->t.drained(s->t.user);
    }
    if (s->bp_failed) {
      s->bp_failed = 0;
      sh_bp_reset(s, now);
      continue;
    }
    if (s->urgent != NULL) {
      sh_write_urgent(s, now);
      continue; /* the written reports may have queued effects */
    }
    break;
  }
  sh_arm_timer(s);
}

/* ------------------------------------------------------------ events */

int sh_conn_open(sh *s, hub_conn_id *id, const char *remote_addr,
                 void *conn_user, hub_tstamp now) {
  int rc = sh_call_conn_open(s, id, remote_addr, conn_user, now);
  int v = SH_OK;
  if (rc == HUB_ERR_SHUT_DOWN) {
    v = SH_SHUT_DOWN;
  } else if (rc != 0) {
    if (rc != HUB_ERR_NOMEM) {
      sh_error(s, "hub_on_conn_open", rc);
    }
    s->st.refused++;
    v = SH_UNAVAILABLE;
  }
  sh_drain(s, now);
  return v;
}

int sh_conn_open_auth(sh *s, hub_conn_id *id, const char *remote_addr,
                      const hub_auth *auth, void *conn_user, hub_tstamp now) {
  int rc = sh_call_conn_open_auth(s, id, remote_addr, auth, conn_user, now);
  int v = SH_OK;
  if (rc == HUB_ERR_SHUT_DOWN) {
    v = SH_SHUT_DOWN;
  } else if (rc == HUB_ERR_INVALID_ARGUMENT) {
    v = SH_BAD_REQUEST;
  } else if (rc != 0) {
    s->st.refused++;
    v = SH_UNAVAILABLE;
  }
  sh_drain(s, now);
  return v;
}

void sh_conn_msg(sh *s, hub_conn_id id, void *conn_user, int binary,
                 const uint8_t *data, size_t len, hub_tstamp now) {
  int rc = sh_call_conn_msg(s, id, binary, data, len, now);
  if (rc == HUB_ERR_NOMEM) {
    /* The hub did nothing with the message (hub.h: an error changes
       nothing), so no effect of it is queued. */
    hub_conn_id closed = sh_close_internal(s, conn_user, id);
    if (closed != 0) {
      sh_call_conn_closed(s, closed, now);
    }
  } else if (rc != 0) {
    sh_error(s, "hub_on_conn_msg", rc);
  }
  sh_drain(s, now);
}

void sh_conn_pong(sh *s, hub_conn_id id, hub_tstamp now) {
  sh_call_conn_pong(s, id, now);
  sh_drain(s, now);
}

void sh_conn_written(sh *s, hub_conn_id id, size_t msgs, size_t bytes,
                     hub_tstamp now) {
  sh_call_conn_written(s, id, msgs, bytes, now);
  sh_drain(s, now);
}

void sh_conn_closed(sh *s, hub_conn_id id, hub_tstamp now) {
  sh_call_conn_closed(s, id, now);
  sh_drain(s, now);
}

int sh_conn_ping_in(sh *s, hub_conn_id id, void *conn_user, const sh_oq *q,
                    size_t frames, hub_tstamp now) {
  hub_conn_id closed;
  if (frames <= s->pong_max_frames && q->bytes <= s->pong_max_bytes) {
    return 0;
  }
  closed =
    sh_close(s, conn_user, id, 1008, "slow consumer", HUB_CLOSE_KIND_MAX);
  if (closed != 0) {
    sh_call_conn_closed(s, closed, now);
  }
  sh_drain(s, now);
  return -1;
}

void sh_bp_msg(sh *s, const char *channel, size_t channel_len,
               const uint8_t *data, size_t len, hub_tstamp now) {
  int rc = sh_call_bp_msg(s, channel, channel_len, data, len, now);
  if (rc == HUB_ERR_NOMEM) {
    /* The message is lost for every subscriber: a reconnect makes the
       loss visible (the hub is down, then re-subscribes) instead. */
    sh_bp_reset(s, now);
  } else if (rc != 0) {
    sh_error(s, "hub_on_bp_msg", rc);
  }
  sh_drain(s, now);
}

void sh_bp_subscribed(sh *s, const char *channel, size_t channel_len,
                      hub_tstamp now) {
  sh_call_bp_subscribed(s, channel, channel_len, now);
  sh_drain(s, now);
}

void sh_bp_up(sh *s, hub_tstamp now) {
  int rc = sh_call_bp_up(s, now);
  if (rc == HUB_ERR_NOMEM) {
    /* The hub stays down and re-subscribes nothing: try the whole
       connect again after backoff. */
    sh_bp_reset(s, now);
  } else if (rc != 0) {
    sh_error(s, "hub_on_bp_up", rc);
  }
  sh_drain(s, now);
}

void sh_bp_congested(sh *s, int congested, hub_tstamp now) {
  sh_call_bp_congested(s, congested, now);
  sh_drain(s, now);
}

void sh_bp_down(sh *s, hub_tstamp now) {
  sh_call_bp_down(s, now);
  sh_drain(s, now);
}

void sh_bp_hpublished(sh *s, uint64_t req, int ok, uint64_t offset,
                      const char *epoch, size_t epoch_len, hub_tstamp now) {
  (void)sh_call_bp_hpublished(s, req, ok, offset, epoch, epoch_len, now);
  sh_drain(s, now);
}

void sh_bp_hread(sh *s, uint64_t req, int ok, uint64_t offset,
                 const char *epoch, size_t epoch_len, const hub_hentry *e,
                 size_t n, hub_tstamp now) {
  int rc = sh_call_bp_hread(s, req, ok, offset, epoch, epoch_len, e, n, now);
  if (rc == HUB_ERR_NOMEM) {
    /* The read's subscribers cannot be served: the reconnect fails their
       waiting state (hub_on_bp_down) and reads again once up. */
    sh_bp_reset(s, now);
  } else if (rc != 0) {
    sh_error(s, "hub_on_bp_hread", rc);
  }
  sh_drain(s, now);
}

static int sh_api_verdict(sh *s, int rc, const char *what) {
  if (rc == 0) {
    return SH_OK;
  }
  if (rc == HUB_ERR_SHUT_DOWN) {
    return SH_SHUT_DOWN;
  }
  if (rc != HUB_ERR_NOMEM) {
    sh_error(s, what, rc);
  }
  s->st.refused++;
  return SH_UNAVAILABLE;
}

int sh_api_publish(sh *s, uint64_t req, const uint8_t *body, size_t len,
                   hub_tstamp now) {
  int v = sh_api_verdict(s, sh_call_api_publish(s, req, body, len, now),
                         "hub_api_publish");
  sh_drain(s, now);
  return v;
}

int sh_api_history(sh *s, uint64_t req, const char *channel, size_t len,
                   uint64_t since, uint64_t limit, hub_tstamp now) {
  int v = sh_api_verdict(
    s, sh_call_api_history(s, req, channel, len, since, limit, now),
    "hub_api_history");
  sh_drain(s, now);
  return v;
}

int sh_publish(sh *s, const uint8_t *body, size_t len, const char **errmsg,
               hub_tstamp now) {
  int rc = sh_call_publish(s, body, len, errmsg, now);
  int v = SH_OK;
  if (rc == HUB_ERR_BAD_REQUEST) {
    v = SH_BAD_REQUEST;
  } else if (rc == HUB_ERR_SHUT_DOWN) {
    v = SH_SHUT_DOWN;
  } else if (rc == HUB_ERR_UNAVAILABLE) {
    v = SH_BP_CONGESTED;
  } else if (rc != 0) {
    if (rc != HUB_ERR_NOMEM) {
      sh_error(s, "hub_publish", rc);
    }
    s->st.refused++;
    v = SH_UNAVAILABLE;
  }
  sh_drain(s, now);
  return v;
}

void sh_expiry(sh *s, hub_tstamp now) {
  int rc;
  s->timer_at = HUB_TSTAMP_NONE; /* the driver's timer is one-shot */
  s->retry_at = HUB_TSTAMP_NONE;
  rc = sh_call_expiry(s, now);
  if (rc == HUB_ERR_NOMEM) {
    /* What was due stays due; it is done on the retry. */
    s->st.expiry_retries++;
    s->retry_at = now + SH_EXPIRY_RETRY_NS;
  } else if (rc != 0) {
    sh_error(s, "hub_handle_expiry", rc);
  }
  sh_drain(s, now);
}

void sh_shutdown(sh *s, hub_tstamp now) {
  sh_call_shutdown(s, now);
  sh_drain(s, now);
}

/* ------------------------------------------------------------ helpers */

size_t sh_close_frame(uint8_t *f, uint16_t code, const char *reason) {
  size_t rlen = reason != NULL ? strlen(reason) : 0;
  if (rlen > SH_CLOSE_FRAME_MAX - 4) {
    rlen = SH_CLOSE_FRAME_MAX - 4;
  }
  f[0] = 0x88;
  if (code == 0) {
    f[1] = 0;
    return 2;
  }
  f[1] = (uint8_t)(2 + rlen);
  f[2] = (uint8_t)(code >> 8);
  f[3] = (uint8_t)(code & 0xff);
  if (rlen > 0) {
    memcpy(f + 4, reason, rlen);
  }
  return 4 + rlen;
}

void sh_oq_forget(sh *s, sh_oq *q) {
  sh_oq **p;
  if (!q->urgent) {
    return;
  }
  for (p = &s->urgent; *p != NULL; p = &(*p)->urgent_next) {
    if (*p == q) {
      *p = q->urgent_next;
      break;
    }
  }
  q->urgent = 0;
  q->urgent_next = NULL;
}
