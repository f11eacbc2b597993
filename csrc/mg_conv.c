/* mg_conv.c: im2col / col2im, bias, and max / average pooling kernels
 * (mg_conv.h states the layouts and contracts).
 *
 * Inner loops run along an output row.  For each kernel offset the range of
 * output columns whose input pixel lies inside the image is computed once, so
 * the loops carry no per-pixel bounds test and unit-stride rows become plain
 * copies the compiler vectorises.
 */
#include "mg_conv.h"

#include <math.h>
#include <string.h>

#if defined(__SSE2__) || defined(_M_X64)
#include <emmintrin.h>
#define MG_HAVE_SSE2 1
#endif

/* Sum of n doubles with eight independent partial sums: a single running sum
 * is bound by the add latency, the partial sums vectorise. */
static double sum_doubles(const double *a, int64_t n)
{
    double part[8] = {0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0};
    int64_t k = 0;
    for (; k + 8 <= n; k += 8) {
        for (int j = 0; j < 8; j++) part[j] += a[k + j];
    }
    double total = 0.0;
    for (; k < n; k++) total += a[k];
    return total + ((part[0] + part[4]) + (part[1] + part[5])) +
           ((part[2] + part[6]) + (part[3] + part[7]));
}

/* The max-pooling step "v at index idx replaces the running maximum m if it is
 * larger or NaN", without branches: on random data the comparison is a coin
 * flip that a branch predictor loses about half the time. */
static inline void take_max(double v, int64_t idx, double *m, int64_t *at)
{
#ifdef MG_HAVE_SSE2
    const __m128d vv = _mm_set_sd(v), mm = _mm_set_sd(*m);
    const __m128d take = _mm_or_pd(_mm_cmpgt_sd(vv, mm), _mm_cmpunord_sd(vv, vv));
    *m = _mm_cvtsd_f64(_mm_or_pd(_mm_and_pd(take, vv), _mm_andnot_pd(take, mm)));
    const int64_t sel = -(int64_t)(_mm_movemask_pd(take) & 1);
    *at = (idx & sel) | (*at & ~sel);
#else
    if (v > *m || isnan(v)) { *m = v; *at = idx; }
#endif
}

/* Output positions o in [0, count) read input position o * stride + offset;
 * set [*lo, *hi) to those with 0 <= position < size (possibly empty). */
static void inside_range(int64_t count, int64_t stride, int64_t offset, int64_t size,
                         int64_t *lo, int64_t *hi)
{
    int64_t a = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
    int64_t b = size - offset <= 0 ? 0 : (size - offset + stride - 1) / stride;
    if (b > count) b = count;
    if (a > b) a = b;
    *lo = a;
    *hi = b;
}

/* ---------------------------------------------------------------- im2col */

void mg_im2col(const mg_conv_geom *g, int64_t batch, const double *x, double *cols)
{
    const int64_t C = g->channels, H = g->height, W = g->width;
    const int64_t kH = g->kernel_h, kW = g->kernel_w;
    const int64_t sH = g->stride_h, sW = g->stride_w;
    const int64_t Ho = g->out_h, Wo = g->out_w, L = Ho * Wo;

    for (int64_t n = 0; n < batch; n++) {
        const double *image = x + n * C * H * W;
        double *dst = cols + n * C * kH * kW * L;
        for (int64_t c = 0; c < C; c++) {
            const double *plane = image + c * H * W;
            for (int64_t i = 0; i < kH; i++) {
                const int64_t row_off = i * g->dilation_h - g->pad_h;
                for (int64_t j = 0; j < kW; j++) {
                    const int64_t col_off = j * g->dilation_w - g->pad_w;
                    int64_t lo, hi;
                    inside_range(Wo, sW, col_off, W, &lo, &hi);
                    for (int64_t oh = 0; oh < Ho; oh++, dst += Wo) {
                        const int64_t ih = oh * sH + row_off;
                        if (ih < 0 || ih >= H) {
                            memset(dst, 0, (size_t)Wo * sizeof(double));
                            continue;
                        }
                        for (int64_t ow = 0; ow < lo; ow++) dst[ow] = 0.0;
                        if (hi > lo) {
                            /* src[k]: the input pixel of output column lo + k */
                            const double *src = plane + ih * W + (lo * sW + col_off);
                            if (sW == 1) {
                                memcpy(dst + lo, src, (size_t)(hi - lo) * sizeof(double));
                            } else {
                                for (int64_t ow = lo; ow < hi; ow++) dst[ow] = src[(ow - lo) * sW];
                            }
                        }
                        for (int64_t ow = hi; ow < Wo; ow++) dst[ow] = 0.0;
                    }
                }
            }
        }
    }
}

