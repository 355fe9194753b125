/*
 * hub_history.h - channel history with the embedded backplane
 * (hub_history.c): offsets, epochs, the ring of kept messages, `since`
 * recovery and the history-TTLs.  Internal to core/.
 *
 * A subscribe or publish on a history channel is split in two, so that
 * the request stays "allocate, then change": *_prepare allocates every
 * frame and record it may need and changes nothing; *_commit links them
 * in and cannot fail; *_abort frees what prepare made.
 */
#ifndef HUB_HISTORY_H
#define HUB_HISTORY_H

#define HUB_HISTORY_SIZE_MAX 100000u
#define HUB_HISTORY_EPOCH_LEN 16

typedef struct hub_hist hub_hist;

/* A subscribe's history part. */
typedef struct hub_hist_sub {
  hub_hist *fresh;  /* a record made for this subscribe, not yet linked */
  hub_buf *reply;   /* the "subscribed" reply */
  hub_buf **replay; /* the recovered messages' frames, oldest first */
  size_t nreplay;
} hub_hist_sub;

/* 1 if |ch| keeps history (history_size > 0 and a glob of
   history_channels matches). */
int hub_hist_on(const hub *h, const char *ch, size_t len);

/* hub_new / hub_del.  hub_hist_init allocates only with history on. */
int hub_hist_init(hub *h);
void hub_hist_free(hub *h);

/* Builds the "subscribed" reply for |req| (with offset, epoch and
   "recovered" as CONTRACT.md says) and, for a recovered new subscription
   (|repeat| 0), the frames to replay.  Returns 0 or HUB_ERR_NOMEM
   (nothing made). */
int hub_hist_sub_prepare(hub *h, const hub_req *req, int repeat,
                         hub_hist_sub *hs);
/* Links the record; sends the replay to |c| after its reply (needs
   hs->nreplay reserved effects beyond the reply's).  hs->reply must have
   been taken by the caller (set to NULL). */
void hub_hist_sub_commit(hub *h, hub_conn *c, hub_hist_sub *hs);
void hub_hist_sub_abort(hub *h, hub_hist_sub *hs);

/* A publish to history channel |req->channel| with the embedded
   backplane: stored, offset given, delivered locally, "published" with
   its offset to |c| (NULL: hub_publish).  Returns 0 or HUB_ERR_NOMEM
   (nothing changed). */
int hub_hist_publish(hub *h, hub_conn *c, const hub_req *req);

/* Drops kept messages past history_ttl and records past history_meta_ttl
   (not while the channel has local subscribers: they would need a gap).
   Frees only; cannot fail. */
hub_tstamp hub_hist_get_expiry(const hub *h);
void hub_hist_expire(hub *h);

/* hub_check's part: 0 or -1 with *why. */
int hub_hist_check(const hub *h, const char **why);

#endif /* HUB_HISTORY_H */
