"""Networks and their weights: StyleGAN2 generator, weight registry, safe loaders.

The generator API lives in :mod:`reenact.models.stylegan2`; model packs, the cache and
downloads in :mod:`reenact.models.weights`; official-format converters in
:mod:`reenact.models.convert`.
"""

from reenact.models.stylegan2 import (
    Generator,
    ffhq_config,
    load_generator,
    save_generator,
    tiny_config,
    tiny_generator,
)

__all__ = [
    "Generator",
    "ffhq_config",
    "load_generator",
    "save_generator",
    "tiny_config",
    "tiny_generator",
]
