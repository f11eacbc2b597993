# cython: language_level=3
"""Convolution and pooling on plain float64 arrays: the kernels under the
graph's conv2d, conv_transpose2d, max_pool2d and avg_pool2d nodes.

No graph and no autograd here: each op has a forward function and a backward
function that maps the output gradient to the input gradients.  Arrays are
NCHW, C-contiguous float64, with PyTorch's weight layouts and semantics.

A convolution is im2col (C, csrc/mg_conv.c) followed by one batched matrix
product through numpy's BLAS; its input gradient is the transposed product
followed by col2im.  Groups are handled inside the same product by viewing
the channels as (groups, channels per group) and letting matmul broadcast.
conv_transpose2d is the same pair of kernels used the other way round.  A
batch goes through in chunks of images whose column matrix fits in cache, and
a 1x1 kernel without stride or padding skips im2col (the columns are the
image).
A direct C loop (no column matrix) was measured against this on the small
case it could win, 1x1x28x28 with 8 filters 3x3, and lost even there
(forward 12.6 vs 10.1 us, weight gradient 40 vs 6 us): compiled for baseline
x86-64 it cannot match BLAS's wide vector code, so there is one code path.

Every function checks what the C kernels rely on (types, dtypes, layout,
shapes, parameter ranges) and raises TypeError/ValueError before any kernel
runs, so no input can crash the interpreter; user-facing validation with
friendlier messages belongs to the graph layer.
"""

cimport numpy as cnp
from cpython.number cimport PyNumber_Index
from libc.stdint cimport int64_t

import numpy as np

cnp.import_array()

cdef extern from "numpy/arrayobject.h":
    # np.dot(a, b, out=out) without the Python call: for 2-D operands it goes
    # straight to BLAS gemm, a microsecond cheaper than np.matmul's ufunc path
    object PyArray_MatrixProduct2(object a, object b, cnp.ndarray out)

cdef extern from "mg_conv.h" nogil:
    ctypedef struct mg_conv_geom:
        int64_t channels, height, width
        int64_t kernel_h, kernel_w
        int64_t stride_h, stride_w
        int64_t pad_h, pad_w
        int64_t dilation_h, dilation_w
        int64_t out_h, out_w

    ctypedef struct mg_pool_geom:
        int64_t height, width
        int64_t kernel_h, kernel_w
        int64_t stride_h, stride_w
        int64_t pad_h, pad_w
        int64_t dilation_h, dilation_w
        int64_t out_h, out_w

    void mg_im2col(const mg_conv_geom *g, int64_t batch, const double *x, double *cols)
    void mg_col2im(const mg_conv_geom *g, int64_t batch, const double *cols, double *x)
    void mg_conv_add_bias(int64_t batch, int64_t channels, int64_t size,
                          const double *b, double *y)
    void mg_conv_bias_grad(int64_t batch, int64_t channels, int64_t size,
                           const double *gy, double *gb)
    void mg_max_pool2d_forward(const mg_pool_geom *g, int64_t planes, const double *x,
                               double *y, int64_t *argmax)
    int64_t mg_max_pool2d_backward(const mg_pool_geom *g, int64_t planes, const double *gy,
                                   const int64_t *argmax, double *gx)
    void mg_avg_pool2d_forward(const mg_pool_geom *g, int64_t planes,
                               int count_include_pad, const double *x, double *y)
    void mg_avg_pool2d_backward(const mg_pool_geom *g, int64_t planes,
                                int count_include_pad, const double *gy, double *gx)
    void mg_avg_pool2d_divisors(const mg_pool_geom *g, int count_include_pad,
                                double *divisors)


# Sizes and parameters are capped so that every index expression in the C
# kernels fits comfortably in 64 bits.
cdef int64_t _LIMIT = 2147483647

cdef object _matmul = np.matmul


# ------------------------------------------------------------------ checks

cdef inline object _shape(cnp.ndarray a):
    # the typed ndarray's .shape is a C pointer; the Python tuple for messages
    return (<object>a).shape


cdef inline cnp.ndarray _array(object a, str name, int ndim, int typenum=cnp.NPY_DOUBLE,
                               int nonempty_from=1):
    """``a`` as an ndarray after checking what the C kernels assume of it:
    dimensions from nonempty_from on must be positive (only a batch may be
    empty, as in PyTorch)."""
    if not cnp.PyArray_Check(a):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    cdef cnp.ndarray arr = <cnp.ndarray>a
    if cnp.PyArray_TYPE(arr) != typenum:
        want = "float64" if typenum == cnp.NPY_DOUBLE else "int64"
        raise ValueError(f"{name} must have dtype {want}, got {arr.dtype}")
    if cnp.PyArray_NDIM(arr) != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {_shape(arr)}")
    if not (cnp.PyArray_IS_C_CONTIGUOUS(arr) and cnp.PyArray_ISBEHAVED_RO(arr)):
        raise ValueError(f"{name} must be C-contiguous, aligned and in native byte order")
    cdef int i
    for i in range(ndim):
        if cnp.PyArray_DIMS(arr)[i] > _LIMIT:
            raise ValueError(f"{name} has a dimension too large: shape {_shape(arr)}")
        if i >= nonempty_from and cnp.PyArray_DIMS(arr)[i] == 0:
            raise ValueError(f"{name} must have no empty dimension after the batch, "
                             f"got shape {_shape(arr)}")
    return arr


