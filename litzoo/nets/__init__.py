from litzoo.nets.mlp import TimeMLP, sinusoidal_embedding

__all__ = ["TimeMLP", "sinusoidal_embedding"]
