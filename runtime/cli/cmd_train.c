/* cmd_train.c -- `dlu train`: parse options, load data and net, run dlu_train(), report.
 *
 * Output: on a terminal a progress bar (stderr) with samples/s and ETA; otherwise one
 * line per epoch on stdout. --json FILE writes the report described in docs/cli.md. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "cli.h"
#include "config.h"
#include "dlu/backend.h"
#include "dlu/data.h"
#include "dlu/net.h"
#include "dlu/precision.h"
#include "dlu/scale.h"
#include "dlu/sim.h"
#include "dlu/train.h"

static const char *const help =
    "usage: dlu train --net FILE [OPTIONS]\n"
    "\n"
    "Train a net on an IDX data set (default: Fashion-MNIST from Debian's\n"
    "dataset-fashion-mnist) and report the test accuracy.\n"
    "\n"
    "  --net FILE            net description (.net), e.g. examples/nets/cnn.net (required)\n"
    "  --data DIR            folder with train-/t10k- IDX files, gzip or plain\n"
    "                        (default " DLU_DEFAULT_DATA ")\n"
    "  --epochs N            passes over the training set (default 1)\n"
    "  --max-steps N         stop after N optimizer steps in all (default: no limit)\n"
    "  --batch N             samples per step (default 128)\n"
    "  --optimizer sgd|adam  (default sgd)\n"
    "  --lr X                learning rate (default 0.05)\n"
    "  --momentum X          SGD momentum (default 0.9)\n"
    "  --weight-decay X      L2 weight decay (default 0)\n"
    "  --seed N              parameter init and data order (default 0)\n"
    "  --device DEV          cpu, cuda, cuda:N or dlusim:CONFIG.ini (default cpu)\n"
    "  --format F            number formats: fp32, dfp8, dfp16, or per tensor class\n"
    "                        w=..,a=..,e=..,g=.. (weights, activations, errors, gradients)\n"
    "                        (default fp32)\n"
    "  --round R             DFP rounding: nearest, stochastic, or per class\n"
    "                        (default w=nearest,a=nearest,e=stochastic,g=stochastic)\n"
    "  --scale POLICY[:ARGS] DFP exponent policy: overflow (default), max, amax, autoflex,\n"
    "                        percentile, onebit; e.g. overflow:rate=1e-4,hysteresis=4\n"
    "                        (docs/numerics.md)\n"
    "  --stats FILE          DFP statistics per step as JSON lines (exponent, overflow,\n"
    "                        underflow, zeros, histogram for every tensor)\n"
    "  --stats-every N       log every N-th step (default 1)\n"
    "  --threads N           CPU threads for BLAS and kernels (default: all cores)\n"
    "  --json FILE           write a JSON report (test_accuracy, train_loss, samples_per_second,\n"
    "                        epochs, weights_digest, ...)\n"
    "  --checkpoint FILE     save the training state here (atomically) every epoch and at the end\n"
    "  --checkpoint-every N  ... every N steps instead of every epoch\n"
    "  --resume FILE         continue from a checkpoint (same --net, --seed and --batch)\n"
    "  --no-eval             skip the test-set evaluation after each epoch\n"
    "  --quiet               no progress output\n"
    "  --profile             print host time per layer and direction after training\n"
    "  -h, --help            this text\n";

typedef struct progress_state {
    int tty, quiet;
    dlu_backend *be;          /* set when it is a simulated DLU */
    dlu_sim_counters prev;    /* its counters at the end of the previous epoch */
    json_t *sim_epochs;       /* one object per epoch for --json */
} progress_state;

/* One line of simulated cost: cycles, time at the configured clock, energy. */
static void print_sim(const char *what, const dlu_sim_counters *c, double hz, const dlu_backend *be)
{
    const double e = dlu_sim_counters_energy_pj(c) * 1e-12;
    int dpus, channels;
    dlu_sim_unit_counts(be, &dpus, &channels);
    const double util = dlu_sim_mac_utilisation(c, dpus);
    printf("%s: %llu cycles, %.6g s at %.0f MHz, %.6g J, MAC utilisation %.1f%%\n", what,
           (unsigned long long)c->cycles, (double)c->cycles / hz, hz * 1e-6, e, 100.0 * util);
}

