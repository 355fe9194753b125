/*
 * hub_proto.h - the client protocol (hub_proto.c): request parsing and
 * the handling of one client message.  Internal to core/.
 */
#ifndef HUB_PROTO_H
#define HUB_PROTO_H

/* Client requests. */
typedef enum hub_req_type {
  HUB_REQ_SUBSCRIBE = 1,
  HUB_REQ_UNSUBSCRIBE,
  HUB_REQ_PUBLISH,
  HUB_REQ_REFRESH /* hub_auth.c; token checked by hub_proto_on_msg */
} hub_req_type;

#define HUB_ID_LEN_MAX 256

typedef struct hub_req {
  hub_req_type type;
  const char *channel; /* points into the message */
  size_t channel_len;
  const char *data; /* raw JSON text of data (publish) */
  size_t data_len;
  const char *id; /* raw JSON text of id, or NULL */
  size_t id_len;
  const char *token; /* refresh: the raw text between the quotes, or NULL */
  size_t token_len;
  hub_json_kind token_kind; /* refresh: HUB_JSON_NONE when absent */
  /* subscribe: "since":{"offset":N,"epoch":"E"} (hub_history.c) */
  int has_since;
  uint64_t since_offset;
  const char *since_epoch; /* the raw text between the quotes */
  size_t since_epoch_len;
} hub_req;

/*
 * hub_req_parse parses a client message.  Returns 0, or -1 with *err set
 * to a static reason; req->id is set whenever the message was an object
 * with a usable id, so that even errors echo it.  With |publish_body|
 * nonzero it parses a POST /publish body instead ({"channel","data"}).
 */
int hub_req_parse(const char *s, size_t len, int publish_body, hub_req *req,
                  const char **err);

/* One complete message from open connection |c| (hub_on_conn_msg).
   Returns 0 or HUB_ERR_NOMEM (then nothing changed). */
int hub_proto_on_msg(hub *h, hub_conn *c, int binary, const uint8_t *data,
                     size_t len);

#endif /* HUB_PROTO_H */
