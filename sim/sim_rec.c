/*
 * sim_rec.c - --record for the simulator's instances (sim_rec.h).
 *
 * The recorder is the shell's (shell/sh_rec.h); this is its sink, a
 * stdio file per instance incarnation.
 */
#include "sim_rec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sh_rec.h"

#define SIM_REC_BUF (1u << 16)

struct sim_rec_file {
  FILE *f;
  char path[512];
  sh_rec rec;
  uint8_t buf[SIM_REC_BUF];
};

static int sim_rec_write(void *user, const uint8_t *p, size_t n) {
  sim_rec_file *rf = user;
  if (fwrite(p, 1, n, rf->f) != n) {
    fprintf(stderr, "wshub-sim: --record %s: write failed\n", rf->path);
    return -1;
  }
  return 0;
}

void sim_rec_inst_start(sim_world *w, sim_inst *in, const hub_config *hc,
                        hub_tstamp now) {
  sim_rec_file *rf;
  sh_rec_sink sink;
  if (w->record == NULL) {
    return;
  }
  rf = calloc(1, sizeof(*rf));
  if (rf == NULL) {
    abort();
  }
  snprintf(rf->path, sizeof(rf->path), "%s.%s", w->record, in->id);
  rf->f = fopen(rf->path, "wb");
  if (rf->f == NULL) {
    perror(rf->path);
    exit(2);
  }
  memset(&sink, 0, sizeof(sink));
  sink.user = rf;
  sink.write = sim_rec_write;
  sh_rec_init(&rf->rec, rf->buf, sizeof(rf->buf), 0, &sink);
  if (sh_record(&in->sh, &rf->rec, hc, now) != 0) {
    fprintf(stderr, "wshub-sim: --record %s: cannot record\n", rf->path);
    exit(2);
  }
  in->rec = rf;
  in->alloc->rec = &rf->rec;
}

void sim_rec_inst_end(sim_world *w, sim_inst *in) {
  sim_rec_file *rf = in->rec;
  (void)w;
  if (rf == NULL) {
    return;
  }
  (void)sh_rec_end(&rf->rec);
  /* The digest's frame reference goes back to the instance's
     allocator, which outlives this. */
  sh_rec_fini(&rf->rec);
  in->sh.rec = NULL;
  in->alloc->rec = NULL;
  if (fclose(rf->f) != 0) {
    fprintf(stderr, "wshub-sim: --record %s: write failed\n", rf->path);
  }
  free(rf);
  in->rec = NULL;
}