static json_t *sim_json(const dlu_sim_counters *c, double hz)
{
    json_t *j = json_object();
    json_object_set_new(j, "cycles", json_integer((json_int_t)c->cycles));
    json_object_set_new(j, "seconds", json_real((double)c->cycles / hz));
    json_object_set_new(j, "energy_j", json_real(dlu_sim_counters_energy_pj(c) * 1e-12));
    json_object_set_new(j, "macs", json_integer((json_int_t)c->macs));
    json_object_set_new(j, "hbm_bytes", json_integer((json_int_t)(c->bytes_hbm_rd + c->bytes_hbm_wr)));
    return j;
}

/* The simulated cost of the epoch just finished (evaluation is not counted). */
static void sim_epoch(progress_state *ps, int epoch, double acc, int64_t steps)
{
    dlu_sim_counters now, d;
    if (dlu_sim_totals(ps->be, &now) != DLU_OK)
        return;
    d = now;
    dlu_sim_counters_sub(&d, &ps->prev);
    ps->prev = now;
    const double hz = dlu_sim_clock_hz(ps->be);
    char what[64];
    snprintf(what, sizeof what, "  simulated epoch %d", epoch);
    if (!ps->quiet) {
        print_sim(what, &d, hz, ps->be);
        printf("  simulated per step: %.0f cycles, %.6g s, %.6g J\n", (double)d.cycles / (double)steps,
               (double)d.cycles / hz / (double)steps, dlu_sim_counters_energy_pj(&d) * 1e-12 / (double)steps);
    }
    json_t *j = sim_json(&d, hz);
    json_object_set_new(j, "steps", json_integer(steps));
    json_object_set_new(j, "cycles_per_step", json_real((double)d.cycles / (double)steps));
    json_object_set_new(j, "energy_j_per_step", json_real(dlu_sim_counters_energy_pj(&d) * 1e-12 / (double)steps));
    json_object_set_new(j, "epoch", json_integer(epoch));
    if (acc >= 0)
        json_object_set_new(j, "test_accuracy", json_real(acc));
    json_array_append_new(ps->sim_epochs, j);
}

