/* net.c -- shapes, parameters, buffers and the forward/backward sweep of a net.
 *
 * The sweep is sequential: layer i reads layer i-1's output. Every layer owns its output
 * buffer y and its input gradient dx (the memory planner in runtime/ will later share
 * buffers); kernels come from the bound backend's table, and a NULL entry is reported
 * as unsupported rather than skipped. */
#include <gsl/gsl_rng.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "hash.h"
#include "seed.h"
#include "net_impl.h"

#define NL(net, i) (&(net)->layers[i].l)

dlu_status dlu__net_infer_shapes(dlu_net *net)
{
    int64_t c = net->in_c, h = net->in_h, w = net->in_w; /* int64: products are checked below */
    for (int i = 0; i < net->nlayers; i++) {
        dlu__layer *l = NL(net, i);
        l->in_c = (int)c, l->in_h = (int)h, l->in_w = (int)w;
        l->in_size = c * h * w;
        switch (l->op) {
        case DLU_OP_LINEAR:
            c = l->out, h = 1, w = 1;
            break;
        case DLU_OP_CONV2D:
        case DLU_OP_MAXPOOL:
        case DLU_OP_AVGPOOL: {
            int64_t hp = h + 2 * l->pad, wp = w + 2 * l->pad;
            if (l->kernel > hp || l->kernel > wp)
                return dlu__error(DLU_EFORMAT, "%s:%d: layer [%s]: kernel %d is larger than its padded input %lldx%lld",
                                  net->origin, l->line, l->name, l->kernel, (long long)hp, (long long)wp);
            if (l->op != DLU_OP_CONV2D && 2 * l->pad > l->kernel)
                return dlu__error(DLU_EFORMAT, "%s:%d: layer [%s]: pad %d is more than half the kernel %d",
                                  net->origin, l->line, l->name, l->pad, l->kernel);
            h = (hp - l->kernel) / l->stride + 1;
            w = (wp - l->kernel) / l->stride + 1;
            if (l->op == DLU_OP_CONV2D)
                c = l->filters;
            break;
        }
        case DLU_OP_FLATTEN:
            c = c * h * w, h = 1, w = 1;
            break;
        case DLU_OP_SOFTMAX_XENT:
            if (i != net->nlayers - 1)
                return dlu__error(DLU_EFORMAT, "%s:%d: layer [%s]: softmax_xent must be the last layer",
                                  net->origin, l->line, l->name);
            if (c * h * w < 2)
                return dlu__error(DLU_EFORMAT, "%s:%d: layer [%s]: softmax_xent needs at least 2 classes",
                                  net->origin, l->line, l->name);
            c = c * h * w, h = 1, w = 1;
            break;
        default:
            break;
        }
        if (c * h * w > INT32_MAX || l->in_size > INT32_MAX)
            return dlu__error(DLU_EFORMAT, "%s:%d: layer [%s]: 2^31 or more elements per sample",
                              net->origin, l->line, l->name);
        l->out_c = (int)c, l->out_h = (int)h, l->out_w = (int)w;
        l->out_size = c * h * w;
        net->layers[i].nparam = dlu_op_nparams(l->op) == 2 ? 1 + l->bias : 0;
    }
    dlu__layer *last = NL(net, net->nlayers - 1);
    if (last->op != DLU_OP_SOFTMAX_XENT)
        return dlu__error(DLU_EFORMAT, "%s:%d: the last layer [%s] is %s; a trainable net ends with "
                          "'op = softmax_xent'", net->origin, last->line, last->name, dlu_op_name(last->op));
    return DLU_OK;
}

void dlu_net_free(dlu_net *net)
{
    if (!net)
        return;
    for (int i = 0; i < net->nlayers; i++) {
        dlu__net_layer *L = &net->layers[i];
        for (int p = 0; p < DLU__NET_MAX_PARAMS; p++) {
            dlu_tensor_free(L->param[p]);
            dlu_tensor_free(L->grad[p]);
        }
        dlu_tensor_free(L->y);
        dlu_tensor_free(L->dx);
        dlu_tensor_free(L->aux);
        dlu_tensor_free(L->wq);
        for (int k = 0; k < DLU__SITE_COUNT; k++)
            dlu_scale_state_free(L->q[k].scale);
    }
    dlu_tensor_free(net->xq);
    dlu_scale_state_free(net->qx.scale);
    if (net->ws && net->be)
        net->be->vt->free(net->be, net->ws);
    free(net->layers);
    free(net);
}

