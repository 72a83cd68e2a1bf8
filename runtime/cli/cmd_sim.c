/* cmd_sim.c -- `dlu sim`: what a training step of a net costs on the simulated DLU core.
 *
 * Binds the net to a dlusim backend in timing-only mode, runs --steps training steps
 * (forward, backward, optimizer update) on zero data, and reports per layer and per phase
 * the simulated cycles, unit utilisation, stall breakdown, bytes per level and energy by
 * component, as a table, JSON and CSV, with an optional Chrome trace. Values are not
 * computed here: `dlu train --device dlusim:CONFIG.ini` trains for real on the same model.
 *
 * Not here: the model (hw_model/) or the lowering (sim/). */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "config.h"
#include "dlu/backend.h"
#include "dlu/net.h"
#include "dlu/optim.h"
#include "dlu/precision.h"
#include "dlu/scale.h"
#include "dlu/sim.h"
#include "dlu/tensor.h"

static const char *const help =
    "usage: dlu sim --hw CONFIG.ini --net FILE [OPTIONS]\n"
    "\n"
    "Simulate training steps of a net on the DLU model (timing only) and print, per layer\n"
    "and phase (fwd, bwd_data, bwd_weight, stats, update): cycles, utilisation of each\n"
    "unit, a stall breakdown, bytes moved per level and energy by component.\n"
    "\n"
    "  --hw FILE       hardware config (INI), e.g. examples/hw/dlu-base.ini (required)\n"
    "  --net FILE      net description (.net), e.g. examples/nets/cnn.net (required)\n"
    "  --batch N       samples per step (default 128)\n"
    "  --format F      fp32, dfp8, dfp16 or w=..,a=..,e=..,g=.. (default dfp8)\n"
    "  --steps N       training steps to simulate (default 1); figures are per step\n"
    "  --json FILE     write the report as JSON\n"
    "  --csv FILE      write one row per layer and phase as CSV\n"
    "  --trace FILE    write a Chrome trace (open in https://ui.perfetto.dev)\n"
    "  --quiet         no table\n"
    "  -h, --help      this text\n";

typedef struct row {
    const char *layer;
    const char *phase;
    dlu_sim_counters c;
} row;

/* Units of each kind, for utilisation = busy cycles / (cycles * units). */
typedef struct units {
    double dpu, hbm_ch;
} units;

static double pct(uint64_t a, double b) { return b > 0 ? 100.0 * (double)a / b : 0.0; }

static double mac_util(const dlu_sim_counters *c, const units *u) { return dlu_sim_mac_utilisation(c, (int)u->dpu); }

/* The per-step figures of one counter set, as JSON. */
static json_t *counters_json(const dlu_sim_counters *c, int steps, double hz, const units *u)
{
    const double s = steps, cyc = (double)c->cycles;
    json_t *j = json_object();
    json_object_set_new(j, "cycles", json_real(cyc / s));
    json_object_set_new(j, "seconds", json_real(cyc / s / hz));
    json_t *ut = json_object();
    json_object_set_new(ut, "mac", json_real(mac_util(c, u)));
    json_object_set_new(ut, "dpe", json_real(pct(c->busy_mac + c->busy_vec, cyc * u->dpu) / 100));
    json_object_set_new(ut, "dma", json_real(pct(c->busy_dma, cyc * u->dpu) / 100));
    json_object_set_new(ut, "noc", json_real(pct(c->busy_noc, cyc * u->dpu) / 100));
    json_object_set_new(ut, "hbm", json_real(pct(c->busy_hbm, cyc * u->hbm_ch) / 100));
    json_object_set_new(j, "utilisation", ut);
    json_t *st = json_object();
    json_object_set_new(st, "compute", json_real((double)c->stall_compute / s));
    json_object_set_new(st, "memory", json_real((double)c->stall_memory / s));
    json_object_set_new(st, "network", json_real((double)c->stall_network / s));
    json_object_set_new(st, "statistics", json_real((double)c->stall_stats / s));
    json_object_set_new(st, "other", json_real((double)c->stall_other / s));
    json_object_set_new(j, "cycles_by_cause", st);
    json_t *b = json_object();
    json_object_set_new(b, "hbm_read", json_real((double)c->bytes_hbm_rd / s));
    json_object_set_new(b, "hbm_write", json_real((double)c->bytes_hbm_wr / s));
    json_object_set_new(b, "noc", json_real((double)c->bytes_noc / s));
    json_object_set_new(b, "local_mem", json_real((double)c->bytes_lmem / s));
    json_object_set_new(b, "register_file", json_real((double)c->bytes_rf / s));
    json_object_set_new(j, "bytes", b);
    json_t *e = json_object();
    for (int i = 0; i < DLU_SIM_NECOMP; i++)
        json_object_set_new(e, dlu_sim_ecomp_name((dlu_sim_ecomp)i), json_real(c->energy_pj[i] / s));
    json_object_set_new(e, "total", json_real(dlu_sim_counters_energy_pj(c) / s));
    json_object_set_new(j, "energy_pj", e);
    json_object_set_new(j, "macs", json_real((double)c->macs / s));
    json_object_set_new(j, "commands", json_real((double)c->commands / s));
    return j;
}

