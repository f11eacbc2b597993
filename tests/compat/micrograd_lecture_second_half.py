# Derived from karpathy/nn-zero-to-hero, lectures/micrograd/
# micrograd_lecture_second_half_roughly.ipynb (MIT License, Copyright (c) 2022
# Andrej Karpathy; https://github.com/karpathy/nn-zero-to-hero).
#
# The notebook's cells in order, as a script.  What differs from the notebook:
# - the cell defining its own Value class is replaced by micrograd's Value
#   (the line tests/test_compat_micrograd.py renames to microgrid) plus the
#   two ops micrograd lacks, the lecture's own tanh and exp, added to the
#   class the way the lecture writes ops (out._backward = _backward);
# - random is seeded (the notebook draws its MLP's weights unseeded), so that
#   two runs start from the same weights;
# - the plotting cells are left out, and what a cell displays is printed;
#   the PyTorch cell runs when torch is installed;
# - draw_dot is the notebook's, over the graphviz stand-in the test installs;
# - micrograd 0.1.0's Value takes no label= (the lecture's does): the test
#   adds it for the micrograd run.
import math
import random
import numpy as np

from micrograd.engine import Value

random.seed(1337)


def f(x):
  return 3*x**2 - 4*x + 5

print(f(3.0))

xs = np.arange(-5, 5, 0.25)
ys = f(xs)
print(ys.tolist())

h = 0.000001
x = 2/3
print((f(x + h) - f(x))/h)


# the lecture's tanh and exp, ops of their own with hand-written backwards
def tanh(self):
  x = self.data
  t = (math.exp(2*x) - 1)/(math.exp(2*x) + 1)
  out = Value(t, (self, ), 'tanh')

  def _backward():
    self.grad += (1 - t**2) * out.grad
  out._backward = _backward

  return out

def exp(self):
  x = self.data
  out = Value(math.exp(x), (self, ), 'exp')

  def _backward():
    self.grad += out.data * out.grad # NOTE: in the video I incorrectly used = instead of +=. Fixed here.
  out._backward = _backward

  return out

Value.tanh = tanh
Value.exp = exp


from graphviz import Digraph

def trace(root):
  # builds a set of all nodes and edges in a graph
  nodes, edges = set(), set()
  def build(v):
    if v not in nodes:
      nodes.add(v)
      for child in v._prev:
        edges.add((child, v))
        build(child)
  build(root)
  return nodes, edges

def draw_dot(root):
  dot = Digraph(format='svg', graph_attr={'rankdir': 'LR'}) # LR = left to right

  nodes, edges = trace(root)
  for n in nodes:
    uid = str(id(n))
    # for any value in the graph, create a rectangular ('record') node for it
    dot.node(name = uid, label = "{ %s | data %.4f | grad %.4f }" % (n.label, n.data, n.grad), shape='record')
    if n._op:
      # if this value is a result of some operation, create an op node for it
      dot.node(name = uid + n._op, label = n._op)
      # and connect this node to it
      dot.edge(uid + n._op, uid)

  for n1, n2 in edges:
    # connect n1 to the op node of n2
    dot.edge(str(id(n1)), str(id(n2)) + n2._op)

  return dot

# inputs x1,x2
x1 = Value(2.0, label='x1')
x2 = Value(0.0, label='x2')
# weights w1,w2
w1 = Value(-3.0, label='w1')
w2 = Value(1.0, label='w2')
# bias of the neuron
b = Value(6.8813735870195432, label='b')
# x1*w1 + x2*w2 + b
x1w1 = x1*w1; x1w1.label = 'x1*w1'
x2w2 = x2*w2; x2w2.label = 'x2*w2'
x1w1x2w2 = x1w1 + x2w2; x1w1x2w2.label = 'x1*w1 + x2*w2'
n = x1w1x2w2 + b; n.label = 'n'
o = n.tanh(); o.label = 'o'
o.backward()

print(draw_dot(o))

# inputs x1,x2
x1 = Value(2.0, label='x1')
x2 = Value(0.0, label='x2')
# weights w1,w2
w1 = Value(-3.0, label='w1')
w2 = Value(1.0, label='w2')
# bias of the neuron
b = Value(6.8813735870195432, label='b')
# x1*w1 + x2*w2 + b
x1w1 = x1*w1; x1w1.label = 'x1*w1'
x2w2 = x2*w2; x2w2.label = 'x2*w2'
x1w1x2w2 = x1w1 + x2w2; x1w1x2w2.label = 'x1*w1 + x2*w2'
n = x1w1x2w2 + b; n.label = 'n'
# ----
e = (2*n).exp()
o = (e - 1) / (e + 1)
# ----
o.label = 'o'
o.backward()
print(draw_dot(o))

try:
  import torch
except ImportError:
  torch = None

if torch is not None:
  x1 = torch.Tensor([2.0]).double()                ; x1.requires_grad = True
  x2 = torch.Tensor([0.0]).double()                ; x2.requires_grad = True
  w1 = torch.Tensor([-3.0]).double()               ; w1.requires_grad = True
  w2 = torch.Tensor([1.0]).double()                ; w2.requires_grad = True
  b = torch.Tensor([6.8813735870195432]).double()  ; b.requires_grad = True
  n = x1*w1 + x2*w2 + b
  o = torch.tanh(n)

  print(o.data.item())
  o.backward()

  print('---')
  print('x2', x2.grad.item())
  print('w2', w2.grad.item())
  print('x1', x1.grad.item())
  print('w1', w1.grad.item())


class Neuron:

  def __init__(self, nin):
    self.w = [Value(random.uniform(-1,1)) for _ in range(nin)]
    self.b = Value(random.uniform(-1,1))

  def __call__(self, x):
    # w * x + b
    act = sum((wi*xi for wi, xi in zip(self.w, x)), self.b)
    out = act.tanh()
    return out

  def parameters(self):
    return self.w + [self.b]

class Layer:

  def __init__(self, nin, nout):
    self.neurons = [Neuron(nin) for _ in range(nout)]

  def __call__(self, x):
    outs = [n(x) for n in self.neurons]
    return outs[0] if len(outs) == 1 else outs

  def parameters(self):
    return [p for neuron in self.neurons for p in neuron.parameters()]

class MLP:

  def __init__(self, nin, nouts):
    sz = [nin] + nouts
    self.layers = [Layer(sz[i], sz[i+1]) for i in range(len(nouts))]

  def __call__(self, x):
    for layer in self.layers:
      x = layer(x)
    return x

  def parameters(self):
    return [p for layer in self.layers for p in layer.parameters()]

x = [2.0, 3.0, -1.0]
n = MLP(3, [4, 4, 1])
print(n(x))

xs = [
  [2.0, 3.0, -1.0],
  [3.0, -1.0, 0.5],
  [0.5, 1.0, 1.0],
  [1.0, 1.0, -1.0],
]
ys = [1.0, -1.0, -1.0, 1.0] # desired targets

for k in range(20):

  # forward pass
  ypred = [n(x) for x in xs]
  loss = sum((yout - ygt)**2 for ygt, yout in zip(ys, ypred))

  # backward pass
  for p in n.parameters():
    p.grad = 0.0
  loss.backward()

  # update
  for p in n.parameters():
    p.data += -0.1 * p.grad

  print(k, loss.data)

print(ypred)