const char *dlu_net_name(const dlu_net *net) { return net->name; }
int dlu_net_nlayers(const dlu_net *net) { return net->nlayers; }
const char *dlu_net_layer_name(const dlu_net *net, int i) { return NL(net, i)->name; }
dlu_op dlu_net_layer_op(const dlu_net *net, int i) { return NL(net, i)->op; }
dlu_backend *dlu_net_backend(const dlu_net *net) { return net->be; }
int dlu_net_max_batch(const dlu_net *net) { return net->max_batch; }

void dlu_net_layer_shape(const dlu_net *net, int i, int *c, int *h, int *w)
{
    const dlu__layer *l = NL(net, i);
    *c = l->out_c, *h = l->out_h, *w = l->out_w;
}

void dlu_net_input_shape(const dlu_net *net, int *c, int *h, int *w)
{
    *c = net->in_c, *h = net->in_h, *w = net->in_w;
}

int dlu_net_classes(const dlu_net *net) { return (int)NL(net, net->nlayers - 1)->in_size; }

static int64_t layer_macs(const dlu__layer *l)
{
    if (l->op == DLU_OP_LINEAR)
        return l->in_size * l->out;
    if (l->op == DLU_OP_CONV2D)
        return (int64_t)l->out_c * l->out_h * l->out_w * l->in_c * l->kernel * l->kernel;
    return 0;
}

int64_t dlu_net_forward_macs(const dlu_net *net)
{
    int64_t macs = 0;
    for (int i = 0; i < net->nlayers; i++)
        macs += layer_macs(NL(net, i));
    return macs;
}

/* Parameter index i -> (layer, slot). */
static int param_at(const dlu_net *net, int i, int *slot)
{
    *slot = 0;
    for (int li = 0; li < net->nlayers; li++) {
        if (i < net->layers[li].nparam) {
            *slot = i;
            return li;
        }
        i -= net->layers[li].nparam;
    }
    return -1;
}

int dlu_net_nparams(const dlu_net *net)
{
    int n = 0;
    for (int i = 0; i < net->nlayers; i++)
        n += net->layers[i].nparam;
    return n;
}

int dlu_net_param_shape(const dlu_net *net, int i, int64_t shape[DLU_MAX_DIMS])
{
    int slot, li = param_at(net, i, &slot);
    if (li < 0)
        return 0;
    const dlu__layer *l = NL(net, li);
    if (slot == 1) {
        shape[0] = l->op == DLU_OP_LINEAR ? l->out : l->filters;
        return 1;
    }
    if (l->op == DLU_OP_LINEAR) {
        shape[0] = l->out, shape[1] = l->in_size;
        return 2;
    }
    shape[0] = l->filters, shape[1] = l->in_c, shape[2] = l->kernel, shape[3] = l->kernel;
    return 4;
}

int64_t dlu_net_nparam_elems(const dlu_net *net)
{
    int64_t total = 0, shape[DLU_MAX_DIMS];
    for (int i = 0; i < dlu_net_nparams(net); i++) {
        int nd = dlu_net_param_shape(net, i, shape);
        int64_t e = 1;
        for (int d = 0; d < nd; d++)
            e *= shape[d];
        total += e;
    }
    return total;
}

const char *dlu_net_param_name(const dlu_net *net, int i)
{
    static _Thread_local char buf[96];
    int slot, li = param_at(net, i, &slot);
    if (li < 0)
        return "?";
    snprintf(buf, sizeof buf, "%s.%s", NL(net, li)->name, slot ? "bias" : "weight");
    return buf;
}

dlu_tensor *dlu_net_param(const dlu_net *net, int i)
{
    int slot, li = param_at(net, i, &slot);
    return li < 0 ? NULL : net->layers[li].param[slot];
}

dlu_tensor *dlu_net_grad(const dlu_net *net, int i)
{
    int slot, li = param_at(net, i, &slot);
    return li < 0 ? NULL : net->layers[li].grad[slot];
}

