/* cpu_misc.c -- relu, max/avg pooling, flatten and softmax cross-entropy on the CPU (fp32).
 *
 * Contract:
 *   relu      y = x > 0 ? x : 0 (so NaN -> 0); dx = y > 0 ? dy : 0
 *   maxpool   window k x k, stride s, padding p (padded cells never win); the first
 *             maximum in row-major window order wins; dx gets dy at the winner only
 *   avgpool   mean over the k x k window with padded cells counted as zeros (divisor
 *             k*k always, PyTorch's count_include_pad=True)
 *   flatten   a copy (the layout is already row-major)
 *   softmax_xent  numerics.h's deterministic softmax cross-entropy (dlu_softmax_xent:
 *             exp(x - max) / sum in ascending class order, loss = log(sum) - (x_label - max),
 *             mean over rows in fp32); dx = (p - onehot(label)) / n. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cpu.h"

dlu_status dlu__cpu_relu_fwd(dlu_backend *be, const dlu__op_args *a)
{
    const float *x = CF32(a->x);
    float *y = F32(a->y);
    int64_t n = (int64_t)a->n * a->l->out_size;
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] > 0.0f ? x[i] : 0.0f;
    return DLU_OK;
}

dlu_status dlu__cpu_relu_bwd(dlu_backend *be, const dlu__op_args *a)
{
    if (!a->dx)
        return DLU_OK;
    const float *y = CF32(a->y), *dy = CF32(a->dy);
    float *dx = F32(a->dx);
    int64_t n = (int64_t)a->n * a->l->out_size;
    for (int64_t i = 0; i < n; i++)
        dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
    return DLU_OK;
}

dlu_status dlu__cpu_maxpool_fwd(dlu_backend *be, const dlu__op_args *a)
{
    const dlu__layer *l = a->l;
    const int H = l->in_h, W = l->in_w, Ho = l->out_h, Wo = l->out_w, k = l->kernel, s = l->stride, p = l->pad;
    const int planes = a->n * l->in_c;
    const float *x = CF32(a->x);
    float *y = F32(a->y);
    int32_t *arg = a->aux->data; /* (n, C, Ho, Wo): index into the input plane */
    for (int pl = 0; pl < planes; pl++) {
        const float *xp = x + (size_t)pl * H * W;
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                float best = -INFINITY;
                int32_t bi = -1;
                for (int ky = 0; ky < k; ky++) {
                    int iy = oy * s - p + ky;
                    if (iy < 0 || iy >= H)
                        continue;
                    for (int kx = 0; kx < k; kx++) {
                        int ix = ox * s - p + kx;
                        if (ix < 0 || ix >= W)
                            continue;
                        float v = xp[iy * W + ix];
                        if (bi < 0 || v > best) {
                            best = v;
                            bi = iy * W + ix;
                        }
                    }
                }
                size_t o = ((size_t)pl * Ho + oy) * Wo + ox;
                y[o] = best;
                arg[o] = bi;
            }
    }
    return DLU_OK;
}

dlu_status dlu__cpu_maxpool_bwd(dlu_backend *be, const dlu__op_args *a)
{
    if (!a->dx)
        return DLU_OK;
    const dlu__layer *l = a->l;
    const int HW = l->in_h * l->in_w, HoWo = l->out_h * l->out_w, planes = a->n * l->in_c;
    const float *dy = CF32(a->dy);
    const int32_t *arg = a->aux->data;
    float *dx = F32(a->dx);
    for (int pl = 0; pl < planes; pl++) {
        float *d = dx + (size_t)pl * HW;
        memset(d, 0, (size_t)HW * sizeof *d);
        for (int o = 0; o < HoWo; o++)
            d[arg[(size_t)pl * HoWo + o]] += dy[(size_t)pl * HoWo + o];
    }
    return DLU_OK;
}

