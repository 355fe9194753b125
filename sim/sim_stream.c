/*
 * sim_stream.c - streams and meta hashes of the simulated Redis, and the
 * wshub_publish function as one atomic step (sim_stream.h).  Expiry is
 * lazy, as Redis's is on access: a key past its TTL is dropped when it
 * is next looked at.  Small and linear: scenarios keep few channels.
 */
#include "sim_stream.h"

#include <stdlib.h>
#include <string.h>

typedef struct sim_entry {
  uint64_t offset;
  char *data;
} sim_entry;

typedef struct sim_stream {
  char *key;
  uint64_t expires_at;
  sim_entry *e; /* oldest first */
  size_t n, cap;
} sim_stream;

typedef struct sim_meta {
  char *key;
  uint64_t expires_at;
  uint64_t offset;
  char epoch[17];
} sim_meta;

struct sim_stream_db {
  sim_loop *loop;
  sim_rng rng; /* new epochs */
  sim_stream *s;
  size_t ns, caps;
  sim_meta *m;
  size_t nm, capm;
};

static void *xrealloc(void *p, size_t n) {
  p = realloc(p, n);
  if (p == NULL) {
    abort();
  }
  return p;
}

static char *xstrdup(const char *s, size_t n) {
  char *d = xrealloc(NULL, n + 1);
  memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

int sim_stream_db_new(sim_stream_db **out, sim_loop *loop) {
  sim_stream_db *db = calloc(1, sizeof(*db));
  if (db == NULL) {
    return -1;
  }
  db->loop = loop;
  sim_rng_seed(&db->rng, loop->seed, UINT64_C(0x7773687562657063));
  *out = db;
  return 0;
}

static void stream_free(sim_stream *s) {
  size_t i;
  for (i = 0; i < s->n; i++) {
    free(s->e[i].data);
  }
  free(s->e);
  free(s->key);
}

void sim_stream_flush(sim_stream_db *db) {
  size_t i;
  for (i = 0; i < db->ns; i++) {
    stream_free(&db->s[i]);
  }
  for (i = 0; i < db->nm; i++) {
    free(db->m[i].key);
  }
  db->ns = db->nm = 0;
}

void sim_stream_db_del(sim_stream_db *db) {
  if (db == NULL) {
    return;
  }
  sim_stream_flush(db);
  free(db->s);
  free(db->m);
  free(db);
}

/* The live stream |key|, or NULL (an expired one is dropped). */
static sim_stream *stream_find(sim_stream_db *db, const char *key) {
  size_t i;
  for (i = 0; i < db->ns; i++) {
    if (strcmp(db->s[i].key, key) == 0) {
      if (db->s[i].expires_at <= db->loop->now) {
        stream_free(&db->s[i]);
        db->s[i] = db->s[--db->ns];
        return NULL;
      }
      return &db->s[i];
    }
  }
  return NULL;
}

static sim_meta *meta_find(sim_stream_db *db, const char *key) {
  size_t i;
  for (i = 0; i < db->nm; i++) {
    if (strcmp(db->m[i].key, key) == 0) {
      if (db->m[i].expires_at <= db->loop->now) {
        free(db->m[i].key);
        db->m[i] = db->m[--db->nm];
        return NULL;
      }
      return &db->m[i];
    }
  }
  return NULL;
}

static void stream_del(sim_stream_db *db, const char *key) {
  sim_stream *s = stream_find(db, key);
  if (s != NULL) {
    stream_free(s);
    *s = db->s[--db->ns];
  }
}

static sim_meta *meta_create(sim_stream_db *db, const char *hkey,
                             const char *mkey) {
  static const char b62[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
  sim_meta *m;
  size_t i;
  stream_del(db, hkey);
  if (db->nm == db->capm) {
    db->capm = db->capm ? 2 * db->capm : 8;
    db->m = xrealloc(db->m, db->capm * sizeof(*db->m));
  }
  m = &db->m[db->nm++];
  memset(m, 0, sizeof(*m));
  m->key = xstrdup(mkey, strlen(mkey));
  for (i = 0; i < 16; i++) {
    m->epoch[i] = b62[sim_rng_below(&db->rng, 62)];
  }
  return m;
}

uint64_t sim_stream_publish(sim_stream_db *db, const char *hkey,
                            const char *mkey, const char *data, size_t len,
                            uint32_t size, uint32_t ttl_s, uint32_t meta_ttl_s,
                            const char **epoch) {
  uint64_t now = db->loop->now;
  sim_meta *m = meta_find(db, mkey);
  sim_stream *s;

  if (m == NULL) {
    /* A fresh epoch; offsets start over, so the old stream goes. */
    m = meta_create(db, hkey, mkey);
  }
  m->offset++;
  m->expires_at = now + (uint64_t)meta_ttl_s * SIM_S;
  s = stream_find(db, hkey);
  if (s == NULL) {
    if (db->ns == db->caps) {
      db->caps = db->caps ? 2 * db->caps : 8;
      db->s = xrealloc(db->s, db->caps * sizeof(*db->s));
    }
    s = &db->s[db->ns++];
    memset(s, 0, sizeof(*s));
    s->key = xstrdup(hkey, strlen(hkey));
  }
  if (s->n == s->cap) {
    s->cap = s->cap ? 2 * s->cap : 8;
    s->e = xrealloc(s->e, s->cap * sizeof(*s->e));
  }
  s->e[s->n].offset = m->offset;
  s->e[s->n].data = xstrdup(data, len);
  s->n++;
  /* XADD ... MAXLEN = size: exact trimming. */
  while (s->n > size) {
    free(s->e[0].data);
    memmove(s->e, s->e + 1, (s->n - 1) * sizeof(*s->e));
    s->n--;
  }
  s->expires_at = now + (uint64_t)ttl_s * SIM_S;
  *epoch = m->epoch;
  return m->offset;
}

uint64_t sim_stream_read(sim_stream_db *db, const char *hkey, const char *mkey,
                         uint64_t since, uint32_t count, uint32_t meta_ttl_s,
                         const char **epoch, sim_stream_entry **out,
                         size_t *nout) {
  sim_meta *m = meta_find(db, mkey);
  sim_stream *s;
  size_t i, n = 0;

  *out = NULL;
  *nout = 0;
  if (m == NULL) {
    /* HSET epoch <new> offset 0, DEL the stale stream, EXPIRE meta. */
    m = meta_create(db, hkey, mkey);
    m->expires_at = db->loop->now + (uint64_t)meta_ttl_s * SIM_S;
  }
  *epoch = m->epoch;
  if (count == 0) {
    return m->offset;
  }
  s = stream_find(db, hkey);
  if (s == NULL) {
    return m->offset;
  }
  *out = xrealloc(NULL, (s->n > 0 ? s->n : 1) * sizeof(**out));
  for (i = 0; i < s->n && n < count; i++) {
    if (s->e[i].offset > since) {
      (*out)[n].offset = s->e[i].offset;
      (*out)[n].data = s->e[i].data;
      (*out)[n].len = strlen(s->e[i].data);
      n++;
    }
  }
  *nout = n;
  return m->offset;
}

size_t sim_stream_len(sim_stream_db *db, const char *hkey) {
  sim_stream *s = stream_find(db, hkey);
  return s != NULL ? s->n : 0;
}

int sim_stream_holds(sim_stream_db *db, const char *hkey, const char *mkey,
                     const char *epoch, uint64_t offset) {
  sim_meta *m = meta_find(db, mkey);
  sim_stream *s;
  size_t i;
  if (m == NULL || strcmp(m->epoch, epoch) != 0) {
    return 0;
  }
  s = stream_find(db, hkey);
  for (i = 0; s != NULL && i < s->n; i++) {
    if (s->e[i].offset == offset) {
      return 1;
    }
  }
  return 0;
}
