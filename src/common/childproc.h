/*
 * Child processes for the system benchmarks (`proxkey bench alloc`, ...):
 * the benchmark runs real daemons as children of its own executable, pinned
 * to a CPU, reads their logs and their CPU time, and stops them by PID.
 * Linux only (/proc, sched_setaffinity). Not for the daemons themselves.
 */
#ifndef PK_SRC_COMMON_CHILDPROC_H
#define PK_SRC_COMMON_CHILDPROC_H

#include <stddef.h>
#include <sys/types.h>

/* Pins pid (0: this process) to cpu. 0, or -1 with errno. */
int pk_child_pin(pid_t pid, int cpu);

/* Runs /proc/self/exe with argv (NULL-terminated; stdout and stderr
 * appended to log), pinned to cpu (-1: not pinned). The child's pid, or -1. */
pid_t pk_child_spawn(const char *log, int cpu, char *const argv[]);

/* pk_child_spawn, unpinned, then waits: the exit status, or -1. */
int pk_child_run(const char *log, char *const argv[]);

/* SIGTERM, up to 5 s, then SIGKILL; reaps it; *pid = 0. No-op when *pid <= 0. */
void pk_child_stop(pid_t *pid);

/* CPU seconds (user + system) the process has used (/proc/PID/stat); 0 when
 * it cannot be read. */
double pk_child_cpu_s(pid_t pid);

/* Waits up to ms milliseconds until file has a line containing pat; copies
 * that line to line[0..cap) (line may be NULL). 0, or -1 on timeout. */
int pk_child_wait_line(const char *file, const char *pat, char *line, size_t cap, unsigned ms);

/* Sorts v[0..n) ascending (the benchmarks' rounds). */
void pk_child_sort(double *v, unsigned n);

/* Sorts v[0..n) and returns its median (n >= 1). */
double pk_child_median(double *v, unsigned n);

/* The first line of /proc/loadavg into b ("" when it cannot be read). */
void pk_child_loadavg(char *b, size_t cap);

#endif
