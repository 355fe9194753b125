/*
 * srv_rec.c - the recording file and its crash flush (srv_rec.h).
 *
 * State is static: a fatal-signal handler can reach nothing else.  The
 * handler only reads the recorder (sh_rec_unwritten), calls lseek(2),
 * write(2) and raise(3), all async-signal-safe, and runs with
 * SA_RESETHAND so that the re-raised signal kills the process as it
 * would have (core dump included).
 */
#include "srv_rec.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sh_rec.h"
#include "srv_log.h"

/* 1 MiB: a write per MiB of events, or per tick. */
#define SRV_REC_BUF (1u << 20)

static struct {
  int fd; /* -1: not recording */
  const char *path;
  uint64_t max_bytes;
  uint64_t written;
  sh_rec rec;
  uint8_t buf[SRV_REC_BUF];
} srv_rec_g = {.fd = -1};

/* The hub's allocator while recording: libc's, telling the recorder of
   every allocation so that a failure is recorded with its number. */
static void *srv_rec_malloc(size_t n, void *user) {
  void *p = malloc(n);
  (void)user;
  sh_rec_alloc(srv_rec_g.fd >= 0 ? &srv_rec_g.rec : NULL, p == NULL);
  return p;
}

static void srv_rec_free(void *p, void *user) {
  (void)user;
  free(p);
}

static void *srv_rec_realloc(void *p, size_t n, void *user) {
  void *q = realloc(p, n);
  (void)user;
  sh_rec_alloc(srv_rec_g.fd >= 0 ? &srv_rec_g.rec : NULL, q == NULL);
  return q;
}

const hub_mem *srv_rec_mem(void) {
  static const hub_mem m = {NULL, srv_rec_malloc, srv_rec_free,
                            srv_rec_realloc};
  return &m;
}

static int srv_rec_write(void *user, const uint8_t *p, size_t n) {
  (void)user;
  while (n > 0) {
    ssize_t w = write(srv_rec_g.fd, p, n);
    if (w < 0) {
      if (errno == EINTR) {
        continue;
      }
      srv_log(SRV_LOG_ERROR, "recording stopped: write failed", "file",
              srv_rec_g.path, "error", strerror(errno), (const char *)NULL);
      return -1;
    }
    p += w;
    n -= (size_t)w;
    srv_rec_g.written += (uint64_t)w;
  }
  return 0;
}

static void srv_rec_stopped(void *user, int why) {
  (void)user;
  if (why == SH_REC_STOP_LIMIT) {
    char b[24], m[24];
    snprintf(b, sizeof(b), "%llu",
             (unsigned long long)(srv_rec_g.rec.file_off + srv_rec_g.rec.len));
    snprintf(m, sizeof(m), "%llu", (unsigned long long)srv_rec_g.max_bytes);
    srv_log(SRV_LOG_WARN,
            "recording stopped: the next event would pass --record-max-bytes",
            "file", srv_rec_g.path, "#bytes", b, "#record_max_bytes", m,
            (const char *)NULL);
  }
}

static void srv_rec_fatal(int sig) {
  int saved = errno;
  off_t pos = lseek(srv_rec_g.fd, 0, SEEK_CUR);
  if (pos >= 0) {
    const uint8_t *p = NULL;
    size_t n = sh_rec_unwritten(&srv_rec_g.rec, (uint64_t)pos, &p);
    while (n > 0) {
      ssize_t w = write(srv_rec_g.fd, p, n);
      if (w <= 0) {
        if (w < 0 && errno == EINTR) {
          continue;
        }
        break;
      }
      p += w;
      n -= (size_t)w;
    }
  }
  errno = saved;
  raise(sig);
}

int srv_rec_start(const char *path, uint64_t max_bytes, sh *s,
                  const hub_config *cfg, hub_tstamp now) {
  static const int sigs[] = {SIGSEGV, SIGBUS, SIGABRT, SIGFPE, SIGILL};
  sh_rec_sink sink;
  struct sigaction sa;
  size_t i;

  srv_rec_g.fd =
    open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, (mode_t)0600);
  if (srv_rec_g.fd < 0) {
    srv_log(SRV_LOG_ERROR, "--record: cannot open the file", "file", path,
            "error", strerror(errno), (const char *)NULL);
    return -1;
  }
  srv_rec_g.path = path;
  srv_rec_g.max_bytes = max_bytes;
  memset(&sink, 0, sizeof(sink));
  sink.write = srv_rec_write;
  sink.stopped = srv_rec_stopped;
  sh_rec_init(&srv_rec_g.rec, srv_rec_g.buf, sizeof(srv_rec_g.buf), max_bytes,
              &sink);
  if (sh_record(s, &srv_rec_g.rec, cfg, now) != 0) {
    if (srv_rec_g.rec.stopped == SH_REC_STOP_LIMIT) {
      char m[24];
      snprintf(m, sizeof(m), "%llu", (unsigned long long)max_bytes);
      srv_log(SRV_LOG_WARN,
              "not recording: --record-max-bytes is too small for the header",
              "file", path, "#record_max_bytes", m, (const char *)NULL);
    }
    /* Keep the (empty) file: not recording is not fatal. */
    close(srv_rec_g.fd);
    srv_rec_g.fd = -1;
    return 0;
  }
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = srv_rec_fatal;
  sa.sa_flags = (int)(SA_RESETHAND | SA_NODEFER);
  sigemptyset(&sa.sa_mask);
  for (i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
    if (sigaction(sigs[i], &sa, NULL) != 0) {
      srv_log(SRV_LOG_WARN, "--record: sigaction failed", "error",
              strerror(errno), (const char *)NULL);
    }
  }
  {
    char m[24];
    snprintf(m, sizeof(m), "%llu", (unsigned long long)max_bytes);
    srv_log(SRV_LOG_INFO, "recording", "file", path, "#record_max_bytes", m,
            (const char *)NULL);
  }
  return 0;
}

void srv_rec_flush(void) {
  if (srv_rec_g.fd >= 0 && srv_rec_g.rec.stopped == SH_REC_ON &&
      srv_rec_g.rec.len > 0) {
    (void)sh_rec_flush(&srv_rec_g.rec);
  }
}

void srv_rec_end(void) {
  if (srv_rec_g.fd < 0) {
    return;
  }
  (void)sh_rec_end(&srv_rec_g.rec);
  sh_rec_fini(&srv_rec_g.rec);
  if (close(srv_rec_g.fd) != 0) {
    srv_log(SRV_LOG_ERROR, "--record: close failed", "file", srv_rec_g.path,
            "error", strerror(errno), (const char *)NULL);
  }
  srv_rec_g.fd = -1;
  {
    char b[24];
    snprintf(b, sizeof(b), "%llu", (unsigned long long)srv_rec_g.written);
    srv_log(SRV_LOG_INFO, "recording closed", "file", srv_rec_g.path, "#bytes",
            b, (const char *)NULL);
  }
}
