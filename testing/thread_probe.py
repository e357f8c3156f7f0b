"""A folder-job task that reports the threads its worker process was given (tests of
reenact.threads): module-level, so a spawned pool worker or a Ray task can import it."""

from __future__ import annotations

import os
from typing import Any


def thread_probe(job: Any) -> dict[str, Any]:
    """Torch's, onnxruntime's and the encoder's thread counts as this process uses them, and
    the OpenMP wait policy; writes the first two frames of ``job.source`` to ``job.output``."""
    import torch

    from reenact.faces.onnx_session import session_options
    from reenact.io import VideoWriter, open_video
    from reenact.threads import current

    options = session_options()
    with open_video(job.source, chunk_size=2) as reader:
        chunk = next(iter(reader))
        with VideoWriter(job.output, reader.info, overwrite=True) as writer:
            writer.write(chunk)
            encoder_threads = int(writer._video.codec_context.thread_count)
    return {
        "pid": os.getpid(),
        "budget": current().describe(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "onnx_intra": options.intra_op_num_threads,
        "onnx_inter": options.inter_op_num_threads,
        "encoder_threads": encoder_threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
    }
