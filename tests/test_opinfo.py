"""Generic tests driven by the op registry (tests/opinfo.py): every public
op has an entry; each entry's values match its reference, its gradients
match finite differences, non-contiguous and broadcast inputs give the same
results, NaN in gives NaN out, and its error inputs raise the documented
exception with a message naming the argument."""
import re
import zlib

import numpy as np
import pytest

import microgrid as mg
from opinfo import OPS, NOT_OPS, as_array, covered, graph_output, public_api, wrap

IDS = [e.name for e in OPS]


def _rng(entry):
    # a stable digest of the name: hash() of a str changes with PYTHONHASHSEED,
    # so a failing sample would not come back in the next run
    return np.random.default_rng(zlib.crc32(entry.name.encode()))


def _close(got, want, atol):
    if isinstance(want, list) or isinstance(got, list):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            _close(g, w, atol)
        return
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"shape {got.shape} != reference {want.shape}"
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=atol)


def _run(entry, inputs, sample):
    return entry.op(*inputs, *sample.args, **sample.kwargs)


def _ref(entry, raw, sample):
    r = entry.ref(*raw, *sample.args, **sample.kwargs)
    return [np.asarray(x, dtype=np.float64) for x in r] if isinstance(r, list) else r


def test_every_public_op_has_an_entry():
    missing = sorted(public_api() - covered() - set(NOT_OPS))
    assert not missing, f"public ops without an OpInfo entry in tests/opinfo.py: {missing}"


def test_registry_entries_are_well_formed():
    names = [e.name for e in OPS]
    assert len(names) == len(set(names))
    for e in OPS:
        errors = list(e.errors())
        assert len(errors) >= 3, f"{e.name}: needs at least 3 error inputs"
        assert list(e.samples(_rng(e))), f"{e.name}: no samples"


@pytest.mark.parametrize("entry", OPS, ids=IDS)
def test_values_match_reference(entry):
    for sample in entry.samples(_rng(entry)):
        out = _run(entry, wrap(entry, sample.inputs), sample)
        _close(as_array(out), _ref(entry, sample.inputs, sample), entry.atol)


@pytest.mark.parametrize("entry", [e for e in OPS if e.grad], ids=[e.name for e in OPS if e.grad])
def test_gradcheck(entry):
    for sample in entry.samples(_rng(entry)):
        if not sample.grad or not sample.inputs:
            continue
        inputs = wrap(entry, sample.inputs)
        assert mg.gradcheck(lambda *xs: graph_output(_run(entry, xs, sample)), inputs)


_SECOND_ORDER = [e for e in OPS if e.grad and e.gradgrad is True]
_NOT_YET = [e for e in OPS if e.grad and e.gradgrad is not True]


@pytest.mark.parametrize("entry", _SECOND_ORDER, ids=[e.name for e in _SECOND_ORDER])
def test_gradgradcheck(entry):
    # the second-order column: gradients built with create_graph=True against
    # finite differences of themselves, over the entry's first samples
    checked = 0
    for sample in entry.samples(_rng(entry)):
        if not sample.grad or not sample.inputs:
            continue
        inputs = wrap(entry, sample.inputs)
        assert mg.gradgradcheck(lambda *xs: graph_output(_run(entry, xs, sample)), inputs)
        checked += 1
        if checked == 3:
            break


@pytest.mark.parametrize("entry", _NOT_YET, ids=[e.name for e in _NOT_YET])
def test_second_order_not_yet_is_a_clear_error(entry):
    # an entry marked without second derivatives must still lack them (else
    # the mark is stale: set the column back to True)
    for sample in entry.samples(_rng(entry)):
        if sample.grad and sample.inputs:
            break
    inputs = wrap(entry, sample.inputs)
    with pytest.raises(NotImplementedError, match="no differentiable backward rule"):
        mg.gradgradcheck(lambda *xs: graph_output(_run(entry, xs, sample)), inputs)


