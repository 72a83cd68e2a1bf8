/* backend_impl.h -- the backend vtable and the structs kernels see (internal).
 *
 * Each backend fills one dlu__backend_vtbl: memory functions plus a forward and a
 * backward kernel per op (indexed by dlu_op; NULL = unsupported) and the optimizer
 * update kernels. Kernels receive tensors already allocated on their backend, shapes
 * already checked by the net, and a workspace of the size they asked for: no hidden
 * allocation inside a training step. */
#ifndef DLU_BACKEND_IMPL_H
#define DLU_BACKEND_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "dlu/backend.h"
#include "dlu/numerics.h"
#include "dlu/scale.h"
#include "dlu/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

struct dlu_tensor {
    dlu_dtype dtype;
    int ndim;
    int64_t shape[DLU_MAX_DIMS];
    int64_t stride[DLU_MAX_DIMS]; /* elements */
    void *data;
    size_t nbytes;
    int owns;
    struct dlu_backend *be; /* NULL: host memory */
    int exp;                /* DFP tensors (i8, i16): value = q * 2^exp */
};

/* A DFP tensor site: one tensor that a DFP training step produces (a layer's output,
 * input gradient, quantized weight or weight gradient), with its format, rounding, the
 * exponent policy that sets its exponent, and the statistics of its latest production
 * (the DLU's statistics circuit). Kernels read fmt/round/exp, fill stats, and calibrate
 * the exponent on the site's first production (dlu__site_exp). */
typedef struct dlu__qsite {
    int used;                /* produced in this net (0: e.g. the first layer's dx) */
    dlu_tensor_class cls;
    dlu_format fmt;
    dlu_round round;
    int exp;                 /* exponent for the next production */
    uint32_t id;             /* tensor id in the stochastic-rounding stream */
    dlu_scale_state *scale;  /* exponent policy; NULL: the exponent is the input's */
    dlu_stats stats;         /* statistics of the latest production */
    char name[80];           /* e.g. "fc1.y" */
} dlu__qsite;

/* The exponent to produce the site with: the policy's, or, on the site's first
 * production, the calibration from `pre` (statistics of the values about to be
 * quantized; may be NULL when the site is calibrated). Host function. */
int dlu__site_exp(dlu__qsite *s, const dlu_stats *pre);

/* One layer as kernels see it: attributes from the .net file and per-sample shapes. */
typedef struct dlu__layer {
    dlu_op op;
    char name[64];
    int line; /* line of its section in the .net file, for messages */
    /* attributes (0 when not applicable) */
    int out;              /* linear: output features */
    int filters;          /* conv2d: output channels */
    int kernel, stride, pad;
    int bias;             /* linear/conv2d: 1 when the layer has a bias */
    /* per-sample shapes */
    int in_c, in_h, in_w;
    int out_c, out_h, out_w;
    int64_t in_size, out_size; /* elements per sample */
} dlu__layer;

/* Arguments of one forward or backward kernel call.
 * Forward:  reads x, w, b; writes y (and aux, loss).
 * Backward: reads x, y, dy, w, aux; writes dx (when non-NULL) and dw, db (overwritten,
 *           not accumulated). */
typedef struct dlu__op_args {
    const dlu__layer *l;
    int n;                  /* samples in the batch */
    const dlu_tensor *x;    /* (n, in_size) */
    dlu_tensor *y;          /* (n, out_size) */
    const dlu_tensor *dy;   /* (n, out_size) */
    dlu_tensor *dx;         /* (n, in_size); NULL when the input needs no gradient */
    const dlu_tensor *w, *b;
    dlu_tensor *dw, *db;
    dlu_tensor *aux;        /* maxpool: int32 argmax (n, out_size); softmax_xent: probs (n, classes) */
    const dlu_tensor *labels; /* softmax_xent: int32 (n) */
    double *loss;           /* softmax_xent forward: mean loss over the batch (host) */
    int64_t *correct;       /* softmax_xent forward: count of argmax == label (host), may be NULL */
    void *ws;               /* workspace of ws_nbytes(l, n, dfp) bytes */
    /* DFP steps only (NULL in fp32): the sites of y, dx, the quantized weight and the
     * weight and bias gradients, the quantized weight tensor, and the random stream. */
    dlu__qsite *qy, *qdx, *qw, *qdw, *qdb;
    dlu_tensor *wq;         /* (out, in) or (F, C*k*k), W format */
    uint64_t seed;
    uint32_t step;
} dlu__op_args;