dlu_status dlu_net_set_precision(dlu_net *net, const dlu_precision *p, const dlu_scale_cfg *scale)
{
    if (net->be)
        return dlu__error(DLU_EINVAL, "net %s: number formats must be set before binding", net->name);
    DLU__TRY(dlu_precision_check(p));
    int dfp = dlu_precision_is_dfp(p);
    for (int i = 0; i < net->nlayers && dfp; i++) {
        const dlu__layer *l = NL(net, i);
        int area = l->kernel * l->kernel;
        if (l->op == DLU_OP_AVGPOOL && (area & (area - 1)))
            return dlu__error(DLU_EUNSUPPORTED, "%s:%d: layer [%s]: in dynamic fixed point avgpool needs a window "
                              "area that is a power of two (kernel 1, 2, 4, ...), not %d", net->origin, l->line,
                              l->name, area);
    }
    net->prec = *p;
    net->dfp = dfp;
    if (scale)
        net->scale = *scale;
    else
        dlu_scale_cfg_default(&net->scale);
    return DLU_OK;
}

void dlu_net_set_step(dlu_net *net, uint64_t seed, uint32_t step)
{
    net->seed = seed;
    net->step = step;
}

static dlu_dtype fmt_dtype(dlu_format f)
{
    return f == DLU_FMT_DFP8 ? DLU_DTYPE_I8 : f == DLU_FMT_DFP16 ? DLU_DTYPE_I16 : DLU_DTYPE_F32;
}

/* One DFP site: policy 1 gives it an exponent policy (when its format is DFP); 0 means
 * its exponent is inherited from the op's input. */
static dlu_status site_init(dlu_net *net, dlu__qsite *q, const char *layer, const char *what, dlu_tensor_class cls,
                            int policy, uint32_t id)
{
    q->used = 1;
    q->cls = cls;
    q->fmt = net->prec.fmt[cls];
    q->round = net->prec.round[cls];
    q->id = id;
    snprintf(q->name, sizeof q->name, "%s%s%s", layer, *layer ? "." : "", what);
    if (policy && dlu_format_is_dfp(q->fmt))
        return dlu_scale_state_new(&net->scale, q->fmt, &q->scale);
    return DLU_OK;
}

static dlu_status sites_init(dlu_net *net)
{
    DLU__TRY(site_init(net, &net->qx, "", "input", DLU_CLASS_A, 1, 0));
    for (int i = 0; i < net->nlayers; i++) {
        dlu__net_layer *L = &net->layers[i];
        const dlu__layer *l = &L->l;
        const int dense = l->op == DLU_OP_LINEAR || l->op == DLU_OP_CONV2D;
        const int requant = dense || l->op == DLU_OP_AVGPOOL; /* ops whose output gets a new exponent */
        const uint32_t id = 1u + 8u * (uint32_t)i;
        if (l->op != DLU_OP_SOFTMAX_XENT)
            DLU__TRY(site_init(net, &L->q[DLU__SITE_Y], l->name, "y", DLU_CLASS_A, requant, id + DLU__SITE_Y));
        if (i > 0)
            DLU__TRY(site_init(net, &L->q[DLU__SITE_DX], l->name, "dx", DLU_CLASS_E,
                               requant || l->op == DLU_OP_SOFTMAX_XENT, id + DLU__SITE_DX));
        if (dense) {
            DLU__TRY(site_init(net, &L->q[DLU__SITE_W], l->name, "w", DLU_CLASS_W, 1, id + DLU__SITE_W));
            DLU__TRY(site_init(net, &L->q[DLU__SITE_DW], l->name, "dw", DLU_CLASS_G, 1, id + DLU__SITE_DW));
            if (l->bias)
                DLU__TRY(site_init(net, &L->q[DLU__SITE_DB], l->name, "db", DLU_CLASS_G, 1, id + DLU__SITE_DB));
        }
    }
    return DLU_OK;
}

/* Feed every site's policy the statistics of the step just finished (the next
 * production asks the policy for its exponent; q->exp keeps the one last used), after
 * noting whether any site's overflow calls for recomputing the step (US 11,593,620). */
