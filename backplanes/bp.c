/*
 * bp.c - the one place that maps core effects onto backplane operations,
 * shared by the Redis and the simulated backplane.
 */
#include "bp.h"

int bp_apply(bp *b, const hub_effect *e) {
  const char *name = e->name ? (const char *)e->name->data : NULL;
  size_t name_len = e->name ? e->name->len : 0;

  switch (e->type) {
  case HUB_EFF_BP_SUBSCRIBE:
    (void)b->ops->subscribe(b, name, name_len);
    return 1;
  case HUB_EFF_BP_UNSUBSCRIBE:
    (void)b->ops->unsubscribe(b, name, name_len);
    return 1;
  case HUB_EFF_BP_PUBLISH:
    (void)b->ops->publish(b, name, name_len, e->buf->data, e->buf->len);
    return 1;
  case HUB_EFF_REG_SET:
    (void)b->ops->set(b, name, name_len, e->buf->data, e->buf->len, e->ttl_s);
    return 1;
  case HUB_EFF_REG_DEL:
    (void)b->ops->del(b, name, name_len);
    return 1;
  default:
    return 0;
  }
}
