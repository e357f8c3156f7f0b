"""Readers for foreign model files (Keras HDF5, TensorFlow checkpoints), with no TensorFlow.

Each reader is strict: a missing, extra or mis-shaped tensor is a
:class:`reenact.errors.ModelError` that names it.
"""
