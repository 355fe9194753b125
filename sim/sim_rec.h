/*
 * sim_rec.h - wshub-sim --record FILE SCENARIO: the flight recorder on
 * the simulator's instances (docs/recording.md).
 *
 * Each instance incarnation records through its shell, as the server
 * does, to FILE.<instance-id>: FILE.0, FILE.1, ..., and FILE.0.1 for
 * instance 0 after its first restart.  A file is ended (END record) when
 * its incarnation exits, crashes or the scenario ends: everything it
 * received is in it, so `wshub-sim --replay` of each says ok.
 */
#ifndef SIM_REC_H
#define SIM_REC_H

#include "sim.h"

/* After sh_init, before the first sh_drain: starts recording |in| (its
   hub made from |hc| at |now|) when the world records.  Exits the
   process when the file cannot be created. */
void sim_rec_inst_start(sim_world *w, sim_inst *in, const hub_config *hc,
                        hub_tstamp now);

/* Before hub_del: ends |in|'s recording, if any. */
void sim_rec_inst_end(sim_world *w, sim_inst *in);

#endif /* SIM_REC_H */
