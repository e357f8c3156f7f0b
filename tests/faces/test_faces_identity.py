"""Identity encoders on the labelled fixture photos: people are told apart (AUC)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from reenact.errors import ModelError, NoFaceError, ShapeError
from reenact.faces.align import similarity_from_points, warp_to_crop
from reenact.faces.detect import largest_face
from reenact.faces.identity import DlibFaceEncoder, cosine_similarity, identity_from_photo

# Photos labelled as one person that also show bystanders (checked by eye): people in
# the crowd behind (img54), a man cut by the left edge (img59), two people behind (img62),
# blurred photographers behind (img40).
WITH_BYSTANDERS = {
    "images/deepface/img54.jpg",
    "images/deepface/img59.jpg",
    "images/deepface/img62.jpg",
    "images/deepface/img40.jpg",
}


def _auc(embeddings: torch.Tensor, labels: list[str]) -> tuple[float, float, float]:
    sim = cosine_similarity(embeddings, embeddings).numpy()
    lab = np.asarray(labels)
    iu = np.triu_indices(len(lab), 1)
    same = (lab[:, None] == lab[None, :])[iu]
    s = sim[iu]
    pos, neg = s[same], s[~same]
    auc = float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())
    return auc, float(pos.mean()), float(neg.mean())


def test_every_labelled_photo_has_exactly_one_face(labelled_photos):
    assert len(labelled_photos) == 68
    for path, _, _, dets in labelled_photos:
        if path in WITH_BYSTANDERS:
            areas = np.sort(dets.areas())[::-1]
            assert len(areas) == 1 or areas[0] > 1.5 * areas[1], path  # the labelled person is the largest
        else:
            assert len(dets) == 1, (path, dets.scores)


@pytest.mark.parametrize("backend", ["mobileface", "dlib_encoder"])
def test_same_person_pairs_score_above_different_person_pairs(backend, labelled_photos, request):
    encoder = request.getfixturevalue(backend)
    embeddings, labels = [], []
    for _, label, image, dets in labelled_photos:
        i = largest_face(dets)
        pts = torch.from_numpy(dets.points[i : i + 1])
        emb = encoder.embed(image[None], torch.zeros(1, dtype=torch.long), pts)
        assert emb.shape == (1, encoder.dim) and emb.dtype == torch.float32
        assert torch.allclose(emb.norm(dim=1), torch.ones(1), atol=1e-4)
        embeddings.append(emb[0])
        labels.append(label)
    auc, same, diff = _auc(torch.stack(embeddings), labels)
    print(f"{encoder.name}: AUC {auc:.4f}, mean cosine same {same:.3f}, different {diff:.3f}")
    assert auc >= 0.98
    assert same > diff


def test_stated_normalisation_matters(fixtures, labelled_photos, mobileface):
    """insightface's guessed 127.5/127.5 collapses MobileFace; the stated 0/1 does not."""
    from reenact.faces.identity import OnnxArcFaceEncoder

    wrong = OnnxArcFaceEncoder(mobileface.path, input_mean=127.5, input_std=127.5)
    pick = [p for p in labelled_photos if p[1] in ("deepface_id00", "deepface_id01")][:6]
    labels = [p[1] for p in pick]
    results = {}
    for name, enc in (("right", mobileface), ("wrong", wrong)):
        embs = []
        for _, _, image, dets in pick:
            i = largest_face(dets)
            embs.append(enc.embed(image[None], torch.zeros(1, dtype=torch.long), torch.from_numpy(dets.points[i : i + 1]))[0])
        sim = cosine_similarity(torch.stack(embs), torch.stack(embs)).numpy()
        lab = np.asarray(labels)
        results[name] = float(sim[lab[:, None] != lab[None, :]].mean())
    assert results["right"] < 0.4 < results["wrong"]


def test_identity_from_photo_uses_largest_face_and_warns(fixtures, scrfd, mobileface, caplog):
    with caplog.at_level(logging.WARNING, logger="reenact.faces.identity"):
        result = identity_from_photo(fixtures / "images/deepface/couple.jpg", scrfd, mobileface)
    assert len(result.detections) >= 2
    assert result.index_used == int(np.argmax(result.detections.areas()))
    assert f"{len(result.detections)} faces found" in caplog.text
    assert result.embedding.shape == (mobileface.dim,)


