/* tensor.c -- tensor objects: shapes, strides and storage (host or a backend's). */
#include <stdlib.h>
#include <string.h>

#include "backend_impl.h"
#include "error.h"

static const size_t dtype_size[DLU_DTYPE_COUNT] = {4, 1, 2, 4, 8};
static const char *const dtype_name[DLU_DTYPE_COUNT] = {"f32", "i8", "i16", "i32", "i64"};

size_t dlu_dtype_size(dlu_dtype t) { return (unsigned)t < DLU_DTYPE_COUNT ? dtype_size[t] : 0; }
const char *dlu_dtype_name(dlu_dtype t) { return (unsigned)t < DLU_DTYPE_COUNT ? dtype_name[t] : "?"; }

static dlu_status make(dlu_dtype t, int ndim, const int64_t *shape, dlu_tensor **out)
{
    *out = NULL;
    if ((unsigned)t >= DLU_DTYPE_COUNT)
        return dlu__error(DLU_EINVAL, "tensor: unknown dtype %d", (int)t);
    if (ndim < 1 || ndim > DLU_MAX_DIMS)
        return dlu__error(DLU_EINVAL, "tensor: %d dimensions, expected 1..%d", ndim, DLU_MAX_DIMS);
    int64_t nelem = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 1 || shape[i] > ((int64_t)1 << 40) / nelem)
            return dlu__error(DLU_EINVAL, "tensor: dimension %d has size %lld (must be 1..2^40 in all)",
                              i, (long long)shape[i]);
        nelem *= shape[i];
    }
    dlu_tensor *x = calloc(1, sizeof *x);
    if (!x)
        return dlu__error(DLU_ENOMEM, "tensor: out of memory");
    x->dtype = t;
    x->ndim = ndim;
    int64_t s = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        x->shape[i] = shape[i];
        x->stride[i] = s;
        s *= shape[i];
    }
    x->nbytes = (size_t)nelem * dtype_size[t];
    *out = x;
    return DLU_OK;
}

dlu_status dlu_tensor_new_on(struct dlu_backend *be, dlu_dtype t, int ndim, const int64_t *shape,
                             dlu_tensor **out)
{
    DLU__TRY(make(t, ndim, shape, out));
    dlu_tensor *x = *out;
    dlu_status s = DLU_OK;
    if (be) {
        s = be->vt->alloc(be, x->nbytes, &x->data);
    } else {
        x->data = calloc(1, x->nbytes);
        if (!x->data)
            s = dlu__error(DLU_ENOMEM, "tensor: cannot allocate %zu bytes", x->nbytes);
    }
    if (s != DLU_OK) {
        free(x);
        *out = NULL;
        return s;
    }
    x->be = be;
    x->owns = 1;
    return DLU_OK;
}

dlu_status dlu_tensor_new(dlu_dtype t, int ndim, const int64_t *shape, dlu_tensor **out)
{
    return dlu_tensor_new_on(NULL, t, ndim, shape, out);
}

dlu_status dlu_tensor_borrow(dlu_dtype t, int ndim, const int64_t *shape, void *data, dlu_tensor **out)
{
    if (!data)
        return dlu__error(DLU_EINVAL, "tensor: borrowed storage is NULL");
    DLU__TRY(make(t, ndim, shape, out));
    (*out)->data = data;
    return DLU_OK;
}

void dlu_tensor_free(dlu_tensor *t)
{
    if (!t)
        return;
    if (t->owns) {
        if (t->be)
            t->be->vt->free(t->be, t->data);
        else
            free(t->data);
    }
    free(t);
}

dlu_dtype dlu_tensor_dtype(const dlu_tensor *t) { return t->dtype; }
int dlu_tensor_ndim(const dlu_tensor *t) { return t->ndim; }
int64_t dlu_tensor_dim(const dlu_tensor *t, int i) { return i >= 0 && i < t->ndim ? t->shape[i] : 1; }
int64_t dlu_tensor_stride(const dlu_tensor *t, int i) { return i >= 0 && i < t->ndim ? t->stride[i] : 0; }
int64_t dlu_tensor_nelem(const dlu_tensor *t) { return (int64_t)(t->nbytes / dtype_size[t->dtype]); }
size_t dlu_tensor_nbytes(const dlu_tensor *t) { return t->nbytes; }
void *dlu_tensor_data(const dlu_tensor *t) { return t->data; }
struct dlu_backend *dlu_tensor_backend(const dlu_tensor *t) { return t->be; }

dlu_status dlu_tensor_read(const dlu_tensor *t, void *host_dst, size_t nbytes)
{
    if (nbytes != t->nbytes)
        return dlu__error(DLU_ESHAPE, "tensor read: %zu bytes requested, tensor holds %zu", nbytes, t->nbytes);
    if (t->be)
        return t->be->vt->download(t->be, host_dst, t->data, nbytes);
    memcpy(host_dst, t->data, nbytes);
    return DLU_OK;
}

dlu_status dlu_tensor_write(dlu_tensor *t, const void *host_src, size_t nbytes)
{
    if (nbytes != t->nbytes)
        return dlu__error(DLU_ESHAPE, "tensor write: %zu bytes given, tensor holds %zu", nbytes, t->nbytes);
    if (t->be)
        return t->be->vt->upload(t->be, t->data, host_src, nbytes);
    memcpy(t->data, host_src, nbytes);
    return DLU_OK;
}
