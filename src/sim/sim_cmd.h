/*
 * Entry points of `proxkey sim` and `proxkey bench sim` (argv[0] is the
 * subcommand's own name). Exit codes: 0 every invariant held, 1 an invariant
 * broke (the summary and stderr name the seed to replay), 2 usage or setup
 * error.
 */
#ifndef PK_SRC_SIM_SIM_CMD_H
#define PK_SRC_SIM_SIM_CMD_H

int pk_cmd_sim(int argc, char **argv);
int pk_bench_suite_sim(int argc, char **argv);

#endif
