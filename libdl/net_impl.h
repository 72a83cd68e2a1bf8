/* net_impl.h -- the net's internal layout (shared by net.c and net_parse.c). */
#ifndef DLU_NET_IMPL_H
#define DLU_NET_IMPL_H

#include "backend_impl.h"
#include "dlu/net.h"
#include "dlu/precision.h"
#include "dlu/scale.h"

#define DLU__NET_MAX_PARAMS 2

/* The DFP tensor sites of one layer. */
typedef enum dlu__site_slot {
    DLU__SITE_Y,  /* output (class A) */
    DLU__SITE_DX, /* input gradient (class E) */
    DLU__SITE_W,  /* quantized weight (class W) */
    DLU__SITE_DW, /* weight gradient (class G) */
    DLU__SITE_DB, /* bias gradient (class G) */
    DLU__SITE_COUNT
} dlu__site_slot;

typedef struct dlu__net_layer {
    dlu__layer l;
    /* bound state */
    dlu_tensor *param[DLU__NET_MAX_PARAMS]; /* weight, bias */
    dlu_tensor *grad[DLU__NET_MAX_PARAMS];
    int nparam;
    dlu_tensor *y;   /* (max_batch, out_size) */
    dlu_tensor *dx;  /* (max_batch, in_size); NULL for the first layer */
    dlu_tensor *aux; /* op-specific */
    uint64_t fwd_ns, bwd_ns; /* host time in this layer's kernels since bind */
    dlu__qsite q[DLU__SITE_COUNT]; /* DFP only */
    dlu_tensor *wq;                /* DFP only: the quantized weight */
} dlu__net_layer;

struct dlu_net {
    char name[64];
    char origin[256];
    int in_c, in_h, in_w;
    int nlayers;
    dlu__net_layer *layers;
    /* bound state */
    dlu_backend *be;
    int max_batch;
    void *ws;
    size_t ws_nbytes;
    int last_n;                 /* batch of the last forward, 0 before any */
    const dlu_tensor *last_x, *last_labels;
    /* number formats */
    dlu_precision prec;
    dlu_scale_cfg scale;
    int dfp;                    /* 1: DFP step (W, A, E in dfp8/dfp16) */
    uint64_t seed;              /* stochastic rounding stream */
    uint32_t step;
    dlu__qsite qx;              /* DFP: the quantized net input */
    int redo;                   /* 1 while recomputing a step: its statistics are not fed */
    int recompute_wanted;       /* the last backward saw an overflow above the threshold */
    dlu_tensor *xq;
};

/* Fill per-layer shapes from the input shape; reports errors with file:line. */
dlu_status dlu__net_infer_shapes(dlu_net *net);

#endif
