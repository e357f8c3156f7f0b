"""Readers for weight files written by other frameworks, with none of them installed.

* :mod:`reenact.models.readers.tf_checkpoint`: TensorFlow's object-based checkpoints
  (``PREFIX.index`` + ``PREFIX.data-0000K-of-0000N``), as written by Keras ``save_weights``.
"""