void mg_col2im(const mg_conv_geom *g, int64_t batch, const double *cols, double *x)
{
    const int64_t C = g->channels, H = g->height, W = g->width;
    const int64_t kH = g->kernel_h, kW = g->kernel_w;
    const int64_t sH = g->stride_h, sW = g->stride_w;
    const int64_t Ho = g->out_h, Wo = g->out_w, L = Ho * Wo;

    memset(x, 0, (size_t)(batch * C * H * W) * sizeof(double));
    for (int64_t n = 0; n < batch; n++) {
        double *image = x + n * C * H * W;
        const double *src = cols + n * C * kH * kW * L;
        for (int64_t c = 0; c < C; c++) {
            double *plane = image + c * H * W;
            for (int64_t i = 0; i < kH; i++) {
                const int64_t row_off = i * g->dilation_h - g->pad_h;
                for (int64_t j = 0; j < kW; j++) {
                    const int64_t col_off = j * g->dilation_w - g->pad_w;
                    int64_t lo, hi;
                    inside_range(Wo, sW, col_off, W, &lo, &hi);
                    for (int64_t oh = 0; oh < Ho; oh++, src += Wo) {
                        const int64_t ih = oh * sH + row_off;
                        if (ih < 0 || ih >= H || hi <= lo) continue;
                        double *dst = plane + ih * W + (lo * sW + col_off);
                        const double *from = src + lo;
                        const int64_t count = hi - lo;
                        if (sW == 1) {
                            for (int64_t k = 0; k < count; k++) dst[k] += from[k];
                        } else {
                            for (int64_t k = 0; k < count; k++) dst[k * sW] += from[k];
                        }
                    }
                }
            }
        }
    }
}

/* ------------------------------------------------------------------ bias */

void mg_conv_add_bias(int64_t batch, int64_t channels, int64_t size,
                      const double *b, double *y)
{
    for (int64_t n = 0; n < batch; n++) {
        for (int64_t c = 0; c < channels; c++, y += size) {
            const double bias = b[c];
            for (int64_t k = 0; k < size; k++) y[k] += bias;
        }
    }
}

void mg_conv_bias_grad(int64_t batch, int64_t channels, int64_t size,
                       const double *gy, double *gb)
{
    for (int64_t c = 0; c < channels; c++) gb[c] = 0.0;
    for (int64_t n = 0; n < batch; n++) {
        for (int64_t c = 0; c < channels; c++, gy += size) gb[c] += sum_doubles(gy, size);
    }
}

/* ------------------------------------------------------------ max pooling */