static void fmt_time(double s, char *buf, size_t n)
{
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

static void on_progress(void *user, const dlu_train_progress *p)
{
    progress_state *ps = user;
    if (ps->quiet)
        return;
    if (p->epoch_done) {
        if (ps->tty)
            fprintf(stderr, "\r\033[K");
        printf("epoch %d/%d  step %lld  train loss %.4f", p->epoch, p->epochs, (long long)p->step, p->loss);
        if (p->test_accuracy >= 0)
            printf("  test accuracy %.2f%%", 100.0 * p->test_accuracy);
        printf("  %.0f samples/s\n", p->samples_per_second);
        if (ps->be)
            sim_epoch(ps, p->epoch, p->test_accuracy, p->steps_per_epoch);
        fflush(stdout);
        return;
    }
    if (!ps->tty)
        return;
    const int width = 30;
    int fill = (int)(width * (double)p->step_in_epoch / (double)p->steps_per_epoch);
    char bar[64], eta[32];
    memset(bar, '#', (size_t)fill);
    memset(bar + fill, '.', (size_t)(width - fill));
    bar[width] = '\0';
    fmt_time(p->eta_seconds, eta, sizeof eta);
    fprintf(stderr, "\r\033[Kepoch %d/%d [%s] %lld/%lld  loss %.4f  %.0f samples/s  ETA %s", p->epoch, p->epochs,
            bar, (long long)p->step_in_epoch, (long long)p->steps_per_epoch, p->loss, p->samples_per_second, eta);
    fflush(stderr);
}

/* Per-layer host time per training step, forward and backward. */
static void print_profile(const dlu_net *net, const dlu_train_result *r)
{
    uint64_t tf = 0, tb = 0, f, b;
    for (int i = 0; i < dlu_net_nlayers(net); i++) {
        dlu_net_layer_time(net, i, &f, &b);
        tf += f, tb += b;
    }
    double total = (double)(tf + tb);
    printf("%-12s %-13s %12s %12s %7s\n", "layer", "op", "fwd ms", "bwd ms", "share");
    for (int i = 0; i < dlu_net_nlayers(net); i++) {
        dlu_net_layer_time(net, i, &f, &b);
        printf("%-12s %-13s %12.2f %12.2f %6.1f%%\n", dlu_net_layer_name(net, i), dlu_op_name(dlu_net_layer_op(net, i)),
               f * 1e-6, b * 1e-6, total > 0 ? 100.0 * (double)(f + b) / total : 0.0);
    }
    printf("%-26s %12.2f %12.2f  (layers: %.1f%% of training time)\n", "total", tf * 1e-6, tb * 1e-6,
           r->train_seconds > 0 ? 100.0 * total * 1e-9 / r->train_seconds : 0.0);
}

static int write_report(const char *path, const char *net_path, const char *device, const char *format,
                        const char *round, const char *scale, const dlu_train_cfg *cfg, int threads,
                        const dlu_train_result *r, progress_state *ps)
{
    struct utsname u;
    json_t *j = json_object();
    if (ps->be) {
        dlu_sim_counters tot;
        dlu_sim_totals(ps->be, &tot);
        json_t *sj = sim_json(&tot, dlu_sim_clock_hz(ps->be));
        json_object_set(sj, "epochs", ps->sim_epochs);
        json_object_set_new(j, "sim", sj);
    }
    json_object_set_new(j, "test_accuracy", json_real(r->test_accuracy));
    json_object_set_new(j, "test_loss", json_real(r->test_loss));
    json_object_set_new(j, "train_loss", json_real(r->train_loss));
    json_object_set_new(j, "samples_per_second", json_real(r->samples_per_second));
    json_object_set_new(j, "train_seconds", json_real(r->train_seconds));
    json_object_set_new(j, "gemm_share", json_real(r->gemm_share));
    json_object_set_new(j, "epochs", json_real(r->epochs));
    json_object_set_new(j, "steps", json_integer(r->steps));
    json_object_set_new(j, "samples", json_integer(r->samples));
    if (dlu_precision_is_dfp(&cfg->prec))
        json_object_set_new(j, "recomputed_steps", json_integer(r->recomputed_steps));
    json_object_set_new(j, "weights_digest", json_string(r->weights_digest));
    json_object_set_new(j, "net", json_string(net_path));
    json_object_set_new(j, "device", json_string(device));
    json_object_set_new(j, "format", json_string(format));
    if (dlu_precision_is_dfp(&cfg->prec)) {
        json_object_set_new(j, "round", json_string(round));
        json_object_set_new(j, "scale", json_string(scale));
    }
    json_object_set_new(j, "batch", json_integer(cfg->batch));
    json_object_set_new(j, "optimizer", json_string(cfg->optim.kind == DLU_OPTIM_ADAM ? "adam" : "sgd"));
    json_object_set_new(j, "lr", json_real(cfg->optim.lr));
    json_object_set_new(j, "momentum", json_real(cfg->optim.momentum));
    json_object_set_new(j, "weight_decay", json_real(cfg->optim.weight_decay));
    json_object_set_new(j, "seed", json_integer((json_int_t)cfg->seed));
    json_object_set_new(j, "threads", json_integer(threads));
    json_object_set_new(j, "version", json_string(PACKAGE_VERSION));
    if (uname(&u) == 0) {
        char host[400];
        snprintf(host, sizeof host, "%s %s %s", u.sysname, u.release, u.machine);
        json_object_set_new(j, "host", json_string(host));
    }
    int rc = json_dump_file(j, path, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(j);
    if (rc != 0) {
        cli_error("train", "--json %s: cannot write the report", path);
        return 0;
    }
    return 1;
}

int cmd_train(int argc, char **argv)
{
    enum { O_NET = 256, O_DATA, O_EPOCHS, O_MAXSTEPS, O_BATCH, O_OPT, O_LR, O_MOM, O_WD, O_SEED, O_DEVICE,
           O_FORMAT, O_THREADS, O_JSON, O_CKPT, O_CKPT_EVERY, O_RESUME, O_NOEVAL, O_QUIET, O_PROFILE, O_ROUND, O_SCALE, O_STATS, O_STATS_EVERY };
    static const struct option opts[] = {
        {"net", required_argument, 0, O_NET},       {"data", required_argument, 0, O_DATA},
        {"epochs", required_argument, 0, O_EPOCHS}, {"max-steps", required_argument, 0, O_MAXSTEPS},
        {"batch", required_argument, 0, O_BATCH},   {"optimizer", required_argument, 0, O_OPT},
        {"lr", required_argument, 0, O_LR},         {"momentum", required_argument, 0, O_MOM},
        {"weight-decay", required_argument, 0, O_WD}, {"seed", required_argument, 0, O_SEED},
        {"device", required_argument, 0, O_DEVICE}, {"format", required_argument, 0, O_FORMAT},
        {"threads", required_argument, 0, O_THREADS}, {"json", required_argument, 0, O_JSON},
        {"checkpoint", required_argument, 0, O_CKPT}, {"checkpoint-every", required_argument, 0, O_CKPT_EVERY},
        {"resume", required_argument, 0, O_RESUME}, {"no-eval", no_argument, 0, O_NOEVAL},
        {"quiet", no_argument, 0, O_QUIET},         {"profile", no_argument, 0, O_PROFILE},
        {"round", required_argument, 0, O_ROUND},   {"scale", required_argument, 0, O_SCALE},
        {"stats", required_argument, 0, O_STATS},   {"stats-every", required_argument, 0, O_STATS_EVERY},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *net_path = NULL, *data = DLU_DEFAULT_DATA, *device = "cpu", *json = NULL;
    long long threads = 0, v;
    int profile = 0;
    double d;
    dlu_train_cfg cfg;
    dlu_train_cfg_default(&cfg);
    progress_state ps = {.tty = isatty(STDERR_FILENO)};
    optind = 1;
    argv[0] = "dlu train";
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_NET: net_path = optarg; break;
        case O_DATA: data = optarg; break;
        case O_EPOCHS:
            if (!cli_int("train", "--epochs", optarg, 1, 1000000, &v)) return 2;
            cfg.epochs = (int)v;
            break;
        case O_MAXSTEPS:
            if (!cli_int("train", "--max-steps", optarg, 1, INT64_MAX, &v)) return 2;
            cfg.max_steps = v;
            break;
        case O_BATCH:
            if (!cli_int("train", "--batch", optarg, 1, 65536, &v)) return 2;
            cfg.batch = (int)v;
            break;
        case O_OPT:
            if (!strcmp(optarg, "sgd")) cfg.optim.kind = DLU_OPTIM_SGD;
            else if (!strcmp(optarg, "adam")) cfg.optim.kind = DLU_OPTIM_ADAM;
            else {
                cli_error("train", "--optimizer '%s': expected sgd or adam", optarg);
                return 2;
            }
            break;
        case O_LR:
            if (!cli_float("train", "--lr", optarg, 1e-30, 1e6, &d)) return 2;
            cfg.optim.lr = (float)d;
            break;
        case O_MOM:
            if (!cli_float("train", "--momentum", optarg, 0, 0.999999, &d)) return 2;
            cfg.optim.momentum = (float)d;
            break;
        case O_WD:
            if (!cli_float("train", "--weight-decay", optarg, 0, 1e6, &d)) return 2;
            cfg.optim.weight_decay = (float)d;
            break;
        case O_SEED:
            if (!cli_int("train", "--seed", optarg, 0, INT64_MAX, &v)) return 2;
            cfg.seed = (uint64_t)v;
            break;
        case O_DEVICE: device = optarg; break;
        case O_FORMAT:
            if (dlu_precision_parse_format(&cfg.prec, optarg) != DLU_OK) {
                cli_error("train", "%s", dlu_last_error());
                return 2;
            }
            break;
        case O_ROUND:
            if (dlu_precision_parse_round(&cfg.prec, optarg) != DLU_OK) {
                cli_error("train", "%s", dlu_last_error());
                return 2;
            }
            break;
        case O_SCALE:
            if (dlu_scale_parse(optarg, &cfg.scale) != DLU_OK) {
                cli_error("train", "--scale: %s", dlu_last_error());
                return 2;
            }
            break;
        case O_STATS: cfg.stats = optarg; break;
        case O_STATS_EVERY:
            if (!cli_int("train", "--stats-every", optarg, 1, INT64_MAX, &v)) return 2;
            cfg.stats_every = v;
            break;
        case O_THREADS:
            if (!cli_int("train", "--threads", optarg, 1, 1024, &threads)) return 2;
            break;
        case O_JSON: json = optarg; break;
        case O_CKPT: cfg.checkpoint = optarg; break;
        case O_CKPT_EVERY:
            if (!cli_int("train", "--checkpoint-every", optarg, 1, INT64_MAX, &v)) return 2;
            cfg.checkpoint_every = v;
            break;
        case O_RESUME: cfg.resume = optarg; break;
        case O_NOEVAL: cfg.eval_each_epoch = 0; break;
        case O_QUIET: ps.quiet = 1; break;
        case O_PROFILE: profile = 1; break;
        case 'h': fputs(help, stdout); return 0;
        default: return cli_usage_error("train");
        }
    }
    if (optind < argc) {
        cli_error("train", "unexpected argument '%s'", argv[optind]);
        return cli_usage_error("train");
    }
    if (!net_path) {
        cli_error("train", "--net FILE is required");
        return cli_usage_error("train");
    }
    if (dlu_precision_check(&cfg.prec) != DLU_OK) {
        cli_error("train", "%s", dlu_last_error());
        return 2;
    }
    char format[96], rounding[96], scale[256];
    dlu_precision_format_str(&cfg.prec, format, sizeof format);
    dlu_precision_round_str(&cfg.prec, rounding, sizeof rounding);
    dlu_scale_format_spec(&cfg.scale, scale, sizeof scale);
    int nthreads = dlu_cpu_set_threads((int)threads);

    dlu_net *net = NULL;
    dlu_dataset *tr = NULL, *te = NULL;
    dlu_backend *be = NULL;
    dlu_train_result res;
    int rc = 1;
    dlu_status s = dlu_backend_open(device, &be);
    if (s != DLU_OK) {
        cli_fail("train", "--device", s);
        rc = s == DLU_ENODEV || s == DLU_ENOMEM ? 1 : 2; /* else: a bad device string or config */
        goto out;
    }
    if (dlu_sim_is(be)) {
        ps.be = be;
        ps.sim_epochs = json_array();
    }
    /* Find unwritable output paths now, not after hours of training. */
    if ((json && !cli_writable("train", "--json", json)) ||
        (cfg.stats && !cli_writable("train", "--stats", cfg.stats)) ||
        (cfg.checkpoint && !cli_writable("train", "--checkpoint", cfg.checkpoint)))
        goto out;
    if ((s = dlu_net_load(net_path, &net)) != DLU_OK) {
        cli_fail("train", "net", s);
        goto out;
    }
    if ((s = dlu_dataset_load_dir(data, "train", &tr)) != DLU_OK ||
        (s = dlu_dataset_load_dir(data, "test", &te)) != DLU_OK) {
        cli_fail("train", "data", s);
        goto out;
    }
    cfg.progress = on_progress;
    cfg.user = &ps;
    if (!ps.quiet)
        printf("training %s on %s: %lld samples, batch %d, %d epoch(s), %s%s%s%s%s, %d thread(s)\n",
               dlu_net_name(net), device, (long long)dlu_dataset_count(tr), cfg.batch, cfg.epochs, format,
               dlu_precision_is_dfp(&cfg.prec) ? " round " : "", dlu_precision_is_dfp(&cfg.prec) ? rounding : "",
               dlu_precision_is_dfp(&cfg.prec) ? " scale " : "", dlu_precision_is_dfp(&cfg.prec) ? scale : "",
               nthreads);
    s = dlu_train(net, be, tr, te, &cfg, &res);
    if (ps.tty && !ps.quiet)
        fprintf(stderr, "\r\033[K");
    if (s != DLU_OK) {
        cli_fail("train", "training", s);
        goto out;
    }
    if (res.samples == 0)
        printf("nothing to train: the run is already at step %lld (--epochs %d%s)\n", (long long)res.steps, cfg.epochs,
               cfg.max_steps ? ", --max-steps reached" : "");
    printf("test accuracy %.2f%%  train loss %.4f  %.0f samples/s  %.1f%% of step time in GEMM  steps %lld\n"
           "weights digest %s\n",
           100.0 * res.test_accuracy, res.train_loss, res.samples_per_second, 100.0 * res.gemm_share,
           (long long)res.steps, res.weights_digest);
    if (profile)
        print_profile(net, &res);
    if (ps.be) {
        dlu_sim_counters tot;
        if (dlu_sim_totals(be, &tot) == DLU_OK)
            print_sim("simulated training to this accuracy", &tot, dlu_sim_clock_hz(be), be);
    }
    rc = 0;
    if (json && !write_report(json, net_path, device, format, rounding, scale, &cfg, nthreads, &res, &ps))
        rc = 1;
out:
    dlu_net_free(net);
    dlu_backend_close(be);
    dlu_dataset_free(tr);
    dlu_dataset_free(te);
    json_decref(ps.sim_epochs);
    return rc;
}