static void csv_header(FILE *f)
{
    fprintf(f, "layer,phase,cycles,seconds,mac_util,dpe_util,dma_util,noc_util,hbm_util,stall_compute,stall_memory,"
               "stall_network,stall_stats,stall_other,macs,hbm_read_bytes,hbm_write_bytes,noc_bytes,lmem_bytes,"
               "rf_bytes,commands");
    for (int i = 0; i < DLU_SIM_NECOMP; i++)
        fprintf(f, ",energy_%s_pj", dlu_sim_ecomp_name((dlu_sim_ecomp)i));
    fprintf(f, ",energy_pj\n");
}

static void csv_row(FILE *f, const row *r, int steps, double hz, const units *u)
{
    const dlu_sim_counters *c = &r->c;
    const double s = steps, cyc = (double)c->cycles;
    fprintf(f, "%s,%s,%.17g,%.17g,%.6f,%.6f,%.6f,%.6f,%.6f,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,%.17g,"
               "%.17g,%.17g",
            r->layer, r->phase, cyc / s, cyc / s / hz, mac_util(c, u),
            pct(c->busy_mac + c->busy_vec, cyc * u->dpu) / 100, pct(c->busy_dma, cyc * u->dpu) / 100,
            pct(c->busy_noc, cyc * u->dpu) / 100, pct(c->busy_hbm, cyc * u->hbm_ch) / 100, c->stall_compute / s,
            c->stall_memory / s, c->stall_network / s, c->stall_stats / s, c->stall_other / s, c->macs / s,
            c->bytes_hbm_rd / s, c->bytes_hbm_wr / s, c->bytes_noc / s, c->bytes_lmem / s, c->bytes_rf / s,
            c->commands / s);
    for (int i = 0; i < DLU_SIM_NECOMP; i++)
        fprintf(f, ",%.17g", c->energy_pj[i] / s);
    fprintf(f, ",%.17g\n", dlu_sim_counters_energy_pj(c) / s);
}

static void table_row(const row *r, int steps, double total_cycles, const units *u)
{
    const dlu_sim_counters *c = &r->c;
    const double s = steps, cyc = (double)c->cycles;
    const double mb = 1.0 / (1 << 20);
    printf("%-10s %-10s %12.0f %5.1f%% %5.1f%% %5.1f%% %5.1f%% | %5.1f %5.1f %5.1f %5.1f %5.1f | %8.3f %8.3f %9.3f\n",
           r->layer, r->phase, cyc / s, pct(c->cycles, total_cycles),
           100.0 * mac_util(c, u), pct(c->busy_dma, cyc * u->dpu),
           pct(c->busy_hbm, cyc * u->hbm_ch), pct(c->stall_compute, cyc), pct(c->stall_memory, cyc),
           pct(c->stall_network, cyc), pct(c->stall_stats, cyc), pct(c->stall_other, cyc),
           (double)(c->bytes_hbm_rd + c->bytes_hbm_wr) * mb / s, (double)c->bytes_noc * mb / s,
           dlu_sim_counters_energy_pj(c) * 1e-6 / s);
}

