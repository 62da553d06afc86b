"""litzoo: modern methods as PyTorch Lightning modules.

Heavy submodules are imported lazily so `import litzoo` stays fast.
"""

__version__ = "0.1.0"