cdef int _pair(object value, str name, int64_t minimum, int64_t *h, int64_t *w) except -1:
    """The one rule for a pair argument (kernel_size, stride, padding, dilation,
    output_padding), shared by functional, nn and the kernels: an int for both
    dimensions or a pair (h, w) of ints, each in [minimum, _LIMIT].  Raises
    TypeError/ValueError naming ``name``."""
    cdef object pair = value
    if not isinstance(value, (tuple, list)):
        pair = (value, value)
    elif len(value) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    # a bool is an int to Python, but nobody means True as a size
    if isinstance(pair[0], bool) or isinstance(pair[1], bool):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    try:
        # PyNumber_Index: ints and numpy integers, never a float truncated
        h[0] = PyNumber_Index(pair[0])
        w[0] = PyNumber_Index(pair[1])
    except OverflowError:
        raise ValueError(f"{name} is out of range: {value!r}") from None
    except TypeError:
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if h[0] < minimum or w[0] < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    if h[0] > _LIMIT or w[0] > _LIMIT:
        raise ValueError(f"{name} is out of range (at most {_LIMIT}): {value!r}")
    return 0


cdef inline int64_t _int(object v, str name, int64_t low) except? -1:
    cdef int64_t r
    try:
        r = PyNumber_Index(v)
    except OverflowError:
        raise ValueError(f"{name} is out of range: {v!r}") from None
    if r < low or r > _LIMIT:
        raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
    return r


cdef inline int64_t _mul(int64_t a, int64_t b) except -1:
    """a * b for non-negative sizes, refusing products that overflow."""
    if b != 0 and a > 0x7fffffffffffffff // b:
        raise ValueError("arrays of this size cannot be allocated")
    return a * b


cdef inline int64_t _floor_div(int64_t a, int64_t b) nogil:
    # cdivision truncates toward zero; the size formulas need floor (b > 0)
    cdef int64_t q = a // b
    if (a % b != 0) and (a < 0):
        q -= 1
    return q


# The size formulas and range rules of convolution and pooling, PyTorch's,
# written once: the kernels below fill their geometry with them, and
# functional and nn reach them through the Python functions further down.

cdef inline int64_t _conv_out(int64_t n, int64_t k, int64_t s, int64_t p, int64_t d) nogil:
    return _floor_div(n + 2 * p - d * (k - 1) - 1, s) + 1


cdef inline int64_t _pool_out(int64_t n, int64_t k, int64_t s, int64_t p, int64_t d,
                              bint ceil_mode) nogil:
    cdef int64_t o = _floor_div(n + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0), s) + 1
    # PyTorch: the last window must start inside the input or its left padding
    if ceil_mode and (o - 1) * s >= n + p:
        o -= 1
    return o


cdef inline int64_t _transpose_out(int64_t n, int64_t k, int64_t s, int64_t p, int64_t d,
                                   int64_t op) nogil:
    # the input size of the convolution whose adjoint this is, plus output_padding
    return (n - 1) * s - 2 * p + d * (k - 1) + op + 1


cdef int _check_output_padding(int64_t oph, int64_t opw, int64_t sh, int64_t sw,
                               int64_t dh, int64_t dw, str name) except -1:
    # output_padding picks one of the input sizes that a strided (or dilated)
    # convolution maps to the same output size, so it must stay below one of them
    if (oph >= sh and oph >= dh) or (opw >= sw and opw >= dw):
        raise ValueError(f"{name} ({oph}, {opw}) must be smaller than either stride "
                         f"({sh}, {sw}) or dilation ({dh}, {dw})")
    return 0


cdef int _check_pool_padding(int64_t ph, int64_t pw, int64_t kh, int64_t kw,
                             str name) except -1:
    # PyTorch's rule (with dilation a window may still cover padding alone)
    if 2 * ph > kh or 2 * pw > kw:
        raise ValueError(f"{name} ({ph}, {pw}) must be at most half of the kernel size ({kh}, {kw})")
    return 0


# ------------------------------------------------------------------ arrays

cdef inline cnp.ndarray _empty(int nd, cnp.npy_intp d0, cnp.npy_intp d1,
                               cnp.npy_intp d2, cnp.npy_intp d3,
                               int typenum=cnp.NPY_DOUBLE):
    cdef cnp.npy_intp dims[4]
    dims[0] = d0
    dims[1] = d1
    dims[2] = d2
    dims[3] = d3
    return <cnp.ndarray>cnp.PyArray_EMPTY(nd, dims, typenum, 0)


