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
  void (*free)(bp *b);
} bp_ops;

struct bp {
  const bp_ops *ops;
  bp_events ev;
};

#endif /* BP_H */