static void sites_update(dlu_net *net)
{
    int want = net->qx.scale && dlu_scale_want_recompute(net->qx.scale, &net->qx.stats);
    for (int i = 0; i < net->nlayers; i++)
        for (int k = 0; k < DLU__SITE_COUNT; k++) {
            dlu__qsite *q = &net->layers[i].q[k];
            if (q->used && q->scale && dlu_scale_want_recompute(q->scale, &q->stats))
                want = 1;
        }
    net->recompute_wanted = want;
    if (net->redo)
        return; /* a recomputed step's statistics repeat the step's own: not fed twice */
    if (net->qx.scale)
        dlu_scale_update(net->qx.scale, &net->qx.stats);
    for (int i = 0; i < net->nlayers; i++)
        for (int k = 0; k < DLU__SITE_COUNT; k++) {
            dlu__qsite *q = &net->layers[i].q[k];
            if (q->used && q->scale)
                dlu_scale_update(q->scale, &q->stats);
        }
}

int dlu_net_recompute_wanted(const dlu_net *net) { return net->recompute_wanted; }
void dlu_net_set_redo(dlu_net *net, int on) { net->redo = on; }

int dlu__site_exp(dlu__qsite *q, const dlu_stats *pre)
{
    if (!q->scale)
        return q->exp;
    q->exp = dlu_scale_calibrated(q->scale) ? dlu_scale_exp(q->scale) : dlu_scale_calibrate(q->scale, pre);
    return q->exp;
}

/* Site i of the public numbering: 0 = input, then used layer sites in slot order. */
static dlu__qsite *site_at(const dlu_net *net, int i, int *layer)
{
    if (!net->dfp || !net->be)
        return NULL;
    *layer = -1;
    if (i == 0)
        return (dlu__qsite *)&net->qx;
    i--;
    for (int li = 0; li < net->nlayers; li++)
        for (int k = 0; k < DLU__SITE_COUNT; k++) {
            dlu__qsite *q = (dlu__qsite *)&net->layers[li].q[k];
            if (q->used && i-- == 0) {
                *layer = li;
                return q;
            }
        }
    return NULL;
}

int dlu_net_nsites(const dlu_net *net)
{
    int n = 0, layer;
    while (site_at(net, n, &layer))
        n++;
    return n;
}

void dlu_net_site(const dlu_net *net, int i, dlu_site_info *info)
{
    int layer = -1;
    dlu__qsite *q = site_at(net, i, &layer);
    memset(info, 0, sizeof *info);
    if (!q)
        return;
    *info = (dlu_site_info){.name = q->name, .layer = layer, .cls = q->cls, .fmt = q->fmt, .round = q->round,
                            .exp = q->exp, .policy = q->scale != NULL, .stats = &q->stats};
}

size_t dlu_net_scale_nbytes(const dlu_net *net)
{
    size_t n = 0;
    int layer;
    for (int i = 0; site_at(net, i, &layer); i++) {
        dlu__qsite *q = site_at(net, i, &layer);
        if (q->scale)
            n += dlu_scale_state_nbytes(q->scale);
    }
    return n;
}

void dlu_net_scale_save(const dlu_net *net, void *buf)
{
    uint8_t *p = buf;
    int layer;
    for (int i = 0; site_at(net, i, &layer); i++) {
        dlu__qsite *q = site_at(net, i, &layer);
        if (q->scale) {
            dlu_scale_state_save(q->scale, p);
            p += dlu_scale_state_nbytes(q->scale);
        }
    }
}

dlu_status dlu_net_scale_load(dlu_net *net, const void *buf, size_t nbytes)
{
    if (nbytes != dlu_net_scale_nbytes(net))
        return dlu__error(DLU_ESHAPE, "net %s: scaling state of %zu bytes, expected %zu", net->name, nbytes,
                          dlu_net_scale_nbytes(net));
    const uint8_t *p = buf;
    int layer;
    for (int i = 0; site_at(net, i, &layer); i++) {
        dlu__qsite *q = site_at(net, i, &layer);
        if (!q->scale)
            continue;
        size_t n = dlu_scale_state_nbytes(q->scale);
        dlu_status s = dlu_scale_state_load(q->scale, p, n);
        if (s != DLU_OK)
            return dlu__error_prefix(s, "net %s: site %s: ", net->name, q->name);
        p += n;
    }
    return DLU_OK;
}

