/* train.c -- the training loop, evaluation and checkpoints of the training state.
 *
 * A checkpoint (libdl/ckpt_file.h container) holds these records:
 *   meta            JSON: kind ("training" or "weights"), net name, seed, batch, optimizer,
 *                   training-set size, and every parameter's name and shape
 *   state           6 x 64-bit little-endian: step, epoch, position in epoch (batches),
 *                   optimizer t, epoch loss sum (IEEE double bits), epoch loss count
 *   rng             GSL MT19937 state (gsl_rng_state bytes) behind the data order
 *   perm            the current epoch's sample order, 64-bit little-endian indices
 *   param:NAME      fp32 parameter bytes (little-endian), in parameter order
 *   optim:NAME      fp32 optimizer state
 * A run resumed from a checkpoint continues exactly where the saved run was: same
 * permutation, same RNG position, same optimizer state, so it ends with the same bits.
 *
 * Not here: printing. Progress goes to a caller-supplied callback. */
#include <gsl/gsl_randist.h>
#include <gsl/gsl_rng.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_impl.h"
#include "ckpt_file.h"
#include "dlu/sim.h"
#include "dlu/train.h"
#include "error.h"
#include "net_impl.h"
#include "seed.h"

void dlu_train_cfg_default(dlu_train_cfg *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->epochs = 1;
    cfg->batch = 128;
    cfg->eval_each_epoch = 1;
    cfg->progress_every = 10;
    cfg->stats_every = 1;
    dlu_optim_cfg_default(&cfg->optim);
    dlu_precision_default(&cfg->prec);
    dlu_scale_cfg_default(&cfg->scale);
}

/* Where batches come from. Backends whose memory the host can read (cpu, dlusim) get each
 * batch gathered on the host and copied in. A device backend with a gather kernel
 * (vt->gather: cuda) gets the data set once, as the IDX bytes, and the sample order once
 * per epoch; each batch is then gathered and converted to fp32 on the device. The order
 * is still drawn on the host (GSL), so every backend sees the same samples in the same
 * order. */
typedef struct batcher {
    dlu_backend *be;
    const dlu_dataset *ds;
    int64_t n, in;
    float *xh;               /* (batch, in) host staging (host path) */
    int32_t *yh;             /* (batch) */
    void *images, *labels;   /* device copies (device path), else NULL */
    int64_t *order;          /* (n) device sample order (device path) */
} batcher;

typedef struct trainer {
    dlu_net *net;
    dlu_backend *be;
    dlu_optim *opt;
    const dlu_dataset *train;
    const dlu_train_cfg *cfg;
    gsl_rng *rng;
    int64_t n;          /* training samples */
    int64_t *perm;      /* (n) */
    int64_t step, epoch, pos, steps_per_epoch;
    double loss_sum;
    int64_t loss_n;
    batcher data;       /* where the batches come from */
    dlu_tensor *x, *y;  /* on the backend */
} trainer;

static void put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* ---- checkpoints ------------------------------------------------------------------ */

static const char *optim_name(dlu_optim_kind k) { return k == DLU_OPTIM_ADAM ? "adam" : "sgd"; }

/* Threads change OpenBLAS's fp32 summation order, so an fp32 CPU run is reproducible only
 * with the same thread count: the checkpoint records it and resuming checks it. */
static int run_threads(const dlu_net *net)
{
    dlu_backend *be = dlu_net_backend(net);
    return be && !strcmp(dlu_backend_kind(be), "cpu") ? dlu_cpu_threads() : 0;
}

