/*
 * sim_stream.h - the simulated Redis's history data (sim_stream.c):
 * streams (`ws:history:<channel>`, one entry per kept message, id
 * `<offset>-0`, field `d`) and meta hashes (`ws:meta:<channel>`, fields
 * `epoch` and `offset`), each with a TTL, and the `wshub_publish`
 * function of the `wshub` library as one atomic step (CONTRACT.md
 * "History and recovery").  Over sim_loop only: the clock and the
 * randomness of new epochs (a PRNG stream of its own, so using history
 * moves no other timing).
 */
#ifndef SIM_STREAM_H
#define SIM_STREAM_H

#include "sim_loop.h"

typedef struct sim_stream_db sim_stream_db;

int sim_stream_db_new(sim_stream_db **out, sim_loop *loop);
void sim_stream_db_del(sim_stream_db *db); /* accepts NULL */

/*
 * FCALL wshub_publish 3 |hkey| |mkey| <channel key> |data| |size| |ttl_s|
 * |meta_ttl_s|, all but the PUBLISH (the caller's): a missing meta hash
 * gets a fresh epoch and the old stream is deleted; the offset is
 * incremented; the entry is added with id <offset>-0 and the stream
 * trimmed to exactly |size| entries; the stream expires after |ttl_s|
 * and the meta hash after |meta_ttl_s|.  Returns the offset; *epoch is
 * valid until the next call on |db|.  |data| is copied.
 */
uint64_t sim_stream_publish(sim_stream_db *db, const char *hkey,
                            const char *mkey, const char *data, size_t len,
                            uint32_t size, uint32_t ttl_s, uint32_t meta_ttl_s,
                            const char **epoch);

/* One entry of a read: |data| points into the stream (valid until the
   next call on |db|). */
typedef struct sim_stream_entry {
  uint64_t offset;
  const char *data;
  size_t len;
} sim_stream_entry;

/* FCALL wshub_read as one atomic step: the meta hash's offset (returned)
   and epoch, creating it (offset 0, a new epoch, the stale stream
   deleted, TTL |meta_ttl_s|) when missing; with |count| > 0 the first
   |count| entries above |since|, oldest first, in *out (free() it).  It
   refreshes no TTL of an existing record. */
uint64_t sim_stream_read(sim_stream_db *db, const char *hkey, const char *mkey,
                         uint64_t since, uint32_t count, uint32_t meta_ttl_s,
                         const char **epoch, sim_stream_entry **out,
                         size_t *nout);

/* 1 if the meta |mkey| has |epoch| and the stream |hkey| holds
   |offset|. */
int sim_stream_holds(sim_stream_db *db, const char *hkey, const char *mkey,
                     const char *epoch, uint64_t offset);

/* XLEN |hkey| (0 when missing or expired). */
size_t sim_stream_len(sim_stream_db *db, const char *hkey);

/* Redis lost all its data (`redis restart`). */
void sim_stream_flush(sim_stream_db *db);

#endif /* SIM_STREAM_H */