dlu_status dlu_net_bind(dlu_net *net, dlu_backend *be, int max_batch)
{
    if (net->be)
        return dlu__error(DLU_EINVAL, "net %s: already bound to %s", net->name, net->be->device);
    if (max_batch < 1 || max_batch > (1 << 20))
        return dlu__error(DLU_EINVAL, "net %s: batch size %d out of range [1, 2^20]", net->name, max_batch);
    for (int i = 0; i < net->nlayers; i++) {
        dlu_op op = NL(net, i)->op;
        dlu__kernel_fn const *fwd = net->dfp ? be->vt->forward_dfp : be->vt->forward;
        dlu__kernel_fn const *bwd = net->dfp ? be->vt->backward_dfp : be->vt->backward;
        if (!fwd[op] || !bwd[op] || (net->dfp && !be->vt->quantize))
            return dlu__error(DLU_EUNSUPPORTED, "net %s: layer [%s]: op %s in %s is not supported by the %s backend",
                              net->name, NL(net, i)->name, dlu_op_name(op), net->dfp ? "dynamic fixed point" : "fp32",
                              be->vt->kind);
    }
    net->be = be;
    net->max_batch = max_batch;
    dlu_status s = DLU_OK;
    size_t ws = 0;
    int p = 0;
    for (int i = 0; i < net->nlayers && s == DLU_OK; i++) {
        dlu__net_layer *L = &net->layers[i];
        dlu__layer *l = &L->l;
        int64_t shape[DLU_MAX_DIMS];
        for (int k = 0; k < L->nparam && s == DLU_OK; k++, p++) {
            int nd = dlu_net_param_shape(net, p, shape);
            s = dlu_tensor_new_on(be, DLU_DTYPE_F32, nd, shape, &L->param[k]);
            if (s == DLU_OK)
                s = dlu_tensor_new_on(be, DLU_DTYPE_F32, nd, shape, &L->grad[k]);
        }
        int64_t ys[2] = {max_batch, l->out_size}, xs[2] = {max_batch, l->in_size};
        const dlu_dtype yt = l->op == DLU_OP_SOFTMAX_XENT ? DLU_DTYPE_F32 : fmt_dtype(net->prec.fmt[DLU_CLASS_A]);
        if (s == DLU_OK)
            s = dlu_tensor_new_on(be, yt, 2, ys, &L->y);
        if (s == DLU_OK && i > 0)
            s = dlu_tensor_new_on(be, fmt_dtype(net->prec.fmt[DLU_CLASS_E]), 2, xs, &L->dx);
        if (s == DLU_OK && net->dfp && L->nparam) {
            int nd = dlu_net_param_shape(net, p - L->nparam, shape);
            s = dlu_tensor_new_on(be, fmt_dtype(net->prec.fmt[DLU_CLASS_W]), nd, shape, &L->wq);
        }
        if (s == DLU_OK && l->op == DLU_OP_MAXPOOL)
            s = dlu_tensor_new_on(be, DLU_DTYPE_I32, 2, ys, &L->aux);
        if (s == DLU_OK && l->op == DLU_OP_SOFTMAX_XENT)
            s = dlu_tensor_new_on(be, DLU_DTYPE_F32, 2, xs, &L->aux);
        size_t need = be->vt->ws_nbytes(l, max_batch, net->dfp);
        if (need > ws)
            ws = need;
    }
    if (s == DLU_OK && ws)
        s = be->vt->alloc(be, ws, &net->ws);
    if (s == DLU_OK && net->dfp) {
        int64_t xs[2] = {max_batch, (int64_t)net->in_c * net->in_h * net->in_w};
        s = dlu_tensor_new_on(be, fmt_dtype(net->prec.fmt[DLU_CLASS_A]), 2, xs, &net->xq);
        if (s == DLU_OK)
            s = sites_init(net);
    }
    net->ws_nbytes = ws;
    if (s != DLU_OK)
        return dlu__error_prefix(s, "net %s: binding to %s for batch %d: ", net->name, be->device, max_batch);
    return DLU_OK;
}