cdef inline object _view(cnp.ndarray a, int nd, cnp.npy_intp d0, cnp.npy_intp d1,
                         cnp.npy_intp d2=0, cnp.npy_intp d3=0):
    """A reshaped view of the C-contiguous array a (same number of elements)."""
    cdef cnp.npy_intp dims[4]
    dims[0] = d0
    dims[1] = d1
    dims[2] = d2
    dims[3] = d3
    cdef cnp.PyArray_Dims shape
    shape.ptr = dims
    shape.len = nd
    return cnp.PyArray_Newshape(a, &shape, cnp.NPY_CORDER)


cdef inline double *_ptr(cnp.ndarray a) noexcept nogil:
    return <double *>cnp.PyArray_DATA(a)


# ----------------------------------------------- geometry, from Python

def pair(value, name="value", minimum=0):
    """``value`` (an int, or a pair of ints) as an (h, w) tuple of ints, each
    in [minimum, 2**31 - 1]; TypeError/ValueError naming ``name`` otherwise."""
    cdef int64_t h, w, low = PyNumber_Index(minimum)
    _pair(value, name, low, &h, &w)
    return (h, w)


def conv2d_output_size(in_hw, kernel, stride, padding, dilation):
    """(H_out, W_out) of a convolution, PyTorch's formula; may be < 1 for a
    window larger than the padded input (the caller reports that)."""
    cdef int64_t H, W, kH, kW, sH, sW, pH, pW, dH, dW
    _pair(in_hw, "in_hw", 0, &H, &W)
    _pair(kernel, "kernel", 1, &kH, &kW)
    _pair(stride, "stride", 1, &sH, &sW)
    _pair(padding, "padding", 0, &pH, &pW)
    _pair(dilation, "dilation", 1, &dH, &dW)
    return (_conv_out(H, kH, sH, pH, dH), _conv_out(W, kW, sW, pW, dW))


def pool2d_output_size(in_hw, kernel, stride, padding, dilation, ceil_mode):
    """(H_out, W_out) of a pooling, PyTorch's formula including its ceil_mode
    rule; may be < 1 for a window larger than the padded input."""
    cdef int64_t H, W, kH, kW, sH, sW, pH, pW, dH, dW
    _pair(in_hw, "in_hw", 0, &H, &W)
    _pair(kernel, "kernel", 1, &kH, &kW)
    _pair(stride, "stride", 1, &sH, &sW)
    _pair(padding, "padding", 0, &pH, &pW)
    _pair(dilation, "dilation", 1, &dH, &dW)
    cdef bint c = bool(ceil_mode)
    return (_pool_out(H, kH, sH, pH, dH, c), _pool_out(W, kW, sW, pW, dW, c))


def conv_transpose2d_output_size(in_hw, kernel, stride, padding, output_padding, dilation):
    """(H_out, W_out) of a transposed convolution, PyTorch's formula; may be
    < 1 when the padding removes everything (the caller reports that)."""
    cdef int64_t H, W, kH, kW, sH, sW, pH, pW, oH, oW, dH, dW
    _pair(in_hw, "in_hw", 0, &H, &W)
    _pair(kernel, "kernel", 1, &kH, &kW)
    _pair(stride, "stride", 1, &sH, &sW)
    _pair(padding, "padding", 0, &pH, &pW)
    _pair(output_padding, "output_padding", 0, &oH, &oW)
    _pair(dilation, "dilation", 1, &dH, &dW)
    return (_transpose_out(H, kH, sH, pH, dH, oH), _transpose_out(W, kW, sW, pW, dW, oW))


def check_output_padding(output_padding, stride, dilation, name="output_padding"):
    """ValueError naming ``name`` unless output_padding is below stride or
    dilation in each dimension (PyTorch's rule for transposed convolution)."""
    cdef int64_t oH, oW, sH, sW, dH, dW
    _pair(output_padding, name, 0, &oH, &oW)
    _pair(stride, "stride", 1, &sH, &sW)
    _pair(dilation, "dilation", 1, &dH, &dW)
    _check_output_padding(oH, oW, sH, sW, dH, dW, name)


def check_pool_padding(padding, kernel, name="padding"):
    """ValueError naming ``name`` unless pooling padding is at most half the
    kernel in each dimension (PyTorch's rule)."""
    cdef int64_t pH, pW, kH, kW
    _pair(padding, name, 0, &pH, &pW)
    _pair(kernel, "kernel", 1, &kH, &kW)
    _check_pool_padding(pH, pW, kH, kW, name)


# -------------------------------------------------------------- convolution

cdef int _conv_geom(mg_conv_geom *g, int64_t channels, int64_t H, int64_t W,
                    int64_t kH, int64_t kW, object stride, object padding,
                    object dilation) except -1:
    """Fill g for a convolution over an image (channels, H, W); out_h/out_w
    are the conv2d output size, which must be positive."""
    g.channels = channels
    g.height = H
    g.width = W
    g.kernel_h = kH
    g.kernel_w = kW
    _pair(stride, "stride", 1, &g.stride_h, &g.stride_w)
    _pair(padding, "padding", 0, &g.pad_h, &g.pad_w)
    _pair(dilation, "dilation", 1, &g.dilation_h, &g.dilation_w)
    g.out_h = _conv_out(H, kH, g.stride_h, g.pad_h, g.dilation_h)
    g.out_w = _conv_out(W, kW, g.stride_w, g.pad_w, g.dilation_w)
    if g.out_h < 1 or g.out_w < 1:
        raise ValueError(
            f"the kernel ({kH}, {kW}) with dilation ({g.dilation_h}, {g.dilation_w}) does "
            f"not fit the input ({H}, {W}) padded by ({g.pad_h}, {g.pad_w})")
    return 0