dlu_status dlu__cpu_avgpool_fwd(dlu_backend *be, const dlu__op_args *a)
{
    const dlu__layer *l = a->l;
    const int H = l->in_h, W = l->in_w, Ho = l->out_h, Wo = l->out_w, k = l->kernel, s = l->stride, p = l->pad;
    const int planes = a->n * l->in_c;
    const float inv = 1.0f / (float)(k * k);
    const float *x = CF32(a->x);
    float *y = F32(a->y);
    for (int pl = 0; pl < planes; pl++) {
        const float *xp = x + (size_t)pl * H * W;
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                float sum = 0.0f;
                for (int ky = 0; ky < k; ky++) {
                    int iy = oy * s - p + ky;
                    if (iy < 0 || iy >= H)
                        continue;
                    for (int kx = 0; kx < k; kx++) {
                        int ix = ox * s - p + kx;
                        if (ix >= 0 && ix < W)
                            sum += xp[iy * W + ix];
                    }
                }
                y[((size_t)pl * Ho + oy) * Wo + ox] = sum * inv;
            }
    }
    return DLU_OK;
}

dlu_status dlu__cpu_avgpool_bwd(dlu_backend *be, const dlu__op_args *a)
{
    if (!a->dx)
        return DLU_OK;
    const dlu__layer *l = a->l;
    const int H = l->in_h, W = l->in_w, Ho = l->out_h, Wo = l->out_w, k = l->kernel, s = l->stride, p = l->pad;
    const int planes = a->n * l->in_c;
    const float inv = 1.0f / (float)(k * k);
    const float *dy = CF32(a->dy);
    float *dx = F32(a->dx);
    for (int pl = 0; pl < planes; pl++) {
        float *d = dx + (size_t)pl * H * W;
        memset(d, 0, (size_t)H * W * sizeof *d);
        for (int oy = 0; oy < Ho; oy++)
            for (int ox = 0; ox < Wo; ox++) {
                float g = dy[((size_t)pl * Ho + oy) * Wo + ox] * inv;
                for (int ky = 0; ky < k; ky++) {
                    int iy = oy * s - p + ky;
                    if (iy < 0 || iy >= H)
                        continue;
                    for (int kx = 0; kx < k; kx++) {
                        int ix = ox * s - p + kx;
                        if (ix >= 0 && ix < W)
                            d[iy * W + ix] += g;
                    }
                }
            }
    }
    return DLU_OK;
}

dlu_status dlu__cpu_flatten_fwd(dlu_backend *be, const dlu__op_args *a)
{
    memcpy(a->y->data, a->x->data, (size_t)a->n * a->l->out_size * sizeof(float));
    return DLU_OK;
}

dlu_status dlu__cpu_flatten_bwd(dlu_backend *be, const dlu__op_args *a)
{
    if (a->dx)
        memcpy(a->dx->data, a->dy->data, (size_t)a->n * a->l->in_size * sizeof(float));
    return DLU_OK;
}

/* Probabilities, mean loss and correct count from fp32 logits (n, C) through numerics.h's
 * deterministic softmax cross-entropy (shared with the DFP kernel and every backend). The
 * argmax for "correct" is the first maximum. */
dlu_status dlu__cpu_xent_fp32(const float *logits, const dlu__op_args *a)
{
    const int C = (int)a->l->in_size;
    const int32_t *lab = a->labels->data;
    float loss = 0.0f;
    dlu_status s = dlu_softmax_xent(logits, lab, a->n, C, F32(a->aux), NULL, &loss);
    if (s != DLU_OK)
        return s;
    int64_t correct = 0;
    for (int i = 0; i < a->n; i++) {
        const float *xi = logits + (size_t)i * C;
        int am = 0;
        for (int c = 1; c < C; c++)
            if (xi[c] > xi[am])
                am = c;
        correct += am == lab[i];
    }
    if (a->loss)
        *a->loss = loss;
    if (a->correct)
        *a->correct = correct;
    return DLU_OK;
}

dlu_status dlu__cpu_softmax_xent_fwd(dlu_backend *be, const dlu__op_args *a)
{
    return dlu__cpu_xent_fp32(CF32(a->x), a);
}

dlu_status dlu__cpu_softmax_xent_bwd(dlu_backend *be, const dlu__op_args *a)
{
    const int C = (int)a->l->in_size;
    const int32_t *lab = a->labels->data;
    for (int i = 0; i < a->n; i++) {
        dlu_status s = dlu_softmax_xent_grad_row(CF32(a->aux) + (size_t)i * C, C, lab[i], a->n, F32(a->dx) + (size_t)i * C);
        if (s != DLU_OK)
            return s;
    }
    return DLU_OK;
}
