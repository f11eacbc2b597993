"""Integer and bool tensors: what keeps int64 and bool as PyTorch does, what
promotes to float64, what is refused, and that float64 graphs are unchanged.
Values are checked by hand and against PyTorch (its dtypes and numbers)."""
import numpy as np
import pytest

import microgrid as mg
import microgrid.functional as F


def _torch():
    return pytest.importorskip("torch")


def _same(ours, theirs):
    """Same numbers and the same kind of dtype (int64, bool, float)."""
    torch = _torch()
    theirs_np = theirs.detach().numpy()
    assert ours.shape == tuple(theirs.shape)
    kind = {torch.int64: np.int64, torch.bool: np.bool_}.get(theirs.dtype, np.float64)
    assert ours.dtype == kind, f"{ours.dtype} != torch's {theirs.dtype}"
    np.testing.assert_allclose(np.asarray(ours.data, dtype=np.float64),
                               theirs_np.astype(np.float64), rtol=1e-12, atol=1e-12)


# -- construction ----------------------------------------------------------------

def test_tensor_keeps_integers_and_bools_as_torch():
    torch = _torch()
    for data in ([1, 2], [[1, 2], [3, 4]], 3, [True, False], True, [1.0, 2], 2.5):
        _same(mg.tensor(data), torch.tensor(data))
    # numpy's other integer dtypes are int64 (torch keeps int32, uint8)
    for data in (np.arange(3, dtype=np.int32), np.array([1, 2], dtype=np.uint8)):
        _same(mg.tensor(data), torch.tensor(data).long())
    assert mg.tensor(np.float32(1.5)).dtype == mg.float64       # numpy float32 data computes in float64
    assert mg.Tensor([1, 2]).dtype == mg.float64                  # the class itself: float64, like torch.Tensor's float
    assert mg.tensor(mg.tensor([1, 2])).dtype == mg.int64         # a copy keeps the dtype


def test_dtype_keyword():
    assert mg.tensor([1, 2], dtype=mg.float64).dtype == np.float64
    assert mg.tensor([1.7, -1.7], dtype=mg.int64).tolist() == [1, -1]     # truncates toward zero, as torch
    assert mg.tensor([0, 2], dtype=mg.bool).tolist() == [False, True]
    assert mg.zeros(2, dtype=mg.long).dtype == mg.int64 and mg.ones(2, 2, dtype=mg.bool).dtype == mg.bool
    assert mg.tensor([1], dtype=np.int32).dtype == mg.int64               # every integer dtype is int64
    assert mg.double is mg.float64 and mg.long is mg.int64
    with pytest.raises(ValueError, match=r"tensor\(dtype=float32\): microgrid computes in float64 only"):
        mg.tensor([1.0], dtype=mg.float32)
    with pytest.raises(ValueError, match="float64 only"):
        mg.zeros(2, dtype=mg.float)
    with pytest.raises(TypeError, match=r"tensor\(dtype=...\) takes microgrid.float64"):
        mg.tensor([1.0], dtype="not a dtype")
    with pytest.raises(TypeError, match=r"tensor\(dtype=...\)"):
        mg.tensor([1.0], dtype=np.complex128)
    with pytest.raises(ValueError, match="NaN and infinity have no integer value"):
        mg.tensor([np.nan], dtype=mg.int64)


def test_integer_tensors_never_require_grad():
    torch = _torch()
    with pytest.raises(RuntimeError) as theirs:
        torch.tensor([1, 2], requires_grad=True)
    for make in (lambda: mg.tensor([1, 2], requires_grad=True), lambda: mg.tensor([True], requires_grad=True),
                 lambda: mg.zeros(2, dtype=mg.int64, requires_grad=True), lambda: mg.arange(3, requires_grad=True),
                 lambda: mg.tensor([1, 2]).requires_grad_()):
        with pytest.raises(RuntimeError, match=str(theirs.value)):
            make()
    t = mg.tensor([1, 2])
    with pytest.raises(RuntimeError, match="floating point"):
        t.requires_grad = True
    t.requires_grad = False
    assert mg.arange(3.0, requires_grad=True).requires_grad


