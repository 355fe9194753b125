/*
 * hub_proto.c - the client protocol: parsing client requests and POST
 * /publish bodies, and handling one client message (what closes the
 * connection, what gets an error reply, which request it is).
 *
 * The JSON is validated in full (hub_json.c) before any field is read, so
 * every span handed on (`data`, `id`) is valid JSON that can be relayed
 * verbatim.
 */
#include "hub_int.h"

#include <string.h>

enum { K_TYPE, K_CHANNEL, K_DATA, K_ID, K_TOKEN, K_SINCE, K_MAX };

static const char *const req_keys[K_MAX] = {"type", "channel", "data",
                                            "id",   "token",   "since"};

/* "since":{"offset":N,"epoch":"E"}: N a non-negative integer without
   sign, fraction or exponent, E a string.  Returns 0 or -1. */
static int parse_since(const char *s, size_t len, hub_req *req) {
  static const char *const keys[2] = {"offset", "epoch"};
  hub_json_member m[2];
  hub_json_kind kind;
  uint64_t v = 0;
  size_t i;

  if (hub_json_parse(s, len, &kind, keys, 2, m) != 0 ||
      kind != HUB_JSON_OBJECT || m[0].kind != HUB_JSON_NUMBER ||
      m[1].kind != HUB_JSON_STRING || m[0].value.len > 19) {
    return -1;
  }
  for (i = 0; i < m[0].value.len; i++) {
    unsigned d = (unsigned)(s[m[0].value.off + i] - '0');
    if (d > 9) {
      return -1;
    }
    v = v * 10 + d;
  }
  req->has_since = 1;
  req->since_offset = v;
  req->since_epoch = s + m[1].value.off + 1;
  req->since_epoch_len = m[1].value.len - 2;
  return 0;
}

static int str_eq(const char *s, size_t len, const char *lit) {
  return strlen(lit) == len && memcmp(s, lit, len) == 0;
}

int hub_req_parse(const char *s, size_t len, int publish_body, hub_req *req,
                  const char **err) {
  hub_json_member m[K_MAX];
  hub_json_kind kind;
  const char *type;
  size_t type_len;
  int rv;

  memset(req, 0, sizeof(*req));
  rv = hub_json_parse(s, len, &kind, req_keys, K_MAX, m);
  if (rv == HUB_JSON_TOO_DEEP) {
    /* An id complete before the deep part is valid JSON on its own: the
       client can still match the error to its request. */
    if (!publish_body && m[K_ID].kind != HUB_JSON_NONE &&
        m[K_ID].value.len <= HUB_ID_LEN_MAX) {
      req->id = s + m[K_ID].value.off;
      req->id_len = m[K_ID].value.len;
    }
    *err = "JSON nested too deeply";
    return -1;
  }
  if (rv != 0) {
    *err = "malformed JSON";
    return -1;
  }
  if (kind != HUB_JSON_OBJECT) {
    *err = publish_body ? "body must be a JSON object"
                        : "message must be a JSON object";
    return -1;
  }
  if (!publish_body && m[K_ID].kind != HUB_JSON_NONE) {
    if (m[K_ID].value.len > HUB_ID_LEN_MAX) {
      *err = "id too long";
      return -1;
    }
    req->id = s + m[K_ID].value.off;
    req->id_len = m[K_ID].value.len;
  }
  if (publish_body) {
    req->type = HUB_REQ_PUBLISH;
  } else {
    if (m[K_TYPE].kind == HUB_JSON_NONE) {
      *err = "missing field: type";
      return -1;
    }
    if (m[K_TYPE].kind != HUB_JSON_STRING) {
      *err = "type must be a string";
      return -1;
    }
    /* The raw text between the quotes; an escaped type name is simply
       unknown. */
    type = s + m[K_TYPE].value.off + 1;
    type_len = m[K_TYPE].value.len - 2;
    if (str_eq(type, type_len, "subscribe")) {
      req->type = HUB_REQ_SUBSCRIBE;
    } else if (str_eq(type, type_len, "unsubscribe")) {
      req->type = HUB_REQ_UNSUBSCRIBE;
    } else if (str_eq(type, type_len, "publish")) {
      req->type = HUB_REQ_PUBLISH;
    } else if (str_eq(type, type_len, "refresh")) {
      /* Its token is checked by hub_proto_on_msg: without
         authentication a refresh is an unknown type. */
      req->type = HUB_REQ_REFRESH;
      req->token_kind = m[K_TOKEN].kind;
      if (m[K_TOKEN].kind == HUB_JSON_STRING) {
        req->token = s + m[K_TOKEN].value.off + 1;
        req->token_len = m[K_TOKEN].value.len - 2;
      }
      return 0;
    } else {
      *err = "unknown type";
      return -1;
    }
  }
  if (m[K_CHANNEL].kind == HUB_JSON_NONE) {
    *err = "missing field: channel";
    return -1;
  }
  if (m[K_CHANNEL].kind != HUB_JSON_STRING) {
    *err = "channel must be a string";
    return -1;
  }
  req->channel = s + m[K_CHANNEL].value.off + 1;
  req->channel_len = m[K_CHANNEL].value.len - 2;
  /* A backslash escape is never a valid channel character, so checking
     the raw text is checking the decoded name. */
  if (!hub_channel_valid(req->channel, req->channel_len)) {
    *err = "invalid channel name";
    return -1;
  }
  if (req->type == HUB_REQ_PUBLISH) {
    if (m[K_DATA].kind == HUB_JSON_NONE) {
      *err = "missing field: data";
      return -1;
    }
    req->data = s + m[K_DATA].value.off;
    req->data_len = m[K_DATA].value.len;
  }
  if (req->type == HUB_REQ_SUBSCRIBE && m[K_SINCE].kind != HUB_JSON_NONE &&
      parse_since(s + m[K_SINCE].value.off, m[K_SINCE].value.len, req) != 0) {
    *err = "invalid since";
    return -1;
  }
  return 0;
}

