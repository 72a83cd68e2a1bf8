/* train.h -- the training loop: shuffled batches, optimizer steps, evaluation, progress,
 * and checkpoints that let a killed run resume to the same bits.
 *
 * Determinism: for a given net file, seed, batch size, optimizer settings, data and backend
 * (for fp32 on the CPU also the same thread count, since OpenBLAS's summation order depends
 * on it; DFP results are exact integer sums and do not depend on threads),
 * the final parameters are the same on every run, whether the run was interrupted and
 * resumed from a checkpoint or not. The data order comes from GSL's MT19937 seeded with the seed,
 * shuffled (gsl_ran_shuffle) at the start of every epoch; the last partial batch is kept.
 *
 * Not here: multi-device execution (runtime/). */
#ifndef DLU_TRAIN_H
#define DLU_TRAIN_H

#include <stdint.h>

#include "dlu/data.h"
#include "dlu/net.h"
#include "dlu/optim.h"
#include "dlu/precision.h"
#include "dlu/scale.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dlu_train_progress {
    int epoch;               /* 1-based epoch in progress */
    int epochs;              /* planned epochs */
    int64_t step;            /* optimizer steps done, in all */
    int64_t total_steps;     /* planned steps in all */
    int64_t step_in_epoch, steps_per_epoch;
    double loss;             /* mean training loss so far in this epoch */
    double samples_per_second; /* over the training time so far */
    double eta_seconds;
    int epoch_done;          /* 1 on the call made once per completed epoch */
    double test_accuracy;    /* with epoch_done: accuracy after the epoch, else -1 */
} dlu_train_progress;

typedef void (*dlu_train_progress_fn)(void *user, const dlu_train_progress *p);

typedef struct dlu_train_cfg {
    int epochs;               /* >= 1 */
    int64_t max_steps;        /* stop after this many optimizer steps in all; 0: no limit */
    int batch;                /* >= 1 */
    uint64_t seed;            /* parameter init and data order */
    dlu_optim_cfg optim;
    dlu_precision prec;       /* number formats and rounding per tensor class (default fp32) */
    dlu_scale_cfg scale;      /* exponent policy of DFP tensors */
    const char *stats;        /* DFP statistics, one JSON line per logged step, or NULL */
    int64_t stats_every;      /* steps between logged steps (>= 1) */
    const char *checkpoint;   /* path to write checkpoints to, or NULL */
    int64_t checkpoint_every; /* steps between checkpoints; 0: at the end of every epoch */
    const char *resume;       /* checkpoint to resume from, or NULL */
    int eval_each_epoch;      /* evaluate the test set after every epoch */
    dlu_train_progress_fn progress;  /* called every progress_every steps and per epoch */
    int64_t progress_every;
    void *user;
} dlu_train_cfg;

void dlu_train_cfg_default(dlu_train_cfg *cfg);

typedef struct dlu_train_result {
    double test_accuracy;     /* fraction in [0, 1] on the test set after training */
    double test_loss;
    double train_loss;        /* mean loss over the last epoch's steps (this run and resumed parts) */
    double samples_per_second;/* training samples / training time of this run (no eval, no I/O) */
    double train_seconds;
    double gemm_share;        /* fraction of training time inside GEMM calls */
    double epochs;            /* passes over the training set, fractional with --max-steps */
    int64_t steps;
    int64_t samples;
    int64_t recomputed_steps; /* DFP steps run twice by the recompute-on-overflow rule (this run) */
    char weights_digest[65];
} dlu_train_result;

/* Train `net` (parsed, not yet bound) on `be`. Binds and initialises the net (or restores
 * it from cfg->resume). The datasets' sample shape must equal the net's input shape and
 * their labels must be below its class count. */
dlu_status dlu_train(dlu_net *net, dlu_backend *be, const dlu_dataset *train, const dlu_dataset *test,
                     const dlu_train_cfg *cfg, dlu_train_result *res);

/* Accuracy (fraction) and mean loss of a bound net on a dataset, in batches of the net's
 * bound size. */
dlu_status dlu_evaluate(dlu_net *net, const dlu_dataset *ds, double *accuracy, double *loss);

/* Save / load only the parameters of a bound net (a checkpoint file with no training
 * state), e.g. for `dlu eval --weights`. dlu_net_load_weights also reads full training
 * checkpoints. */
dlu_status dlu_net_save_weights(const dlu_net *net, const char *path);
dlu_status dlu_net_load_weights(dlu_net *net, const char *path);

#ifdef __cplusplus
}
#endif
#endif
