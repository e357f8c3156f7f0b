"""Mapping strategies: how a face's crop and identity code become a latent for the generator.

They sit between the networks (:mod:`reenact.models`, which never import the face stages)
and the pipeline, because they need both: the face geometry of :mod:`reenact.faces.align`
and the networks.

* :mod:`reenact.mapping.optimize`: the ``optimize`` backend, per-frame optimisation in W
  warm-started along each track (Adam and its early stop are named parts).
* :mod:`reenact.mapping.paper_adapters`: the paper's encoders behind the interfaces the
  pipeline and image tools call (FFHQ alignment of the identity crop).
"""