static char *meta_json(const dlu_net *net, const char *kind, const dlu_train_cfg *cfg, int64_t n)
{
    json_t *m = json_object();
    json_object_set_new(m, "kind", json_string(kind));
    json_object_set_new(m, "net", json_string(dlu_net_name(net)));
    if (cfg) {
        json_object_set_new(m, "seed", json_integer((json_int_t)cfg->seed));
        json_object_set_new(m, "batch", json_integer(cfg->batch));
        json_object_set_new(m, "optimizer", json_string(optim_name(cfg->optim.kind)));
        json_object_set_new(m, "train_samples", json_integer(n));
        json_object_set_new(m, "cpu_threads", json_integer(run_threads(net)));
        char f[96], r[96], sc[256];
        dlu_precision_format_str(&cfg->prec, f, sizeof f);
        dlu_precision_round_str(&cfg->prec, r, sizeof r);
        dlu_scale_format_spec(&cfg->scale, sc, sizeof sc);
        json_object_set_new(m, "format", json_string(f));
        json_object_set_new(m, "round", json_string(r));
        json_object_set_new(m, "scale", json_string(sc));
    }
    json_t *ps = json_array();
    for (int i = 0; i < dlu_net_nparams(net); i++) {
        int64_t shape[DLU_MAX_DIMS];
        int nd = dlu_net_param_shape(net, i, shape);
        json_t *sh = json_array();
        for (int d = 0; d < nd; d++)
            json_array_append_new(sh, json_integer(shape[d]));
        json_t *p = json_object();
        json_object_set_new(p, "name", json_string(dlu_net_param_name(net, i)));
        json_object_set_new(p, "shape", sh);
        json_array_append_new(ps, p);
    }
    json_object_set_new(m, "params", ps);
    char *s = json_dumps(m, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(m);
    return s;
}

static dlu_status put_tensor(dlu__ckpt *c, const char *prefix, const char *name, const dlu_tensor *t)
{
    char key[160];
    snprintf(key, sizeof key, "%s%s", prefix, name);
    void *buf = malloc(t->nbytes);
    if (!buf)
        return dlu__error(DLU_ENOMEM, "checkpoint: out of memory");
    dlu_status s = dlu_tensor_read(t, buf, t->nbytes);
    if (s == DLU_OK)
        s = dlu__ckpt_put(c, key, buf, t->nbytes);
    free(buf);
    return s;
}

static dlu_status get_tensor(const dlu__ckpt *c, const char *prefix, const char *name, dlu_tensor *t)
{
    char key[160];
    snprintf(key, sizeof key, "%s%s", prefix, name);
    void *buf = malloc(t->nbytes);
    if (!buf)
        return dlu__error(DLU_ENOMEM, "checkpoint: out of memory");
    dlu_status s = dlu__ckpt_get_exact(c, key, buf, t->nbytes);
    if (s == DLU_OK)
        s = dlu_tensor_write(t, buf, t->nbytes);
    free(buf);
    return s;
}

/* The DFP sites' scaling-policy state (record "scale"), so that a resumed DFP run picks
 * the same exponents as an unbroken one. */
static dlu_status put_scale(dlu__ckpt *c, const dlu_net *net)
{
    size_t n = dlu_net_scale_nbytes(net);
    if (!n)
        return DLU_OK;
    void *buf = malloc(n);
    if (!buf)
        return dlu__error(DLU_ENOMEM, "checkpoint: out of memory");
    dlu_net_scale_save(net, buf);
    dlu_status s = dlu__ckpt_put(c, "scale", buf, n);
    free(buf);
    return s;
}

/* required: a training checkpoint must have it; weights for evaluation may lack it (the
 * exponents are then calibrated on the first batch). */
static dlu_status get_scale(const dlu__ckpt *c, dlu_net *net, int required)
{
    if (!dlu_net_scale_nbytes(net))
        return DLU_OK;
    const void *data;
    uint64_t n;
    dlu_status s = dlu__ckpt_get(c, "scale", &data, &n);
    if (s != DLU_OK)
        return required ? s : DLU_OK;
    return dlu_net_scale_load(net, data, (size_t)n);
}

static dlu_status put_params(dlu__ckpt *c, const dlu_net *net)
{
    for (int i = 0; i < dlu_net_nparams(net); i++)
        DLU__TRY(put_tensor(c, "param:", dlu_net_param_name(net, i), dlu_net_param(net, i)));
    return DLU_OK;
}

/* Check that the checkpoint's parameter list equals the net's, naming the first difference. */
static dlu_status check_meta(const dlu__ckpt *c, const char *path, const dlu_net *net, json_t **meta_out)
{
    const void *data;
    uint64_t nbytes;
    DLU__TRY(dlu__ckpt_get(c, "meta", &data, &nbytes));
    json_error_t jerr;
    json_t *m = json_loadb(data, (size_t)nbytes, 0, &jerr);
    if (!m || !json_is_object(m)) {
        json_decref(m);
        return dlu__error(DLU_EFORMAT, "%s: checkpoint metadata is not valid JSON (%s)", path, jerr.text);
    }
    char *want = meta_json(net, "weights", NULL, 0);
    json_t *w = json_loads(want, 0, NULL);
    free(want);
    json_t *gp = json_object_get(m, "params"), *wp = json_object_get(w, "params");
    dlu_status s = DLU_OK;
    if (!json_is_array(gp)) {
        s = dlu__error(DLU_EFORMAT, "%s: checkpoint metadata has no parameter list", path);
    } else if (json_array_size(gp) != json_array_size(wp)) {
        s = dlu__error(DLU_ESHAPE, "%s: checkpoint has %zu parameter tensors, net %s has %zu", path,
                       json_array_size(gp), dlu_net_name(net), json_array_size(wp));
    } else {
        for (size_t i = 0; i < json_array_size(wp) && s == DLU_OK; i++)
            if (!json_equal(json_array_get(gp, i), json_array_get(wp, i))) {
                char *g = json_dumps(json_array_get(gp, i), JSON_COMPACT);
                char *e = json_dumps(json_array_get(wp, i), JSON_COMPACT);
                s = dlu__error(DLU_ESHAPE, "%s: parameter %zu differs: checkpoint has %s, net %s has %s", path, i,
                               g ? g : "?", dlu_net_name(net), e ? e : "?");
                free(g);
                free(e);
            }
    }
    json_decref(w);
    if (s != DLU_OK || !meta_out)
        json_decref(m);
    else
        *meta_out = m;
    return s;
}

dlu_status dlu_net_save_weights(const dlu_net *net, const char *path)
{
    dlu__ckpt *c;
    DLU__TRY(dlu__ckpt_new(&c));
    char *meta = meta_json(net, "weights", NULL, 0);
    dlu_status s = meta ? dlu__ckpt_put(c, "meta", meta, strlen(meta)) : dlu__error(DLU_ENOMEM, "out of memory");
    free(meta);
    if (s == DLU_OK)
        s = put_params(c, net);
    if (s == DLU_OK)
        s = dlu__ckpt_save(c, path);
    dlu__ckpt_free(c);
    return s;
}

dlu_status dlu_net_load_weights(dlu_net *net, const char *path)
{
    dlu__ckpt *c;
    DLU__TRY(dlu__ckpt_load(path, &c));
    dlu_status s = check_meta(c, path, net, NULL);
    for (int i = 0; i < dlu_net_nparams(net) && s == DLU_OK; i++)
        s = get_tensor(c, "param:", dlu_net_param_name(net, i), dlu_net_param(net, i));
    if (s == DLU_OK)
        s = get_scale(c, net, 0);
    dlu__ckpt_free(c);
    return s;
}

static dlu_status save_checkpoint(trainer *t)
{
    const dlu_train_cfg *cfg = t->cfg;
    dlu__ckpt *c;
    DLU__TRY(dlu__ckpt_new(&c));
    char *meta = meta_json(t->net, "training", cfg, t->n);
    dlu_status s = meta ? dlu__ckpt_put(c, "meta", meta, strlen(meta)) : dlu__error(DLU_ENOMEM, "out of memory");
    free(meta);
    uint8_t st[48];
    uint64_t lbits;
    memcpy(&lbits, &t->loss_sum, sizeof lbits);
    put_u64(st, (uint64_t)t->step);
    put_u64(st + 8, (uint64_t)t->epoch);
    put_u64(st + 16, (uint64_t)t->pos);
    put_u64(st + 24, (uint64_t)dlu_optim_steps(t->opt));
    put_u64(st + 32, lbits);
    put_u64(st + 40, (uint64_t)t->loss_n);
    if (s == DLU_OK)
        s = dlu__ckpt_put(c, "state", st, sizeof st);
    if (s == DLU_OK)
        s = dlu__ckpt_put(c, "rng", gsl_rng_state(t->rng), gsl_rng_size(t->rng));
    if (s == DLU_OK) {
        uint8_t *pb = malloc((size_t)t->n * 8);
        if (!pb)
            s = dlu__error(DLU_ENOMEM, "checkpoint: out of memory");
        else {
            for (int64_t i = 0; i < t->n; i++)
                put_u64(pb + 8 * i, (uint64_t)t->perm[i]);
            s = dlu__ckpt_put(c, "perm", pb, (uint64_t)t->n * 8);
            free(pb);
        }
    }
    if (s == DLU_OK)
        s = put_params(c, t->net);
    for (int i = 0; i < dlu_optim_nstate(t->opt) && s == DLU_OK; i++)
        s = put_tensor(c, "optim:", dlu_optim_state_name(t->opt, i), dlu_optim_state(t->opt, i));
    if (s == DLU_OK)
        s = put_scale(c, t->net);
    if (s == DLU_OK)
        s = dlu__ckpt_save(c, cfg->checkpoint);
    dlu__ckpt_free(c);
    return s == DLU_OK ? s : dlu__error_prefix(s, "writing checkpoint: ");
}

static dlu_status meta_str_matches(json_t *m, const char *path, const char *key, const char *want, const char *opt)
{
    json_t *v = json_object_get(m, key);
    if (!json_is_string(v))
        return dlu__error(DLU_EFORMAT, "%s: checkpoint metadata lacks '%s'", path, key);
    if (strcmp(json_string_value(v), want))
        return dlu__error(DLU_EINVAL, "%s: checkpoint was written with %s %s, this run has %s (resume with the "
                          "same value)", path, opt, json_string_value(v), want);
    return DLU_OK;
}

static dlu_status meta_int_matches(json_t *m, const char *path, const char *key, int64_t want, const char *opt)
{
    json_t *v = json_object_get(m, key);
    if (!json_is_integer(v))
        return dlu__error(DLU_EFORMAT, "%s: checkpoint metadata lacks '%s'", path, key);
    if ((int64_t)json_integer_value(v) != want)
        return dlu__error(DLU_EINVAL, "%s: checkpoint was written with %s %lld, this run has %lld (resume with the "
                          "same value)", path, opt, (long long)json_integer_value(v), (long long)want);
    return DLU_OK;
}

static dlu_status load_checkpoint(trainer *t, const char *path)
{
    dlu__ckpt *c;
    DLU__TRY(dlu__ckpt_load(path, &c));
    json_t *m = NULL;
    dlu_status s = check_meta(c, path, t->net, &m);
    if (s == DLU_OK) {
        json_t *kind = json_object_get(m, "kind"), *opt = json_object_get(m, "optimizer");
        if (!json_is_string(kind) || strcmp(json_string_value(kind), "training"))
            s = dlu__error(DLU_EFORMAT, "%s: holds weights only, not a training state (use it with dlu eval "
                           "--weights)", path);
        else if (!json_is_string(opt) || strcmp(json_string_value(opt), optim_name(t->cfg->optim.kind)))
            s = dlu__error(DLU_EINVAL, "%s: checkpoint was written with optimizer %s, this run uses %s", path,
                           json_is_string(opt) ? json_string_value(opt) : "?", optim_name(t->cfg->optim.kind));
    }
    if (s == DLU_OK)
        s = meta_int_matches(m, path, "seed", (int64_t)t->cfg->seed, "--seed");
    if (s == DLU_OK)
        s = meta_int_matches(m, path, "batch", t->cfg->batch, "--batch");
    if (s == DLU_OK)
        s = meta_int_matches(m, path, "train_samples", t->n, "a training set of size");
    if (s == DLU_OK && !dlu_precision_is_dfp(&t->cfg->prec)) /* DFP results do not depend on threads */
        s = meta_int_matches(m, path, "cpu_threads", run_threads(t->net), "--threads");
    char f[96], r[96], sc[256];
    dlu_precision_format_str(&t->cfg->prec, f, sizeof f);
    dlu_precision_round_str(&t->cfg->prec, r, sizeof r);
    dlu_scale_format_spec(&t->cfg->scale, sc, sizeof sc);
    if (s == DLU_OK)
        s = meta_str_matches(m, path, "format", f, "--format");
    if (s == DLU_OK && dlu_precision_is_dfp(&t->cfg->prec))
        s = meta_str_matches(m, path, "round", r, "--round");
    if (s == DLU_OK && dlu_precision_is_dfp(&t->cfg->prec))
        s = meta_str_matches(m, path, "scale", sc, "--scale");
    json_decref(m);
    uint8_t st[48];
    if (s == DLU_OK)
        s = dlu__ckpt_get_exact(c, "state", st, sizeof st);
    if (s == DLU_OK) {
        t->step = (int64_t)get_u64(st);
        t->epoch = (int64_t)get_u64(st + 8);
        t->pos = (int64_t)get_u64(st + 16);
        dlu_optim_set_steps(t->opt, (int64_t)get_u64(st + 24));
        uint64_t lbits = get_u64(st + 32);
        memcpy(&t->loss_sum, &lbits, sizeof lbits);
        t->loss_n = (int64_t)get_u64(st + 40);
        if (t->step < 0 || t->epoch < 0 || t->pos < 0 || t->pos >= t->steps_per_epoch || t->loss_n < 0)
            s = dlu__error(DLU_ECORRUPT, "%s: training state out of range (step %lld, epoch %lld, position %lld)",
                           path, (long long)t->step, (long long)t->epoch, (long long)t->pos);
    }
    if (s == DLU_OK)
        s = dlu__ckpt_get_exact(c, "rng", gsl_rng_state(t->rng), gsl_rng_size(t->rng));
    if (s == DLU_OK) {
        const void *pd;
        uint64_t pn;
        s = dlu__ckpt_get(c, "perm", &pd, &pn);
        if (s == DLU_OK && pn != (uint64_t)t->n * 8)
            s = dlu__error(DLU_ESHAPE, "%s: permutation has %llu bytes, expected %lld", path,
                           (unsigned long long)pn, (long long)t->n * 8);
        /* must be a permutation: every index once */
        uint8_t *seen = s == DLU_OK ? calloc((size_t)t->n, 1) : NULL;
        if (s == DLU_OK && !seen)
            s = dlu__error(DLU_ENOMEM, "out of memory");
        for (int64_t i = 0; i < t->n && s == DLU_OK; i++) {
            uint64_t v = get_u64((const uint8_t *)pd + 8 * i);
            if (v >= (uint64_t)t->n || seen[v])
                s = dlu__error(DLU_ECORRUPT, "%s: stored sample order is not a permutation (entry %lld)", path,
                               (long long)i);
            else {
                seen[v] = 1;
                t->perm[i] = (int64_t)v;
            }
        }
        free(seen);
    }
    for (int i = 0; i < dlu_net_nparams(t->net) && s == DLU_OK; i++)
        s = get_tensor(c, "param:", dlu_net_param_name(t->net, i), dlu_net_param(t->net, i));
    for (int i = 0; i < dlu_optim_nstate(t->opt) && s == DLU_OK; i++)
        s = get_tensor(c, "optim:", dlu_optim_state_name(t->opt, i), dlu_optim_state(t->opt, i));
    if (s == DLU_OK)
        s = get_scale(c, t->net, 1);
    dlu__ckpt_free(c);
    return s;
}

/* ---- statistics log ------------------------------------------------------------------- */

/* One JSON line: the step and, per DFP site, its format, the exponent it was produced
 * with and the statistics of that production (histogram as [k, count] pairs). */
static dlu_status write_stats(FILE *f, const char *path, const dlu_net *net, int64_t step, int epoch)
{
    json_t *j = json_object(), *sites = json_array();
    json_object_set_new(j, "step", json_integer(step));
    json_object_set_new(j, "epoch", json_integer(epoch));
    for (int i = 0; i < dlu_net_nsites(net); i++) {
        dlu_site_info si;
        dlu_net_site(net, i, &si);
        json_t *h = json_array();
        for (int b = 0; b < DLU_STATS_NBINS; b++)
            if (si.stats->hist[b])
                json_array_append_new(h, json_pack("[i, I]", b + DLU_STATS_KMIN, (json_int_t)si.stats->hist[b]));
        json_array_append_new(sites, json_pack("{s:s, s:s, s:s, s:i, s:b, s:I, s:I, s:I, s:I, s:I, s:o}", "name",
                                               si.name, "class", dlu_class_name(si.cls), "format",
                                               dlu_format_name(si.fmt), "exp", si.exp, "policy", si.policy, "count",
                                               (json_int_t)si.stats->count, "zeros", (json_int_t)si.stats->zeros,
                                               "overflow", (json_int_t)si.stats->overflow, "underflow",
                                               (json_int_t)si.stats->underflow, "nan", (json_int_t)si.stats->nan,
                                               "hist", h));
    }
    json_object_set_new(j, "sites", sites);
    int rc = json_dumpf(j, f, JSON_COMPACT);
    json_decref(j);
    if (rc != 0 || fputc('\n', f) == EOF)
        return dlu__error(DLU_EIO, "%s: writing the statistics failed", path);
    return DLU_OK;
}

/* ---- data ------------------------------------------------------------------------- */

static dlu_status check_data(const dlu_net *net, const dlu_dataset *ds, const char *what)
{
    int c, h, w, nc, nh, nw;
    dlu_dataset_shape(ds, &c, &h, &w);
    dlu_net_input_shape(net, &nc, &nh, &nw);
    if (c != nc || h != nh || w != nw)
        return dlu__error(DLU_ESHAPE, "%s set samples are %dx%dx%d but net %s takes %dx%dx%d", what, c, h, w,
                          dlu_net_name(net), nc, nh, nw);
    if (dlu_dataset_classes(ds) > dlu_net_classes(net))
        return dlu__error(DLU_ESHAPE, "%s set has labels up to %d but net %s has %d classes", what,
                          dlu_dataset_classes(ds) - 1, dlu_net_name(net), dlu_net_classes(net));
    return DLU_OK;
}

static dlu_status batcher_open(batcher *b, dlu_backend *be, const dlu_dataset *ds, int batch)
{
    int c, h, w;
    dlu_dataset_shape(ds, &c, &h, &w);
    *b = (batcher){.be = be, .ds = ds, .n = dlu_dataset_count(ds), .in = (int64_t)c * h * w};
    if (be->vt->gather && !be->vt->host_visible) {
        const size_t ni = (size_t)b->n * (size_t)b->in, nl = (size_t)b->n, no = (size_t)b->n * sizeof(int64_t);
        DLU__TRY(be->vt->alloc(be, ni, &b->images));
        DLU__TRY(be->vt->alloc(be, nl, &b->labels));
        DLU__TRY(be->vt->alloc(be, no, (void **)&b->order));
        DLU__TRY(be->vt->upload(be, b->images, dlu_dataset_images(ds), ni));
        return be->vt->upload(be, b->labels, dlu_dataset_labels(ds), nl);
    }
    b->xh = malloc((size_t)batch * (size_t)b->in * sizeof *b->xh);
    b->yh = malloc((size_t)batch * sizeof *b->yh);
    if (!b->xh || !b->yh)
        return dlu__error(DLU_ENOMEM, "out of memory for a batch of %d samples", batch);
    return DLU_OK;
}

static void batcher_close(batcher *b)
{
    if (b->images)
        b->be->vt->free(b->be, b->images);
    if (b->labels)
        b->be->vt->free(b->be, b->labels);
    if (b->order)
        b->be->vt->free(b->be, b->order);
    free(b->xh);
    free(b->yh);
    memset(b, 0, sizeof *b);
}

/* The sample order (n indices) the next batches index into. */
static dlu_status batcher_order(batcher *b, const int64_t *order)
{
    return b->order ? b->be->vt->upload(b->be, b->order, order, (size_t)b->n * sizeof *order) : DLU_OK;
}

/* Samples order[b0 .. b0+nb) into x (nb, in) f32 and y (nb) i32 on the backend. */
static dlu_status batcher_fill(batcher *b, const int64_t *order, int64_t b0, int nb, dlu_tensor *x, dlu_tensor *y)
{
    if (b->order)
        return b->be->vt->gather(b->be, b->images, b->labels, b->in, b->order + b0, nb, x, y);
    DLU__TRY(dlu_dataset_gather(b->ds, order + b0, nb, b->xh, b->yh));
    DLU__TRY(b->be->vt->upload(b->be, x->data, b->xh, (size_t)nb * b->in * sizeof *b->xh));
    return b->be->vt->upload(b->be, y->data, b->yh, (size_t)nb * sizeof *b->yh);
}

dlu_status dlu_evaluate(dlu_net *net, const dlu_dataset *ds, double *accuracy, double *loss)
{
    DLU__TRY(check_data(net, ds, "evaluation"));
    const int64_t n = dlu_dataset_count(ds);
    const int mb = dlu_net_max_batch(net);
    dlu_backend *be = dlu_net_backend(net);
    int64_t *idx = malloc((size_t)n * sizeof *idx);
    batcher bt = {0};
    dlu_tensor *x = NULL, *y = NULL;
    dlu_status s = !idx ? dlu__error(DLU_ENOMEM, "evaluate: out of memory") : DLU_OK;
    if (s == DLU_OK)
        s = batcher_open(&bt, be, ds, mb);
    int64_t xs[2] = {mb, bt.in}, ys[1] = {mb};
    if (s == DLU_OK)
        s = dlu_tensor_new_on(be, DLU_DTYPE_F32, 2, xs, &x);
    if (s == DLU_OK)
        s = dlu_tensor_new_on(be, DLU_DTYPE_I32, 1, ys, &y);
    for (int64_t k = 0; s == DLU_OK && k < n; k++)
        idx[k] = k;
    if (s == DLU_OK)
        s = batcher_order(&bt, idx);
    double lsum = 0.0;
    int64_t correct = 0;
    for (int64_t b0 = 0; b0 < n && s == DLU_OK; b0 += mb) {
        int nb = (int)(n - b0 < mb ? n - b0 : mb);
        s = batcher_fill(&bt, idx, b0, nb, x, y);
        double l = 0.0;
        int64_t cor = 0;
        if (s == DLU_OK)
            s = dlu_net_forward(net, x, y, nb, &l, &cor);
        if (s == DLU_OK)
            s = dlu_backend_sync(be); /* a device backend delivers the loss and count here */
        lsum += l * nb;
        correct += cor;
    }
    if (s == DLU_OK) {
        *accuracy = (double)correct / (double)n;
        if (loss)
            *loss = lsum / (double)n;
    }
    dlu_tensor_free(x);
    dlu_tensor_free(y);
    batcher_close(&bt);
    free(idx);
    return s;
}

/* Evaluation during dlu_train() must not count in the per-layer training times. */
static dlu_status eval_untimed(dlu_net *net, const dlu_dataset *ds, double *acc, double *loss)
{
    uint64_t *saved = malloc((size_t)net->nlayers * 2 * sizeof *saved);
    if (!saved)
        return dlu__error(DLU_ENOMEM, "evaluate: out of memory");
    for (int i = 0; i < net->nlayers; i++) {
        saved[2 * i] = net->layers[i].fwd_ns;
        saved[2 * i + 1] = net->layers[i].bwd_ns;
    }
    dlu_sim_set_counting(net->be, 0); /* the simulated DLU's counters too */
    dlu_status s = dlu_evaluate(net, ds, acc, loss);
    dlu_sim_set_counting(net->be, 1);
    for (int i = 0; i < net->nlayers; i++) {
        net->layers[i].fwd_ns = saved[2 * i];
        net->layers[i].bwd_ns = saved[2 * i + 1];
    }
    free(saved);
    return s;
}

/* ---- the loop ----------------------------------------------------------------------- */

static void trainer_free(trainer *t)
{
    dlu_optim_free(t->opt);
    if (t->rng)
        gsl_rng_free(t->rng);
    free(t->perm);
    batcher_close(&t->data);
    dlu_tensor_free(t->x);
    dlu_tensor_free(t->y);
}

static dlu_status check_cfg(const dlu_train_cfg *cfg)
{
    if (cfg->epochs < 1)
        return dlu__error(DLU_EINVAL, "epochs %d: must be at least 1", cfg->epochs);
    if (cfg->batch < 1 || cfg->batch > 65536)
        return dlu__error(DLU_EINVAL, "batch %d: must be in [1, 65536]", cfg->batch);
    if (cfg->max_steps < 0)
        return dlu__error(DLU_EINVAL, "max steps %lld: must be >= 0", (long long)cfg->max_steps);
    if (cfg->checkpoint_every < 0)
        return dlu__error(DLU_EINVAL, "checkpoint interval %lld: must be >= 0", (long long)cfg->checkpoint_every);
    if (cfg->stats_every < 1)
        return dlu__error(DLU_EINVAL, "statistics interval %lld: must be >= 1", (long long)cfg->stats_every);
    DLU__TRY(dlu_precision_check(&cfg->prec));
    return dlu_optim_cfg_check(&cfg->optim);
}

dlu_status dlu_train(dlu_net *net, dlu_backend *be, const dlu_dataset *train, const dlu_dataset *test,
                     const dlu_train_cfg *cfg, dlu_train_result *res)
{
    memset(res, 0, sizeof *res);
    DLU__TRY(check_cfg(cfg));
    DLU__TRY(check_data(net, train, "training"));
    if (test)
        DLU__TRY(check_data(net, test, "test"));
    trainer t = {.net = net, .be = be, .train = train, .cfg = cfg, .n = dlu_dataset_count(train)};
    int c, h, w;
    dlu_net_input_shape(net, &c, &h, &w);
    const int64_t in = (int64_t)c * h * w;
    t.steps_per_epoch = (t.n + cfg->batch - 1) / cfg->batch;
    dlu_status s = dlu_net_set_precision(net, &cfg->prec, &cfg->scale);
    if (s == DLU_OK)
        s = dlu_net_bind(net, be, cfg->batch);
    if (s == DLU_OK)
        s = dlu_optim_new(net, &cfg->optim, &t.opt);
    if (s == DLU_OK) {
        t.rng = gsl_rng_alloc(gsl_rng_mt19937);
        t.perm = malloc((size_t)t.n * sizeof *t.perm);
        if (!t.rng || !t.perm)
            s = dlu__error(DLU_ENOMEM, "train: out of memory");
    }
    if (s == DLU_OK)
        s = batcher_open(&t.data, be, train, cfg->batch);
    int64_t xs[2] = {cfg->batch, in}, ys[1] = {cfg->batch};
    if (s == DLU_OK)
        s = dlu_tensor_new_on(be, DLU_DTYPE_F32, 2, xs, &t.x);
    if (s == DLU_OK)
        s = dlu_tensor_new_on(be, DLU_DTYPE_I32, 1, ys, &t.y);
    if (s == DLU_OK) {
        /* The data order's RNG is separate from the init RNG (another stream of the same
         * seed) so that changing the net leaves the data order alone. */
        gsl_rng_set(t.rng, dlu__seed32(cfg->seed, 1));
        for (int64_t i = 0; i < t.n; i++)
            t.perm[i] = i;
        s = cfg->resume ? load_checkpoint(&t, cfg->resume) : dlu_net_init_params(net, cfg->seed);
    }
    const int64_t total = cfg->epochs * t.steps_per_epoch;
    const int64_t limit = cfg->max_steps && cfg->max_steps < total ? cfg->max_steps : total;
    const int64_t start_step = t.step;
    FILE *stats = NULL;
    if (s == DLU_OK && cfg->stats && dlu_net_nsites(net)) {
        stats = fopen(cfg->stats, cfg->resume ? "a" : "w");
        if (!stats)
            s = dlu__error(DLU_EIO, "%s: cannot open the statistics file: %s", cfg->stats, strerror(errno));
    }
    uint64_t train_ns = 0, gemm_ns = 0; /* inside training steps only, not evaluation */
    int64_t samples = 0, recomputed = 0;
    if (s == DLU_OK)
        dlu_net_layer_time_reset(net);
    while (s == DLU_OK && t.epoch < cfg->epochs && t.step < limit) {
        if (t.pos == 0) {
            gsl_ran_shuffle(t.rng, t.perm, (size_t)t.n, sizeof *t.perm);
            t.loss_sum = 0.0;
            t.loss_n = 0;
        }
        s = batcher_order(&t.data, t.perm); /* this epoch's order (also after a resume) */
        while (s == DLU_OK && t.pos < t.steps_per_epoch && t.step < limit) {
            uint64_t t0 = dlu__now_ns(), g0 = be->prof.gemm_ns;
            int64_t b0 = t.pos * cfg->batch;
            int nb = (int)(t.n - b0 < cfg->batch ? t.n - b0 : cfg->batch);
            double loss = 0.0;
            dlu_net_set_step(net, cfg->seed, (uint32_t)t.step);
            s = batcher_fill(&t.data, t.perm, b0, nb, t.x, t.y);
            if (s == DLU_OK)
                s = dlu_net_forward(net, t.x, t.y, nb, &loss, NULL);
            if (s == DLU_OK)
                s = dlu_net_backward(net);
            if (s == DLU_OK && dlu_net_recompute_wanted(net)) {
                /* once per step: the exponents have been raised by the overflowing sites */
                dlu_net_set_redo(net, 1);
                s = dlu_net_forward(net, t.x, t.y, nb, &loss, NULL);
                if (s == DLU_OK)
                    s = dlu_net_backward(net);
                dlu_net_set_redo(net, 0);
                recomputed++;
            }
            if (s == DLU_OK)
                s = dlu_optim_step(t.opt);
            if (s == DLU_OK)
                s = dlu_backend_sync(be);
            train_ns += dlu__now_ns() - t0;
            gemm_ns += be->prof.gemm_ns - g0;
            if (s != DLU_OK)
                break;
            samples += nb;
            if (stats && t.step % cfg->stats_every == 0)
                s = write_stats(stats, cfg->stats, net, t.step, (int)t.epoch);
            t.step++;
            t.pos++;
            t.loss_sum += loss;
            t.loss_n++;
            if (t.pos == t.steps_per_epoch) {
                t.pos = 0;
                t.epoch++;
            }
            if (cfg->progress && cfg->progress_every && t.step % cfg->progress_every == 0) {
                double sec = (double)train_ns * 1e-9, sps = sec > 0 ? samples / sec : 0;
                dlu_train_progress p = {.epoch = (int)t.epoch + (t.pos != 0), .epochs = cfg->epochs,
                                        .step = t.step, .total_steps = limit,
                                        .step_in_epoch = t.pos ? t.pos : t.steps_per_epoch,
                                        .steps_per_epoch = t.steps_per_epoch, .loss = t.loss_sum / t.loss_n,
                                        .samples_per_second = sps, .test_accuracy = -1,
                                        .eta_seconds = sps > 0 ? (double)(limit - t.step) * cfg->batch / sps : 0};
                cfg->progress(cfg->user, &p);
            }
            if (cfg->checkpoint && ((cfg->checkpoint_every && t.step % cfg->checkpoint_every == 0) ||
                                    (!cfg->checkpoint_every && t.pos == 0)))
                s = save_checkpoint(&t);
            if (t.pos == 0)
                break; /* epoch done */
        }
        if (s == DLU_OK && t.pos == 0 && cfg->progress) {
            double acc = -1;
            if (cfg->eval_each_epoch && test)
                s = eval_untimed(net, test, &acc, NULL);
            double sec = (double)train_ns * 1e-9;
            dlu_train_progress p = {.epoch = (int)t.epoch, .epochs = cfg->epochs, .step = t.step,
                                    .total_steps = limit, .step_in_epoch = t.steps_per_epoch,
                                    .steps_per_epoch = t.steps_per_epoch,
                                    .loss = t.loss_n ? t.loss_sum / t.loss_n : 0,
                                    .samples_per_second = sec > 0 ? samples / sec : 0, .epoch_done = 1,
                                    .test_accuracy = acc};
            if (s == DLU_OK)
                cfg->progress(cfg->user, &p);
        }
    }
    if (stats && fclose(stats) != 0 && s == DLU_OK)
        s = dlu__error(DLU_EIO, "%s: writing the statistics failed: %s", cfg->stats, strerror(errno));
    if (s == DLU_OK && cfg->checkpoint && t.step > start_step)
        s = save_checkpoint(&t); /* the final state, whatever the interval */
    if (s == DLU_OK && test)
        s = eval_untimed(net, test, &res->test_accuracy, &res->test_loss);
    if (s == DLU_OK)
        s = dlu_net_digest(net, res->weights_digest);
    if (s == DLU_OK) {
        res->train_seconds = (double)train_ns * 1e-9;
        res->samples = samples;
        res->samples_per_second = train_ns ? samples / res->train_seconds : 0;
        res->gemm_share = train_ns ? (double)gemm_ns / (double)train_ns : 0;
        res->steps = t.step;
        res->epochs = (double)t.step / (double)t.steps_per_epoch;
        res->train_loss = t.loss_n ? t.loss_sum / t.loss_n : 0;
        res->recomputed_steps = recomputed;
    }
    trainer_free(&t);
    return s;
}
