"""Array kernels over plain float64 buffers: convolution and pooling
(_conv.pyx over csrc/mg_conv.c), with the conv/pool geometry rules."""