def _noncontiguous(x):
    """The same numbers in a non-contiguous array."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim >= 2:
        y = np.asfortranarray(x)
    elif x.ndim == 1:
        y = np.repeat(x, 2)[::2]
    else:
        return x
    assert np.array_equal(y, x)
    return y


TENSOR_OPS = [e for e in OPS if e.kind == "tensor"]


@pytest.mark.parametrize("entry", TENSOR_OPS, ids=[e.name for e in TENSOR_OPS])
def test_noncontiguous_inputs(entry):
    """Strided/transposed numpy arrays (as data and as constant operands) and
    transposed tensors (a permute node) give the contiguous results."""
    for sample in entry.samples(_rng(entry)):
        want = as_array(_run(entry, wrap(entry, sample.inputs), sample))
        nc_inputs = [_noncontiguous(x) for x in sample.inputs]
        nc_args = tuple(_noncontiguous(a) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a
                        for a in sample.args)
        nc_sample = type(sample)(tuple(nc_inputs), nc_args, sample.kwargs, sample.grad)
        leaves = [mg.tensor(x, requires_grad=True) for x in nc_inputs]
        _close(as_array(_run(entry, leaves, nc_sample)), want, 0.0)
        # the data setter with a non-contiguous array
        reset = [mg.tensor(np.zeros_like(x), requires_grad=True) for x in sample.inputs]
        for t, x in zip(reset, nc_inputs):
            t.data = x
        _close(as_array(_run(entry, reset, nc_sample)), want, 0.0)
        # inputs that are transposes inside the graph
        if entry.grad and sample.inputs:
            # (np.array, not np.ascontiguousarray, which makes a 0-d array 1-d)
            base = [mg.tensor(np.array(np.asarray(x).T, order="C"), requires_grad=True) for x in sample.inputs]
            views = [b.T for b in base]
            out = graph_output(_run(entry, views, sample))
            flat = [mg.tensor(x, requires_grad=True) for x in sample.inputs]
            ref_out = graph_output(_run(entry, flat, sample))
            _close(as_array(out), as_array(ref_out), 0.0)
            if out.requires_grad:
                seed = np.random.default_rng(0).standard_normal(np.shape(out.data))
                out.backward(seed) if isinstance(out, mg.Tensor) else out.backward()
                ref_out.backward(seed) if isinstance(ref_out, mg.Tensor) else ref_out.backward()
                for b, f in zip(base, flat):
                    np.testing.assert_allclose(b.grad.T, f.grad, rtol=1e-12, atol=1e-12)


BROADCAST_OPS = [e for e in OPS if e.broadcast is not None]


@pytest.mark.parametrize("entry", BROADCAST_OPS, ids=[e.name for e in BROADCAST_OPS])
def test_broadcast_inputs(entry):
    for sample in entry.broadcast(_rng(entry)):
        out = _run(entry, wrap(entry, sample.inputs), sample)
        _close(as_array(out), _ref(entry, sample.inputs, sample), entry.atol)
        inputs = wrap(entry, sample.inputs)
        assert mg.gradcheck(lambda *xs: _run(entry, xs, sample), inputs)
        # the gradient of each input has the input's own shape
        out = _run(entry, inputs, sample)
        out.backward(np.ones(out.shape))
        for t, x in zip(inputs, sample.inputs):
            assert t.grad.shape == np.shape(x)


def test_broadcast_covers_the_binary_operators():
    names = {e.name for e in BROADCAST_OPS}
    for op in ("__add__", "__sub__", "__mul__", "__truediv__", "__pow__"):
        assert f"Tensor.{op}" in names


@pytest.mark.parametrize("entry", OPS, ids=IDS)
def test_error_inputs(entry):
    for i, err in enumerate(entry.errors()):
        with pytest.raises(err.exc) as info:
            err.thunk()
        assert re.search(err.regex, str(info.value)), \
            f"{entry.name} error input {i}: message {str(info.value)!r} does not match {err.regex!r}"


NAN_OPS = [e for e in OPS if e.nan is True]


@pytest.mark.parametrize("entry", NAN_OPS, ids=[e.name for e in NAN_OPS])
def test_nan_in_nan_out(entry):
    """A NaN in every element of the first float input gives NaN in every
    element of the output (no op swallows it), without warnings."""
    for sample in entry.samples(_rng(entry)):
        if any(np.size(x) == 0 for x in (sample.inputs or sample.args[:1])):
            continue                       # nothing to put a NaN in
        if sample.inputs:
            raw = list(sample.inputs)
            raw[0] = np.full(np.shape(raw[0]), np.nan) if entry.kind == "tensor" else float("nan")
            args = sample.args
        else:                              # constructors: the data argument
            raw = []
            nan = float("nan") if entry.kind == "value" else np.full(np.shape(sample.args[0]), np.nan)
            args = (nan,) + tuple(sample.args[1:])
        s = type(sample)(tuple(raw), args, sample.kwargs)
        with np.errstate(all="raise"):
            out = as_array(_run(entry, wrap(entry, raw), s))
        with np.errstate(all="ignore"):
            want = _ref(entry, raw, s)
        outs, wants = (out, want) if isinstance(out, list) else ([out], [want])
        assert any(np.isnan(o).any() for o in outs), f"{entry.name}: NaN input gave {out}"
        for o, w in zip(outs, wants):
            # NaN exactly where numpy's reference has it (a zero pad or a second
            # input of a join stays as it is)
            np.testing.assert_array_equal(np.isnan(o), np.isnan(np.asarray(w, dtype=float)))


def test_methods_check_self_and_keep_their_signatures():
    """Methods are compiled without binding (so an unbound call checks the
    type of self instead of reading a str as a Tensor, Cython #1903) and
    carry text signatures, so inspect.signature still works."""
    import inspect
    assert list(inspect.signature(mg.Tensor.sum).parameters) == ["self", "dim", "keepdim"]
    assert list(inspect.signature(mg.Value.leaky_relu).parameters) == ["self", "slope"]
    assert list(inspect.signature(mg.Graph.backward).parameters) == ["self", "grad", "reduction"]
    for call in (lambda: mg.Tensor.sum("abc"), lambda: mg.Value.backward(mg.Graph),
                 lambda: mg.Graph.forward(3), lambda: mg.Tensor.T.__get__(3)):
        with pytest.raises(TypeError, match=r"descriptor '\w+' for '.*' objects doesn't apply"):
            call()