# -- conversions ------------------------------------------------------------------

def test_conversions_match_torch():
    torch = _torch()
    data = [-1.7, 0.0, 2.5, 3.0]
    ours, theirs = mg.tensor(data), torch.tensor(data, dtype=torch.float64)
    _same(ours.long(), theirs.long())
    _same(ours.bool(), theirs.bool())
    _same(ours.long().double(), theirs.long().double())
    _same(ours.bool().long(), theirs.bool().long())
    assert ours.double() is ours and ours.float() is ours          # already float64: the tensor itself
    labels = mg.tensor([1, 2])
    assert labels.long() is labels
    assert labels.float().dtype == mg.float64 and labels.float().tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match=r"long\(\): NaN and infinity"):
        mg.tensor([np.inf]).long()


def test_conversion_of_a_graph_node_is_cut_from_the_graph():
    x = mg.tensor([1.5, 2.5], requires_grad=True)
    n = (x * 2).long()
    assert n.dtype == mg.int64 and not n.requires_grad and n.is_leaf and n.tolist() == [3, 5]


def test_item_int_float_index():
    torch = _torch()
    labels = mg.tensor([3, 1])
    assert labels[0].item() == 3 and type(labels[0].item()) is int
    assert type(mg.tensor(True).item()) is bool and type(mg.tensor(1.5).item()) is float
    assert int(labels[0]) == 3 and float(labels[0]) == 3.0 and int(mg.tensor(2.7)) == 2
    classes = ["plane", "car", "bird", "cat"]
    assert classes[labels[0]] == "cat"                               # __index__
    assert classes[mg.tensor([2])] == "bird"                         # one element, any shape, as torch
    assert list(range(10))[mg.tensor(4):mg.tensor(6)] == [4, 5]
    with pytest.raises(TypeError) as theirs:
        torch.tensor(1.5).__index__()
    for bad in (mg.tensor(1.5), mg.tensor([1, 2])):
        with pytest.raises(TypeError, match=str(theirs.value)):
            classes[bad]
    assert bool(mg.tensor([1])) and not bool(mg.tensor(0.0))
    with pytest.raises(RuntimeError, match="Boolean value of Tensor with more than one value is ambiguous"):
        bool(mg.tensor([1, 2]))


# -- comparisons ---------------------------------------------------------------------

@pytest.mark.parametrize("op", ["__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__"])
def test_comparisons_give_bool_tensors_as_torch(op):
    torch = _torch()
    a = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    b = np.array([2.0, 2.0, 2.0])
    x, y = mg.tensor(a, requires_grad=True), mg.tensor(b)
    tx, ty = torch.tensor(a), torch.tensor(b)
    _same(getattr(x, op)(y), getattr(tx, op)(ty))                        # broadcasting
    _same(getattr(x, op)(2), getattr(tx, op)(2))                         # a number
    _same(getattr(x, op)(b), getattr(tx, op)(ty))                        # a numpy array
    _same(getattr(x.long(), op)(y.long()), getattr(tx.long(), op)(ty.long()))
    _same(getattr(x, op)(mg.Value(2.0)), getattr(tx, op)(2.0))           # a Value: its number
    assert not getattr(x, op)(y).requires_grad


def test_comparison_with_other_objects_and_shapes():
    t = mg.tensor([1.0, 2.0])
    assert (t == None) is False and (t != "a") is True                  # noqa: E711 (Python's fallback)
    with pytest.raises(ValueError, match=r"shapes \(2,\) and \(3,\) cannot be broadcast"):
        t == mg.tensor([1.0, 2.0, 3.0])
    with pytest.raises(TypeError):
        t < "a"
    assert (np.array([0.0, 5.0]) < t).tolist() == [True, False]          # numpy on the left defers
    # still hashable by identity: graphs keep tensors in sets and dicts
    assert len({t, mg.tensor([1.0, 2.0]), t}) == 2 and {t: 1}[t] == 1


