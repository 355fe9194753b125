/*
 * hub_registry.h - the registry (hub_registry.c): the instance and
 * connection keys, heartbeats, and connection keys whose REG_DEL was
 * probably lost ("orphans").  Internal to core/.
 */
#ifndef HUB_REGISTRY_H
#define HUB_REGISTRY_H

/* REG_* effects are emitted (registry on and not shut down). */
int hub_registry_on(const hub *h);

/* The registry's term of the fact reserve (hub_effq.h). */
size_t hub_registry_fact_cost(const hub *h);

/* The instance key (hub_new); HUB_ERR_NOMEM or 0. */
int hub_registry_init(hub *h);
/* REG_SET of the instance key and every open connection's key.  Needs
   hub_registry_heartbeat_cost(h) reserved effects; returns HUB_ERR_NOMEM
   with nothing emitted if the instance value cannot be built. */
size_t hub_registry_heartbeat_cost(const hub *h);
int hub_registry_heartbeat(hub *h);

/* "conn:<instance>:<n>" and its JSON value (new references), or
   HUB_ERR_NOMEM with neither.  With |auth| the value ends with the
   token's "user". */
int hub_registry_conn_bufs(hub *h, hub_conn_id id, const char *remote,
                           const hub_auth *auth, hub_buf **key,
                           hub_buf **value);
/* |c| opened: its REG_SET (1 reserved effect) when the registry is on. */
void hub_registry_conn_open(hub *h, hub_conn *c);
/* |c| is retired: its REG_DEL (1 effect, from its connection's term of
   the reserve), remembered as an orphan while the backplane is down. */
void hub_registry_conn_gone(hub *h, hub_conn *c);

/* The backplane came up: a heartbeat and the orphans' REG_DELs.  Needs
   hub_registry_bp_up_cost(h) reserved effects; returns HUB_ERR_NOMEM
   with nothing emitted or changed. */
size_t hub_registry_bp_up_cost(const hub *h);
int hub_registry_bp_up(hub *h);

/* Shutdown, before the connections close: the orphans' REG_DELs; after:
   the instance key's.  Both spend from the fact reserve. */
void hub_registry_shutdown_orphans(hub *h);
void hub_registry_shutdown_instance(hub *h);

/* The registry's timers: orphans that expired are forgotten, and the
   heartbeat.  hub_registry_handle_expiry returns 0 or HUB_ERR_NOMEM (the
   heartbeat still due, nothing emitted). */
hub_tstamp hub_registry_get_expiry(const hub *h);
void hub_registry_expire_orphans(hub *h);
int hub_registry_handle_expiry(hub *h);

/* Frees the orphans and the instance key (hub_del). */
void hub_registry_free(hub *h);

#endif /* HUB_REGISTRY_H */
