/* cmd_info.c -- `dlu info`: what this build contains and what the machine offers;
 * with --net FILE, the net's layers, shapes, parameters and MACs. */
#include <cblas.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "config.h"
#include "dlu/backend.h"
#include "dlu/net.h"

static const char *const help =
    "usage: dlu info [--net FILE]\n"
    "\n"
    "Show the version, the backends this build contains, the CPU's vector features and\n"
    "BLAS, and whether the default data set is installed. With --net FILE, print that\n"
    "net's layers instead (and check the file).\n";

int cmd_info(int argc, char **argv)
{
    static const struct option opts[] = {{"net", required_argument, 0, 'n'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    const char *net_path = NULL;
    optind = 1;
    argv[0] = "dlu info";
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (c == 'n')
            net_path = optarg;
        else if (c == 'h') {
            fputs(help, stdout);
            return 0;
        } else
            return cli_usage_error("info");
    }
    if (optind < argc) {
        cli_error("info", "unexpected argument '%s'", argv[optind]);
        return cli_usage_error("info");
    }
    if (net_path) {
        dlu_net *net;
        dlu_status s = dlu_net_load(net_path, &net);
        if (s != DLU_OK)
            return cli_fail("info", "net", s);
        dlu_net_print(net, stdout);
        dlu_net_free(net);
        return 0;
    }
    printf("OpenDLU %s\n", PACKAGE_VERSION);
    printf("backends:\n");
    const char *names[8], *notes[8];
    int n = dlu_backend_kinds(names, notes, 8);
    for (int i = 0; i < n; i++) {
        if (!strcmp(names[i], "dlusim")) { /* needs a config to open: say whether it is built */
            printf("  %-7s %s%s\n", names[i], strncmp(notes[i], "absent", 6) ? "built in (dlusim:CONFIG.ini): " : "",
                   notes[i]);
            continue;
        }
        dlu_backend *be = NULL;
        dlu_status s = dlu_backend_open(names[i], &be);
        printf("  %-7s %s: %s\n", names[i], s == DLU_OK ? "available" : "absent", s == DLU_OK ? notes[i] : dlu_last_error());
        dlu_backend_close(be);
    }
    printf("cpu features: %s\n", dlu_cpu_features());
    printf("integer GEMM (dfp8/dfp16): %s\n", dlu_cpu_igemm_impl());
    printf("blas: %s, %d thread(s)\n", openblas_get_config(), openblas_get_num_threads());
    struct stat st;
    printf("default data: %s (%s)\n", DLU_DEFAULT_DATA,
           stat(DLU_DEFAULT_DATA "/train-images-idx3-ubyte.gz", &st) == 0 ? "present"
                                                                          : "absent: apt-get install dataset-fashion-mnist");
    return 0;
}
