/*
 * hub_config.c - the server flags that configure the hub, parsed in one
 * place for the production server (--max-queue-msgs 64) and the
 * simulator's scenario files (config max-queue-msgs 64).
 */
#include "hub_int.h"

#include <string.h>

int hub_parse_u64(const char *s, uint64_t *out) {
  uint64_t v = 0;

  if (s == NULL || *s == '\0') {
    return HUB_ERR_INVALID_ARGUMENT;
  }
  for (; *s != '\0'; s++) {
    unsigned d = (unsigned)(*s - '0');
    if (d > 9 || v > (UINT64_MAX - d) / 10) {
      return HUB_ERR_INVALID_ARGUMENT;
    }
    v = v * 10 + d;
  }
  *out = v;
  return 0;
}

int hub_parse_duration(const char *s, hub_tstamp *out) {
  uint64_t whole = 0, frac = 0, frac_scale = 1, unit = HUB_NS_PER_S;
  const char *p = s;
  int digits = 0;

  if (s == NULL) {
    return HUB_ERR_INVALID_ARGUMENT;
  }
  for (; *p >= '0' && *p <= '9'; p++, digits++) {
    if (whole > (UINT64_MAX - 9) / 10) {
      return HUB_ERR_INVALID_ARGUMENT;
    }
    whole = whole * 10 + (uint64_t)(*p - '0');
  }
  if (*p == '.') {
    for (p++; *p >= '0' && *p <= '9'; p++, digits++) {
      if (frac_scale < UINT64_C(1000000000)) {
        frac = frac * 10 + (uint64_t)(*p - '0');
        frac_scale *= 10;
      }
    }
  }
  if (digits == 0) {
    return HUB_ERR_INVALID_ARGUMENT;
  }
  if (strcmp(p, "ms") == 0) {
    unit = HUB_NS_PER_MS;
  } else if (strcmp(p, "us") == 0) {
    unit = 1000;
  } else if (strcmp(p, "ns") == 0) {
    unit = 1;
  } else if (strcmp(p, "m") == 0) {
    unit = 60 * HUB_NS_PER_S;
  } else if (strcmp(p, "h") == 0) {
    unit = 3600 * HUB_NS_PER_S;
  } else if (*p != '\0' && strcmp(p, "s") != 0) {
    return HUB_ERR_INVALID_ARGUMENT;
  }
  if (whole > UINT64_C(1000000000000000000) / unit) {
    return HUB_ERR_INVALID_ARGUMENT;
  }
  *out = whole * unit + frac * unit / frac_scale;
  return 0;
}