void mg_max_pool2d_forward(const mg_pool_geom *g, int64_t planes, const double *x,
                           double *y, int64_t *argmax)
{
    const int64_t H = g->height, W = g->width;
    const int64_t kH = g->kernel_h, kW = g->kernel_w;
    const int64_t sH = g->stride_h, sW = g->stride_w;
    const int64_t dH = g->dilation_h, dW = g->dilation_w;
    const int64_t Ho = g->out_h, Wo = g->out_w;

    /* The common 2x2, stride 2 case without padding: no window clipping. */
    if (kH == 2 && kW == 2 && sH == 2 && sW == 2 && dH == 1 && dW == 1 &&
        g->pad_h == 0 && g->pad_w == 0 && 2 * Ho <= H && 2 * Wo <= W) {
        for (int64_t p = 0; p < planes; p++) {
            const double *plane = x + p * H * W;
            for (int64_t oh = 0; oh < Ho; oh++) {
                const double *r0 = plane + 2 * oh * W, *r1 = r0 + W;
                int64_t ow = 0;
#ifdef MG_HAVE_SSE2
                /* Two windows per step: lanes hold windows ow and ow + 1; an odd
                 * last window fills both lanes and stores one. */
                const __m128i advance = _mm_set1_epi64x(4), right = _mm_set1_epi64x(1);
                const __m128i down = _mm_set1_epi64x(W);
                __m128i base = _mm_set_epi64x(2 * oh * W + 2, 2 * oh * W);
                for (; ow < Wo; ow += 2) {
                    const int single = ow + 1 == Wo;
                    const int64_t next = single ? 2 * ow : 2 * ow + 2;   /* never past the row */
                    const __m128d t0 = _mm_loadu_pd(r0 + 2 * ow), b0 = _mm_loadu_pd(r1 + 2 * ow);
                    const __m128d t1 = _mm_loadu_pd(r0 + next), b1 = _mm_loadu_pd(r1 + next);
                    /* cells in row-major window order: top-left, top-right, bottom-left, bottom-right */
                    const __m128d cell[4] = {_mm_unpacklo_pd(t0, t1), _mm_unpackhi_pd(t0, t1),
                                             _mm_unpacklo_pd(b0, b1), _mm_unpackhi_pd(b0, b1)};
                    const __m128i index[4] = {base, _mm_add_epi64(base, right),
                                              _mm_add_epi64(base, down),
                                              _mm_add_epi64(_mm_add_epi64(base, down), right)};
                    __m128d m = cell[0];
                    __m128i at = index[0];
                    for (int k = 1; k < 4; k++) {
                        const __m128d take = _mm_or_pd(_mm_cmpgt_pd(cell[k], m),
                                                       _mm_cmpunord_pd(cell[k], cell[k]));
                        const __m128i takei = _mm_castpd_si128(take);
                        m = _mm_or_pd(_mm_and_pd(take, cell[k]), _mm_andnot_pd(take, m));
                        at = _mm_or_si128(_mm_and_si128(takei, index[k]),
                                          _mm_andnot_si128(takei, at));
                    }
                    if (single) {
                        _mm_store_sd(y + ow, m);
                        _mm_storel_epi64((__m128i *)(argmax + ow), at);
                    } else {
                        _mm_storeu_pd(y + ow, m);
                        _mm_storeu_si128((__m128i *)(argmax + ow), at);
                    }
                    base = _mm_add_epi64(base, advance);
                }
#endif
                for (; ow < Wo; ow++) {
                    const int64_t base0 = 2 * oh * W + 2 * ow;
                    double m = r0[2 * ow];
                    int64_t at = base0;
                    take_max(r0[2 * ow + 1], base0 + 1, &m, &at);
                    take_max(r1[2 * ow], base0 + W, &m, &at);
                    take_max(r1[2 * ow + 1], base0 + W + 1, &m, &at);
                    y[ow] = m;
                    argmax[ow] = at;
                }
                y += Wo;
                argmax += Wo;
            }
        }
        return;
    }

    for (int64_t p = 0; p < planes; p++) {
        const double *plane = x + p * H * W;
        for (int64_t oh = 0; oh < Ho; oh++) {
            int64_t h0 = oh * sH - g->pad_h;
            int64_t h1 = h0 + (kH - 1) * dH + 1;
            if (h1 > H) h1 = H;
            if (h0 < 0) h0 += ((-h0 + dH - 1) / dH) * dH;   /* first tap inside */
            for (int64_t ow = 0; ow < Wo; ow++) {
                int64_t w0 = ow * sW - g->pad_w;
                int64_t w1 = w0 + (kW - 1) * dW + 1;
                if (w1 > W) w1 = W;
                if (w0 < 0) w0 += ((-w0 + dW - 1) / dW) * dW;
                /* PyTorch's index for a window without a larger cell: its first
                 * tap inside the input, computed even when the window covers
                 * only padding (then possibly not a cell of the plane at all). */
                double m = -INFINITY;
                int64_t at = h0 * W + w0;
                for (int64_t ih = h0; ih < h1; ih += dH) {
                    const double *row = plane + ih * W;
                    for (int64_t iw = w0; iw < w1; iw += dW) take_max(row[iw], ih * W + iw, &m, &at);
                }
                y[ow] = m;
                argmax[ow] = at;
            }
            y += Wo;
            argmax += Wo;
        }
    }
}

