"""The hand-built training step (no PyTorch involved) computes what numpy computes."""

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "models" / "handmade"))
from make_mlp_sgd import build, reference_step  # noqa: E402

MODEL = ROOT / "models" / "mlp_sgd_handwritten.onnx"


def seeded_feeds(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in model.graph.input:
        shape = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        feeds[vi.name] = (rng.standard_normal(shape) * 0.1).astype(np.float32)
    t = feeds["batch.target"]
    feeds["batch.target"] = np.eye(t.shape[1], dtype=np.float32)[rng.integers(0, t.shape[1], t.shape[0])]
    return feeds


def test_committed_file_is_what_the_script_builds():
    assert onnx.load(MODEL).graph == build().graph


def test_one_step_matches_numpy():
    model = onnx.load(MODEL)
    feeds = seeded_feeds(model)
    sess = ort.InferenceSession(MODEL.as_posix(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    got = dict(zip(names, sess.run(None, feeds)))
    want = reference_step(feeds, layers=4)
    assert set(want) == set(got)
    for name, ref in want.items():
        np.testing.assert_allclose(got[name], ref, rtol=1e-4, atol=1e-6, err_msg=name)