typedef dlu_status (*dlu__kernel_fn)(struct dlu_backend *be, const dlu__op_args *a);

/* Optimizer update over one parameter tensor, element-wise in a fixed operation order
 * (documented in docs/numerics.md): every backend gives the same bits. */
typedef struct dlu__sgd_args {
    dlu_tensor *w, *v;      /* parameter and momentum buffer */
    const dlu_tensor *g;    /* gradient */
    float lr, momentum, weight_decay;
} dlu__sgd_args;

typedef struct dlu__adam_args {
    dlu_tensor *w, *m, *v;
    const dlu_tensor *g;
    float lr, beta1, beta2, eps, weight_decay;
    float bc1, bc2;          /* bias corrections 1 - beta^t, computed once per step */
} dlu__adam_args;

typedef struct dlu__backend_vtbl {
    const char *kind;
    const char *note; /* one line for `dlu info` */
    int host_visible; /* 1 when the host may read and write this backend's memory directly */
    /* arg: what followed "kind:" in the device string ("" if nothing) */
    dlu_status (*open)(struct dlu_backend *be, const char *arg);
    void (*close)(struct dlu_backend *be);
    dlu_status (*alloc)(struct dlu_backend *be, size_t nbytes, void **ptr); /* zeroed */
    void (*free)(struct dlu_backend *be, void *ptr);
    dlu_status (*upload)(struct dlu_backend *be, void *dst, const void *host_src, size_t nbytes);
    dlu_status (*download)(struct dlu_backend *be, void *host_dst, const void *src, size_t nbytes);
    dlu_status (*sync)(struct dlu_backend *be);
    size_t (*ws_nbytes)(const dlu__layer *l, int n, int dfp); /* workspace one kernel call needs */
    dlu__kernel_fn forward[DLU_OP_COUNT];
    dlu__kernel_fn backward[DLU_OP_COUNT];
    /* Dynamic fixed point: kernels over i8/i16 tensors (NULL: unsupported). */
    dlu__kernel_fn forward_dfp[DLU_OP_COUNT];
    dlu__kernel_fn backward_dfp[DLU_OP_COUNT];
    /* Quantize n fp32 values (src) into dst (the site's format) at the site's exponent. */
    dlu_status (*quantize)(struct dlu_backend *be, const dlu_tensor *src, size_t n, dlu_tensor *dst,
                           dlu__qsite *site, uint64_t seed, uint32_t step);
    dlu_status (*sgd_step)(struct dlu_backend *be, const dlu__sgd_args *a);
    dlu_status (*adam_step)(struct dlu_backend *be, const dlu__adam_args *a);
    /* Optional, for backends that are not host-visible (NULL: the host gathers each batch
     * and uploads it). A data set resident in this backend's memory -- images u8 (count,
     * in) and labels u8 (count), the IDX bytes -- and idx (n) int64 sample numbers, also
     * in its memory: x (n, in) f32 = images[idx[i]][j] / 255.0f (a true division, as
     * dlu_dataset_gather does) and y (n) i32 = labels[idx[i]]. */
    dlu_status (*gather)(struct dlu_backend *be, const void *images, const void *labels, int64_t in,
                         const int64_t *idx, int n, dlu_tensor *x, dlu_tensor *y);
} dlu__backend_vtbl;

struct dlu_backend {
    const dlu__backend_vtbl *vt;
    void *impl;
    char device[256];
    dlu_backend_prof prof;
};

/* The registry: every vtable this build knows. A backend that was not built provides a
 * vtable whose open() returns DLU_ENODEV with a message saying why. */
extern const dlu__backend_vtbl dlu__cpu_vtbl;
extern const dlu__backend_vtbl dlu__cuda_vtbl;
extern const dlu__backend_vtbl dlu__dlusim_vtbl;

/* Monotonic clock in nanoseconds (for the profiling counters). */
uint64_t dlu__now_ns(void);

#ifdef __cplusplus
}
#endif
#endif
