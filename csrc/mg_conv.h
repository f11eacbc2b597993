/* mg_conv.h: plain-C kernels of 2-D convolution and pooling (NCHW, float64).
 *
 * Convolution is lowered to a matrix product: mg_im2col copies every
 * receptive field of an image into one column of a matrix, and mg_col2im is
 * its adjoint, adding the columns back onto the image.  The matrix product
 * itself is left to the caller (numpy's BLAS).  Pooling is computed directly.
 *
 * Layouts, as in PyTorch: an image is (channels, height, width), C-contiguous;
 * a batch stacks images back to back.  The column matrix of one image is
 * (channels * kernel_h * kernel_w, out_h * out_w), row (c * kernel_h + i) *
 * kernel_w + j holding input pixel (oh * stride_h - pad_h + i * dilation_h,
 * ow * stride_w - pad_w + j * dilation_w) for output pixel oh * out_w + ow,
 * or 0 where that pixel lies in the zero padding.  This row order is the
 * order of a weight tensor (C_out, C_in, kH, kW) flattened to (C_out, -1).
 *
 * The functions trust their arguments (positive sizes, consistent shapes,
 * buffers large enough); the Cython layer checks them first.
 */
#ifndef MG_CONV_H
#define MG_CONV_H

#include <stdint.h>

/* Geometry of one convolution: the image it slides over and the window. */
typedef struct {
    int64_t channels, height, width;    /* of the convolved image */
    int64_t kernel_h, kernel_w;
    int64_t stride_h, stride_w;
    int64_t pad_h, pad_w;
    int64_t dilation_h, dilation_w;
    int64_t out_h, out_w;               /* number of window positions */
} mg_conv_geom;

/* Geometry of one pooling, applied independently to each (height, width) plane. */
typedef struct {
    int64_t height, width;
    int64_t kernel_h, kernel_w;
    int64_t stride_h, stride_w;
    int64_t pad_h, pad_w;
    int64_t dilation_h, dilation_w;     /* 1 for average pooling */
    int64_t out_h, out_w;
} mg_pool_geom;

/* cols[n] = im2col(x[n]) for the batch images; cols is (batch, rows, out_h*out_w). */
void mg_im2col(const mg_conv_geom *g, int64_t batch, const double *x, double *cols);

/* x[n] = col2im(cols[n]): x is overwritten with the sum of the columns' entries
 * at the pixels they were copied from (entries in the padding are dropped). */
void mg_col2im(const mg_conv_geom *g, int64_t batch, const double *cols, double *x);

/* y[n, c, :] += b[c] over a (batch, channels, size) array. */
void mg_conv_add_bias(int64_t batch, int64_t channels, int64_t size,
                      const double *b, double *y);

/* gb[c] = sum of gy[n, c, :] over n and the plane: the bias gradient. */
void mg_conv_bias_grad(int64_t batch, int64_t channels, int64_t size,
                       const double *gy, double *gb);

/* Max pooling of planes independent planes.  y gets the window maxima,
 * argmax their flat index ih * width + iw within the plane.  Padding acts as
 * -inf; the first maximum in row-major order wins; NaN is the maximum of any
 * window holding one (the last NaN, as PyTorch's CPU kernel).  A window
 * without a cell above -inf reports its first tap inside the input; with
 * dilation a window can cover only padding (y = -inf), and then, as in
 * PyTorch, that index is computed past the window and may lie outside the
 * plane. */
void mg_max_pool2d_forward(const mg_pool_geom *g, int64_t planes, const double *x,
                           double *y, int64_t *argmax);

/* gx is overwritten: each gy entry is added at its argmax in its plane.
 * Entries whose argmax lies outside the plane are skipped (PyTorch writes
 * them out of bounds); returns how many were skipped. */
int64_t mg_max_pool2d_backward(const mg_pool_geom *g, int64_t planes, const double *gy,
                               const int64_t *argmax, double *gx);

/* Average pooling (no dilation).  The divisor is the number of window cells
 * inside the input, or with count_include_pad also those in the padding (but
 * not the part of a ceil_mode window beyond the padding), as in PyTorch. */
void mg_avg_pool2d_forward(const mg_pool_geom *g, int64_t planes, int count_include_pad,
                           const double *x, double *y);

/* divisors (out_h, out_w) gets the divisor of every window that
 * mg_avg_pool2d_forward uses: with count_include_pad == 0, the number of the
 * window's cells inside the input (0 for a window wholly in the padding). */
void mg_avg_pool2d_divisors(const mg_pool_geom *g, int count_include_pad, double *divisors);

/* gx is overwritten: each gy entry is spread over its window's cells inside
 * the input, divided by the forward divisor. */
void mg_avg_pool2d_backward(const mg_pool_geom *g, int64_t planes, int count_include_pad,
                            const double *gy, double *gx);

#endif /* MG_CONV_H */
