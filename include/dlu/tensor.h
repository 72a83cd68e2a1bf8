/* tensor.h -- OpenDLU tensors: shape, strides, element type and where the bytes live.
 *
 * Memory layout (the one layout every backend uses): row-major, the last dimension
 * contiguous; images are NCHW. Strides are in elements. A tensor either owns its
 * storage (freed with the tensor) or borrows it (the caller keeps it alive). Storage
 * may live on a device (a backend's memory); dlu_tensor_data() then returns a device
 * pointer that the host must not dereference.
 *
 * Not here: arithmetic. Ops live behind the backend interface (backend.h); number
 * formats and rounding live in numerics.h. */
#ifndef DLU_TENSOR_H
#define DLU_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "dlu/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DLU_MAX_DIMS 4

typedef enum dlu_dtype {
    DLU_DTYPE_F32,
    DLU_DTYPE_I8,
    DLU_DTYPE_I16,
    DLU_DTYPE_I32,
    DLU_DTYPE_I64,
    DLU_DTYPE_COUNT
} dlu_dtype;

/* Tensor classes of a training step: each may get its own number format. */
typedef enum dlu_tensor_class {
    DLU_CLASS_W, /* weights */
    DLU_CLASS_A, /* activations */
    DLU_CLASS_E, /* errors dL/dA */
    DLU_CLASS_G, /* weight gradients */
    DLU_CLASS_COUNT
} dlu_tensor_class;

typedef struct dlu_tensor dlu_tensor;
struct dlu_backend;

/* Size of one element in bytes. */
size_t dlu_dtype_size(dlu_dtype t);
const char *dlu_dtype_name(dlu_dtype t);

/* New contiguous host tensor, zero-filled. shape: ndim (1..DLU_MAX_DIMS) sizes >= 1.
 * Returns DLU_EINVAL for a bad shape, DLU_ENOMEM. *out owned by the caller. */
dlu_status dlu_tensor_new(dlu_dtype t, int ndim, const int64_t *shape, dlu_tensor **out);

/* New contiguous tensor in a backend's memory (host memory when be is NULL), zero-filled. */
dlu_status dlu_tensor_new_on(struct dlu_backend *be, dlu_dtype t, int ndim, const int64_t *shape,
                             dlu_tensor **out);

/* Contiguous tensor over caller-owned host memory `data` (not freed by dlu_tensor_free). */
dlu_status dlu_tensor_borrow(dlu_dtype t, int ndim, const int64_t *shape, void *data,
                             dlu_tensor **out);

void dlu_tensor_free(dlu_tensor *t); /* NULL is fine */

dlu_dtype dlu_tensor_dtype(const dlu_tensor *t);
int dlu_tensor_ndim(const dlu_tensor *t);
int64_t dlu_tensor_dim(const dlu_tensor *t, int i);
int64_t dlu_tensor_stride(const dlu_tensor *t, int i); /* in elements */
int64_t dlu_tensor_nelem(const dlu_tensor *t);
size_t dlu_tensor_nbytes(const dlu_tensor *t);
void *dlu_tensor_data(const dlu_tensor *t);
struct dlu_backend *dlu_tensor_backend(const dlu_tensor *t); /* NULL: host memory */

/* Copy all bytes between host memory and a tensor wherever it lives. nbytes must equal
 * dlu_tensor_nbytes(t) (DLU_ESHAPE otherwise). */
dlu_status dlu_tensor_read(const dlu_tensor *t, void *host_dst, size_t nbytes);
dlu_status dlu_tensor_write(dlu_tensor *t, const void *host_src, size_t nbytes);

#ifdef __cplusplus
}
#endif
#endif
