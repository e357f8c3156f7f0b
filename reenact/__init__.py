"""reenact: change who appears in a video, keep everything else."""

__version__ = "0.1.0"
