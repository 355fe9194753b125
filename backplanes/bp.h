/*
 * bp.h - the backplane interface.
 *
 * A backplane carries the core's HUB_EFF_BP_* and HUB_EFF_REG_* effects to
 * a shared medium (a real Redis through hiredis in bp_redis.c; the
 * simulator has its own, sim/sim_bp.c) and reports back what the medium says
 * through bp_events, which the owner turns into sh_bp_* calls.  The shell
 * (shell/shell.c, sh_apply_bp) is the one place that maps core effects
 * onto these operations, for both drivers.
 *
 * Channel names and keys given to the ops are logical (as the core emits
 * them: "news", "instance:0", "conn:0:1"); the backplane adds its prefix
 * ("ws:" for keys, "ws:chan:" for channels) and strips it from incoming
 * channel names before reporting them.
 */
#ifndef BP_H
#define BP_H

#include <stddef.h>
#include <stdint.h>

#include "hub.h"

typedef struct bp bp;

/* One kept message of a history read: stream id <offset>-0, field d. */
typedef struct bp_hentry {
  uint64_t offset;
  const uint8_t *data;
  size_t len;
} bp_hentry;

/*
 * What the backplane reports.  Callbacks run from the owner's loop (never
 * from inside a bp_ops call), with borrowed arguments.
 */
typedef struct bp_events {
  void *user;
  void (*on_up)(void *user);   /* connected; nothing is subscribed */
  void (*on_down)(void *user); /* connection lost; subscriptions gone */
  void (*on_msg)(void *user, const char *channel, size_t channel_len,
                 const uint8_t *data, size_t len);
  void (*on_subscribed)(void *user, const char *channel, size_t channel_len);
  /* History (CONTRACT.md "History and recovery").  Each hpublish or
     hread that returned 0 is answered exactly once by one of these, from
     the loop, never inside the op: |ok| 1 with Redis's answer, or 0 when
     the command failed or its link went away before the answer (then the
     other arguments are 0/NULL).  Answers come in command order; they
     are not ordered against on_msg (another connection). */
  void (*on_hpublished)(void *user, uint64_t req, int ok, uint64_t offset,
                        const char *epoch, size_t epoch_len);
  void (*on_hread)(void *user, uint64_t req, int ok, uint64_t offset,
                   const char *epoch, size_t epoch_len,
                   const bp_hentry *entries, size_t n);
} bp_events;

/*
 * The operations.  Each returns 0, or a negative hub_error when the
 * command could not even be queued (for example while disconnected: the
 * command is then lost, which is what at-most-once means here).
 * Arguments are borrowed for the call.
 */
typedef struct bp_ops {
  int (*subscribe)(bp *b, const char *channel, size_t channel_len);
  int (*unsubscribe)(bp *b, const char *channel, size_t channel_len);
  int (*publish)(bp *b, const char *channel, size_t channel_len,
                 const uint8_t *data, size_t len);
  int (*set)(bp *b, const char *key, size_t key_len, const uint8_t *val,
             size_t val_len, uint32_t ttl_s);
  int (*del)(bp *b, const char *key, size_t key_len);
  /* FCALL wshub_publish 3 <prefix>history:<c> <prefix>meta:<c>
     <prefix>chan:<c> <data> <size> <ttl_s> <meta_ttl_s>; answered by
     on_hpublished(req, ...) with the [offset, epoch] it returns. */
  int (*hpublish)(bp *b, uint64_t req, const char *channel, size_t channel_len,
                  const uint8_t *data, size_t len, uint32_t size,
                  uint32_t ttl_s, uint32_t meta_ttl_s);
  /* FCALL wshub_read 2 <prefix>history:<c> <prefix>meta:<c> <since>
     <count> <meta_ttl_s>: the meta hash's offset and epoch (created,
     offset 0 and a fresh epoch, stale stream deleted, when missing) and
     up to |count| kept entries with offsets above |since|, oldest first,
     all in one atomic step; answered by on_hread(req, ...). */
  int (*hread)(bp *b, uint64_t req, const char *channel, size_t channel_len,
               uint64_t since, uint32_t count, uint32_t meta_ttl_s);
  void (*free)(bp *b);
} bp_ops;

struct bp {
  const bp_ops *ops;
  bp_events ev;
};

#endif /* BP_H */
