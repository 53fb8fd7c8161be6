/*
 * The child processes of `proxkey demo` scenarios. A demo runs every role as
 * a child of this very executable (/proc/self/exe) running the ordinary CLI,
 * in a temporary directory, and stops every child it started on exit, on
 * failure and on SIGINT/SIGTERM.
 */
#ifndef PK_SRC_DEMO_PROC_H
#define PK_SRC_DEMO_PROC_H

#include <stddef.h>
#include <sys/types.h>

#define PK_DEMO_MAX_CHILD 8

typedef struct pk_demo {
    char dir[64];   /* the working directory (made by pk_demo_setup) */
    char exe[4096]; /* this executable */
    int err_fd;     /* children's stderr: this fd, or dir/errors.log when -1 */
    int trace;      /* 1: children run with PROXKEY_TRACE=1 */
    long run_ms;    /* how long pk_demo_run waits for a command */
} pk_demo_t;

/* Finds this executable, makes the directory from tmpl ("/tmp/x-XXXXXX") and
 * makes SIGINT/SIGTERM kill every child first. 0, or -1 with a message. */
int pk_demo_setup(pk_demo_t *d, const char *tmpl);

/* Starts `proxkey argv...` (argv[0] is ignored) in d->dir with stdout to out
 * (relative to d->dir; NULL: /dev/null) and tracks it. The pid, or -1. */
pid_t pk_demo_start(const pk_demo_t *d, const char *out, char *const argv[]);

/* Runs a command to completion, at most d->run_ms: its exit status,
 * 128 + signal, -2 when killed on timeout, -1 when it could not start. */
int pk_demo_run(const pk_demo_t *d, const char *out, char *const argv[]);

/* Waits up to ms for a started child: as pk_demo_run. */
int pk_demo_wait(pid_t p, long ms);

/* 1 when a started child has exited (it is then reaped and forgotten). */
int pk_demo_exited(pid_t p);

/* Sends sig to every tracked child (SIGCONT first, so a stopped one acts). */
void pk_demo_signal_all(int sig);

/* SIGTERM to every child, then waits up to 3 s each (SIGKILL after). */
void pk_demo_stop_all(void);

/* Stops every child; removes d->dir unless keep (then names it). */
void pk_demo_finish(const pk_demo_t *d, int keep);

/* Reads d->dir/name into buf (NUL-terminated, at most cap - 1 bytes). 0 or -1. */
int pk_demo_read_file(const pk_demo_t *d, const char *name, char *buf, size_t cap);

/* A loopback port the kernel says is free now (SOCK_DGRAM or SOCK_STREAM). */
unsigned pk_demo_free_port(int type);

void pk_demo_sleep_ms(long ms);

#define PK_DEMO_ARGV(...) ((char *const[]){"proxkey", __VA_ARGS__, NULL})

#endif
