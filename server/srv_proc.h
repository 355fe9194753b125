/*
 * srv_proc.h - the process_* metrics of the Prometheus conventions, read
 * from /proc/self (Linux): process_cpu_seconds_total,
 * process_resident_memory_bytes, process_open_fds, process_max_fds and
 * process_start_time_seconds.
 */
#ifndef SRV_PROC_H
#define SRV_PROC_H

#include <stddef.h>

/* Appends the metrics to |buf| (|cap| bytes, |*n| used); a value that
   cannot be read is left out. */
void srv_proc_metrics(char *buf, size_t cap, size_t *n);

#endif /* SRV_PROC_H */