int cmd_sim(int argc, char **argv)
{
    enum { O_HW = 256, O_NET, O_BATCH, O_FORMAT, O_STEPS, O_JSON, O_CSV, O_TRACE, O_QUIET };
    static const struct option opts[] = {
        {"hw", required_argument, 0, O_HW},       {"net", required_argument, 0, O_NET},
        {"batch", required_argument, 0, O_BATCH}, {"format", required_argument, 0, O_FORMAT},
        {"steps", required_argument, 0, O_STEPS}, {"json", required_argument, 0, O_JSON},
        {"csv", required_argument, 0, O_CSV},     {"trace", required_argument, 0, O_TRACE},
        {"quiet", no_argument, 0, O_QUIET},       {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *hw = NULL, *net_path = NULL, *json = NULL, *csv = NULL, *trace = NULL;
    long long batch = 128, steps = 1;
    int quiet = 0;
    dlu_precision prec;
    dlu_precision_default(&prec);
    dlu_precision_parse_format(&prec, "dfp8");
    optind = 1;
    argv[0] = "dlu sim";
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case O_HW: hw = optarg; break;
        case O_NET: net_path = optarg; break;
        case O_BATCH:
            if (!cli_int("sim", "--batch", optarg, 1, 65536, &batch)) return 2;
            break;
        case O_STEPS:
            if (!cli_int("sim", "--steps", optarg, 1, 1000000, &steps)) return 2;
            break;
        case O_FORMAT:
            if (dlu_precision_parse_format(&prec, optarg) != DLU_OK) {
                cli_error("sim", "%s", dlu_last_error());
                return 2;
            }
            break;
        case O_JSON: json = optarg; break;
        case O_CSV: csv = optarg; break;
        case O_TRACE: trace = optarg; break;
        case O_QUIET: quiet = 1; break;
        case 'h': fputs(help, stdout); return 0;
        default: return cli_usage_error("sim");
        }
    }
    if (optind < argc) {
        cli_error("sim", "unexpected argument '%s'", argv[optind]);
        return cli_usage_error("sim");
    }
    if (!hw || !net_path) {
        cli_error("sim", "%s is required", !hw ? "--hw CONFIG.ini" : "--net FILE");
        return cli_usage_error("sim");
    }
    if (dlu_precision_check(&prec) != DLU_OK) {
        cli_error("sim", "%s", dlu_last_error());
        return 2;
    }
    if ((json && !cli_writable("sim", "--json", json)) || (csv && !cli_writable("sim", "--csv", csv)) ||
        (trace && !cli_writable("sim", "--trace", trace)))
        return 2;
    char format[96];
    dlu_precision_format_str(&prec, format, sizeof format);

    int rc = 1;
    dlu_backend *be = NULL;
    dlu_net *net = NULL;
    dlu_optim *opt = NULL;
    dlu_tensor *x = NULL, *y = NULL;
    row *rows = NULL;
    json_t *jr = NULL;
    char device[4096];
    snprintf(device, sizeof device, "dlusim:%s", hw);
    dlu_status s = dlu_backend_open(device, &be);
    if (s != DLU_OK) {
        cli_fail("sim", "--hw", s);
        return 2;
    }
    dlu_scale_cfg scale;
    dlu_scale_cfg_default(&scale);
    dlu_optim_cfg ocfg;
    dlu_optim_cfg_default(&ocfg);
    int ic, ih, iw;
    if ((s = dlu_sim_set_timing_only(be, 1)) != DLU_OK || (s = dlu_net_load(net_path, &net)) != DLU_OK ||
        (s = dlu_net_set_precision(net, &prec, &scale)) != DLU_OK || (s = dlu_net_bind(net, be, (int)batch)) != DLU_OK ||
        (s = dlu_optim_new(net, &ocfg, &opt)) != DLU_OK) {
        cli_fail("sim", net ? "net" : "device", s);
        goto out;
    }
    dlu_net_input_shape(net, &ic, &ih, &iw);
    int64_t xs[4] = {batch, ic, ih, iw}, ys[1] = {batch};
    if ((s = dlu_tensor_new_on(be, DLU_DTYPE_F32, 4, xs, &x)) != DLU_OK ||
        (s = dlu_tensor_new_on(be, DLU_DTYPE_I32, 1, ys, &y)) != DLU_OK) {
        cli_fail("sim", "tensors", s);
        goto out;
    }
    if (trace && (s = dlu_sim_trace(be, trace)) != DLU_OK) {
        cli_fail("sim", "--trace", s);
        goto out;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long long i = 0; i < steps; i++) {
        dlu_net_set_step(net, 0, (uint32_t)i);
        if ((s = dlu_net_forward(net, x, y, (int)batch, NULL, NULL)) != DLU_OK || (s = dlu_net_backward(net)) != DLU_OK ||
            (s = dlu_optim_step(opt)) != DLU_OK) {
            cli_fail("sim", "simulation", s);
            goto out;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    const double host_s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    const double hz = dlu_sim_clock_hz(be);
    dlu_sim_counters tot;
    dlu_sim_totals(be, &tot);
    const int nl = dlu_sim_nlayers(be);
    rows = calloc((size_t)nl * DLU_SIM_NPHASE, sizeof *rows);
    if (!rows) {
        cli_error("sim", "out of memory");
        goto out;
    }
    int nrows = 0;
    dlu_sim_counters phase_tot[DLU_SIM_NPHASE];
    memset(phase_tot, 0, sizeof phase_tot);
    for (int i = 0; i < nl; i++) {
        const char *name;
        dlu_sim_counters ph[DLU_SIM_NPHASE];
        dlu_sim_layer(be, i, &name, ph);
        for (int p = 0; p < DLU_SIM_NPHASE; p++) {
            dlu_sim_counters_add(&phase_tot[p], &ph[p]);
            if (ph[p].cycles == 0 && ph[p].commands == 0)
                continue;
            rows[nrows++] = (row){name, dlu_sim_phase_name((dlu_sim_phase)p), ph[p]};
        }
    }
    int ndpu, nch;
    dlu_sim_unit_counts(be, &ndpu, &nch);
    const units u = {ndpu, nch};
    const double per_step = (double)tot.cycles / (double)steps;
    if (!quiet) {
        printf("%s on %s: batch %lld, %s, %lld step(s) simulated in %.3f s of host time "
               "(%.3g simulated cycles per host second)\n",
               dlu_net_name(net), hw, batch, format, steps, host_s, host_s > 0 ? (double)tot.cycles / host_s : 0.0);
        printf("%-10s %-10s %12s %6s %6s %6s %6s | %-29s | %8s %8s %9s\n", "layer", "phase", "cycles", "share", "MAC",
               "DMA", "HBM", "cycles by cause: cmp mem net sta oth %", "HBM MiB", "NoC MiB", "energy uJ");
        for (int i = 0; i < nrows; i++)
            table_row(&rows[i], (int)steps, per_step * (double)steps, &u);
        printf("per phase:\n");
        for (int p = 0; p < DLU_SIM_NPHASE; p++) {
            row r = {"all", dlu_sim_phase_name((dlu_sim_phase)p), phase_tot[p]};
            if (phase_tot[p].cycles)
                table_row(&r, (int)steps, per_step * (double)steps, &u);
        }
        row r = {"step", "total", tot};
        table_row(&r, (int)steps, per_step * (double)steps, &u);
        printf("host time per layer and step (ms):");
        for (int k = 0; k < dlu_net_nlayers(net); k++) {
            uint64_t f, b;
            dlu_net_layer_time(net, k, &f, &b);
            printf(" %s %.3f", dlu_net_layer_name(net, k), (double)(f + b) * 1e-6 / (double)steps);
        }
        printf("\n");
        printf("per step: %.0f cycles = %.6g s at %.0f MHz, %.6g J (%.3g samples/s, %.3g samples/J), "
               "MAC utilisation %.1f%%\n",
               per_step, per_step / hz, hz * 1e-6, dlu_sim_counters_energy_pj(&tot) * 1e-12 / (double)steps,
               (double)batch * hz / per_step, (double)batch / (dlu_sim_counters_energy_pj(&tot) * 1e-12 / (double)steps),
               100.0 * mac_util(&tot, &u));
    }
    if (csv) {
        FILE *f = fopen(csv, "w");
        if (!f) {
            cli_error("sim", "--csv %s: cannot open for writing", csv);
            goto out;
        }
        csv_header(f);
        for (int i = 0; i < nrows; i++)
            csv_row(f, &rows[i], (int)steps, hz, &u);
        row r = {"step", "total", tot};
        csv_row(f, &r, (int)steps, hz, &u);
        if (fclose(f) != 0) {
            cli_error("sim", "--csv %s: write failed", csv);
            goto out;
        }
    }
    if (json) {
        jr = json_object();
        json_object_set_new(jr, "hw", json_string(hw));
        json_object_set_new(jr, "net", json_string(net_path));
        json_object_set_new(jr, "batch", json_integer(batch));
        json_object_set_new(jr, "format", json_string(format));
        json_object_set_new(jr, "steps", json_integer(steps));
        json_object_set_new(jr, "clock_hz", json_real(hz));
        json_object_set_new(jr, "host_seconds", json_real(host_s));
        json_object_set_new(jr, "cycles_per_host_second", json_real(host_s > 0 ? (double)tot.cycles / host_s : 0));
        json_t *layers = json_array();
        for (int i = 0; i < nl; i++) {
            const char *name;
            dlu_sim_counters ph[DLU_SIM_NPHASE];
            dlu_sim_layer(be, i, &name, ph);
            json_t *jl = json_object(), *jp = json_object();
            json_object_set_new(jl, "name", json_string(name));
            for (int k = 0; k < dlu_net_nlayers(net); k++)
                if (!strcmp(dlu_net_layer_name(net, k), name)) {
                    uint64_t f, b;
                    dlu_net_layer_time(net, k, &f, &b);
                    json_object_set_new(jl, "host_seconds", json_real((double)(f + b) * 1e-9 / (double)steps));
                }
            for (int p = 0; p < DLU_SIM_NPHASE; p++)
                json_object_set_new(jp, dlu_sim_phase_name((dlu_sim_phase)p), counters_json(&ph[p], (int)steps, hz, &u));
            json_object_set_new(jl, "phases", jp);
            json_array_append_new(layers, jl);
        }
        json_object_set_new(jr, "layers", layers);
        json_t *jp = json_object();
        for (int p = 0; p < DLU_SIM_NPHASE; p++)
            json_object_set_new(jp, dlu_sim_phase_name((dlu_sim_phase)p), counters_json(&phase_tot[p], (int)steps, hz, &u));
        json_object_set_new(jr, "phases", jp);
        json_object_set_new(jr, "step", counters_json(&tot, (int)steps, hz, &u));
        json_object_set_new(jr, "version", json_string(PACKAGE_VERSION));
        if (json_dump_file(jr, json, JSON_INDENT(2)) != 0) {
            cli_error("sim", "--json %s: cannot write the report", json);
            goto out;
        }
    }
    rc = 0;
out:
    json_decref(jr);
    free(rows);
    dlu_tensor_free(x);
    dlu_tensor_free(y);
    dlu_optim_free(opt);
    dlu_net_free(net);
    dlu_backend_close(be);
    return rc;
}
