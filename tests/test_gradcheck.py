"""gradcheck: passes on correct gradients, names the input and both numbers
when they disagree, and validates its arguments."""
import pytest

import microgrid as mg
from microgrid import Value


def test_passes_on_correct_gradients():
    assert mg.gradcheck(lambda a, b: (a * b).tanh() + a ** 2, [Value(0.3), Value(-1.2)]) is True
    assert mg.gradcheck(lambda a: a.exp(), Value(0.5)) is True  # a single input


def test_reports_a_wrong_gradient():
    # x * x.data is x^2 going forward but treats the second factor as a
    # constant going backward: the analytic gradient is x, the true one 2x.
    a, b = Value(1.0, label="b0"), Value(1.5, label="w")
    with pytest.raises(mg.GradcheckError, match=r"input 1 \(w\).*analytic 1\.5, numerical 2\.9999"):
        mg.gradcheck(lambda x, y: x + y * y.data, [a, b])


def test_restores_inputs_and_their_gradients():
    a = Value(0.7)
    a.grad = 5.0
    mg.gradcheck(lambda x: x.sin(), [a])
    assert a.data == 0.7 and a.grad == 5.0


def test_argument_errors():
    with pytest.raises(TypeError, match="inputs"):
        mg.gradcheck(lambda x: x, [1.0])
    with pytest.raises(TypeError, match="must return a Value"):
        mg.gradcheck(lambda x: 1.0, [Value(1.0)])
    with pytest.raises(ValueError, match="eps"):
        mg.gradcheck(lambda x: x, [Value(1.0)], eps=0)
    with pytest.raises(ValueError, match="atol"):
        mg.gradcheck(lambda x: x, [Value(1.0)], atol=-1)