dlu_status dlu_net_init_params(dlu_net *net, uint64_t seed)
{
    if (!net->be)
        return dlu__error(DLU_EINVAL, "net %s: init before bind", net->name);
    gsl_rng *r = gsl_rng_alloc(gsl_rng_mt19937);
    if (!r)
        return dlu__error(DLU_ENOMEM, "net %s: cannot allocate an RNG", net->name);
    gsl_rng_set(r, dlu__seed32(seed, 0));
    dlu_status s = DLU_OK;
    for (int i = 0; i < dlu_net_nparams(net) && s == DLU_OK; i++) {
        int slot, li = param_at(net, i, &slot);
        const dlu__layer *l = NL(net, li);
        int64_t fan_in = l->op == DLU_OP_LINEAR ? l->in_size : (int64_t)l->in_c * l->kernel * l->kernel;
        double bound = 1.0 / sqrt((double)fan_in);
        dlu_tensor *t = net->layers[li].param[slot];
        int64_t n = dlu_tensor_nelem(t);
        float *host = malloc((size_t)n * sizeof *host);
        if (!host) {
            s = dlu__error(DLU_ENOMEM, "net %s: out of memory", net->name);
            break;
        }
        for (int64_t k = 0; k < n; k++)
            host[k] = (float)((2.0 * gsl_rng_uniform(r) - 1.0) * bound);
        s = dlu_tensor_write(t, host, (size_t)n * sizeof *host);
        free(host);
    }
    gsl_rng_free(r);
    return s;
}

static void layer_args(dlu_net *net, int i, int n, dlu__op_args *a)
{
    dlu__net_layer *L = &net->layers[i];
    memset(a, 0, sizeof *a);
    a->l = &L->l;
    a->n = n;
    a->x = i ? net->layers[i - 1].y : net->dfp ? net->xq : net->last_x;
    a->y = L->y;
    a->dy = i + 1 < net->nlayers ? net->layers[i + 1].dx : NULL;
    a->dx = L->dx;
    a->w = L->param[0];
    a->b = L->nparam > 1 ? L->param[1] : NULL;
    a->dw = L->grad[0];
    a->db = L->nparam > 1 ? L->grad[1] : NULL;
    a->aux = L->aux;
    a->labels = net->last_labels;
    a->ws = net->ws;
    if (net->dfp) {
        a->qy = L->q[DLU__SITE_Y].used ? &L->q[DLU__SITE_Y] : NULL;
        a->qdx = L->q[DLU__SITE_DX].used ? &L->q[DLU__SITE_DX] : NULL;
        a->qw = L->q[DLU__SITE_W].used ? &L->q[DLU__SITE_W] : NULL;
        a->qdw = L->q[DLU__SITE_DW].used ? &L->q[DLU__SITE_DW] : NULL;
        a->qdb = L->q[DLU__SITE_DB].used ? &L->q[DLU__SITE_DB] : NULL;
        a->wq = L->wq;
        a->seed = net->seed;
        a->step = net->step;
    }
}

dlu_status dlu_net_forward(dlu_net *net, const dlu_tensor *x, const dlu_tensor *labels, int n, double *loss,
                           int64_t *correct)
{
    if (!net->be)
        return dlu__error(DLU_EINVAL, "net %s: forward before bind", net->name);
    if (n < 1 || n > net->max_batch)
        return dlu__error(DLU_EINVAL, "net %s: batch of %d samples, bound for 1..%d", net->name, n, net->max_batch);
    int64_t in = (int64_t)net->in_c * net->in_h * net->in_w;
    if (x->dtype != DLU_DTYPE_F32 || dlu_tensor_nelem(x) < n * in)
        return dlu__error(DLU_ESHAPE, "net %s: input must be f32 with at least %d x %lld elements", net->name, n,
                          (long long)in);
    if (labels->dtype != DLU_DTYPE_I32 || dlu_tensor_nelem(labels) < n)
        return dlu__error(DLU_ESHAPE, "net %s: labels must be i32 with at least %d elements", net->name, n);
    if (!labels->be || labels->be->vt->host_visible) {
        const int32_t *lab = labels->data;
        int classes = dlu_net_classes(net);
        for (int k = 0; k < n; k++)
            if (lab[k] < 0 || lab[k] >= classes)
                return dlu__error(DLU_ERANGE, "net %s: label %d of sample %d is outside [0, %d)", net->name,
                                  lab[k], k, classes);
    }
    net->last_x = x;
    net->last_labels = labels;
    net->last_n = n;
    if (net->dfp) {
        dlu_status s = net->be->vt->quantize(net->be, x, (size_t)n * in, net->xq, &net->qx, net->seed, net->step);
        if (s != DLU_OK)
            return dlu__error_prefix(s, "quantizing the input: ");
    }
    dlu__kernel_fn const *fwd = net->dfp ? net->be->vt->forward_dfp : net->be->vt->forward;
    for (int i = 0; i < net->nlayers; i++) {
        dlu__op_args a;
        layer_args(net, i, n, &a);
        a.loss = loss;
        a.correct = correct;
        uint64_t t0 = dlu__now_ns();
        dlu_status s = fwd[a.l->op](net->be, &a);
        net->layers[i].fwd_ns += dlu__now_ns() - t0;
        if (s != DLU_OK)
            return dlu__error_prefix(s, "layer [%s] forward: ", a.l->name);
    }
    return DLU_OK;
}

