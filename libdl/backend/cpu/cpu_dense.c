/* cpu_dense.c -- fp32 linear and conv2d, forward and backward, on the CPU.
 *
 * Contract (fp32): products and sums in IEEE single precision, GEMMs through
 * cblas_sgemm (OpenBLAS decides the summation order inside a GEMM, so fp32 results
 * are reproducible on one machine and thread count, not bit-exact across libraries).
 * Bias sums and per-sample accumulation across the batch go in ascending sample order.
 *
 *   linear   y (n, out)  = x (n, in) * W^T (in, out) + b;  W is (out, in) as in PyTorch
 *   conv2d   y (n, F, Ho, Wo) = W (F, C*k*k) * im2col(x_i) (C*k*k, Ho*Wo) + b, per sample;
 *            W is (F, C, k, k), Ho = (H + 2*pad - k)/stride + 1
 *
 * Not here: low-precision (DFP) paths; those are in their own files and tested against
 * these. */
#include <string.h>

#include "cpu.h"

dlu_status dlu__cpu_linear_fwd(dlu_backend *be, const dlu__op_args *a)
{
    const dlu__layer *l = a->l;
    const int n = a->n, in = (int)l->in_size, out = l->out;
    float *y = F32(a->y);           /* (n, out) */
    const float *b = a->b ? CF32(a->b) : NULL; /* (out) */
    float beta = 0.0f;
    if (b) {
        for (int i = 0; i < n; i++)
            memcpy(y + (size_t)i * out, b, (size_t)out * sizeof *y);
        beta = 1.0f;
    }
    dlu__cpu_sgemm(be, CblasNoTrans, CblasTrans, n, out, in, 1.0f, CF32(a->x), in, CF32(a->w), in, beta, y,
                   out);
    return DLU_OK;
}

dlu_status dlu__cpu_linear_bwd(dlu_backend *be, const dlu__op_args *a)
{
    const dlu__layer *l = a->l;
    const int n = a->n, in = (int)l->in_size, out = l->out;
    const float *dy = CF32(a->dy); /* (n, out) */
    if (a->dx)
        dlu__cpu_sgemm(be, CblasNoTrans, CblasNoTrans, n, in, out, 1.0f, dy, out, CF32(a->w), in, 0.0f,
                       F32(a->dx), in);
    dlu__cpu_sgemm(be, CblasTrans, CblasNoTrans, out, in, n, 1.0f, dy, out, CF32(a->x), in, 0.0f, F32(a->dw),
                   in);
    if (a->db) {
        float *db = F32(a->db);
        for (int j = 0; j < out; j++)
            db[j] = 0.0f;
        for (int i = 0; i < n; i++)
            for (int j = 0; j < out; j++)
                db[j] += dy[(size_t)i * out + j];
    }
    return DLU_OK;
}

/* im2col for one sample: col (C*k*k, Ho*Wo), row index (c, ky, kx). Padding reads 0. */
static void im2col(const float *x, int C, int H, int W, int k, int stride, int pad, int Ho, int Wo, float *col)
{
    for (int r = 0; r < C * k * k; r++) {
        int c = r / (k * k), ky = (r / k) % k, kx = r % k;
        float *dst = col + (size_t)r * Ho * Wo;
        const float *src = x + (size_t)c * H * W;
        for (int oy = 0; oy < Ho; oy++) {
            int iy = oy * stride - pad + ky;
            if (iy < 0 || iy >= H) {
                memset(dst + (size_t)oy * Wo, 0, (size_t)Wo * sizeof *dst);
                continue;
            }
            for (int ox = 0; ox < Wo; ox++) {
                int ix = ox * stride - pad + kx;
                dst[(size_t)oy * Wo + ox] = (ix >= 0 && ix < W) ? src[(size_t)iy * W + ix] : 0.0f;
            }
        }
    }
}

/* col2im for one sample: dx (C, H, W) = sum of col entries that im2col read from each
 * pixel. Parallel over channels (each thread owns whole channels of dx); the order of
 * additions into one pixel is fixed: rows (ky, kx) ascending, then output position. */
