/* cli.h -- shared pieces of the `dlu` command-line program (internal to the program).
 *
 * Each subcommand is `int cmd_NAME(int argc, char **argv)` returning the process exit
 * status: 0 success, 1 failure of the work, 2 bad command line. */
#ifndef DLU_CLI_H
#define DLU_CLI_H

#include <stdint.h>

#define DLU_DEFAULT_DATA "/usr/share/datasets/fashion-mnist"

int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_sim(int argc, char **argv);

/* Print "dlu CMD: message" to stderr. */
void cli_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Report a library failure: "dlu CMD: <what>: <dlu_last_error or strerror>". */
int cli_fail(const char *cmd, const char *what, int status);

/* Strict number parsing for option values: the whole string must be a number in range.
 * On failure print "dlu CMD: --OPT 'value': expected ..." and return 0. */
int cli_int(const char *cmd, const char *opt, const char *v, long long lo, long long hi, long long *out);
int cli_float(const char *cmd, const char *opt, const char *v, double lo, double hi, double *out);

/* 1 when a file can be created at path (its folder exists and is writable); else prints
 * "dlu CMD: OPT 'path': ..." and returns 0. */
int cli_writable(const char *cmd, const char *opt, const char *path);

/* After getopt_long has printed what was wrong: point at --help, return 2. */
int cli_usage_error(const char *cmd);

#endif