cdef inline bint _is_pointwise(const mg_conv_geom *g) noexcept nogil:
    """A 1x1 kernel with unit stride and no padding: im2col is the identity."""
    return (g.kernel_h == 1 and g.kernel_w == 1 and g.stride_h == 1 and g.stride_w == 1
            and g.pad_h == 0 and g.pad_w == 0
            and g.out_h == g.height and g.out_w == g.width)


# The column matrix of a whole batch can be large (N * C_in*kH*kW * H_out*W_out
# doubles), so a batch is processed in chunks of images whose columns fit this
# budget, sized for a core's L2 cache: im2col writes the columns and the matrix
# product reads them back while they are still in cache.  Measured (CPU time,
# forward / backward): 128x3x32x32 with 16 filters 3x3 padded, about 5 / 9 ms
# against 8 / 13 ms for one whole-batch matrix; the 64x1x28x28 benchmark layer
# (7 chunks) pays about 3% in call overhead.
cdef int64_t _COLS_BUDGET = 1 << 16     # doubles: 512 KB


def _set_cols_budget(int64_t doubles):
    """Set the column-matrix budget (in doubles) and return the old one; for
    tests, which make it tiny to run the chunked path."""
    global _COLS_BUDGET
    old = _COLS_BUDGET
    _COLS_BUDGET = doubles
    return old


cdef inline int64_t _chunk_size(int64_t N, int64_t per_image) noexcept:
    cdef int64_t c = _COLS_BUDGET // per_image if per_image > 0 else N
    if c > N:
        c = N
    return c if c > 0 else 1


cdef inline cnp.ndarray _images(cnp.ndarray a, int64_t n0, int64_t n, int64_t N):
    """a[n0:n0 + n], a contiguous view (a itself for the whole batch)."""
    if n0 == 0 and n == N:
        return a
    return <cnp.ndarray>a[n0:n0 + n]


cdef inline cnp.ndarray _part(cnp.ndarray buf, int64_t n, int64_t chunk):
    """The first n images of a chunk buffer."""
    return buf if n == chunk else <cnp.ndarray>buf[:n]


cdef class _ConvCall:
    """The checked arrays and sizes of one convolution call (internal)."""
    cdef cnp.ndarray x, w, b
    cdef mg_conv_geom g
    cdef int64_t N, C_in, C_out, G, K, L


cdef _ConvCall _conv2d_call(object x, object w, object stride, object padding,
                            object dilation, object groups):
    """Check a conv2d call: the column geometry is that of x."""
    cdef _ConvCall c = _ConvCall.__new__(_ConvCall)
    c.x = _array(x, "x", 4)
    c.w = _array(w, "w", 4, cnp.NPY_DOUBLE, 0)
    c.G = _int(groups, "groups", 1)
    cdef cnp.npy_intp *xs = cnp.PyArray_DIMS(c.x)
    cdef cnp.npy_intp *ws = cnp.PyArray_DIMS(c.w)
    c.N = xs[0]
    c.C_in = xs[1]
    c.C_out = ws[0]
    if c.C_in % c.G or c.C_out % c.G or ws[1] * c.G != c.C_in:
        raise ValueError(f"w of shape {_shape(c.w)} does not fit x of shape {_shape(c.x)} "
                         f"with groups={c.G}")
    _conv_geom(&c.g, c.C_in, xs[2], xs[3], ws[2], ws[3], stride, padding, dilation)
    c.K = ws[1] * ws[2] * ws[3]
    c.L = _mul(c.g.out_h, c.g.out_w)
    return c