def test_accuracy_idiom():
    outputs = mg.tensor([[0.1, 2.0, 0.3], [1.5, 0.2, 0.1], [0.0, 0.1, 0.9], [0.3, 0.2, 0.1]], requires_grad=True)
    labels = mg.tensor([1, 0, 1, 0])
    _, predicted = mg.max(outputs.data, 1)
    assert predicted.dtype == mg.int64 and predicted.tolist() == [1, 0, 2, 0]
    correct = (predicted == labels).sum().item()
    assert correct == 3 and type(correct) is int
    assert (outputs.argmax(1) == labels).sum().item() == 3
    assert (predicted == labels).float().mean().item() == 0.75
    total = 0
    total += labels.size(0)
    assert total == 4


# -- ops over integer and bool tensors --------------------------------------------------

def test_integer_arithmetic_and_promotion_match_torch():
    torch = _torch()
    a, b = [3, -1, 4], [2, 5, -2]
    x, y, f = mg.tensor(a), mg.tensor(b), mg.tensor([0.5, 1.5, 2.5])
    tx, ty, tf = torch.tensor(a), torch.tensor(b), torch.tensor([0.5, 1.5, 2.5], dtype=torch.float64)
    for ours, theirs in (
            (x + y, tx + ty), (x - y, tx - ty), (x * y, tx * ty), (x + 1, tx + 1), (2 * x, 2 * tx),
            (1 - x, 1 - tx), (x ** 2, tx ** 2), (2 ** mg.tensor([1, 3]), 2 ** torch.tensor([1, 3])),
            (-x, -tx), (abs(x), abs(tx)), (x.abs(), tx.abs()), (x.neg(), tx.neg()),
            (x / y, tx.double() / ty), (x + f, tx + tf), (f * x, tf * tx), (x + 0.5, tx + 0.5),
            (x.exp(), tx.double().exp()), (x.pow(2), tx.pow(2)), (x.sum(), tx.sum()), (x.max(), tx.max()),
            (x.min(), tx.min()), (x.mean(), tx.double().mean()),
            (x.reshape(3, 1), tx.reshape(3, 1)), (x.unsqueeze(0).T, tx.unsqueeze(0).T), (x[1:], tx[1:]),
            (x[mg.tensor([2, 0])], tx[torch.tensor([2, 0])]), (x[x > 0], tx[tx > 0]),
            (mg.cat([x, y]), torch.cat([tx, ty])), (mg.stack([x, y]), torch.stack([tx, ty])),
            (x.reshape(3, 1) @ y.reshape(1, 3), tx.reshape(3, 1) @ ty.reshape(1, 3)),
            (mg.tensor([True, False]) + mg.tensor([True, True]), torch.tensor([True, False]) + torch.tensor([True, True])),
            (mg.tensor([True, False]).sum(), torch.tensor([True, False]).sum()),
            (mg.tensor([True, False]) * 3, torch.tensor([True, False]) * 3),
            (x.clone(), tx.clone()), (x.flatten(), tx.flatten()), (x.view(1, 3).squeeze(0), tx.view(1, 3).squeeze(0))):
        _same(ours, theirs)
    values, indices = mg.tensor([[1, 5], [7, 0]]).max(1)
    tvalues, tindices = torch.tensor([[1, 5], [7, 0]]).max(1)
    _same(values, tvalues)
    _same(indices, tindices)
    with pytest.raises(ValueError, match="Integers to negative integer powers are not allowed"):
        x ** mg.tensor([1, -1, 2])
    with pytest.raises(TypeError, match="subtraction and negation of bool tensors"):
        mg.tensor([True]) - mg.tensor([False])
    with pytest.raises(ValueError, match=r"beyond 2\*\*53"):
        mg.tensor([2**60]) * 3


