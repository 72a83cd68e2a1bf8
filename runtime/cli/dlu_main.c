/* dlu_main.c -- the `dlu` program: one binary, subcommands.
 *
 * Not here: any training logic. Subcommands parse options and call the library. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "config.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} cmds[] = {
    {"train", cmd_train, "train a net on a data set (fp32 or dynamic fixed point)"},
    {"eval", cmd_eval, "evaluate saved weights on the test set"},
    {"sim", cmd_sim, "simulate training steps on the DLU model: cycles, stalls, traffic, energy"},
    {"quantize", cmd_quantize, "quantize raw float32 to dfp8/dfp16 and print the statistics"},
    {"info", cmd_info, "show the build, backends, CPU features and, with --net, a net's layers"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: dlu COMMAND [OPTIONS]   (dlu COMMAND --help for its options)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        fprintf(f, "  %-8s %s\n", cmds[i].name, cmds[i].help);
    fprintf(f, "\nOpenDLU %s: emulator and simulator of a DLU-like training accelerator.\n", PACKAGE_VERSION);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("dlu (OpenDLU) %s\n", PACKAGE_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (!strcmp(argv[1], cmds[i].name))
            return cmds[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "dlu: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
