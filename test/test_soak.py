"""Long runs: 10,000 frames with objects added, refined and removed at random (issue: soak).

The CI size uses the fake backend at 64x48, which isolates the session's own bookkeeping; the
model backends' bounded memory is proven in their own tests. Longer runs: `make bench`.
"""

from __future__ import annotations

from seg_ros.bench.soak import run_soak


def test_ten_thousand_frames_keep_memory_flat_and_ids_consistent() -> None:
    report = run_soak(backend="fake", frames=10_000, width=64, height=48, max_objects=8)
    # Every add that was not refused created exactly one object; every remove took one away.
    assert report.adds > 100 and report.removes > 100 and report.refines > 100
    assert report.objects_at_end == report.adds - report.removes
    assert 0 <= report.objects_at_end <= 8
    # Flat memory: after warm-up the process may not grow by more than a few MB over the run
    # (measured: 0.03 MB); a leak of one 64x48 mask per frame would add ~30 MB.
    assert len(report.rss_mb) == 21
    assert report.rss_growth_mb < 5.0, report.rss_mb
