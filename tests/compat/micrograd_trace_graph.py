# Derived from karpathy/micrograd, trace_graph.ipynb (MIT License, Copyright
# (c) 2020 Andrej Karpathy; https://github.com/karpathy/micrograd).
#
# The notebook's cells in order, as a script.  What differs from the notebook:
# what a cell displays is printed, over the graphviz stand-in the test
# installs, and the last cell (rendering to a file) is left out.
# tests/test_compat_micrograd.py renames the micrograd imports to microgrid.
from graphviz import Digraph

from micrograd.engine import Value

def trace(root):
    nodes, edges = set(), set()
    def build(v):
        if v not in nodes:
            nodes.add(v)
            for child in v._prev:
                edges.add((child, v))
                build(child)
    build(root)
    return nodes, edges

def draw_dot(root, format='svg', rankdir='LR'):
    """
    format: png | svg | ...
    rankdir: TB (top to bottom graph) | LR (left to right)
    """
    assert rankdir in ['LR', 'TB']
    nodes, edges = trace(root)
    dot = Digraph(format=format, graph_attr={'rankdir': rankdir}) #, node_attr={'rankdir': 'TB'})
    
    for n in nodes:
        dot.node(name=str(id(n)), label = "{ data %.4f | grad %.4f }" % (n.data, n.grad), shape='record')
        if n._op:
            dot.node(name=str(id(n)) + n._op, label=n._op)
            dot.edge(str(id(n)) + n._op, str(id(n)))
    
    for n1, n2 in edges:
        dot.edge(str(id(n1)), str(id(n2)) + n2._op)
    
    return dot

# a very simple example
x = Value(1.0)
y = (x * 2 + 1).relu()
y.backward()
print(draw_dot(y))

# a simple 2D neuron
import random
from micrograd import nn

random.seed(1337)
n = nn.Neuron(2)
x = [Value(1.0), Value(-2.0)]
y = n(x)
y.backward()

dot = draw_dot(y)
print(dot)
