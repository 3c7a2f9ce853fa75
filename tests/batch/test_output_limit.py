"""``medsr batch``: an item whose output would be past ``MEDSR_MAX_PIXELS`` fails alone, before
the model allocates it, also when items share one forward pass."""

from __future__ import annotations

import numpy as np

from medsr.batch import run_batch


def test_an_output_past_the_ceiling_fails_before_the_model(tmp_path, monkeypatch):
    """Items sharing one forward pass (``batch_across_items``): the pass computed every output
    before the safeguards ran, so the size is checked when the item is read."""
    src = tmp_path / "in"
    src.mkdir()
    np.save(src / "small.npy", np.random.default_rng(0).random((1, 20, 20), np.float32))
    np.save(src / "large.npy", np.random.default_rng(1).random((1, 60, 60), np.float32))
    # the ceiling of this process only: the decoding children come from a fork server that
    # outlives the test, and would keep an environment variable set here for later tests
    monkeypatch.setattr("medsr.io.limits.max_pixels", lambda: 100 * 100)
    summary = run_batch(src, tmp_path / "out", model="bicubic", workers=1, batch_across_items=True)
    rows = {r.label: r for r in summary.results}
    assert rows["small.npy"].status == "ok"
    large = rows["large.npy"]
    assert large.status == "failed"
    assert "the output would hold 14,400 values (1 × 120 × 120)" in large.error
    assert not (tmp_path / "out" / "large.npy").exists()