int hub_channel_valid(const char *channel, size_t len) {
  size_t i;

  if (len < 1 || len > 128) {
    return 0;
  }
  for (i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)channel[i];
    if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
          (ch >= '0' && ch <= '9') || ch == '_' || ch == '-' || ch == '.' ||
          ch == ':' || ch == '@' || ch == '/')) {
      return 0;
    }
  }
  return 1;
}

/* Queues an error reply (|id| may be NULL) to |c|. */
static int proto_error(hub *h, hub_conn *c, const char *id, size_t id_len,
                       const char *err) {
  hub_buf *f;

  /* The error reply, and an eviction by it. */
  if (hub_effq_reserve(h, 1 + hub_conn_close_cost(c)) != 0) {
    return HUB_ERR_NOMEM;
  }
  f = hub_frame_error(h, id, id_len, err);
  if (f == NULL) {
    return HUB_ERR_NOMEM;
  }
  hub_conn_reply(h, c, f);
  return 0;
}

/*
 * A publish from a WebSocket connection.  Two refusals come before it
 * costs anything downstream: the connection's rate limit (its bucket is
 * empty) and a congested backplane (its queue is past the driver's cap,
 * so the message would only add to the memory held for a Redis that does
 * not keep up).  Either gets an error reply; the connection stays open.
 * The token is taken only once the publish succeeded, so NOMEM leaves
 * the bucket as it was.
 */
static int proto_publish(hub *h, hub_conn *c, const hub_req *req) {
  uint32_t per_s = h->cfg.max_publish_rate;
  int rv;

  if (!hub_rate_allows(&c->publish_rate, per_s, h->now)) {
    rv = proto_error(h, c, req->id, req->id_len, "rate limited");
    if (rv == 0) {
      h->st.rate_limited++;
    }
    return rv;
  }
  if (h->bp_up && h->bp_congested) {
    rv = proto_error(h, c, req->id, req->id_len, "backplane unavailable");
    if (rv == 0) {
      h->st.bp_refused++;
    }
    return rv;
  }
  rv = hub_topic_publish(h, c, req);
  if (rv == 0) {
    hub_rate_take(&c->publish_rate, per_s, h->now);
  }
  return rv;
}

int hub_proto_on_msg(hub *h, hub_conn *c, int binary, const uint8_t *data,
                     size_t len) {
  hub_req req;
  const char *err;
  hub_close_kind kind;

  h->st.msgs_in++;
  if (len > h->cfg.max_message_bytes) {
    kind = HUB_CLOSE_TOO_BIG;
    goto close;
  }
  if (binary) {
    kind = HUB_CLOSE_BINARY;
    goto close;
  }
  if (!hub_utf8_valid(data, len)) {
    kind = HUB_CLOSE_BAD_UTF8;
    goto close;
  }
  err = NULL;
  if (hub_req_parse((const char *)data, len, 0, &req, &err) == 0 &&
      req.type == HUB_REQ_REFRESH) {
    if (c->auth == NULL) {
      err = "unknown type";
    } else if (req.token_kind == HUB_JSON_NONE) {
      err = "missing field: token";
    } else if (req.token == NULL) {
      err = "token must be a string";
    }
  }
  if (err != NULL) {
    return proto_error(h, c, req.id, req.id_len, err);
  }
  switch (req.type) {
  case HUB_REQ_SUBSCRIBE:
    if (!hub_auth_granted(c, 0, req.channel, req.channel_len)) {
      return hub_auth_deny(h, c, &req);
    }
    return hub_topic_subscribe(h, c, &req);
  case HUB_REQ_UNSUBSCRIBE:
    return hub_topic_unsubscribe(h, c, &req);
  case HUB_REQ_PUBLISH:
    if (!hub_auth_granted(c, 1, req.channel, req.channel_len)) {
      return hub_auth_deny(h, c, &req);
    }
    return proto_publish(h, c, &req);
  case HUB_REQ_REFRESH:
    return hub_auth_refresh(h, c, &req);
  }
  return 0;

close:
  if (hub_effq_reserve(h, hub_conn_close_cost(c)) != 0) {
    return HUB_ERR_NOMEM;
  }
  hub_conn_close(h, c, kind);
  return 0;
}