def test_photo_without_face_is_a_clear_error(scrfd, mobileface):
    y, x = torch.meshgrid(torch.arange(240), torch.arange(320), indexing="ij")
    image = torch.stack([x * 255 // 320, y * 255 // 240, (x + y) % 256], dim=2).to(torch.uint8)
    with pytest.raises(NoFaceError, match="no face found"):
        identity_from_photo(image, scrfd, mobileface)


def test_tiny_face_is_not_used_for_identity(fixtures, scrfd, mobileface, load_photo):
    """A face under 20 px is dropped by the detector, so the photo has no usable face."""
    from PIL import Image

    photo = load_photo(fixtures / "images/deepface/img1.jpg")
    box = scrfd.detect(photo[None])[0].boxes[0]
    scale = 15.0 / float(box[2] - box[0])  # face 15 px wide
    small = Image.fromarray(photo.numpy()).resize(
        (round(photo.shape[1] * scale), round(photo.shape[0] * scale)), Image.Resampling.BILINEAR
    )
    canvas = np.full((200, 200, 3), 128, np.uint8)
    arr = np.asarray(small)
    canvas[: arr.shape[0], : arr.shape[1]] = arr[:200, :200]
    with pytest.raises(NoFaceError, match="20 px"):
        identity_from_photo(canvas, scrfd, mobileface)


def test_bad_inputs(tmp_path, scrfd, mobileface):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x01garbage" * 100)
    with pytest.raises(ModelError, match="broken.onnx"):
        type(mobileface)(bad, input_mean=0.0, input_std=1.0)
    with pytest.raises(ShapeError):
        mobileface.embed_aligned(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ShapeError):
        mobileface.embed(torch.zeros(1, 64, 64, 3), torch.zeros(1, dtype=torch.long), torch.zeros(1, 5, 2))
    with pytest.raises(ShapeError):
        cosine_similarity(torch.zeros(2, 4), torch.zeros(2, 5))


@pytest.mark.slow
def test_offline_detector_on_every_labelled_photo(labelled_photos, centerface, mobileface):
    """The offline default (CenterFace) also finds one face per photo and keeps the AUC."""
    embeddings, labels = [], []
    for path, label, image, _ in labelled_photos:
        dets = centerface.detect(image[None])[0]
        if path in WITH_BYSTANDERS:
            areas = np.sort(dets.areas())[::-1]
            assert len(areas) == 1 or areas[0] > 1.5 * areas[1], path
        else:
            assert len(dets) == 1, (path, dets.scores)
        i = largest_face(dets)
        embeddings.append(mobileface.embed(image[None], torch.zeros(1, dtype=torch.long),
                                           torch.from_numpy(dets.points[i : i + 1]))[0])
        labels.append(label)
    auc, same, diff = _auc(torch.stack(embeddings), labels)
    print(f"CenterFace points + MobileFace: AUC {auc:.4f} (same {same:.3f}, different {diff:.3f})")
    assert auc >= 0.98


def test_dlib_batched_descriptor_equals_one_face_at_a_time(read_clip):
    """The identity check embeds a whole chunk's faces in one dlib call; that must give the
    same embeddings as one call per face."""
    from reenact.faces.detect import CenterFaceDetector

    frames = read_clip("mobileface_friends1.mp4", 12)[::3]
    dets = CenterFaceDetector().detect(frames)
    index = torch.tensor([t for t, d in enumerate(dets) for _ in range(len(d))])
    points = torch.from_numpy(np.concatenate([d.points for d in dets]))
    assert points.shape[0] >= 4
    encoder = DlibFaceEncoder()
    # the descriptor: one dlib call on the list of chips == one call per chip, exactly
    M = similarity_from_points(points.float(), encoder.template())
    chips = warp_to_crop(frames, index, M, encoder.crop_size)
    batched = encoder.embed_aligned(chips)
    single = torch.cat([encoder.embed_aligned(chips[i : i + 1]) for i in range(len(index))])
    assert batched.shape == (len(index), 128)
    assert torch.allclose(batched, single, atol=1e-5)
    # end to end: chips cut together differ from chips cut alone by < 0.01 grey levels
    # (the warp samples a shared, zero-padded source region), which moves a rounded pixel
    # now and then: up to 1.1e-4 in an embedding's component on these 24 faces
    alone = torch.cat([encoder.embed(frames, index[i : i + 1], points[i : i + 1]) for i in range(len(index))])
    assert torch.allclose(encoder.embed(frames, index, points), alone, atol=3e-4)