cdef _ConvCall _conv_transpose2d_call(object x, object w, object stride, object padding,
                                      object output_padding, object dilation, object groups):
    """Check a conv_transpose2d call: the column geometry is that of the
    output y, whose window positions are the pixels of x."""
    cdef _ConvCall c = _ConvCall.__new__(_ConvCall)
    c.x = _array(x, "x", 4)
    c.w = _array(w, "w", 4, cnp.NPY_DOUBLE, 0)
    c.G = _int(groups, "groups", 1)
    cdef cnp.npy_intp *xs = cnp.PyArray_DIMS(c.x)
    cdef cnp.npy_intp *ws = cnp.PyArray_DIMS(c.w)
    c.N = xs[0]
    c.C_in = xs[1]
    if c.C_in % c.G or ws[0] != c.C_in:
        raise ValueError(f"w of shape {_shape(c.w)} does not fit x of shape {_shape(c.x)} "
                         f"with groups={c.G}")
    c.C_out = _mul(ws[1], c.G)
    cdef mg_conv_geom *g = &c.g
    cdef int64_t oph, opw
    _pair(stride, "stride", 1, &g.stride_h, &g.stride_w)
    _pair(padding, "padding", 0, &g.pad_h, &g.pad_w)
    _pair(dilation, "dilation", 1, &g.dilation_h, &g.dilation_w)
    _pair(output_padding, "output_padding", 0, &oph, &opw)
    _check_output_padding(oph, opw, g.stride_h, g.stride_w, g.dilation_h, g.dilation_w,
                          "output_padding")
    g.channels = c.C_out
    g.kernel_h = ws[2]
    g.kernel_w = ws[3]
    g.out_h = xs[2]
    g.out_w = xs[3]
    g.height = _transpose_out(xs[2], ws[2], g.stride_h, g.pad_h, g.dilation_h, oph)
    g.width = _transpose_out(xs[3], ws[3], g.stride_w, g.pad_w, g.dilation_w, opw)
    if g.height < 1 or g.width < 1 or g.out_h < 1 or g.out_w < 1:
        raise ValueError(f"conv_transpose2d output size ({g.height}, {g.width}) of input "
                         f"{_shape(c.x)} is not positive")
    if g.height > _LIMIT or g.width > _LIMIT:
        raise ValueError(f"conv_transpose2d output size ({g.height}, {g.width}) is too large")
    c.K = ws[1] * ws[2] * ws[3]
    c.L = _mul(g.out_h, g.out_w)
    return c


cdef cnp.ndarray _bias(object b, int64_t C_out):
    if b is None:
        return None
    cdef cnp.ndarray ba = _array(b, "b", 1)
    if cnp.PyArray_DIMS(ba)[0] != C_out:
        raise ValueError(f"b must have shape ({C_out},), got {_shape(ba)}")
    return ba


cdef cnp.ndarray _grad_out(object gy, int64_t N, int64_t C, int64_t H, int64_t W):
    cdef cnp.ndarray a = _array(gy, "gy", 4)
    cdef cnp.npy_intp *s = cnp.PyArray_DIMS(a)
    if s[0] != N or s[1] != C or s[2] != H or s[3] != W:
        raise ValueError(f"gy must have shape ({N}, {C}, {H}, {W}), got {_shape(a)}")
    return a


cdef cnp.ndarray _bias_grad(cnp.ndarray gy):
    cdef cnp.npy_intp *s = cnp.PyArray_DIMS(gy)
    cdef cnp.ndarray gb = _empty(1, s[1], 0, 0, 0)
    with nogil:
        mg_conv_bias_grad(s[0], s[1], s[2] * s[3], _ptr(gy), _ptr(gb))
    return gb


cdef _apply(object w, cnp.ndarray a, cnp.ndarray out, int64_t N, int64_t G,
            int64_t M, int64_t K, int64_t L):
    """out[n, g] (M, L) = w[g] (M, K) @ a[n, g] (K, L) for every image n and
    group g; w is (M, K) for one group, else (G, M, K), which matmul broadcasts
    over the batch while pairing the groups."""
    if G == 1 and N == 1:
        PyArray_MatrixProduct2(w, _view(a, 2, K, L), <cnp.ndarray>_view(out, 2, M, L))
    elif G == 1:
        _matmul(w, _view(a, 3, N, K, L), out=_view(out, 3, N, M, L))
    else:
        _matmul(w, _view(a, 4, N, G, K, L), out=_view(out, 4, N, G, M, L))


cdef class _WeightGrad:
    """A weight gradient out[g] (M, K) = sum over images n of a[n, g] (M, L) @
    b[n, g].T (L, K), fed chunk by chunk.  The chunks' products go into one
    (N, G, M, K) array that is summed over the batch once at the end, so a
    chunk costs one matmul call."""
    cdef cnp.ndarray total, products
    cdef int64_t N, G, M, K, L

    cdef add(self, cnp.ndarray a, cnp.ndarray b, int64_t n0, int64_t n):
        cdef int64_t G = self.G, M = self.M, K = self.K, L = self.L
        if self.N == 1:
            if G == 1:
                PyArray_MatrixProduct2(_view(a, 2, M, L), _view(b, 2, K, L).T,
                                       <cnp.ndarray>_view(self.total, 2, M, K))
            else:
                _matmul(_view(a, 3, G, M, L), _view(b, 3, G, K, L).swapaxes(1, 2),
                        out=_view(self.total, 3, G, M, K))
            return
        if self.products is None:
            self.products = _empty(4, self.N, G, M, K)
        _matmul(_view(a, 4, n, G, M, L), _view(b, 4, n, G, K, L).swapaxes(2, 3),
                out=_images(self.products, n0, n, self.N))

    cdef cnp.ndarray result(self):
        if self.N == 0:
            self.total.fill(0.0)
        elif self.N > 1:
            np.add.reduce(self.products, axis=0,
                          out=_view(self.total, 3, self.G, self.M, self.K))
        return self.total


cdef _WeightGrad _weight_grad(tuple shape, int64_t N, int64_t G, int64_t M, int64_t K,
                              int64_t L):
    cdef _WeightGrad wg = _WeightGrad.__new__(_WeightGrad)
    wg.total = _empty(4, shape[0], shape[1], shape[2], shape[3])
    wg.N = N
    wg.G = G
    wg.M = M
    wg.K = K
    wg.L = L
    return wg


