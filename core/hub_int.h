/*
 * hub_int.h - declarations shared by the files of core/.  Not public.
 */
#ifndef HUB_INT_H
#define HUB_INT_H

#include <stddef.h>
#include <stdint.h>

#include "hub.h"
#include "hub_json.h"

/* Assertions stay on in every build: a broken invariant stops the
   process rather than corrupting subscriptions. */
#define HUB_ASSERT(cond)                                                       \
  do {                                                                         \
    if (!(cond)) {                                                             \
      hub_assert_fail(#cond, __FILE__, __LINE__);                              \
    }                                                                          \
  } while (0)

_Noreturn void hub_assert_fail(const char *cond, const char *file, int line);

/* Allocation through the hub's allocator. */
void *hub_mem_malloc(const hub_mem *mem, size_t size);
void *hub_mem_realloc(const hub_mem *mem, void *ptr, size_t size);
void hub_mem_free(const hub_mem *mem, void *ptr);

/* A new buffer of |len| bytes (contents uninitialised), reference 1. */
hub_buf *hub_buf_new(const hub_mem *mem, size_t len);
/* A new buffer holding a copy of |s| followed by a NUL that is not
   counted in len. */
hub_buf *hub_buf_new_copy(const hub_mem *mem, const void *s, size_t len);

/* Length of the header of a server frame with |payload_len| bytes. */
size_t hub_frame_header_len(size_t payload_len);
/* A text frame buffer with room for |payload_len| payload bytes; the
   header is written, the payload is the caller's to fill. */
hub_buf *hub_frame_new(const hub_mem *mem, size_t payload_len);

/* A bounded writer into a buffer sized beforehand. */
typedef struct hub_wr {
  uint8_t *p;
  uint8_t *end;
} hub_wr;

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

/* Client requests. */
typedef enum hub_req_type {
  HUB_REQ_SUBSCRIBE = 1,
  HUB_REQ_UNSUBSCRIBE,
  HUB_REQ_PUBLISH
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
} hub_req;

/*
 * hub_req_parse parses a client message.  Returns 0, or -1 with *err set
 * to a static reason; req->id is set whenever the message was an object
 * with a usable id, so that even errors echo it.  With |publish_body|
 * nonzero it parses a POST /publish body instead ({"channel","data"}).
 */
int hub_req_parse(const char *s, size_t len, int publish_body, hub_req *req,
                  const char **err);

#endif /* HUB_INT_H */
