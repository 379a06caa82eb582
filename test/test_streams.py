"""One loaded model, several streams (issue 15, engine half).

Every backend splits into a `Model` (weights, built once) and per-stream `Backend`s from
`Model.open_stream()`. Checked here for fake, classic, tiny SAM 2.1 and tiny SAM 3:
- two streams on ONE model, fed different clips interleaved (prompts, a removal, a reset, a
  close in between), give exactly what two independently built backends give alone;
- weights are shared (same storage, counted once); closing the model makes streams refuse;
- `Model.step_batch` equals each stream's `step` in turn (and batches the encoder).
"""

from __future__ import annotations

import pathlib
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch

from seg_ros.engine.backends.base import Backend, MaskOutput, Model
from seg_ros.engine.config import BackendConfig
from seg_ros.engine.errors import BackendError, BatchStepError, ClosedError
from seg_ros.engine.prompts import Prompt
from seg_ros.engine.registry import build_backend, load_model
from seg_ros.engine.results import FrameResult
from seg_ros.engine.session import SegmentationSession
from seg_ros.testing.tiny_models import save_tiny
from seg_ros.testing.tiny_sam3 import tiny_sam3

BACKENDS = ("fake", "classic", "sam2", "sam3")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    root = tmp_path_factory.mktemp("stream_models")
    return {"sam2": save_tiny("sam2", root / "sam2"), "sam3": tiny_sam3(root / "sam3")}


def config_for(backend: str, folders: dict[str, pathlib.Path]) -> BackendConfig:
    model = str(folders[backend]) if backend in folders else ""
    return BackendConfig(backend=backend, model=model, device="cpu")