dlu_status dlu_net_backward(dlu_net *net)
{
    if (!net->last_n)
        return dlu__error(DLU_EINVAL, "net %s: backward without a forward", net->name);
    dlu__kernel_fn const *bwd = net->dfp ? net->be->vt->backward_dfp : net->be->vt->backward;
    for (int i = net->nlayers - 1; i >= 0; i--) {
        dlu__op_args a;
        layer_args(net, i, net->last_n, &a);
        uint64_t t0 = dlu__now_ns();
        dlu_status s = bwd[a.l->op](net->be, &a);
        net->layers[i].bwd_ns += dlu__now_ns() - t0;
        if (s != DLU_OK)
            return dlu__error_prefix(s, "layer [%s] backward: ", a.l->name);
    }
    if (net->dfp) {
        /* A device backend delivers the statistics of the step at its sync. */
        dlu_status s = net->be->vt->sync(net->be);
        if (s != DLU_OK)
            return dlu__error_prefix(s, "net %s: finishing the step: ", net->name);
        sites_update(net); /* delayed scaling: this step's statistics set the next step's exponents */
    }
    return DLU_OK;
}

dlu_status dlu_net_digest(const dlu_net *net, char hex[65])
{
    if (!net->be)
        return dlu__error(DLU_EINVAL, "net %s: digest before bind", net->name);
    dlu__sha256 *h;
    DLU__TRY(dlu__sha256_new(&h));
    dlu_status s = DLU_OK;
    for (int i = 0; i < dlu_net_nparams(net) && s == DLU_OK; i++) {
        dlu_tensor *t = dlu_net_param(net, i);
        void *buf = malloc(t->nbytes);
        if (!buf) {
            s = dlu__error(DLU_ENOMEM, "digest: out of memory");
            break;
        }
        s = dlu_tensor_read(t, buf, t->nbytes);
        if (s == DLU_OK)
            dlu__sha256_update(h, buf, t->nbytes);
        free(buf);
    }
    uint8_t d[32];
    dlu__sha256_final(h, d);
    dlu__sha256_free(h);
    if (s == DLU_OK)
        dlu__sha256_hex(d, hex);
    return s;
}

void dlu_net_layer_time(const dlu_net *net, int i, uint64_t *fwd_ns, uint64_t *bwd_ns)
{
    *fwd_ns = net->layers[i].fwd_ns;
    *bwd_ns = net->layers[i].bwd_ns;
}

void dlu_net_layer_time_reset(dlu_net *net)
{
    for (int i = 0; i < net->nlayers; i++)
        net->layers[i].fwd_ns = net->layers[i].bwd_ns = 0;
}

void dlu_net_print(const dlu_net *net, FILE *f)
{
    fprintf(f, "net %s (%s): input %dx%dx%d\n", net->name, net->origin, net->in_c, net->in_h, net->in_w);
    fprintf(f, "  %-12s %-13s %-14s %10s %12s\n", "layer", "op", "output", "params", "MACs/sample");
    int p = 0;
    for (int i = 0; i < net->nlayers; i++) {
        const dlu__layer *l = NL(net, i);
        int64_t np = 0, shape[DLU_MAX_DIMS];
        for (int k = 0; k < net->layers[i].nparam; k++, p++) {
            int nd = dlu_net_param_shape(net, p, shape);
            int64_t e = 1;
            for (int d = 0; d < nd; d++)
                e *= shape[d];
            np += e;
        }
        int64_t macs = layer_macs(l);
        char shp[32];
        snprintf(shp, sizeof shp, "%dx%dx%d", l->out_c, l->out_h, l->out_w);
        fprintf(f, "  %-12s %-13s %-14s %10lld %12lld\n", l->name, dlu_op_name(l->op), shp, (long long)np,
                (long long)macs);
    }
    fprintf(f, "  total: %lld parameters, %lld MACs per sample (forward)\n", (long long)dlu_net_nparam_elems(net),
            (long long)dlu_net_forward_macs(net));
}
