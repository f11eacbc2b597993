"""micrograd's import path: ``from microgrid.engine import Value``."""
from .core._engine import Value

__all__ = ["Value"]
