/* optim.h -- optimizers over a bound net's parameters: SGD with momentum, Adam.
 *
 * State (momentum, moments) lives on the net's backend in fp32, one tensor per parameter
 * per slot. Updates follow the fixed operation order written in
 * libdl/backend/cpu/cpu_backend.c and docs/numerics.md, so every backend gives the same
 * bits for the same gradients.
 *
 * Not here: K-FAC (a later issue), learning-rate schedules. */
#ifndef DLU_OPTIM_H
#define DLU_OPTIM_H

#include <stdint.h>

#include "dlu/net.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum dlu_optim_kind { DLU_OPTIM_SGD, DLU_OPTIM_ADAM } dlu_optim_kind;

typedef struct dlu_optim_cfg {
    dlu_optim_kind kind;
    float lr;           /* learning rate */
    float momentum;     /* SGD */
    float weight_decay; /* L2 added to the gradient (both) */
    float beta1, beta2, eps; /* Adam */
} dlu_optim_cfg;

/* Defaults of DESIGN.md section 5: SGD, lr 0.05, momentum 0.9, no weight decay;
 * Adam's betas 0.9 / 0.999, eps 1e-8. */
void dlu_optim_cfg_default(dlu_optim_cfg *cfg);

/* Validates the numbers (finite, lr > 0, momentum and betas in [0, 1), eps > 0,
 * weight decay >= 0): DLU_EINVAL naming the field otherwise. */
dlu_status dlu_optim_cfg_check(const dlu_optim_cfg *cfg);

typedef struct dlu_optim dlu_optim;

/* net must be bound. The optimizer borrows net (must outlive it). */
dlu_status dlu_optim_new(dlu_net *net, const dlu_optim_cfg *cfg, dlu_optim **out);
void dlu_optim_free(dlu_optim *o);

/* Apply one update from the net's current gradients. */
dlu_status dlu_optim_step(dlu_optim *o);

/* Updates applied so far (Adam's t); settable for resuming from a checkpoint. */
int64_t dlu_optim_steps(const dlu_optim *o);
void dlu_optim_set_steps(dlu_optim *o, int64_t t);

/* State tensors, for checkpoints: count, tensor and a stable name ("fc1.weight.momentum"). */
int dlu_optim_nstate(const dlu_optim *o);
dlu_tensor *dlu_optim_state(const dlu_optim *o, int i);
const char *dlu_optim_state_name(const dlu_optim *o, int i);

#ifdef __cplusplus
}
#endif
#endif
