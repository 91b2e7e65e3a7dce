"""Re-derive the alignment template (``engine.faces.align.CHIP_TEMPLATE`` / ``TEMPLATE_WEIGHTS``) from the shared
videos.

For every sampled video frame (every 0.1 s), faces found by both dlib (HOG + its 5-point predictor) and our RetinaFace
are paired by IoU. dlib's own chip transform (its 5-point template fitted to its points, as ``get_face_chip_details``
does) maps RetinaFace's five landmarks into chip pixels; their mean is the template and their scatter the weights.
The test photos are never used, so the verification test on them stays a held-out check. `make bench` prints the
measurement and fails if the committed constants drift from it by more than 0.5 px (or 25 % for a weight).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED = Path(os.environ.get("ENGINE_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")


@pytest.mark.slow
def test_template_matches_the_videos() -> None:
    import dlib
    import face_recognition_models as frm
    from torchvision.ops import box_iou

    from engine import media
    from engine.faces.align import CHIP_TEMPLATE, DLIB_5POINT_TEMPLATE, TEMPLATE_WEIGHTS, similarity_transforms
    from engine.faces.detect import FaceDetector

    hog = dlib.get_frontal_face_detector()
    shapes = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
    detector = FaceDetector()
    dlib_template = torch.tensor(DLIB_5POINT_TEMPLATE, dtype=torch.float64)
    in_chip = []
    for video in sorted((SHARED / "videos").glob("*.mp4")):
        for batch in media.sample_frames(video, interval=0.1):
            det = detector.detect(batch.frames)
            for i, frame in enumerate(batch.frames):
                ours = det.for_image(i)
                rgb = frame.permute(1, 2, 0).numpy().copy()
                for r in hog(rgb, 0):
                    if len(ours) == 0:
                        break
                    box = torch.tensor([[r.left(), r.top(), r.right(), r.bottom()]], dtype=torch.float32)
                    iou = box_iou(box, ours.boxes)[0]
                    j = int(iou.argmax())
                    if iou[j] < 0.4:
                        continue
                    shape = shapes(rgb, r)
                    points = torch.tensor([[shape.part(k).x, shape.part(k).y] for k in range(5)], dtype=torch.float64)
                    fit = similarity_transforms(points.reshape(1, 10), dlib_template)[0]  # chip → image
                    landmarks = ours.landmarks[j].to(torch.float64).view(5, 2)
                    in_chip.append(torch.linalg.solve(fit[:, :2], (landmarks - fit[:, 2]).T).T.numpy())
    pts = np.stack(in_chip)
    mean, var = pts.mean(0), pts.var(0).mean(1)
    print(f"\n[template] {len(pts)} faces from the shared videos, RetinaFace points in dlib's chip (px)")
    for name, m, committed, v, w in zip(
        ("left eye", "right eye", "nose tip", "left mouth", "right mouth"),
        mean,
        CHIP_TEMPLATE,
        var,
        TEMPLATE_WEIGHTS,
        strict=True,
    ):
        print(f"  {name:12s} mean ({m[0]:6.2f}, {m[1]:6.2f})  committed {committed}  variance {v:5.1f} (1/{1 / w:.1f})")
    assert len(pts) >= 300
    assert np.abs(mean - np.array(CHIP_TEMPLATE)).max() <= 0.5
    assert np.allclose(1 / var, np.array(TEMPLATE_WEIGHTS), rtol=0.25)
