/* cuda_data.cu -- batches gathered on the GPU from a data set resident there (vt->gather).
 *
 * The data set lives on the device as its IDX bytes (uint8 images and labels, uploaded
 * once by train.c); each step gathers the batch's samples through the epoch's sample order
 * (also on the device) and converts them to fp32 exactly as dlu_dataset_gather does on the
 * host: v / 255.0f, one correctly rounded division (__fdiv_rn), so the bits are the same. */
#include "cuda_impl.h"
#include "error.h"

namespace {

__global__ void gather_kernel(const uint8_t *__restrict__ images, const uint8_t *__restrict__ labels, int64_t in,
                              const int64_t *__restrict__ idx, int n, float *__restrict__ x, int32_t *__restrict__ y)
{
    const int i = blockIdx.y; /* sample */
    const int64_t src = idx[i];
    const uint8_t *img = images + src * in;
    float *dst = x + (int64_t)i * in;
    for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < in; j += (int64_t)gridDim.x * blockDim.x)
        dst[j] = __fdiv_rn((float)img[j], 255.0f);
    if (blockIdx.x == 0 && threadIdx.x == 0)
        y[i] = labels[src];
}

} // namespace

extern "C" dlu_status dlu__cuda_gather(dlu_backend *be, const void *images, const void *labels, int64_t in,
                                       const int64_t *idx, int n, dlu_tensor *x, dlu_tensor *y)
{
    if (n < 1 || n > 65535)
        return dlu__error(DLU_EINVAL, "cuda gather: batch of %d samples (1..65535)", n);
    const unsigned bx = (unsigned)((in + 255) / 256 < 64 ? (in + 255) / 256 : 64);
    gather_kernel<<<dim3(bx ? bx : 1, (unsigned)n), 256, 0, dlu__cuda_of(be)->stream>>>(
        (const uint8_t *)images, (const uint8_t *)labels, in, idx, n, (float *)x->data, (int32_t *)y->data);
    return DLU__CUDA_LAUNCHED(be, "gathering a batch");
}
