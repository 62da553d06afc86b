"""litzoo: modern methods as PyTorch Lightning modules.

Heavy submodules are imported lazily so `import litzoo` stays fast.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "load_policy":  # needs no Lightning: an exported RL policy as obs -> action
        from litzoo.rl.policy import load_policy

        return load_policy
    raise AttributeError(f"module 'litzoo' has no attribute {name!r}")
