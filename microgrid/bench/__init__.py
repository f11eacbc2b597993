"""Benchmarks: ``microgrid bench`` measures microgrid against micrograd and
PyTorch on the same workloads.

- ``engines``: which engines run here, and the adapters workloads use;
- ``harness``: the ``Workload`` base class, the cross-engine check and timing;
- ``scalar``, ``exam``, ``moons``, ``tensors``: the workloads;
- ``registry``: the list of workloads (add a module there to extend it);
- ``report``: machine and versions, the table, JSON / Markdown / plot;
- ``command``: the ``microgrid bench`` options.
"""
