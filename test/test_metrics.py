"""VOS metrics on hand-built masks whose J, boundary and F are known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from seg_ros.bench.metrics import (
    SequenceScore,
    bound_pixels,
    boundary,
    f_measure,
    jaccard,
)


def square(h: int, w: int, y0: int, x0: int, side: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0 : y0 + side, x0 : x0 + side] = True
    return m


def test_jaccard_known_values() -> None:
    a = square(40, 40, 5, 5, 10)
    b = square(40, 40, 5, 10, 10)  # overlap 10x5 = 50, union 150
    assert jaccard(a, b) == pytest.approx(1 / 3)
    assert jaccard(a, a) == 1.0
    empty = np.zeros((40, 40), dtype=bool)
    assert jaccard(empty, empty) == 1.0  # correctly reported absent
    assert jaccard(a, empty) == 0.0 and jaccard(empty, a) == 0.0


def test_boundary_matches_davis_seg2bmap() -> None:
    m = square(10, 10, 2, 2, 4)  # rows 2..5, cols 2..5
    expected = np.zeros((10, 10), dtype=bool)
    expected[5, 2:6] = True  # last row of the square (its lower neighbour is background)
    expected[2:6, 5] = True  # last column
    expected[1, 1:6] = True  # above it: the lower / lower-right neighbour is inside
    expected[1:6, 1] = True  # left of it: the right / lower-right neighbour is inside
    np.testing.assert_array_equal(boundary(m), expected)
    assert int(boundary(m).sum()) == 16
    # The image border is not a boundary: a mask filling the frame has none, and a square in
    # the lower-right corner only has its upper and left sides.
    assert not boundary(np.ones((5, 5), dtype=bool)).any()
    corner = np.zeros((4, 4), dtype=bool)
    corner[2:, 2:] = True
    expected = np.zeros((4, 4), dtype=bool)
    expected[1, 1:] = True
    expected[1:, 1] = True
    np.testing.assert_array_equal(boundary(corner), expected)


def test_bound_pixels_follows_davis_convention() -> None:
    assert bound_pixels((480, 640)) == 7  # ceil(0.008 * 800) = ceil(6.4)
    assert bound_pixels((480, 854)) == 8  # DAVIS 480p: ceil(0.008 * 979.7)
    assert bound_pixels((100, 100), 3) == 3  # >= 1 means pixels
    with pytest.raises(ValueError):
        bound_pixels((10, 10), 0)


def test_f_measure_known_values() -> None:
    gt = square(60, 60, 10, 10, 20)
    assert f_measure(gt, gt, bound_th=2) == 1.0
    # A shift within the tolerance is still a perfect boundary; beyond it, nothing matches.
    assert f_measure(np.roll(gt, 2, axis=1), gt, bound_th=2) == 1.0
    far = square(60, 60, 10, 35, 20)
    assert f_measure(far, gt, bound_th=2) == 0.0
    # Shift by 3 with tolerance 2: only the horizontal edges' overlapping part matches.
    shifted = np.roll(gt, 3, axis=1)
    bp, bg = boundary(shifted), boundary(gt)
    f = f_measure(shifted, gt, bound_th=2)
    assert 0.0 < f < 1.0
    assert bp.sum() == bg.sum()  # same shape: precision == recall == F
    # Half the ground truth found: precision 1, recall 0.5 -> F = 2/3 exactly.
    two = gt.copy()
    two[10:30, 36:56] = True  # a second 20x20 square, away from the first and the border
    f_half = f_measure(gt, two, bound_th=2)
    n_gt = boundary(two).sum()
    assert boundary(gt).sum() * 2 == n_gt
    assert f_half == pytest.approx(2 / 3)


def test_f_measure_empty_conventions() -> None:
    empty = np.zeros((30, 30), dtype=bool)
    m = square(30, 30, 5, 5, 8)
    assert f_measure(empty, empty) == 1.0
    assert f_measure(m, empty) == 0.0
    assert f_measure(empty, m) == 0.0


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError, match="one shape"):
        jaccard(np.zeros((3, 4), bool), np.zeros((4, 3), bool))
    with pytest.raises(ValueError):
        f_measure(np.zeros((3, 4, 1), bool), np.zeros((3, 4, 1), bool))


def test_sequence_score_means_over_frames_then_objects() -> None:
    gt = {1: square(40, 40, 5, 5, 10), 2: square(40, 40, 20, 20, 10)}
    seq = SequenceScore(bound_th=1)
    seq.add_frame({1: gt[1], 2: gt[2]}, gt, [1, 2])  # perfect
    seq.add_frame({1: gt[1]}, gt, [1, 2])  # object 2 missed (empty prediction)
    assert seq.objects[1].j == 1.0 and seq.objects[1].frames == 2
    assert seq.objects[2].j == pytest.approx(0.5) and seq.objects[2].f == pytest.approx(0.5)
    assert seq.j == pytest.approx(0.75) and seq.f == pytest.approx(0.75)
    assert seq.jf == pytest.approx(0.75)


def test_quality_benchmark_rows_and_skips() -> None:
    from seg_ros.bench.quality import SEQUENCES, run

    rows = run(["sam2"], quick=True, width=160, height=120)
    assert rows[0] == {"bench": "quality", "backend": "sam2", "skipped": "no model given (--model)"}
    fake = [r for r in rows if r.get("backend") == "fake" and r["bench"] == "quality"]
    assert {r["sequence"] for r in fake} == set(SEQUENCES)
    assert {r["prompt"] for r in fake} == {"box", "point"}
    for r in fake:
        assert 0.0 <= r["J"] <= 1.0 and 0.0 <= r["F"] <= 1.0
        assert r["JF"] == pytest.approx((r["J"] + r["F"]) / 2, abs=1e-3)
        assert r["frames"] == 30 and r["input"] == "160x120"
    means = [r for r in rows if r["bench"] == "quality_mean"]
    assert len(means) == 2 and not any(r["bench"] == "speed" for r in rows)
