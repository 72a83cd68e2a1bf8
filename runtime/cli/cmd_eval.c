/* cmd_eval.c -- `dlu eval`: load weights (or a training checkpoint) into a net and report
 * accuracy and loss on the test set. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "dlu/backend.h"
#include "dlu/data.h"
#include "dlu/net.h"
#include "dlu/precision.h"
#include "dlu/scale.h"
#include "dlu/train.h"

static const char *const help =
    "usage: dlu eval --net FILE --weights FILE [OPTIONS]\n"
    "\n"
    "Evaluate a net's saved parameters (a checkpoint written by dlu train --checkpoint)\n"
    "on the test split of an IDX data set.\n"
    "\n"
    "  --net FILE       net description (.net) the weights belong to (required)\n"
    "  --weights FILE   checkpoint holding the parameters (required)\n"
    "  --data DIR       data folder (default " DLU_DEFAULT_DATA ")\n"
    "  --split S        test or train (default test)\n"
    "  --device DEV     cpu, cuda, cuda:N or dlusim:CONFIG.ini (default cpu)\n"
    "  --batch N        samples per forward pass (default 256)\n"
    "  --format F       number formats the weights were trained with (default fp32;\n"
    "                   see dlu train --help); --round and --scale likewise\n"
    "  --json FILE      write {accuracy, loss, samples, weights_digest} as JSON\n"
    "  -h, --help       this text\n";

int cmd_eval(int argc, char **argv)
{
    enum { O_NET = 256, O_WEIGHTS, O_DATA, O_SPLIT, O_DEVICE, O_BATCH, O_JSON, O_FORMAT, O_ROUND, O_SCALE };
    static const struct option opts[] = {
        {"net", required_argument, 0, O_NET},       {"weights", required_argument, 0, O_WEIGHTS},
        {"data", required_argument, 0, O_DATA},     {"split", required_argument, 0, O_SPLIT},
        {"device", required_argument, 0, O_DEVICE}, {"batch", required_argument, 0, O_BATCH},
        {"json", required_argument, 0, O_JSON},     {"format", required_argument, 0, O_FORMAT},
        {"round", required_argument, 0, O_ROUND},   {"scale", required_argument, 0, O_SCALE},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *net_path = NULL, *weights = NULL, *data = DLU_DEFAULT_DATA, *split = "test", *device = "cpu",
               *json = NULL;
    long long batch = 256;
    dlu_precision prec;
    dlu_scale_cfg scale;
    dlu_precision_default(&prec);
    dlu_scale_cfg_default(&scale);
    optind = 1;
    argv[0] = "dlu eval";
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_NET: net_path = optarg; break;
        case O_WEIGHTS: weights = optarg; break;
        case O_DATA: data = optarg; break;
        case O_SPLIT:
            if (strcmp(optarg, "test") && strcmp(optarg, "train")) {
                cli_error("eval", "--split '%s': expected test or train", optarg);
                return 2;
            }
            split = optarg;
            break;
        case O_DEVICE: device = optarg; break;
        case O_BATCH:
            if (!cli_int("eval", "--batch", optarg, 1, 65536, &batch)) return 2;
            break;
        case O_JSON: json = optarg; break;
        case O_FORMAT:
        case O_ROUND:
        case O_SCALE:
            if ((c == O_FORMAT ? dlu_precision_parse_format(&prec, optarg)
                 : c == O_ROUND ? dlu_precision_parse_round(&prec, optarg)
                                : dlu_scale_parse(optarg, &scale)) != DLU_OK ||
                dlu_precision_check(&prec) != DLU_OK) {
                cli_error("eval", "%s", dlu_last_error());
                return 2;
            }
            break;
        case 'h': fputs(help, stdout); return 0;
        default: return cli_usage_error("eval");
        }
    }
    if (optind < argc) {
        cli_error("eval", "unexpected argument '%s'", argv[optind]);
        return cli_usage_error("eval");
    }
    if (!net_path || !weights) {
        cli_error("eval", "--net FILE and --weights FILE are required");
        return cli_usage_error("eval");
    }
    dlu_net *net = NULL;
    dlu_dataset *ds = NULL;
    dlu_backend *be = NULL;
    int rc = 1;
    double acc = 0, loss = 0;
    char digest[65];
    dlu_status s = dlu_backend_open(device, &be);
    if (s != DLU_OK) {
        cli_fail("eval", "--device", s);
        rc = s == DLU_EINVAL ? 2 : 1;
        goto out;
    }
    if (json && !cli_writable("eval", "--json", json))
        goto out;
    if ((s = dlu_net_load(net_path, &net)) != DLU_OK) {
        cli_fail("eval", "net", s);
        goto out;
    }
    if ((s = dlu_dataset_load_dir(data, split, &ds)) != DLU_OK) {
        cli_fail("eval", "data", s);
        goto out;
    }
    if ((s = dlu_net_set_precision(net, &prec, &scale)) != DLU_OK || (s = dlu_net_bind(net, be, (int)batch)) != DLU_OK ||
        (s = dlu_net_load_weights(net, weights)) != DLU_OK) {
        cli_fail("eval", "weights", s);
        goto out;
    }
    if ((s = dlu_evaluate(net, ds, &acc, &loss)) != DLU_OK || (s = dlu_net_digest(net, digest)) != DLU_OK) {
        cli_fail("eval", "evaluation", s);
        goto out;
    }
    printf("%s accuracy %.2f%%  loss %.4f  on %lld samples\nweights digest %s\n", split, 100.0 * acc, loss,
           (long long)dlu_dataset_count(ds), digest);
    rc = 0;
    if (json) {
        json_t *j = json_pack("{s:f, s:f, s:I, s:s, s:s, s:s}", "accuracy", acc, "loss", loss, "samples",
                              (json_int_t)dlu_dataset_count(ds), "weights_digest", digest, "split", split, "net",
                              net_path);
        if (!j || json_dump_file(j, json, JSON_INDENT(2) | JSON_SORT_KEYS) != 0) {
            cli_error("eval", "--json %s: cannot write the report", json);
            rc = 1;
        }
        json_decref(j);
    }
out:
    dlu_net_free(net);
    dlu_backend_close(be);
    dlu_dataset_free(ds);
    return rc;
}
