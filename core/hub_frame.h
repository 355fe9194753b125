/*
 * hub_frame.h - encoders (hub_frame.c).  Internal to core/.  Every
 * function returning a hub_buf returns a new reference, or NULL when
 * memory runs out.
 */
#ifndef HUB_FRAME_H
#define HUB_FRAME_H

/* Length of the header of a server frame with |payload_len| bytes. */
size_t hub_frame_header_len(size_t payload_len);
/* A text frame buffer with room for |payload_len| payload bytes; the
   header is written, the payload is the caller's to fill. */
hub_buf *hub_frame_new(const hub_mem *mem, size_t payload_len);

/* {"type":|type|,"channel":|channel|[,"id":|id|]}; |id| is raw JSON or
   NULL. */
hub_buf *hub_frame_reply(hub *h, const char *type, const char *channel,
                         size_t channel_len, const char *id, size_t id_len);
/* {"type":"error"[,"id":|id|],"error":|msg|} */
hub_buf *hub_frame_error(hub *h, const char *id, size_t id_len,
                         const char *msg);
/* The message frame, encoded once for every subscriber.  |data| must be
   valid JSON unless |as_string|, when it is wrapped as a JSON string. */
hub_buf *hub_frame_message(hub *h, const char *channel, size_t channel_len,
                           const char *data, size_t data_len, int as_string);

/* A bounded writer into a buffer sized beforehand. */
typedef struct hub_wr {
  uint8_t *p;
  uint8_t *end;
} hub_wr;

/* hub_frame_new, with |w| set to write the frame's payload.  NULL when
   out of memory (|w| untouched). */
hub_buf *hub_frame_new_wr(const hub_mem *mem, size_t payload_len, hub_wr *w);

void hub_wr_mem(hub_wr *w, const void *s, size_t len);
void hub_wr_str(hub_wr *w, const char *s);
void hub_wr_u64(hub_wr *w, uint64_t v);
void hub_wr_i64(hub_wr *w, int64_t v);
/* |s| as a JSON string, quotes included; hub_json_str_len gives its
   length. */
void hub_wr_json_str(hub_wr *w, const char *s, size_t len);
size_t hub_json_str_len(const char *s, size_t len);
size_t hub_u64_len(uint64_t v);
size_t hub_i64_len(int64_t v);

#endif /* HUB_FRAME_H */