def conv2d_forward(x, w, b, stride, padding, dilation, groups):
    """y = conv2d(x, w, b): x (N, C_in, H, W), w (C_out, C_in/groups, kH, kW),
    b (C_out,) or None; returns y (N, C_out, H_out, W_out)."""
    cdef _ConvCall c = _conv2d_call(x, w, stride, padding, dilation, groups)
    cdef cnp.ndarray ba = _bias(b, c.C_out)
    cdef cnp.ndarray y = _empty(4, c.N, c.C_out, c.g.out_h, c.g.out_w)
    cdef int64_t G = c.G, N = c.N, M = c.C_out // c.G, K = c.K, L = c.L
    cdef object wv = _view(c.w, 2, M, K) if G == 1 else _view(c.w, 3, G, M, K)
    cdef int64_t rows = G * K, chunk, n0, n
    cdef cnp.ndarray buf, cols, part
    if _is_pointwise(&c.g):             # the columns are x itself
        _apply(wv, c.x, y, N, G, M, K, L)
    else:
        chunk = _chunk_size(N, _mul(rows, L))
        buf = _empty(3, chunk, rows, L, 0)
        for n0 in range(0, N, chunk):
            n = min(chunk, N - n0)
            cols = _part(buf, n, chunk)
            part = _images(c.x, n0, n, N)
            with nogil:
                mg_im2col(&c.g, n, _ptr(part), _ptr(cols))
            _apply(wv, cols, _images(y, n0, n, N), n, G, M, K, L)
    if ba is not None:
        with nogil:
            mg_conv_add_bias(N, c.C_out, L, _ptr(ba), _ptr(y))
    return y


