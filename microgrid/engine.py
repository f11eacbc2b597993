"""micrograd's import path: ``from microgrid.engine import Value``."""
from ._engine import Value

__all__ = ["Value"]
