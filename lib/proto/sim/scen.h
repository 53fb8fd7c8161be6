/*
 * Simulator scenarios: each one links real protocol cores to the framework
 * (sim.h), runs them through faults, then checks its invariants.
 *
 *   trigger  N devices poll one gts through loss/dup/reorder; the gts (durable
 *            records in a memory: store, UID index rebuilt on restart) and
 *            the devices crash and restart; an operator queues commands.
 *            Invariants: every queued command delivered exactly once (server
 *            DELIVERED and device applied, in order); no device locked out.
 *   mk       a domain of N clients, each wanting individual keys with its K
 *            ring neighbours; intruders (foreign domain, forged master key);
 *            a master-key rotation cascading through the tables; a partition;
 *            client crashes (master key durable, key table soft).
 *            Invariants: both ends of every key hold the same bytes; at the
 *            end every wanted pair shares a current key under the new master
 *            key; no intruder pair ever gets a key.
 *
 * Every scenario ends with a quiet phase (no loss, no crashes, partitions
 * healed) long enough for the protocol to converge, then checks.
 */
#ifndef PK_PROTO_SIM_SCEN_H
#define PK_PROTO_SIM_SCEN_H

#include <stdint.h>
#include <stdio.h>

/* Test-only fault injections: each one breaks the system on purpose, so the
 * tests can show the invariant checker catches it. */
enum pk_sim_fault {
    PK_SIM_FAULT_NONE = 0,
    PK_SIM_FAULT_MK_CORRUPT = 1,      /* mk: flip a byte of one stored key of client 0 */
    PK_SIM_FAULT_TRIG_NO_PERSIST = 2, /* trigger: gts sends before its PERSIST is durable,
                                       * and its crashes land in that window */
    PK_SIM_FAULT_TRIG_DOUBLE = 3,     /* trigger: a device applies one command twice */
    PK_SIM_FAULT_REG_CORRUPT = 4,     /* reg: device 1's copy of its pair root key is
                                       * corrupted after each registration */
};

typedef struct pk_sim_opts {
    uint64_t seed;
    uint32_t devices;  /* devices (trigger) or clients (mk); 0: the scenario's default */
    double loss;       /* per copy, every link */
    double dup;        /* probability of a second copy */
    double reorder;    /* probability of an extra delay of up to 2 s */
    double crash_rate; /* per virtual second: each server crashes with this
                        * probability, each device with a hundredth of it */
    FILE *trace;       /* full trace, or NULL */
    int progress;      /* progress bar on stderr */
    int fault;         /* enum pk_sim_fault (tests only) */
    uint32_t pool_pct; /* reg: percent of pairs on option 2 (0..100; > 100 means 50) */
    uint32_t crowd;    /* reg: the first `crowd` devices (rounded down to whole pairs) form
                        * one group, so an option-1 member has a root key for every
                        * option-1 member: more than 32 makes paged key sets (0: none) */
} pk_sim_opts_t;

typedef struct pk_sim_result {
    uint64_t trace_hash;
    uint64_t failures;
    char first_failure[256];
    uint64_t events;
    uint64_t virtual_ms;
} pk_sim_result_t;

/* Defaults: seed 1, 0 devices (scenario default), loss 0.1, dup 0.05,
 * reorder 0.1, crash_rate 0.01, pool_pct 50. */
void pk_sim_opts_default(pk_sim_opts_t *o);

/*
 * Runs scenario `name` (pk_sim_scenarios: "trigger", "mk", "reg"). Prints the summary to `summary`
 * (NULL: nothing; json: one JSON object) and fills *r. Returns PK_OK when the
 * run completed (r->failures then says whether invariants held), PK_ERR_INVAL
 * for an unknown scenario, PK_ERR_NOMEM, or PK_ERR_LIMIT when the event budget
 * ran out (a livelock: reported as a failure too).
 */
int pk_sim_scenario_run(const char *name, const pk_sim_opts_t *o, FILE *summary, int json,
                        pk_sim_result_t *r);

/* The scenario names, NULL-terminated, in the order `--scenario all` runs them. */
extern const char *const pk_sim_scenarios[];

/* Per-scenario entry points (scen_<name>.c). */
int pk_sim_run_trigger(const pk_sim_opts_t *o, FILE *summary, int json, pk_sim_result_t *r);
int pk_sim_run_mk(const pk_sim_opts_t *o, FILE *summary, int json, pk_sim_result_t *r);
int pk_sim_run_reg(const pk_sim_opts_t *o, FILE *summary, int json, pk_sim_result_t *r);

#endif
