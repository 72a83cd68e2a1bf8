/* cuda_stub.c -- the cuda backend's registry entry in builds without a CUDA backend.
 *
 * It exists so that core files never test for CUDA: opening "cuda" here fails with
 * DLU_ENODEV and a message that says why, and `dlu info` reports the backend absent. */
#include "backend_impl.h"
#include "error.h"

static dlu_status stub_open(dlu_backend *be, const char *arg)
{
    return dlu__error(DLU_ENODEV, "this build has no CUDA backend (configure did not find the CUDA toolkit, "
                      "or was given --disable-cuda; see --with-cuda=PATH)");
}

static void stub_close(dlu_backend *be) {}

const dlu__backend_vtbl dlu__cuda_vtbl = {
    .kind = "cuda",
    .note = "NVIDIA GPUs through CUDA",
    .open = stub_open,
    .close = stub_close,
};
