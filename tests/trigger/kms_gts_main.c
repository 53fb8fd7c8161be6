/* A stand-alone driver for the kms and gts subcommands (trigger keys made in
 * the kms, imported by the gts), so tests/trigger/import.sh runs without the
 * whole proxkey executable:
 *   trigger_kmsgts kms ...  |  trigger_kmsgts gts ...  |  trigger_kmsgts device poll ...
 */
#include <stdio.h>
#include <string.h>

#include "gts.h"

int pk_cmd_kms(int argc, char **argv); /* src/kms/kms_shell.h */

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "kms") == 0)
        return pk_cmd_kms(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "gts") == 0)
        return pk_cmd_gts(argc - 1, argv + 1);
    if (argc >= 3 && strcmp(argv[1], "device") == 0 && strcmp(argv[2], "poll") == 0)
        return pk_cmd_device_poll(argc - 2, argv + 2);
    fprintf(stderr, "usage: trigger_kmsgts kms|gts|device poll ...\n");
    return 2;
}
