/* A stand-alone driver for the gts subcommands, so the integration tests run
 * before (and independently of) their wiring into the proxkey executable:
 *   trigger_gts gts ...  |  trigger_gts device poll ...  |  trigger_gts demo  |  trigger_gts bench
 */
#include <stdio.h>
#include <string.h>

#include "gts.h"

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "gts") == 0)
        return pk_cmd_gts(argc - 1, argv + 1);
    if (argc >= 3 && strcmp(argv[1], "device") == 0 && strcmp(argv[2], "poll") == 0)
        return pk_cmd_device_poll(argc - 2, argv + 2);
    if (argc >= 2 && strcmp(argv[1], "demo") == 0)
        return pk_demo_trigger(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "bench") == 0)
        return pk_bench_suite_gts(argc - 1, argv + 1);
    fprintf(stderr, "usage: trigger_gts gts|device poll|demo|bench ...\n");
    return 2;
}