def conv2d_backward(gy, x, w, stride, padding, dilation, groups, need_x, need_w, need_b):
    """Gradients of conv2d with respect to x, w and b, given gy = dL/dy;
    returns (gx, gw, gb) with None for each one not asked for."""
    cdef _ConvCall c = _conv2d_call(x, w, stride, padding, dilation, groups)
    cdef cnp.ndarray gya = _grad_out(gy, c.N, c.C_out, c.g.out_h, c.g.out_w)
    cdef int64_t G = c.G, N = c.N, M = c.C_out // c.G, K = c.K, L = c.L
    cdef int64_t rows = G * K, chunk, n0, n
    cdef bint pointwise = _is_pointwise(&c.g)
    cdef cnp.ndarray gx = None, gb = None, buf = None, cols, part, gy_part
    cdef _WeightGrad gw = None
    # dL/dcols = w^T gy, per group: the transposed weight
    cdef object wt = None
    if need_b:
        gb = _bias_grad(gya)
    if need_w:
        gw = _weight_grad((c.C_out, c.C_in // G, c.g.kernel_h, c.g.kernel_w), N, G, M, K, L)
    if need_x:
        gx = _empty(4, N, c.C_in, c.g.height, c.g.width)
        wt = _view(c.w, 2, M, K).T if G == 1 else _view(c.w, 3, G, M, K).swapaxes(1, 2)
    if not (need_w or need_x):
        return None, None, gb
    chunk = N if pointwise else _chunk_size(N, _mul(rows, L))
    if not pointwise:
        buf = _empty(3, chunk, rows, L, 0)
    for n0 in range(0, N, chunk):
        n = min(chunk, N - n0)
        part = _images(c.x, n0, n, N)
        gy_part = _images(gya, n0, n, N)
        if need_w:
            if pointwise:
                cols = part
            else:
                cols = _part(buf, n, chunk)
                with nogil:
                    mg_im2col(&c.g, n, _ptr(part), _ptr(cols))
            gw.add(gy_part, cols, n0, n)
        if need_x:
            if pointwise:               # the columns are gx itself
                _apply(wt, gy_part, _images(gx, n0, n, N), n, G, K, M, L)
            else:
                cols = _part(buf, n, chunk)
                _apply(wt, gy_part, cols, n, G, K, M, L)
                part = _images(gx, n0, n, N)
                with nogil:
                    mg_col2im(&c.g, n, _ptr(cols), _ptr(part))
    return gx, (gw.result() if need_w else None), gb


def conv_transpose2d_forward(x, w, b, stride, padding, output_padding, dilation, groups):
    """y = conv_transpose2d(x, w, b): x (N, C_in, H, W), w (C_in, C_out/groups,
    kH, kW), b (C_out,) or None; the adjoint of conv2d with respect to its input
    (the kernel is not flipped).  Returns y (N, C_out, H_out, W_out)."""
    cdef _ConvCall c = _conv_transpose2d_call(x, w, stride, padding, output_padding,
                                              dilation, groups)
    cdef cnp.ndarray ba = _bias(b, c.C_out)
    cdef cnp.ndarray y = _empty(4, c.N, c.C_out, c.g.height, c.g.width)
    cdef int64_t G = c.G, N = c.N, M = c.C_in // c.G, K = c.K, L = c.L
    cdef object wt = _view(c.w, 2, M, K).T if G == 1 else _view(c.w, 3, G, M, K).swapaxes(1, 2)
    cdef int64_t rows = G * K, chunk, n0, n
    cdef cnp.ndarray buf, cols, part
    if _is_pointwise(&c.g):             # the columns are y itself
        _apply(wt, c.x, y, N, G, K, M, L)
    else:
        chunk = _chunk_size(N, _mul(rows, L))
        buf = _empty(3, chunk, rows, L, 0)
        for n0 in range(0, N, chunk):
            n = min(chunk, N - n0)
            cols = _part(buf, n, chunk)
            _apply(wt, _images(c.x, n0, n, N), cols, n, G, K, M, L)
            part = _images(y, n0, n, N)
            with nogil:
                mg_col2im(&c.g, n, _ptr(cols), _ptr(part))
    if ba is not None:
        with nogil:
            mg_conv_add_bias(N, c.C_out, c.g.height * c.g.width, _ptr(ba), _ptr(y))
    return y


def conv_transpose2d_backward(gy, x, w, stride, padding, output_padding, dilation, groups,
                              need_x, need_w, need_b):
    """Gradients of conv_transpose2d with respect to x, w and b, given gy;
    returns (gx, gw, gb) with None for each one not asked for."""
    cdef _ConvCall c = _conv_transpose2d_call(x, w, stride, padding, output_padding,
                                              dilation, groups)
    cdef cnp.ndarray gya = _grad_out(gy, c.N, c.C_out, c.g.height, c.g.width)
    cdef int64_t G = c.G, N = c.N, M = c.C_in // c.G, K = c.K, L = c.L
    cdef int64_t rows = G * K, chunk, n0, n
    cdef bint pointwise = _is_pointwise(&c.g)
    cdef cnp.ndarray gx = None, gb = None, buf = None, cols, gy_part
    cdef _WeightGrad gw = None
    cdef object wv = _view(c.w, 2, M, K) if G == 1 else _view(c.w, 3, G, M, K)
    if need_b:
        gb = _bias_grad(gya)
    if need_w:
        gw = _weight_grad((c.C_in, c.C_out // G, c.g.kernel_h, c.g.kernel_w), N, G, M, K, L)
    if need_x:
        gx = _empty(4, N, c.C_in, c.g.out_h, c.g.out_w)
    if not (need_w or need_x):
        return None, None, gb
    chunk = N if pointwise else _chunk_size(N, _mul(rows, L))
    if not pointwise:
        buf = _empty(3, chunk, rows, L, 0)
    for n0 in range(0, N, chunk):
        n = min(chunk, N - n0)
        gy_part = _images(gya, n0, n, N)
        if pointwise:
            cols = gy_part
        else:
            cols = _part(buf, n, chunk)
            with nogil:
                mg_im2col(&c.g, n, _ptr(gy_part), _ptr(cols))
        if need_x:                      # gx = conv2d(gy, w): w times the columns of gy
            _apply(wv, cols, _images(gx, n0, n, N), n, G, M, K, L)
        if need_w:
            gw.add(_images(c.x, n0, n, N), cols, n0, n)
    return gx, (gw.result() if need_w else None), gb


# ------------------------------------------------------------------ pooling

cdef int _pool_geom(mg_pool_geom *g, cnp.npy_intp *shape, object kernel, object stride,
                    object padding, object dilation, bint ceil_mode) except -1:
    """Fill g for pooling planes of shape[2:]; dilation None means 1."""
    g.height = shape[2]
    g.width = shape[3]
    _pair(kernel, "kernel", 1, &g.kernel_h, &g.kernel_w)
    _pair(stride, "stride", 1, &g.stride_h, &g.stride_w)
    _pair(padding, "padding", 0, &g.pad_h, &g.pad_w)
    if dilation is None:
        g.dilation_h = g.dilation_w = 1
    else:
        _pair(dilation, "dilation", 1, &g.dilation_h, &g.dilation_w)
    _check_pool_padding(g.pad_h, g.pad_w, g.kernel_h, g.kernel_w, "padding")
    g.out_h = _pool_out(g.height, g.kernel_h, g.stride_h, g.pad_h, g.dilation_h, ceil_mode)
    g.out_w = _pool_out(g.width, g.kernel_w, g.stride_w, g.pad_w, g.dilation_w, ceil_mode)
    if g.out_h < 1 or g.out_w < 1:
        raise ValueError(f"the pooling window ({g.kernel_h}, {g.kernel_w}) does not fit "
                         f"the input ({g.height}, {g.width}) padded by ({g.pad_h}, {g.pad_w})")
    return 0


cdef int _input_shape(object input_shape, cnp.npy_intp *out) except -1:
    if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 4:
        raise TypeError(f"input_shape must be (N, C, H, W), got {input_shape!r}")
    cdef int i
    for i in range(4):
        out[i] = _int(input_shape[i], "input_shape", 0 if i == 0 else 1)
    return 0


def max_pool2d_forward(x, kernel, stride, padding, dilation, ceil_mode):
    """Max pooling of x (N, C, H, W); returns (y, argmax), argmax the int64
    flat index h * W + w of each maximum within its input plane."""
    cdef cnp.ndarray xa = _array(x, "x", 4)
    cdef cnp.npy_intp *s = cnp.PyArray_DIMS(xa)
    cdef mg_pool_geom g
    _pool_geom(&g, s, kernel, stride, padding, dilation, bool(ceil_mode))
    cdef cnp.ndarray y = _empty(4, s[0], s[1], g.out_h, g.out_w)
    cdef cnp.ndarray argmax = _empty(4, s[0], s[1], g.out_h, g.out_w, cnp.NPY_INT64)
    with nogil:
        mg_max_pool2d_forward(&g, s[0] * s[1], _ptr(xa), _ptr(y),
                              <int64_t *>cnp.PyArray_DATA(argmax))
    return y, argmax


def max_pool2d_backward(gy, argmax, input_shape):
    """Gradient of max pooling: gx of input_shape with each gy entry added at
    its argmax.  An argmax outside its plane adds nothing: max_pool2d_forward
    makes one only for a window that covers padding alone (output -inf)."""
    cdef cnp.ndarray gya = _array(gy, "gy", 4)
    cdef cnp.ndarray ia = _array(argmax, "argmax", 4, cnp.NPY_INT64)
    cdef cnp.npy_intp shape[4]
    _input_shape(input_shape, shape)
    cdef cnp.npy_intp *s = cnp.PyArray_DIMS(gya)
    cdef cnp.npy_intp *t = cnp.PyArray_DIMS(ia)
    cdef int i
    for i in range(4):
        if s[i] != t[i]:
            raise ValueError(f"gy {_shape(gya)} and argmax {_shape(ia)} must have the same shape")
    if s[0] != shape[0] or s[1] != shape[1]:
        raise ValueError(f"gy {_shape(gya)} does not fit input_shape {input_shape!r}")
    cdef mg_pool_geom g
    g.height = shape[2]
    g.width = shape[3]
    g.out_h = s[2]
    g.out_w = s[3]
    cdef cnp.ndarray gx = _empty(4, shape[0], shape[1], shape[2], shape[3])
    with nogil:
        mg_max_pool2d_backward(&g, s[0] * s[1], _ptr(gya),
                               <const int64_t *>cnp.PyArray_DATA(ia), _ptr(gx))
    return gx


def avg_pool2d_forward(x, kernel, stride, padding, ceil_mode, count_include_pad):
    """Average pooling of x (N, C, H, W) with PyTorch's divisor rules."""
    cdef cnp.ndarray xa = _array(x, "x", 4)
    cdef cnp.npy_intp *s = cnp.PyArray_DIMS(xa)
    cdef mg_pool_geom g
    _pool_geom(&g, s, kernel, stride, padding, None, bool(ceil_mode))
    cdef int cip = bool(count_include_pad)
    cdef cnp.ndarray y = _empty(4, s[0], s[1], g.out_h, g.out_w)
    with nogil:
        mg_avg_pool2d_forward(&g, s[0] * s[1], cip, _ptr(xa), _ptr(y))
    return y


def avg_pool2d_backward(gy, input_shape, kernel, stride, padding, ceil_mode,
                        count_include_pad):
    """Gradient of average pooling: gx of input_shape."""
    cdef cnp.ndarray gya = _array(gy, "gy", 4)
    cdef cnp.npy_intp shape[4]
    _input_shape(input_shape, shape)
    cdef mg_pool_geom g
    _pool_geom(&g, shape, kernel, stride, padding, None, bool(ceil_mode))
    cdef cnp.npy_intp *s = cnp.PyArray_DIMS(gya)
    if s[0] != shape[0] or s[1] != shape[1] or s[2] != g.out_h or s[3] != g.out_w:
        raise ValueError(f"gy must have shape ({shape[0]}, {shape[1]}, {g.out_h}, "
                         f"{g.out_w}), got {_shape(gya)}")
    cdef int cip = bool(count_include_pad)
    cdef cnp.ndarray gx = _empty(4, shape[0], shape[1], shape[2], shape[3])
    with nogil:
        mg_avg_pool2d_backward(&g, s[0] * s[1], cip, _ptr(gya), _ptr(gx))
    return gx


def avg_pool2d_divisors(in_hw, kernel, stride, padding, ceil_mode, count_include_pad):
    """The (H_out, W_out) divisors average pooling of an (H, W) plane uses;
    with count_include_pad=False, how many of each window's cells lie inside
    the input.  avg_pool2d's divisor_override rescales by them."""
    cdef cnp.npy_intp shape[4]
    cdef int64_t H, W
    _pair(in_hw, "in_hw", 1, &H, &W)
    shape[0] = shape[1] = 1
    shape[2] = H
    shape[3] = W
    cdef mg_pool_geom g
    _pool_geom(&g, shape, kernel, stride, padding, None, bool(ceil_mode))
    cdef cnp.ndarray d = _empty(2, g.out_h, g.out_w, 0, 0)
    cdef int cip = bool(count_include_pad)
    with nogil:
        mg_avg_pool2d_divisors(&g, cip, _ptr(d))
    return d
