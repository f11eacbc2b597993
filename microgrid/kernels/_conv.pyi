"""Type stub of microgrid._conv: convolution and pooling on plain float64
NCHW arrays (no graph, no autograd); PyTorch's layouts and semantics."""
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

_F64 = npt.NDArray[np.float64]
_I64 = npt.NDArray[np.int64]
_Pair = Union[int, Tuple[int, int]]  # one int means (int, int)

def pair(value: object, name: str = "value", minimum: int = 0) -> Tuple[int, int]: ...
def conv_transpose2d_output_size(
    in_hw: _Pair, kernel: _Pair, stride: _Pair, padding: _Pair, output_padding: _Pair,
    dilation: _Pair,
) -> Tuple[int, int]: ...
def check_output_padding(output_padding: _Pair, stride: _Pair, dilation: _Pair,
                         name: str = "output_padding") -> None: ...
def check_pool_padding(padding: _Pair, kernel: _Pair, name: str = "padding") -> None: ...
def avg_pool2d_divisors(
    in_hw: _Pair, kernel: _Pair, stride: _Pair, padding: _Pair, ceil_mode: bool,
    count_include_pad: bool,
) -> _F64: ...
def conv2d_output_size(
    in_hw: _Pair, kernel: _Pair, stride: _Pair, padding: _Pair, dilation: _Pair
) -> Tuple[int, int]: ...
def pool2d_output_size(
    in_hw: _Pair, kernel: _Pair, stride: _Pair, padding: _Pair, dilation: _Pair,
    ceil_mode: bool,
) -> Tuple[int, int]: ...
def conv2d_forward(
    x: _F64, w: _F64, b: Optional[_F64], stride: _Pair, padding: _Pair, dilation: _Pair,
    groups: int,
) -> _F64: ...
def conv2d_backward(
    gy: _F64, x: _F64, w: _F64, stride: _Pair, padding: _Pair, dilation: _Pair,
    groups: int, need_x: bool, need_w: bool, need_b: bool,
) -> Tuple[Optional[_F64], Optional[_F64], Optional[_F64]]: ...
def conv_transpose2d_forward(
    x: _F64, w: _F64, b: Optional[_F64], stride: _Pair, padding: _Pair,
    output_padding: _Pair, dilation: _Pair, groups: int,
) -> _F64: ...
def conv_transpose2d_backward(
    gy: _F64, x: _F64, w: _F64, stride: _Pair, padding: _Pair, output_padding: _Pair,
    dilation: _Pair, groups: int, need_x: bool, need_w: bool, need_b: bool,
) -> Tuple[Optional[_F64], Optional[_F64], Optional[_F64]]: ...
def max_pool2d_forward(
    x: _F64, kernel: _Pair, stride: _Pair, padding: _Pair, dilation: _Pair, ceil_mode: bool
) -> Tuple[_F64, _I64]: ...
def max_pool2d_backward(gy: _F64, argmax: _I64, input_shape: Sequence[int]) -> _F64: ...
def avg_pool2d_forward(
    x: _F64, kernel: _Pair, stride: _Pair, padding: _Pair, ceil_mode: bool,
    count_include_pad: bool,
) -> _F64: ...
def avg_pool2d_backward(
    gy: _F64, input_shape: Sequence[int], kernel: _Pair, stride: _Pair, padding: _Pair,
    ceil_mode: bool, count_include_pad: bool,
) -> _F64: ...
def _set_cols_budget(doubles: int) -> int: ...
