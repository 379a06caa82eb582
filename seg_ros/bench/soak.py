"""Soak run: many frames with objects added, refined and removed at random.

Reports the RSS curve (sampled every `sample_every` frames), step latency per window, and the
bookkeeping at the end. Used by the soak test (CI size) and by `make bench` (longer).

    python -m seg_ros.bench.soak --frames 10000 --backend fake --size 64x48
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil

from seg_ros.engine.config import BackendConfig
from seg_ros.engine.errors import CapacityError, SegRosError
from seg_ros.engine.prompts import Prompt
from seg_ros.engine.registry import build_backend
from seg_ros.engine.session import SegmentationSession


@dataclass
class SoakReport:
    backend: str
    frames: int
    width: int
    height: int
    adds: int = 0
    refines: int = 0
    removes: int = 0
    refused: int = 0
    rss_mb: list[float] = field(default_factory=list)
    step_ms_p50: list[float] = field(default_factory=list)
    objects_at_end: int = 0

    @property
    def rss_growth_mb(self) -> float:
        """Growth from the first sample after warm-up (10% of the run) to the last."""
        if len(self.rss_mb) < 2:
            return 0.0
        warm = self.rss_mb[max(1, len(self.rss_mb) // 10)]
        return self.rss_mb[-1] - warm

    def row(self) -> dict[str, Any]:
        return {
            "bench": "soak",
            "backend": self.backend,
            "frames": self.frames,
            "input": f"{self.width}x{self.height}",
            "adds": self.adds,
            "refines": self.refines,
            "removes": self.removes,
            "refused": self.refused,
            "objects_at_end": self.objects_at_end,
            "rss_start_mb": round(self.rss_mb[0], 1) if self.rss_mb else None,
            "rss_end_mb": round(self.rss_mb[-1], 1) if self.rss_mb else None,
            "rss_growth_mb": round(self.rss_growth_mb, 2),
            "rss_curve_mb": [round(v, 1) for v in self.rss_mb],
            "step_ms_p50_per_window": [round(v, 3) for v in self.step_ms_p50],
        }


def _moving_frame(rng: np.random.Generator, t: int, height: int, width: int) -> np.ndarray:
    frame = np.full((height, width, 3), 40, dtype=np.uint8)
    x = (t * 3) % max(1, width - 12)
    frame[height // 4 : height // 4 + 12, x : x + 12] = (200, 60, 60)
    frame[..., 1] = rng.integers(30, 50, size=(height, width), dtype=np.uint8)
    return frame


def run_soak(
    *,
    backend: str = "fake",
    frames: int = 10_000,
    width: int = 64,
    height: int = 48,
    max_objects: int = 8,
    sample_every: int = 500,
    seed: int = 0,
    options: dict[str, Any] | None = None,
    model: str = "",
) -> SoakReport:
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    session = SegmentationSession(
        build_backend(BackendConfig(backend=backend, model=model, options=options or {})),
        max_objects=max_objects,
    )
    proc = psutil.Process()
    report = SoakReport(backend, frames, width, height)
    window: list[float] = []
    try:
        for t in range(frames):
            start = time.perf_counter()
            session.step(_moving_frame(rng, t, height, width), stamp_ns=(t + 1) * 33_000_000)
            window.append((time.perf_counter() - start) * 1000.0)
            action = pick.random()
            ids = session.object_ids
            try:
                if action < 0.05:
                    x, y = pick.uniform(0, width - 1), pick.uniform(0, height - 1)
                    session.add_prompt(Prompt(points=[[x, y]]))
                    report.adds += 1
                elif action < 0.08 and ids:
                    x0, y0 = pick.uniform(0, width / 2), pick.uniform(0, height / 2)
                    session.add_prompt(
                        Prompt(box=[x0, y0, x0 + width / 4, y0 + height / 4]),
                        object_id=pick.choice(ids),
                    )
                    report.refines += 1
                elif action < 0.12 and ids:
                    session.remove_object(pick.choice(ids))
                    report.removes += 1
            except CapacityError:
                report.refused += 1
            except SegRosError:
                report.refused += 1
            if (t + 1) % sample_every == 0 or t == 0:
                report.rss_mb.append(proc.memory_info().rss / 2**20)
                if t:
                    report.step_ms_p50.append(statistics.median(window))
                window.clear()
        report.objects_at_end = len(session.object_ids)
    finally:
        session.close()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--backend", default="fake")
    parser.add_argument("--model", default="")
    parser.add_argument("--size", default="64x48", help="WIDTHxHEIGHT")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    report = run_soak(
        backend=args.backend, frames=args.frames, width=width, height=height, model=args.model
    )
    print(json.dumps(report.row()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
