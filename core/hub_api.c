/*
 * hub_api.c - the HTTP API as events: hub_api_publish (POST /publish)
 * and hub_api_history (GET /history), each answered by exactly one
 * HUB_EFF_API_REPLY carrying the driver's request number.  With the
 * embedded backplane, or on a channel without history, the answer is in
 * the call's own effects; on a history channel of an external backplane
 * it comes when the backplane answers (hub_hred.c).
 */
#include "hub_int.h"

#include <string.h>

/* {"error":"<reason>"} (|reason| static, plain ASCII). */
hub_buf *hub_api_error_body(hub *h, const char *reason) {
  size_t n = sizeof("{\"error\":\"\"}") - 1 + strlen(reason);
  hub_buf *b = hub_buf_new(h->mem, n);
  hub_wr w;

  if (b == NULL) {
    return NULL;
  }
  b->payload_off = 0;
  w.p = b->data;
  w.end = b->data + n;
  hub_wr_str(&w, "{\"error\":\"");
  hub_wr_str(&w, reason);
  hub_wr_str(&w, "\"}");
  HUB_ASSERT(w.p == w.end);
  return b;
}

/* {"ok":true} or {"ok":true,"offset":N} (|off| 0: none). */
hub_buf *hub_api_ok_body(hub *h, uint64_t off) {
  size_t n = sizeof("{\"ok\":true}") - 1;
  hub_buf *b;
  hub_wr w;

  if (off > 0) {
    n += sizeof(",\"offset\":") - 1 + hub_u64_len(off);
  }
  b = hub_buf_new(h->mem, n);
  if (b == NULL) {
    return NULL;
  }
  b->payload_off = 0;
  w.p = b->data;
  w.end = b->data + n;
  hub_wr_str(&w, "{\"ok\":true");
  if (off > 0) {
    hub_wr_str(&w, ",\"offset\":");
    hub_wr_u64(&w, off);
  }
  hub_wr_str(&w, "}");
  HUB_ASSERT(w.p == w.end);
  return b;
}

/* Queues the API reply (takes over |body|).  Needs one reserved effect. */
void hub_api_reply(hub *h, uint64_t req, uint16_t status, hub_buf *body) {
  hub_effect *e = hub_effq_push(h, HUB_EFF_API_REPLY);
  e->req = req;
  e->status = status;
  e->buf = body;
}

/* An answer now: reserve, build, queue.  0 or HUB_ERR_NOMEM. */
static int reply_now(hub *h, uint64_t req, uint16_t status, hub_buf *body) {
  if (body == NULL || hub_effq_reserve(h, 1) != 0) {
    hub_buf_unref(body);
    return HUB_ERR_NOMEM;
  }
  hub_api_reply(h, req, status, body);
  return 0;
}

int hub_api_publish(hub *h, uint64_t req, const uint8_t *body, size_t len,
                    hub_tstamp now) {
  hub_req r;
  const char *err = NULL;
  int rv;

  if (now > h->now) {
    h->now = now;
  }
  if (h->shut_down) {
    return HUB_ERR_SHUT_DOWN;
  }
  if (!hub_utf8_valid(body, len)) {
    err = "body is not valid UTF-8";
  } else if (hub_req_parse((const char *)body, len, 1, &r, &err) == 0) {
    err = NULL;
  }
  if (err != NULL) {
    return reply_now(h, req, 400, hub_api_error_body(h, err));
  }
  if (h->cfg.backplane && hub_hist_on(h, r.channel, r.channel_len)) {
    return hub_hred_publish(h, NULL, req, &r);
  }
  if (h->bp_up && h->bp_congested) {
    rv = reply_now(h, req, 503, hub_api_error_body(h, "backplane unavailable"));
    if (rv == 0) {
      h->st.bp_refused++;
    }
    return rv;
  }
  /* Room for the publish's effects and the reply, so that a publish
     done is answered: hub_topic_publish's own reservation then finds the
     room and the reply's slot is left after its pushes. */
  {
    const hub_topic *t = hub_topic_find(h, r.channel, r.channel_len);
    if (hub_effq_reserve(h, 1 + hub_topic_deliver_cost(h, t ? t->nacked : 0) +
                              1) != 0) {
      return HUB_ERR_NOMEM;
    }
  }
  {
    hub_buf *ok;
    h->hist_last_offset = 0;
    /* The offset is known only after the publish: build the body with
       the largest one it can have, then the real one (both small). */
    ok = hub_api_ok_body(h, h->cfg.history_size > 0 ? UINT64_MAX : 0);
    if (ok == NULL) {
      return HUB_ERR_NOMEM;
    }
    rv = hub_topic_publish(h, NULL, &r);
    if (rv != 0) {
      hub_buf_unref(ok);
      return rv;
    }
    if (h->hist_last_offset > 0) {
      /* Rewrite in place: the body with the real offset is shorter. */
      hub_wr w;
      w.p = ok->data;
      w.end = ok->data + ok->len;
      hub_wr_str(&w, "{\"ok\":true,\"offset\":");
      hub_wr_u64(&w, h->hist_last_offset);
      hub_wr_str(&w, "}");
      ok->len = (size_t)(w.p - ok->data);
    } else if (ok->len != sizeof("{\"ok\":true}") - 1) {
      ok->len = sizeof("{\"ok\":true}") - 1;
      memcpy(ok->data, "{\"ok\":true}", ok->len);
    }
    hub_effq_spend(h, 1 + hub_effq_fact_reserve(h));
    hub_api_reply(h, req, 200, ok);
  }
  return 0;
}

int hub_api_history(hub *h, uint64_t req, const char *channel, size_t len,
                    uint64_t since, uint64_t limit, hub_tstamp now) {
  hub_buf *b = NULL;
  const char *err = NULL;
  int rv;

  if (now > h->now) {
    h->now = now;
  }
  if (h->shut_down) {
    return HUB_ERR_SHUT_DOWN;
  }
  if (!hub_channel_valid(channel, len)) {
    return reply_now(h, req, 400,
                     hub_api_error_body(h, "invalid channel name"));
  }
  if (!hub_hist_on(h, channel, len)) {
    return reply_now(h, req, 400,
                     hub_api_error_body(h, "channel has no history"));
  }
  if (h->cfg.backplane) {
    return hub_hred_api_history(h, req, channel, len, since, limit);
  }
  rv = hub_history_get(h, channel, len, since, limit, h->now, &b, &err);
  if (rv == HUB_ERR_BAD_REQUEST) {
    return reply_now(h, req, 400, hub_api_error_body(h, err));
  }
  if (rv != 0) {
    return rv;
  }
  return reply_now(h, req, 200, b);
}
