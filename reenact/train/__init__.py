"""Training of the identity-disentanglement model (paper's recipe): dataset generation from a
frozen StyleGAN, losses, the trainer (single process or torchrun/DDP), export, and the
``reenact-train`` command line."""