int64_t mg_max_pool2d_backward(const mg_pool_geom *g, int64_t planes, const double *gy,
                               const int64_t *argmax, double *gx)
{
    const int64_t size = g->height * g->width, L = g->out_h * g->out_w;
    int64_t skipped = 0;

    memset(gx, 0, (size_t)(planes * size) * sizeof(double));
    for (int64_t p = 0; p < planes; p++, gx += size, gy += L, argmax += L) {
        for (int64_t k = 0; k < L; k++) {
            const int64_t at = argmax[k];
            if (at < 0 || at >= size) { skipped++; continue; }
            gx[at] += gy[k];
        }
    }
    return skipped;
}

/* -------------------------------------------------------- average pooling */

/* The window of output (oh, ow) clipped to the input, and its divisor. */
typedef struct { int64_t h0, h1, w0, w1; double divisor; } avg_window;

static inline avg_window avg_window_at(const mg_pool_geom *g, int count_include_pad,
                                       int64_t oh, int64_t ow)
{
    avg_window a;
    int64_t h0 = oh * g->stride_h - g->pad_h, w0 = ow * g->stride_w - g->pad_w;
    int64_t h1 = h0 + g->kernel_h, w1 = w0 + g->kernel_w;
    /* The padded extent bounds the count_include_pad divisor. */
    if (h1 > g->height + g->pad_h) h1 = g->height + g->pad_h;
    if (w1 > g->width + g->pad_w) w1 = g->width + g->pad_w;
    const int64_t padded = (h1 - h0) * (w1 - w0);
    if (h0 < 0) h0 = 0;
    if (w0 < 0) w0 = 0;
    if (h1 > g->height) h1 = g->height;
    if (w1 > g->width) w1 = g->width;
    a.h0 = h0; a.h1 = h1; a.w0 = w0; a.w1 = w1;
    a.divisor = (double)(count_include_pad ? padded : (h1 - h0) * (w1 - w0));
    return a;
}

void mg_avg_pool2d_divisors(const mg_pool_geom *g, int count_include_pad, double *divisors)
{
    for (int64_t oh = 0; oh < g->out_h; oh++) {
        for (int64_t ow = 0; ow < g->out_w; ow++) {
            *divisors++ = avg_window_at(g, count_include_pad, oh, ow).divisor;
        }
    }
}

void mg_avg_pool2d_forward(const mg_pool_geom *g, int64_t planes, int count_include_pad,
                           const double *x, double *y)
{
    const int64_t H = g->height, W = g->width, Ho = g->out_h, Wo = g->out_w;

    for (int64_t p = 0; p < planes; p++) {
        const double *plane = x + p * H * W;
        for (int64_t oh = 0; oh < Ho; oh++) {
            for (int64_t ow = 0; ow < Wo; ow++, y++) {
                const avg_window a = avg_window_at(g, count_include_pad, oh, ow);
                if (a.h0 >= a.h1 || a.w0 >= a.w1) { *y = 0.0; continue; }
                double acc = 0.0;
                for (int64_t ih = a.h0; ih < a.h1; ih++) {
                    for (int64_t iw = a.w0; iw < a.w1; iw++) acc += plane[ih * W + iw];
                }
                *y = acc / a.divisor;
            }
        }
    }
}

void mg_avg_pool2d_backward(const mg_pool_geom *g, int64_t planes, int count_include_pad,
                            const double *gy, double *gx)
{
    const int64_t H = g->height, W = g->width, Ho = g->out_h, Wo = g->out_w;

    memset(gx, 0, (size_t)(planes * H * W) * sizeof(double));
    for (int64_t p = 0; p < planes; p++) {
        double *plane = gx + p * H * W;
        for (int64_t oh = 0; oh < Ho; oh++) {
            for (int64_t ow = 0; ow < Wo; ow++, gy++) {
                const avg_window a = avg_window_at(g, count_include_pad, oh, ow);
                if (a.h0 >= a.h1 || a.w0 >= a.w1) continue;
                const double share = *gy / a.divisor;
                for (int64_t ih = a.h0; ih < a.h1; ih++) {
                    for (int64_t iw = a.w0; iw < a.w1; iw++) plane[ih * W + iw] += share;
                }
            }
        }
    }
}
