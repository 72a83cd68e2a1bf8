/* net.h -- nets as data: the .net text format, shapes, parameters, forward and backward.
 *
 * A net is a sequence of layers read from a .net file (INI syntax, parsed with inih;
 * the format is documented in docs/net-format.md). dlu_net_load() parses and infers
 * shapes without touching any device; dlu_net_bind() then allocates parameters and
 * activation buffers on one backend for batches of up to max_batch samples.
 *
 * Parameters are ordered layer by layer, weight before bias; that order defines
 * dlu_net_param(), checkpoints and the weights digest.
 *
 * Not here: the training loop (train.h), optimizers (optim.h), partitioning (runtime/). */
#ifndef DLU_NET_H
#define DLU_NET_H

#include <stdint.h>
#include <stdio.h>

#include "dlu/backend.h"
#include "dlu/numerics.h"
#include "dlu/precision.h"
#include "dlu/scale.h"
#include "dlu/status.h"
#include "dlu/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dlu_net dlu_net;

/* Parse a .net file. Errors name "path:line: what was wrong, what was expected"
 * (DLU_EFORMAT), or DLU_EIO when the file cannot be read. */
dlu_status dlu_net_load(const char *path, dlu_net **out);
/* Same from a string; `origin` names it in messages. */
dlu_status dlu_net_parse(const char *text, const char *origin, dlu_net **out);
void dlu_net_free(dlu_net *net); /* NULL is fine; frees everything bound too */

const char *dlu_net_name(const dlu_net *net);
int dlu_net_nlayers(const dlu_net *net);
const char *dlu_net_layer_name(const dlu_net *net, int i);
dlu_op dlu_net_layer_op(const dlu_net *net, int i);
/* Per-sample output shape of layer i (c, h, w; a flat layer reports c = features, h = w = 1). */
void dlu_net_layer_shape(const dlu_net *net, int i, int *c, int *h, int *w);
void dlu_net_input_shape(const dlu_net *net, int *c, int *h, int *w);
/* Number of classes: the width of the softmax_xent layer's input. */
int dlu_net_classes(const dlu_net *net);
/* Multiply-accumulates of one sample's forward pass. */
int64_t dlu_net_forward_macs(const dlu_net *net);

/* Parameter tensors in the canonical order; names like "conv1.weight" (dlu_net_param_name
 * returns a thread-local buffer, valid until the next call on the same thread). */
int dlu_net_nparams(const dlu_net *net);
int64_t dlu_net_nparam_elems(const dlu_net *net);
const char *dlu_net_param_name(const dlu_net *net, int i);
/* Valid after dlu_net_bind(): the tensors live on the bound backend. */
dlu_tensor *dlu_net_param(const dlu_net *net, int i);
dlu_tensor *dlu_net_grad(const dlu_net *net, int i);
/* Shape of parameter i, before binding too. Returns ndim. */
int dlu_net_param_shape(const dlu_net *net, int i, int64_t shape[DLU_MAX_DIMS]);

/* Number formats of the training step (default: all fp32) and the exponent policy of DFP
 * tensors. Call before dlu_net_bind(). Errors: DLU_EUNSUPPORTED for a combination
 * dlu_precision_check() rejects, or a DFP op this net cannot run (e.g. avgpool whose
 * window area is not a power of two), naming the layer. */
dlu_status dlu_net_set_precision(dlu_net *net, const dlu_precision *p, const dlu_scale_cfg *scale);

/* Seed and step of the stochastic-rounding stream for the next forward/backward. */
void dlu_net_set_step(dlu_net *net, uint64_t seed, uint32_t step);

/* Recompute on overflow (DFP, --scale ...,recompute=R): after a backward, 1 when some
 * tensor's overflow fraction exceeded R. The policies have already raised the exponents;
 * the caller may run the step's forward and backward again (the same step number, so the
 * same random bits) with dlu_net_set_redo(net, 1), whose statistics are not fed to the
 * policies a second time, and then apply the optimizer. */
int dlu_net_recompute_wanted(const dlu_net *net);
void dlu_net_set_redo(dlu_net *net, int on);

/* Allocate parameters (zero), gradients and activations for batches of up to max_batch
 * on `be` (borrowed: must outlive the net). Call once. */
dlu_status dlu_net_bind(dlu_net *net, dlu_backend *be, int max_batch);
dlu_backend *dlu_net_backend(const dlu_net *net);
int dlu_net_max_batch(const dlu_net *net); /* 0 before bind */

/* Initialise parameters as PyTorch does by default (U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for
 * weights and biases), drawing from GSL's MT19937 seeded with `seed`, in parameter order. */
dlu_status dlu_net_init_params(dlu_net *net, uint64_t seed);

/* Forward pass over n <= max_batch samples. x: f32 (n, C, H, W) and labels: i32 (n), both
 * on the bound backend. Sets *loss to the mean loss and *correct to the number of samples
 * whose argmax equals the label (either pointer may be NULL). Labels must be in
 * [0, classes): DLU_ERANGE otherwise (checked on the host where the backend's memory is
 * host-visible). On a device backend (cuda) the work is queued: *loss and *correct are
 * written at the next dlu_backend_sync(), so they must stay valid until then. */
dlu_status dlu_net_forward(dlu_net *net, const dlu_tensor *x, const dlu_tensor *labels, int n,
                           double *loss, int64_t *correct);
/* Backward pass for the last forward: fills every parameter gradient. */
dlu_status dlu_net_backward(dlu_net *net);

/* SHA-256 over every parameter's bytes (IEEE-754 binary32, little-endian) in parameter
 * order, as 64 lowercase hex digits plus NUL. */
dlu_status dlu_net_digest(const dlu_net *net, char hex[65]);

/* DFP tensor sites: every tensor a DFP step produces, with its format, current exponent
 * and the statistics of its latest production. Site 0 is the quantized net input; then,
 * layer by layer, the output (class A), the input gradient (E), the quantized weight (W),
 * the weight and bias gradients (G). None in fp32 mode. Valid after dlu_net_bind(). */
typedef struct dlu_site_info {
    const char *name;      /* "input", "fc1.y", "fc1.dx", "fc1.w", "fc1.dw", "fc1.db" */
    int layer;             /* -1 for the input */
    dlu_tensor_class cls;
    dlu_format fmt;
    dlu_round round;
    int exp;               /* exponent of the latest production */
    int policy;            /* 1: set by the scaling policy; 0: inherited from the input (relu, ...) */
    const dlu_stats *stats;
} dlu_site_info;
int dlu_net_nsites(const dlu_net *net);
void dlu_net_site(const dlu_net *net, int i, dlu_site_info *info);

/* Scaling-policy state of every site, for checkpoints: dlu_net_scale_nbytes() bytes. */
size_t dlu_net_scale_nbytes(const dlu_net *net);
void dlu_net_scale_save(const dlu_net *net, void *buf);
dlu_status dlu_net_scale_load(dlu_net *net, const void *buf, size_t nbytes);

/* Host time spent in layer i's forward and backward kernels (ns) since bind or the last
 * reset. On asynchronous backends this is launch time unless the kernels synchronise. */
void dlu_net_layer_time(const dlu_net *net, int i, uint64_t *fwd_ns, uint64_t *bwd_ns);
void dlu_net_layer_time_reset(dlu_net *net);

/* Print a table of layers, shapes, parameters and MACs. */
void dlu_net_print(const dlu_net *net, FILE *f);

#ifdef __cplusplus
}
#endif
#endif
