"""The synthetic ground-truth video benchmark: reproducible clips, consistent ground truth, a trained model."""

from __future__ import annotations

from importlib import resources

import numpy as np
import torch

from video_iba.evaluation import synthetic as syn


def test_clips_are_reproducible_and_their_ground_truth_matches_the_pixels() -> None:
    a, b = syn.make_clip(7), syn.make_clip(7)
    assert np.array_equal(a.x, b.x) and a.label == b.label and a.interval == b.interval
    assert not np.array_equal(a.x, syn.make_clip(8).x)
    labels = set()
    for seed in range(40):
        c = syn.make_clip(seed)
        labels.add(c.label)
        t0, t1 = c.interval
        assert t1 - t0 == syn.MOVE_FRAMES + 1 and 0 < t0 and t1 <= syn.FRAMES
        inside = ~np.isnan(c.boxes[:, 0])
        assert inside.tolist() == [t0 <= t < t1 for t in range(syn.FRAMES)]
        target = np.all(np.abs(c.x - np.array(syn.TARGET_COLOUR, dtype=np.float32)[:, None, None, None]) < 1e-6, axis=0)
        for t in range(t0, t1):
            x0, y0, x1, y1 = c.boxes[t].astype(int)
            assert target[t, y0:y1, x0:x1].all()  # the box is the target square in that frame
        # the target moves only inside the interval, in the class's direction
        dy, dx = syn._DIRS[c.label]
        ys, xs = np.nonzero(target[t0])
        ye, xe = np.nonzero(target[t1 - 1])
        assert (int(np.sign(ye.min() - ys.min())), int(np.sign(xe.min() - xs.min()))) == (dy, dx)
        assert np.array_equal(target[0], target[t0]) and np.array_equal(target[t1 - 1], target[-1])
        assert c.tube().sum() == (t1 - t0) * syn.OBJECT ** 2
    assert labels == set(range(len(syn.CLASSES)))


def test_the_committed_model_solves_the_benchmark() -> None:
    model = syn.TubeNet()
    path = resources.files("video_iba").joinpath("weights", "tubenet.pt")
    model.load_state_dict(torch.load(str(path), weights_only=True))
    model.eval()
    x, y = syn.make_batch(list(syn.TEST_SEEDS)[:200])
    with torch.no_grad():
        acc = float((model(x).argmax(1) == y).float().mean())
    assert acc > 0.9, acc