static void col2im(const float *col, int C, int H, int W, int k, int stride, int pad, int Ho, int Wo, float *dx)
{
    for (int c = 0; c < C; c++) {
        float *dst = dx + (size_t)c * H * W;
        memset(dst, 0, (size_t)H * W * sizeof *dst);
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                const float *src = col + ((size_t)(c * k + ky) * k + kx) * Ho * Wo;
                for (int oy = 0; oy < Ho; oy++) {
                    int iy = oy * stride - pad + ky;
                    if (iy < 0 || iy >= H)
                        continue;
                    for (int ox = 0; ox < Wo; ox++) {
                        int ix = ox * stride - pad + kx;
                        if (ix >= 0 && ix < W)
                            dst[(size_t)iy * W + ix] += src[(size_t)oy * Wo + ox];
                    }
                }
            }
    }
}

size_t dlu__cpu_conv2d_ws(const dlu__layer *l, int n)
{
    /* one sample's column matrix, twice (forward col, backward dcol) */
    return 2 * (size_t)l->in_c * l->kernel * l->kernel * l->out_h * l->out_w * sizeof(float);
}

dlu_status dlu__cpu_conv2d_fwd(dlu_backend *be, const dlu__op_args *a)
{
    const dlu__layer *l = a->l;
    const int C = l->in_c, H = l->in_h, W = l->in_w, k = l->kernel, F = l->out_c;
    const int Ho = l->out_h, Wo = l->out_w, HW = Ho * Wo, CKK = C * k * k;
    float *col = a->ws;
    const float *w = CF32(a->w); /* (F, C*k*k) */
    const float *b = a->b ? CF32(a->b) : NULL;
    for (int i = 0; i < a->n; i++) {
        const float *x = CF32(a->x) + (size_t)i * l->in_size;
        float *y = F32(a->y) + (size_t)i * l->out_size; /* (F, HW) */
        im2col(x, C, H, W, k, l->stride, l->pad, Ho, Wo, col);
        float beta = 0.0f;
        if (b) {
            for (int f = 0; f < F; f++)
                for (int p = 0; p < HW; p++)
                    y[(size_t)f * HW + p] = b[f];
            beta = 1.0f;
        }
        dlu__cpu_sgemm(be, CblasNoTrans, CblasNoTrans, F, HW, CKK, 1.0f, w, CKK, col, HW, beta, y, HW);
    }
    return DLU_OK;
}

dlu_status dlu__cpu_conv2d_bwd(dlu_backend *be, const dlu__op_args *a)
{
    const dlu__layer *l = a->l;
    const int C = l->in_c, H = l->in_h, W = l->in_w, k = l->kernel, F = l->out_c;
    const int Ho = l->out_h, Wo = l->out_w, HW = Ho * Wo, CKK = C * k * k;
    float *col = a->ws, *dcol = col + (size_t)CKK * HW;
    const float *w = CF32(a->w);
    float *dw = F32(a->dw); /* (F, C*k*k) */
    for (int i = 0; i < a->n; i++) {
        const float *x = CF32(a->x) + (size_t)i * l->in_size;
        const float *dy = CF32(a->dy) + (size_t)i * l->out_size; /* (F, HW) */
        im2col(x, C, H, W, k, l->stride, l->pad, Ho, Wo, col);
        dlu__cpu_sgemm(be, CblasNoTrans, CblasTrans, F, CKK, HW, 1.0f, dy, HW, col, HW, i ? 1.0f : 0.0f, dw, CKK);
        if (a->dx) {
            dlu__cpu_sgemm(be, CblasTrans, CblasNoTrans, CKK, HW, F, 1.0f, w, CKK, dy, HW, 0.0f, dcol, HW);
            col2im(dcol, C, H, W, k, l->stride, l->pad, Ho, Wo, F32(a->dx) + (size_t)i * l->in_size);
        }
    }
    if (a->db) {
        float *db = F32(a->db);
        for (int f = 0; f < F; f++)
            db[f] = 0.0f;
        for (int i = 0; i < a->n; i++) {
            const float *dy = CF32(a->dy) + (size_t)i * l->out_size;
            for (int f = 0; f < F; f++) {
                float s = 0.0f;
                for (int p = 0; p < HW; p++)
                    s += dy[(size_t)f * HW + p];
                db[f] += s;
            }
        }
    }
    return DLU_OK;
}
