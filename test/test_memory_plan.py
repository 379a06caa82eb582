"""The tracker's memory plan (engine/sam/memory.py), alone: no torch, no model.

A stream of 10 000 frames with several objects, prompts at random times (new objects, past
frames, corrections, conditioning prompts) and removals is replayed on plain index sets the way
`StreamingVideoTracker` keeps its tensors; after every frame what is kept must stay within
`bounds`, must still hold everything the next frame or an allowed prompt can attend to, and the
prompted frames kept must be each object's newest ones.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field

import numpy as np
import pytest

from seg_ros.engine.sam.memory import MemoryPlan


def test_the_plan_imports_without_torch() -> None:
    code = (
        "import sys; import seg_ros.engine.sam.memory; sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_bounds_and_horizon_follow_the_windows() -> None:
    plan = MemoryPlan(
        memory_frames=6, pointer_frames=15, prompt_frames=4, max_conditioning_frames=2
    )
    bounds = plan.bounds
    assert (bounds.frames, bounds.feature_frames) == (4, 2)
    assert bounds.conditioning_per_object == 2
    assert bounds.full_outputs_per_object == 4 + 6
    assert bounds.pointer_outputs_per_object == 4 + 15
    horizon = plan.horizon(100)
    assert horizon.first_promptable == 97  # frames 97..100 may be named
    assert horizon.first_spatial == 97 - 6
    assert horizon.first_pointer == 97 - 15
    # A pointer window shorter than the spatial one keeps the spatial one's frames.
    short = MemoryPlan(
        memory_frames=6, pointer_frames=2, prompt_frames=4, max_conditioning_frames=2
    )
    assert short.horizon(100).first_pointer == 97 - 6
    assert short.bounds.pointer_outputs_per_object == 4 + 6


def test_decisions_on_small_cases() -> None:
    plan = MemoryPlan(memory_frames=2, pointer_frames=4, prompt_frames=3, max_conditioning_frames=2)
    # Latest 10: prompts may name 8..10; spatial memory from 6, pointers from 4.
    assert plan.stale_frames(10, [5, 7, 8, 9, 10]) == [5, 7]
    assert plan.stale_features(10, [7, 9, 10]) == [7]  # a re-encoded 9 stays
    outputs = {3: False, 4: True, 5: True, 6: True, 9: True}
    forget, pointer_only = plan.stale_outputs(10, outputs)
    assert forget == [3] and pointer_only == [4, 5]
    assert plan.stale_outputs(10, {5: False}) == ([], [])  # already pointer-only
    assert plan.surplus_conditioning([9, 0, 4]) == [0]
    assert plan.surplus_conditioning([4]) == []
    assert plan.features_after_encoding(10, 8) == {8, 10}
    assert plan.features_after_encoding(10, 10) == {10}


@pytest.mark.parametrize(
    "windows", [{"memory_frames": 0}, {"prompt_frames": 0}, {"max_conditioning_frames": 0}]
)
def test_empty_windows_are_refused(windows: dict[str, int]) -> None:
    values = {"memory_frames": 6, "pointer_frames": 15, "prompt_frames": 6}
    values["max_conditioning_frames"] = 4
    values.update(windows)
    with pytest.raises(ValueError, match="must be >= 1"):
        MemoryPlan(**values)


@dataclass
class _Object:
    conditioning: set[int] = field(default_factory=set)
    outputs: dict[int, bool] = field(default_factory=dict)  # tracked frame -> has spatial memory
    # The ledger, kept without the plan: every frame ever stored as conditioning, and the frames
    # whose latest stored output is an ordinary tracked one.
    prompted: set[int] = field(default_factory=set)
    tracked: set[int] = field(default_factory=set)


class _Replay:
    """What StreamingVideoTracker holds, as frame-index sets, driven by the plan."""

    def __init__(self, plan: MemoryPlan) -> None:
        self.plan = plan
        self.frames: set[int] = set()
        self.features: set[int] = set()
        self.objects: dict[int, _Object] = {}
        self.latest = -1

    def step(self, t: int) -> None:
        keep = self.plan.features_after_encoding(t, t)
        self.features = {i for i in self.features if i in keep} | {t}
        self.frames.add(t)
        self.latest = t
        for obj in self.objects.values():
            if t not in obj.conditioning:
                obj.outputs[t] = True
                obj.tracked.add(t)
        self.prune()

    def prompt(self, obj_id: int, frame: int, as_conditioning: bool) -> None:
        if frame not in self.features:  # a past frame: re-encoded
            keep = self.plan.features_after_encoding(self.latest, frame)
            self.features = {i for i in self.features if i in keep} | {frame}
        obj = self.objects.setdefault(obj_id, _Object())
        was_tracked = frame in obj.outputs
        obj.outputs.pop(frame, None)
        obj.conditioning.discard(frame)
        if not was_tracked or as_conditioning:
            obj.conditioning.add(frame)
            obj.prompted.add(frame)
            obj.tracked.discard(frame)
            for old in self.plan.surplus_conditioning(obj.conditioning):
                obj.conditioning.discard(old)
        else:  # a correction, stored as an ordinary tracked frame
            obj.outputs[frame] = True
            obj.tracked.add(frame)

    def prune(self) -> None:
        for index in self.plan.stale_frames(self.latest, self.frames):
            self.frames.discard(index)
        for index in self.plan.stale_features(self.latest, self.features):
            self.features.discard(index)
        for obj in self.objects.values():
            forget, pointer_only = self.plan.stale_outputs(self.latest, obj.outputs)
            for index in forget:
                del obj.outputs[index]
            for index in pointer_only:
                obj.outputs[index] = False


@pytest.mark.parametrize(
    "windows",
    [
        (6, 15, 6, 4),  # SAM 2.1's own windows, prompts on the memory window
        (2, 15, 8, 2),  # prompts reach further back than the spatial memory
        (6, 3, 1, 1),  # a pointer window shorter than the spatial one, latest-frame prompts
    ],
)
def test_a_long_stream_stays_within_the_bounds_and_keeps_what_it_needs(
    windows: tuple[int, int, int, int],
) -> None:
    memory, pointer, prompt_frames, max_conditioning = windows
    plan = MemoryPlan(
        memory_frames=memory,
        pointer_frames=pointer,
        prompt_frames=prompt_frames,
        max_conditioning_frames=max_conditioning,
    )
    bounds = plan.bounds
    replay = _Replay(plan)
    rng = np.random.default_rng(16)
    full_seen = pointer_seen = conditioning_seen = 0
    next_id = 1
    for t in range(10_000):
        replay.step(t)
        for _ in range(int(rng.poisson(0.05))):  # a prompt about every 20 frames
            kind = rng.random()
            if kind < 0.1 and len(replay.objects) > 1:  # a removal
                del replay.objects[int(rng.choice(list(replay.objects)))]
                continue
            if kind < 0.3 or not replay.objects:
                obj_id, next_id = next_id, next_id + 1
            else:
                obj_id = int(rng.choice(list(replay.objects)))
            frame = int(rng.integers(max(0, plan.horizon(t).first_promptable), t + 1))
            replay.prompt(obj_id, frame, as_conditioning=bool(rng.random() < 0.5))

        # Within the bounds.
        assert len(replay.frames) <= bounds.frames
        assert len(replay.features) <= bounds.feature_frames and t in replay.features
        for obj in replay.objects.values():
            full = sum(obj.outputs.values())
            assert len(obj.conditioning) <= bounds.conditioning_per_object
            assert full <= bounds.full_outputs_per_object
            assert len(obj.outputs) <= bounds.pointer_outputs_per_object
            full_seen = max(full_seen, full)
            pointer_seen = max(pointer_seen, len(obj.outputs))
            conditioning_seen = max(conditioning_seen, len(obj.conditioning))
            # Prompted frames kept: the object's newest ones, however old.
            assert obj.conditioning == set(sorted(obj.prompted)[-max_conditioning:])

        # Nothing that an allowed prompt or the next frame attends to is gone: every frame a
        # prompt may name, the spatial memory and the pointers of the windows behind them.
        horizon = plan.horizon(t)
        assert replay.frames == set(range(max(0, horizon.first_promptable), t + 1))
        for obj in replay.objects.values():
            # Older ledger entries can never be needed again (and would make this quadratic).
            obj.tracked = {i for i in obj.tracked if i >= horizon.first_pointer}
            for index in obj.tracked:
                assert index in obj.outputs, (t, index)
                if index >= horizon.first_spatial:
                    assert obj.outputs[index], (t, index)  # with its spatial memory
    # The long run reached every bound (the checks above were not vacuous, the bounds are tight).
    assert conditioning_seen == bounds.conditioning_per_object
    assert full_seen == bounds.full_outputs_per_object
    assert pointer_seen == bounds.pointer_outputs_per_object
