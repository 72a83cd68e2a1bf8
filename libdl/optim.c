/* optim.c -- SGD with momentum and Adam over a net's parameters (the update kernels are
 * the backend's; this file owns the state and the per-step scalars). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend_impl.h"
#include "dlu/optim.h"
#include "error.h"

struct dlu_optim {
    dlu_net *net;
    dlu_optim_cfg cfg;
    int nparams, nslots;
    dlu_tensor **state; /* (nparams * nslots): [p * nslots + slot] */
    char (*names)[112];
    int64_t t;
};

void dlu_optim_cfg_default(dlu_optim_cfg *cfg)
{
    *cfg = (dlu_optim_cfg){.kind = DLU_OPTIM_SGD, .lr = 0.05f, .momentum = 0.9f, .weight_decay = 0.0f,
                           .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f};
}

dlu_status dlu_optim_cfg_check(const dlu_optim_cfg *c)
{
    if (!(c->lr > 0.0f) || !isfinite(c->lr))
        return dlu__error(DLU_EINVAL, "learning rate %g: must be a positive finite number", c->lr);
    if (!(c->momentum >= 0.0f && c->momentum < 1.0f))
        return dlu__error(DLU_EINVAL, "momentum %g: must be in [0, 1)", c->momentum);
    if (!(c->weight_decay >= 0.0f) || !isfinite(c->weight_decay))
        return dlu__error(DLU_EINVAL, "weight decay %g: must be >= 0 and finite", c->weight_decay);
    if (c->kind == DLU_OPTIM_ADAM) {
        if (!(c->beta1 >= 0.0f && c->beta1 < 1.0f) || !(c->beta2 >= 0.0f && c->beta2 < 1.0f))
            return dlu__error(DLU_EINVAL, "Adam betas %g, %g: must be in [0, 1)", c->beta1, c->beta2);
        if (!(c->eps > 0.0f) || !isfinite(c->eps))
            return dlu__error(DLU_EINVAL, "Adam eps %g: must be positive and finite", c->eps);
    } else if (c->kind != DLU_OPTIM_SGD) {
        return dlu__error(DLU_EINVAL, "unknown optimizer kind %d", (int)c->kind);
    }
    return DLU_OK;
}

void dlu_optim_free(dlu_optim *o)
{
    if (!o)
        return;
    if (o->state)
        for (int i = 0; i < o->nparams * o->nslots; i++)
            dlu_tensor_free(o->state[i]);
    free(o->state);
    free(o->names);
    free(o);
}

dlu_status dlu_optim_new(dlu_net *net, const dlu_optim_cfg *cfg, dlu_optim **out)
{
    *out = NULL;
    DLU__TRY(dlu_optim_cfg_check(cfg));
    dlu_backend *be = dlu_net_backend(net);
    if (!be)
        return dlu__error(DLU_EINVAL, "optimizer: net %s is not bound to a backend", dlu_net_name(net));
    dlu_optim *o = calloc(1, sizeof *o);
    if (!o)
        return dlu__error(DLU_ENOMEM, "optimizer: out of memory");
    o->net = net;
    o->cfg = *cfg;
    o->nparams = dlu_net_nparams(net);
    o->nslots = cfg->kind == DLU_OPTIM_ADAM ? 2 : 1;
    int ns = o->nparams * o->nslots;
    o->state = calloc((size_t)ns + 1, sizeof *o->state);
    o->names = calloc((size_t)ns + 1, sizeof *o->names);
    if (!o->state || !o->names) {
        dlu_optim_free(o);
        return dlu__error(DLU_ENOMEM, "optimizer: out of memory");
    }
    static const char *const slot_name[2][2] = {{"momentum", ""}, {"m", "v"}};
    for (int p = 0; p < o->nparams; p++) {
        const dlu_tensor *w = dlu_net_param(net, p);
        int64_t shape[DLU_MAX_DIMS];
        for (int d = 0; d < w->ndim; d++)
            shape[d] = w->shape[d];
        for (int s = 0; s < o->nslots; s++) {
            int i = p * o->nslots + s;
            dlu_status st = dlu_tensor_new_on(be, DLU_DTYPE_F32, w->ndim, shape, &o->state[i]);
            if (st != DLU_OK) {
                dlu_optim_free(o);
                return dlu__error_prefix(st, "optimizer state: ");
            }
            snprintf(o->names[i], sizeof o->names[i], "%s.%s", dlu_net_param_name(net, p),
                     slot_name[cfg->kind == DLU_OPTIM_ADAM][s]);
        }
    }
    *out = o;
    return DLU_OK;
}

dlu_status dlu_optim_step(dlu_optim *o)
{
    dlu_backend *be = dlu_net_backend(o->net);
    o->t++;
    const dlu_optim_cfg *c = &o->cfg;
    for (int p = 0; p < o->nparams; p++) {
        dlu_status s;
        if (c->kind == DLU_OPTIM_SGD) {
            dlu__sgd_args a = {.w = dlu_net_param(o->net, p), .v = o->state[p], .g = dlu_net_grad(o->net, p),
                               .lr = c->lr, .momentum = c->momentum, .weight_decay = c->weight_decay};
            s = be->vt->sgd_step(be, &a);
        } else {
            dlu__adam_args a = {.w = dlu_net_param(o->net, p), .m = o->state[2 * p], .v = o->state[2 * p + 1],
                                .g = dlu_net_grad(o->net, p), .lr = c->lr, .beta1 = c->beta1, .beta2 = c->beta2,
                                .eps = c->eps, .weight_decay = c->weight_decay,
                                .bc1 = (float)(1.0 - pow((double)c->beta1, (double)o->t)),
                                .bc2 = (float)(1.0 - pow((double)c->beta2, (double)o->t))};
            s = be->vt->adam_step(be, &a);
        }
        if (s != DLU_OK)
            return dlu__error_prefix(s, "optimizer step on %s: ", dlu_net_param_name(o->net, p));
    }
    return DLU_OK;
}

int64_t dlu_optim_steps(const dlu_optim *o) { return o->t; }
void dlu_optim_set_steps(dlu_optim *o, int64_t t) { o->t = t; }
int dlu_optim_nstate(const dlu_optim *o) { return o->nparams * o->nslots; }
dlu_tensor *dlu_optim_state(const dlu_optim *o, int i) { return o->state[i]; }
const char *dlu_optim_state_name(const dlu_optim *o, int i) { return o->names[i]; }