int hub_config_set(hub_config *cfg, const char *name, const char *value) {
  static const struct {
    const char *name;
    size_t off;
  } durations[] = {
    {"ping-interval", offsetof(hub_config, ping_interval_ns)},
    {"pong-timeout", offsetof(hub_config, pong_timeout_ns)},
    {"write-timeout", offsetof(hub_config, write_timeout_ns)},
    {"heartbeat-interval", offsetof(hub_config, heartbeat_interval_ns)},
    {"history-ttl", offsetof(hub_config, history_ttl_ns)},
    {"history-meta-ttl", offsetof(hub_config, history_meta_ttl_ns)},
  };
  uint64_t v;
  size_t i;

  if (name == NULL || value == NULL) {
    return HUB_ERR_INVALID_ARGUMENT;
  }
  for (i = 0; i < sizeof(durations) / sizeof(durations[0]); i++) {
    if (strcmp(name, durations[i].name) == 0) {
      hub_tstamp d;
      if (hub_parse_duration(value, &d) != 0 || d == 0) {
        return HUB_ERR_INVALID_ARGUMENT;
      }
      memcpy((char *)cfg + durations[i].off, &d, sizeof(d));
      return 0;
    }
  }
  if (strcmp(name, "registry") == 0) {
    if (strcmp(value, "on") == 0) {
      cfg->registry = 1;
    } else if (strcmp(value, "off") == 0) {
      cfg->registry = 0;
    } else {
      return HUB_ERR_INVALID_ARGUMENT;
    }
    return 0;
  }
  if (strcmp(name, "auth") == 0) {
    if (strcmp(value, "on") == 0) {
      cfg->auth = 1;
    } else if (strcmp(value, "off") == 0) {
      cfg->auth = 0;
    } else {
      return HUB_ERR_INVALID_ARGUMENT;
    }
    return 0;
  }
  if (strcmp(name, "history-size") == 0) {
    if (hub_parse_u64(value, &v) != 0 || v > HUB_HISTORY_SIZE_MAX) {
      return HUB_ERR_INVALID_ARGUMENT;
    }
    cfg->history_size = (uint32_t)v;
    return 0;
  }
  if (strcmp(name, "history-channels") == 0) {
    size_t n = strlen(value);
    if (n >= sizeof(cfg->history_channels)) {
      return HUB_ERR_INVALID_ARGUMENT;
    }
    memcpy(cfg->history_channels, value, n + 1);
    return 0;
  }
  if (strcmp(name, "max-queue-msgs") == 0) {
    if (hub_parse_u64(value, &v) != 0 || v == 0 || v > UINT32_MAX) {
      return HUB_ERR_INVALID_ARGUMENT;
    }
    cfg->max_queue_msgs = (uint32_t)v;
    return 0;
  }
  if (strcmp(name, "max-queue-bytes") == 0) {
    if (hub_parse_u64(value, &v) != 0 || v == 0) {
      return HUB_ERR_INVALID_ARGUMENT;
    }
    cfg->max_queue_bytes = v;
    return 0;
  }
  if (strcmp(name, "max-publish-rate") == 0) {
    if (hub_parse_u64(value, &v) != 0 || v > UINT32_MAX) {
      return HUB_ERR_INVALID_ARGUMENT;
    }
    cfg->max_publish_rate = (uint32_t)v;
    return 0;
  }
  if (strcmp(name, "max-message-bytes") == 0) {
    if (hub_parse_u64(value, &v) != 0 || v == 0 || v > (UINT64_C(1) << 30)) {
      return HUB_ERR_INVALID_ARGUMENT;
    }
    cfg->max_message_bytes = v;
    return 0;
  }
  return 1;
}

void hub_config_default(hub_config *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->instance_id = "hub";
  cfg->backplane = 0;
  cfg->registry = 0;
  cfg->max_queue_msgs = 256;
  cfg->max_queue_bytes = 4194304;
  cfg->max_message_bytes = 65536;
  cfg->max_subs_per_conn = 4096;
  cfg->max_publish_rate = 1000;
  cfg->ping_interval_ns = 54 * HUB_NS_PER_S;
  cfg->pong_timeout_ns = 60 * HUB_NS_PER_S;
  cfg->write_timeout_ns = 10 * HUB_NS_PER_S;
  cfg->heartbeat_interval_ns = 10 * HUB_NS_PER_S;
  cfg->instance_ttl_s = 30;
  cfg->conn_ttl_s = 120;
  cfg->unix_time_s = 0;
  cfg->seed = 0;
  cfg->history_size = 0;
  cfg->history_ttl_ns = 300 * HUB_NS_PER_S;
  cfg->history_meta_ttl_ns = 86400 * HUB_NS_PER_S;
  cfg->history_channels[0] = '*';
  cfg->history_channels[1] = '\0';
}

int hub_config_valid(const hub_config *cfg) {
  return cfg->instance_id != NULL &&
         hub_channel_valid(cfg->instance_id, strlen(cfg->instance_id)) &&
         cfg->max_queue_msgs > 0 && cfg->max_queue_bytes > 0 &&
         cfg->max_message_bytes > 0 && cfg->max_subs_per_conn > 0 &&
         cfg->ping_interval_ns > 0 && cfg->pong_timeout_ns > 0 &&
         cfg->write_timeout_ns > 0 && cfg->heartbeat_interval_ns > 0 &&
         cfg->instance_ttl_s > 0 && cfg->conn_ttl_s > 0 &&
         (!cfg->registry || cfg->backplane) &&
         cfg->history_size <= HUB_HISTORY_SIZE_MAX && cfg->history_ttl_ns > 0 &&
         cfg->history_meta_ttl_ns > 0 &&
         memchr(cfg->history_channels, '\0', sizeof(cfg->history_channels)) !=
           NULL;
}
