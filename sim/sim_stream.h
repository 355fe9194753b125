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

/* XLEN |hkey| (0 when missing or expired). */
size_t sim_stream_len(sim_stream_db *db, const char *hkey);

/* Redis lost all its data (`redis restart`). */
void sim_stream_flush(sim_stream_db *db);

#endif /* SIM_STREAM_H */
