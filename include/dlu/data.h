/* data.h -- image classification data sets in memory (IDX / MNIST layout).
 *
 * A dlu_dataset holds N uint8 images of shape (C, H, W) and N uint8 labels, read once
 * from IDX files (the format of MNIST and Fashion-MNIST, gzip-compressed or plain), and
 * hands out minibatches as float. It is NOT a streaming loader, an augmentation pipeline
 * or a shuffler: the whole set lives in memory (Fashion-MNIST train is 47 MB) and the
 * caller chooses the sample order by passing indices to dlu_dataset_gather().
 *
 * Thread safety: a loaded data set is never modified, so any number of threads may call
 * the accessors and dlu_dataset_gather() on the same handle at once. dlu_dataset_free()
 * must not race with any other use of that handle. Loading is reentrant: different
 * threads may load different (or the same) files at once. Error messages are per thread
 * (see dlu_last_error()). */
#ifndef DLU_DATA_H
#define DLU_DATA_H

#include <stdint.h>

#include "dlu/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Opaque; images are uint8 (N, C, H, W), labels uint8 (N). */
typedef struct dlu_dataset dlu_dataset;

/* Read an image file and a label file into a new data set.
 *
 * images_path: IDX unsigned-byte images, magic 0x00000803 (N, H, W), loaded with C = 1,
 *              or magic 0x00000804 (N, C, H, W).
 * labels_path: IDX unsigned-byte labels, magic 0x00000801 (N).
 * Each file may be gzip-compressed or plain, whatever its name (zlib reads both).
 * out:         receives the new data set, owned by the caller (free with dlu_dataset_free);
 *              set to NULL on failure.
 *
 * The whole file must be exactly what its header announces. Returns
 *   DLU_OK
 *   DLU_EINVAL       a NULL argument
 *   DLU_EIO          a file cannot be opened or read (message carries strerror)
 *   DLU_EFORMAT      wrong magic; a dimension of 0; file shorter than its header announces
 *                    (truncated, message gives expected and actual byte counts) or longer
 *                    (trailing bytes); gzip stream that ends early
 *   DLU_EUNSUPPORTED a valid IDX element type other than unsigned byte (0x08)
 *   DLU_ESHAPE       images not 3-D or 4-D, labels not 1-D, or label count != image count
 *   DLU_ERANGE       the header announces more than 2^33 bytes (8 GiB), or C, H or W > INT_MAX
 *   DLU_ECORRUPT     corrupt gzip data (bad deflate data or CRC; message carries zlib's words)
 *   DLU_ENOMEM       out of memory
 * On failure nothing is allocated and dlu_last_error() names the file and the problem. */
dlu_status dlu_dataset_load_idx(const char *images_path, const char *labels_path,
                                dlu_dataset **out);

/* Load the standard MNIST-style file pair from a directory.
 *
 * dir:   the directory (a trailing '/' is fine).
 * split: "train" -> train-images-idx3-ubyte + train-labels-idx1-ubyte,
 *        "test"  -> t10k-images-idx3-ubyte  + t10k-labels-idx1-ubyte.
 *        Each file is taken plain if it exists, else with a ".gz" suffix; the choice is
 *        made per file, so a half-unpacked directory works.
 * out:   as for dlu_dataset_load_idx().
 * Returns what dlu_dataset_load_idx() returns, plus DLU_EINVAL for an unknown split and
 * DLU_EIO when neither the plain nor the .gz file exists. */
dlu_status dlu_dataset_load_dir(const char *dir, const char *split, dlu_dataset **out);

/* Free a data set and every buffer the accessors returned. NULL is a no-op. */
void dlu_dataset_free(dlu_dataset *ds);

/* Number of samples N (0 for NULL). */
int64_t dlu_dataset_count(const dlu_dataset *ds);

/* Image shape: channels, height and width in pixels. Any output pointer may be NULL to
 * skip it. For a NULL ds all three are set to 0. */
void dlu_dataset_shape(const dlu_dataset *ds, int *c, int *h, int *w);

/* Number of classes: the largest label + 1 (1..256; 0 for NULL). A class that never
 * occurs below the largest label still counts. */
int dlu_dataset_classes(const dlu_dataset *ds);

/* The raw pixels, uint8 (N, C, H, W), row-major. Borrowed: valid until dlu_dataset_free().
 * NULL for a NULL ds. */
const uint8_t *dlu_dataset_images(const dlu_dataset *ds);

/* The raw labels, uint8 (N). Borrowed: valid until dlu_dataset_free(). NULL for NULL ds. */
const uint8_t *dlu_dataset_labels(const dlu_dataset *ds);

/* Gather samples idx[0..n) into a minibatch.
 *
 * idx: (n) sample indices, each in [0, N); repeats are allowed.
 * n:   batch size, >= 0 (0 does nothing).
 * x:   (n, C, H, W) caller-owned output, x = (float)pixel / 255.0f (IEEE division, so
 *      0 -> 0.0f and 255 -> 1.0f exactly).
 * y:   (n) caller-owned output, the labels as int32.
 * Allocates nothing. Returns DLU_OK, DLU_EINVAL (NULL pointer with n > 0, or n < 0) or
 * DLU_ERANGE (an index out of range; the message names the first bad position). All
 * indices are checked before anything is written, so on failure x and y are untouched. */
dlu_status dlu_dataset_gather(const dlu_dataset *ds, const int64_t *idx, int n, float *x,
                              int32_t *y);

#ifdef __cplusplus
}
#endif
#endif
