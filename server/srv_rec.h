/*
 * srv_rec.h - --record FILE: the flight recorder's file, for the server.
 *
 * The shell records (shell/sh_rec.h); this is the sink: a file written
 * a buffer at a time (when the buffer is full, on the 100 ms tick, on
 * SIGTERM and at exit), and a handler for fatal signals (SIGSEGV,
 * SIGBUS, SIGABRT, SIGFPE, SIGILL) that writes the buffered records with
 * write(2) and re-raises, so a crash leaves a file that replays up to
 * its last whole record.  One recording per process.
 */
#ifndef SRV_REC_H
#define SRV_REC_H

#include <stdint.h>

#include "hub.h"
#include "shell.h"

#define SRV_REC_MAX_BYTES_DEFAULT UINT64_C(1073741824)

/* Opens |path| (created 0600, truncated: it holds the traffic), writes
   the header and |cfg| as given to hub_new at |now|, attaches the
   recorder to |s| and installs the fatal-signal handlers.  Call after
   sh_init, before the first sh_drain.  Returns 0, or -1 after logging
   why. */
int srv_rec_start(const char *path, uint64_t max_bytes, sh *s,
                  const hub_config *cfg, hub_tstamp now);

/* The allocator to give hub_new when recording: libc's, reporting each
   allocation to the recorder (sh_rec_alloc), so that an allocation that
   failed fails again in the replay. */
const hub_mem *srv_rec_mem(void);

/* Writes what is buffered (the tick, SIGTERM).  No-op when not
   recording. */
void srv_rec_flush(void);

/* The end of the run: END record, flush, close. */
void srv_rec_end(void);

#endif /* SRV_REC_H */