def test_integer_inputs_of_graph_ops_are_float_constants():
    """A float parameter times an integer tensor: the gradient is the
    integers, checked by hand and by finite differences."""
    w = mg.tensor([0.5, -1.0, 2.0], requires_grad=True)
    counts = mg.tensor([1, 2, 3])
    y = (w * counts).sum() + (counts.float() * w * w).sum()
    y.backward()
    np.testing.assert_array_equal(w.grad, [1 + 2 * 0.5, 2 + 2 * 2 * -1.0, 3 + 2 * 3 * 2.0])
    assert mg.gradcheck(lambda p: (p * counts + mg.where(counts > 1, p, 0.0)).sum(), [w])
    x = mg.tensor([[1, 0], [0, 1]])
    out = F.linear(x, mg.tensor([[1.0, 2.0]], requires_grad=True))
    assert out.dtype == mg.float64 and out.tolist() == [[1.0], [2.0]]


def test_element_of_an_integer_tensor_is_a_0d_integer_tensor():
    labels = mg.tensor([[1, 2], [3, 4]])
    e = labels[1, 0]
    assert isinstance(e, mg.Tensor) and e.dtype == mg.int64 and e.shape == () and e.item() == 3
    assert [int(v) for v in labels[0]] == [1, 2]
    assert isinstance(mg.tensor([1.0, 2.0])[0], mg.Value)       # a float element is still a Value


def test_float_tensor_as_index_is_refused():
    with pytest.raises(TypeError, match=r"int64 or bool tensors.*not a float Tensor; convert it with .long\(\)"):
        mg.tensor([1.0, 2.0])[mg.tensor([0.0])]


def test_cross_entropy_and_nll_take_int64_tensors():
    torch = _torch()
    logits = np.array([[0.2, 1.5, -0.3], [1.0, 0.1, 0.4]])
    x, tx = mg.tensor(logits, requires_grad=True), torch.tensor(logits, requires_grad=True)
    labels, tlabels = mg.tensor([1, 2]), torch.tensor([1, 2])
    for ours, theirs in ((F.cross_entropy(x, labels), torch.nn.functional.cross_entropy(tx, tlabels)),
                         (F.nll_loss(x.log_softmax(1), labels), torch.nn.functional.nll_loss(tx.log_softmax(1), tlabels))):
        ours.backward()
        theirs.backward()
        assert ours.item() == pytest.approx(theirs.item(), abs=1e-12)
    np.testing.assert_allclose(x.grad, tx.grad.numpy(), atol=1e-12)
    with pytest.raises(TypeError, match=r"cross_entropy\(target\) must hold integer class indices, got a bool"):
        F.cross_entropy(x, mg.tensor([True, False]))
    with pytest.raises(ValueError, match=r"cross_entropy\(target\): shape \(2, 3\)"):
        F.cross_entropy(x, mg.tensor([[1, 2, 0], [0, 1, 2]]))   # int64 of the input's shape: indices, not probabilities


def test_graph_replay_reads_int64_labels_in_place():
    x = mg.tensor([[0.2, 1.5], [1.0, 0.1]], requires_grad=True)
    labels = mg.tensor([1, 0])
    loss = F.cross_entropy(x, labels)
    graph = mg.Graph(loss)
    first = loss.item()
    labels.data[:] = [0, 1]
    graph.forward()
    assert loss.item() != first
    assert loss.item() == pytest.approx(F.cross_entropy(x, mg.tensor([0, 1])).item())


def test_data_setter_of_an_integer_tensor_takes_the_new_kind():
    labels = mg.tensor([1, 2])
    labels.data = np.array([3, 4])
    assert labels.dtype == mg.int64
    f = mg.tensor([1.0])
    f.data = np.array([3])
    assert f.dtype == mg.float64          # a float tensor stays float64 (a graph buffer)


def test_float64_graph_path_is_unchanged():
    """Ops over float64 tensors build the same nodes as before: requires_grad,
    dtypes, values, and a Value for an element."""
    x = mg.tensor([1.0, -2.0], requires_grad=True)
    y = (x * 2 + 1).tanh().sum()
    assert y.dtype == mg.float64 and y.requires_grad and not y.is_leaf
    y.backward()
    np.testing.assert_allclose(x.grad, 2 * (1 - np.tanh(2 * x.data + 1) ** 2))
