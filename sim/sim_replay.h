/*
 * sim_replay.h - wshub-sim --replay: a recording (shell/sh_rec.h) run
 * through a fresh core, its effects checked against the recorded digests.
 */
#ifndef SIM_REPLAY_H
#define SIM_REPLAY_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Exit codes (CONTRACT.md, "Flight recorder"). */
enum {
  SIM_REPLAY_OK = 0,
  SIM_REPLAY_DIVERGED = 1,
  SIM_REPLAY_BAD = 2,      /* empty, corrupted, foreign: not replayable */
  SIM_REPLAY_TRUNCATED = 3 /* the process died: replayed up to the cut */
};

typedef struct sim_replay_opts {
  FILE *out;     /* the verdict, the trace, the state; NULL: silent */
  int trace;     /* print every event and effect */
  int has_until; /* stop after event |until| and print the hub's state */
  uint64_t until;
} sim_replay_opts;

/* Replays the recording in |data| (|len| bytes, borrowed).  Returns a
   SIM_REPLAY_ code.  Never crashes on any input (fuzz/fuzz_replay.c). */
int sim_replay_buf(const uint8_t *data, size_t len, const sim_replay_opts *o);

/* wshub-sim --replay FILE [--until K] [--trace]: argv as given to main. */
int sim_replay_main(int argc, char **argv);

#endif /* SIM_REPLAY_H */