def clip(count: int, height: int, width: int, seed: int) -> list[np.ndarray]:
    """A red square moving right over a textured, noisy background (RGB uint8)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    base = np.stack([xx * 2 + seed * 7, yy * 3, (xx + yy) % 97], axis=-1).astype(np.float64)
    frames = []
    for t in range(count):
        img = base + rng.normal(0, 6, base.shape)
        x0 = 8 + 3 * t
        img[height // 4 : height // 4 + 20, x0 : x0 + 20] = (230, 40, 40)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return frames


def box(x0: float, y0: float, x1: float, y1: float) -> Prompt:
    return Prompt(box=np.asarray([x0, y0, x1, y1], np.float32))


def count_encoder_frames(model: Model) -> list[int]:
    """Frames through the model's image encoder (sam2: vision encoder, sam3: the ViT), counted
    into the returned one-item list; nothing for the weightless backends."""
    count = [0]
    module = {"sam2": lambda: model.model.vision_encoder, "sam3": lambda: model.backbone}.get(  # type: ignore[attr-defined]
        model.name
    )
    if module is None:
        return count
    encoder = module()
    real = encoder.forward

    def counted(pixel_values: torch.Tensor, **kwargs: Any) -> Any:
        count[0] += int(pixel_values.shape[0])
        return real(pixel_values, **kwargs)

    encoder.forward = counted
    return count


@dataclass
class Player:
    """Plays a clip into a session; `plan[frame]` are actions after that frame's step:
    ("box", Prompt), ("text", phrase), ("remove", object id), ("reset",), ("close",)."""

    session: SegmentationSession
    frames: list[np.ndarray]
    plan: dict[int, list[tuple[Any, ...]]]
    log: list[Any] = field(default_factory=list)
    t: int = 0

    @property
    def done(self) -> bool:
        return self.t >= len(self.frames) or self.session.backend.closed_reason is not None

    def advance(self) -> None:
        result = self.session.step(self.frames[self.t])
        self.log.append(("frame", self.t, snapshot(result)))
        for action in self.plan.get(self.t, []):
            kind = action[0]
            if kind == "box":
                answer = self.session.add_prompt(action[1])
                self.log.append(("prompt", answer.object.object_id, answer.object.mask.copy()))
            elif kind == "text":
                found = self.session.add_text(action[1])
                self.log.append(("text", [(o.object_id, o.mask.copy()) for o in found]))
            elif kind == "remove":
                self.session.remove_object(action[1])
            elif kind == "reset":
                self.session.reset()
            elif kind == "close":
                self.session.close()
        self.t += 1


def snapshot(result: FrameResult) -> list[tuple[str, bool, float, np.ndarray]]:
    return [(o.object_id, o.visible, o.score, o.mask.copy()) for o in result.objects]


def assert_same_log(got: list[Any], want: list[Any]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a[0] == b[0]
        if a[0] == "frame":
            assert a[1] == b[1]
            assert [o[:2] for o in a[2]] == [o[:2] for o in b[2]], f"objects on frame {a[1]}"
            for x, y in zip(a[2], b[2], strict=True):
                assert x[2] == pytest.approx(y[2], abs=1e-6)
                np.testing.assert_array_equal(x[3], y[3])
        elif a[0] == "prompt":
            assert a[1] == b[1]
            np.testing.assert_array_equal(a[2], b[2])
        else:
            assert [o[0] for o in a[1]] == [o[0] for o in b[1]]
            for x, y in zip(a[1], b[1], strict=True):
                np.testing.assert_array_equal(x[1], y[1])


def plans(
    backend: str,
) -> tuple[dict[int, list[tuple[Any, ...]]], dict[int, list[tuple[Any, ...]]]]:
    """Stream A: two objects, one removed, then a reset and a new object, then closed.
    Stream B (other clip, other size): one object (plus text matches on sam3), runs on."""
    plan_a: dict[int, list[tuple[Any, ...]]] = {
        0: [("box", box(6, 16, 30, 40)), ("box", box(40, 30, 70, 55))],
        2: [("remove", "1")],
        4: [("reset",)],
        5: [("box", box(20, 10, 45, 35))],
        7: [("close",)],
    }
    plan_b: dict[int, list[tuple[Any, ...]]] = {1: [("box", box(10, 12, 34, 36))]}
    if backend == "sam3":
        plan_b[3] = [("text", "red mug")]
    return plan_a, plan_b


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_streams_on_one_model_equal_two_backends_alone(
    backend: str, folders: dict[str, pathlib.Path]
) -> None:
    config = config_for(backend, folders)
    clip_a, clip_b = clip(9, 60, 80, seed=1), clip(11, 72, 96, seed=2)
    plan_a, plan_b = plans(backend)
    # References: each on its own backend (its own model), alone.
    alone = []
    encoded_alone = 0
    for frames, plan in ((clip_a, plan_a), (clip_b, plan_b)):
        stream = build_backend(config)
        assert stream.loaded_model is not None
        encoded = count_encoder_frames(stream.loaded_model)
        player = Player(SegmentationSession(stream), frames, plan)
        while not player.done:
            player.advance()
        player.session.close()
        alone.append(player.log)
        encoded_alone += encoded[0]
    model = load_model(config)
    encoded = count_encoder_frames(model)
    players = [
        Player(SegmentationSession(model.open_stream()), frames, plan)
        for frames, plan in ((clip_a, plan_a), (clip_b, plan_b))
    ]
    assert model.stats()["streams_open"] == 2
    while not all(p.done for p in players):
        for player in players:
            if not player.done:
                player.advance()
    # A was closed after frame 7 (B kept going, on the same model): only B is open now.
    assert model.stats()["streams_open"] == 1
    for player, want in zip(players, alone, strict=True):
        assert_same_log(player.log, want)
    # No extra encoder pass either: each stream's calls found its own frames' features (a
    # stream reading another's cache would re-run the ViT on a miss).
    assert encoded[0] == encoded_alone
    if backend in ("sam2", "sam3"):
        assert encoded_alone > 0
    # Ids are per stream: both start at "1"; B never saw A's objects.
    assert players[1].log[2][1] == "1"
    assert {o[0] for e in players[1].log if e[0] == "frame" for o in e[2]} <= {"1", "2", "3"}
    model.close()
    with pytest.raises(ClosedError, match="was closed"):
        players[1].session.step(clip_b[0])


@pytest.mark.parametrize("backend", ["sam2", "sam3"])
def test_weights_are_shared_and_counted_once(
    backend: str, folders: dict[str, pathlib.Path]
) -> None:
    model = load_model(config_for(backend, folders))
    before = model.stats()
    a, b = model.open_stream(), model.open_stream()
    after = model.stats()
    assert after["streams_open"] == 2
    assert after["parameters"] == before["parameters"] > 0
    assert after["weight_bytes"] == before["weight_bytes"] > 0
    weights_a = a.tracker.model  # type: ignore[attr-defined]
    weights_b = b.tracker.model  # type: ignore[attr-defined]
    assert weights_a is weights_b
    pa, pb = next(weights_a.parameters()), next(weights_b.parameters())
    assert pa.data_ptr() == pb.data_ptr()
    # The per-stream state holds no weight: only its own (empty) frames and memory.
    frames = clip(2, 60, 80, seed=3)
    SegmentationSession(a).step(frames[0])
    assert a.tracker.held_bytes() < after["weight_bytes"]  # type: ignore[attr-defined]
    assert b.tracker.held_bytes() == 0  # type: ignore[attr-defined]
    model.close()


@pytest.mark.parametrize("backend", BACKENDS)
def test_closing_the_model_closes_its_streams_with_a_clear_error(
    backend: str, folders: dict[str, pathlib.Path]
) -> None:
    model = load_model(config_for(backend, folders))
    a, b = model.open_stream(), model.open_stream()
    frame = clip(1, 60, 80, seed=4)[0]
    session_a, session_b = SegmentationSession(a), SegmentationSession(b)
    session_a.step(frame)
    session_b.step(frame)
    # One stream closed: the other and the model carry on.
    session_a.close()
    assert model.stats()["streams_open"] == 1
    session_b.step(frame)
    with pytest.raises(ClosedError, match=f"this {backend} stream was closed"):
        a.step(1, frame)
    model.close()
    model.close()  # idempotent
    assert model.closed and model.stats()["streams_open"] == 0
    with pytest.raises(ClosedError, match=f"the {backend} model this stream ran on was closed"):
        b.step(5, frame)
    with pytest.raises(ClosedError, match=f"the {backend} model this stream ran on was closed"):
        session_b.step(frame)
    with pytest.raises(ClosedError, match=f"the {backend} model was closed"):
        model.open_stream()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_built_backend_owns_its_model(backend: str, folders: dict[str, pathlib.Path]) -> None:
    stream = build_backend(config_for(backend, folders))
    model = stream.loaded_model
    assert isinstance(model, Model) and stream.owns_model
    stream.close()
    stream.close()
    assert model.closed


def _step_all(
    model: Model, streams: list[Backend], frames: list[np.ndarray], index: int, batched: bool
) -> list[dict[int, MaskOutput]]:
    items = [(s, index, f) for s, f in zip(streams, frames, strict=True)]
    if batched:
        return model.step_batch(items)
    return [s.step(index, f) for s, _, f in items]


@pytest.mark.parametrize("backend", ["sam2", "sam3"])
def test_step_batch_equals_sequential_steps(
    backend: str, folders: dict[str, pathlib.Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = load_model(config_for(backend, folders))
    assert model.batches_streams
    # The encoder's batch sizes: the batched path must really batch.
    sizes: list[int] = []
    if backend == "sam2":
        weights = model.model  # type: ignore[attr-defined]
        real = weights.get_image_features

        def spy(pixel_values: torch.Tensor, **kwargs: Any) -> Any:
            sizes.append(int(pixel_values.shape[0]))
            return real(pixel_values, **kwargs)

        monkeypatch.setattr(weights, "get_image_features", spy)
    else:
        backbone = model.backbone  # type: ignore[attr-defined]
        real_forward = backbone.forward

        def spy_forward(pixel_values: torch.Tensor, **kwargs: Any) -> Any:
            sizes.append(int(pixel_values.shape[0]))
            return real_forward(pixel_values, **kwargs)

        monkeypatch.setattr(backbone, "forward", spy_forward)
    clips = [clip(6, 60, 80, seed=s) for s in (5, 6, 7)]
    batched = [model.open_stream() for _ in clips]
    alone = [model.open_stream() for _ in clips]
    for t in range(6):
        frames = [c[t] for c in clips]
        sizes.clear()
        got = _step_all(model, batched, frames, t, batched=True)
        batch_sizes = list(sizes)
        want = _step_all(model, alone, frames, t, batched=False)
        if t == 0:
            # Prompts on two of three streams; the third stays idle (lazy: no encoder pass).
            for group in (batched, alone):
                group[0].add_prompt(0, 1, box(6, 16, 30, 40))
                group[1].add_prompt(0, 1, box(10, 12, 34, 36))
                group[1].add_prompt(0, 2, box(40, 30, 70, 55))
        else:
            assert max(batch_sizes) == 2, batch_sizes  # the two tracking streams, one pass
        for g, w in zip(got, want, strict=True):
            assert sorted(g) == sorted(w)
            for obj in g:
                np.testing.assert_array_equal(g[obj].mask, w[obj].mask)
                assert g[obj].score == pytest.approx(w[obj].score, abs=1e-6)
                assert g[obj].visible == w[obj].visible
    assert any(out.visible for out in got[1].values())
    model.close()


def test_step_batch_refuses_foreign_or_repeated_streams(folders: dict[str, pathlib.Path]) -> None:
    one, other = load_model(config_for("fake", folders)), load_model(config_for("fake", folders))
    assert not one.batches_streams  # each stream's step in turn
    mine, theirs = one.open_stream(), other.open_stream()
    frame = clip(1, 60, 80, seed=8)[0]
    with pytest.raises(ValueError, match="opened on this fake model"):
        one.step_batch([(mine, 0, frame), (theirs, 0, frame)])
    with pytest.raises(ValueError, match="at most once"):
        one.step_batch([(mine, 0, frame), (mine, 1, frame)])
    assert one.step_batch([(mine, 0, frame)]) == [{}]


def test_streams_stepped_from_two_threads_equal_each_alone(
    folders: dict[str, pathlib.Path],
) -> None:
    """A camera's services run while the worker steps another camera: the model lock keeps the
    two streams' forward passes apart, each stream's state stays its own."""
    config = config_for("sam2", folders)
    clips = [clip(8, 60, 80, seed=9), clip(8, 72, 96, seed=10)]
    prompts = [box(6, 16, 30, 40), box(10, 12, 34, 36)]

    def play(session: SegmentationSession, frames: list[np.ndarray], prompt: Prompt) -> list[Any]:
        log = [snapshot(session.step(frames[0]))]
        session.add_prompt(prompt)
        log += [snapshot(session.step(f)) for f in frames[1:]]
        return log

    want = []
    for frames, prompt in zip(clips, prompts, strict=True):
        stream = build_backend(config)
        want.append(play(SegmentationSession(stream), frames, prompt))
        stream.close()
    model = load_model(config)
    sessions = [SegmentationSession(model.open_stream()) for _ in clips]
    got: list[list[Any]] = [[], []]
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            got[n] = play(sessions[n], clips[n], prompts[n])
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    for g, w in zip(got, want, strict=True):
        assert_same_log(
            [("frame", i, s) for i, s in enumerate(g)], [("frame", i, s) for i, s in enumerate(w)]
        )
    model.close()


def test_a_stream_failing_in_a_batch_leaves_the_others_their_frames() -> None:
    model = load_model(BackendConfig(backend="fake", options={"fail_every": 3}))
    a, b = model.open_stream(), model.open_stream()
    frame = clip(1, 60, 80, seed=11)[0]
    a.step(0, frame)  # a's first step; each stream counts its own (a fails on its 3rd)
    model.step_batch([(a, 1, frame), (b, 0, frame)])
    with pytest.raises(BatchStepError, match="1 of 2 streams failed") as caught:
        model.step_batch([(a, 2, frame), (b, 1, frame)])
    assert isinstance(caught.value.errors[0], BackendError) and caught.value.errors[1] is None
    assert caught.value.outputs[0] is None and caught.value.outputs[1] == {}
    # b took frame 1: it has frames 0 and 1 in memory; a goes on after its failed frame.
    assert b.stats()["frames_in_memory"] == 2
    assert model.step_batch([(a, 2, frame)]) == [{}]  # a's 4th call (b's 3rd would fail)


def test_streams_bench_rows(tmp_path: pathlib.Path) -> None:
    """`make bench` suite "streams" on the tiny SAM 2.1: the weights are counted once whatever
    the number of streams, each stream adds its own bounded state; batched rows say their gain."""
    from seg_ros.bench import streams_bench

    memory = streams_bench.memory_rows("tiny-sam2", tmp_path, frames=2)
    assert [r["streams"] for r in memory] == [1, 2, 4]
    assert len({r["weight_bytes"] for r in memory}) == 1 and memory[0]["weight_bytes"] > 0
    for row in memory:
        assert 0 < row["state_bytes_per_stream"] < row["weight_bytes"]
    rows = streams_bench.throughput_rows("tiny-sam2", tmp_path, frames=2, counts=(2,))
    assert [r["mode"] for r in rows] == ["sequential", "batch"]
    assert rows[1]["batch_gain"] > 0 and rows[0]["frames_per_s"] > 0
    fake = streams_bench.throughput_rows("fake", tmp_path, frames=2, counts=(1,))
    assert [r["mode"] for r in fake] == ["sequential"]
