/*
 * Scenario table and defaults (scen.h).
 */
#include <string.h>

#include "core/err.h"
#include "proto/sim/scen.h"

const char *const pk_sim_scenarios[] = {"trigger", "mk", "reg", NULL};

void pk_sim_opts_default(pk_sim_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->seed = 1;
    o->loss = 0.1;
    o->dup = 0.05;
    o->reorder = 0.1;
    o->crash_rate = 0.01;
    o->pool_pct = 50;
}

int pk_sim_scenario_run(const char *name, const pk_sim_opts_t *o, FILE *summary, int json,
                        pk_sim_result_t *r)
{
    memset(r, 0, sizeof *r);
    if (strcmp(name, "trigger") == 0)
        return pk_sim_run_trigger(o, summary, json, r);
    if (strcmp(name, "mk") == 0)
        return pk_sim_run_mk(o, summary, json, r);
    if (strcmp(name, "reg") == 0)
        return pk_sim_run_reg(o, summary, json, r);
    return PK_ERR_INVAL;
}
