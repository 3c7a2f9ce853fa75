"""Fixtures for the training tests: tiny recipes, test-only networks, one shared tiny run."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from medsr.models.registry import get_model_class, register_model
from medsr.training.config import Config, config_from_dict, load_config

REPO = Path(__file__).resolve().parents[2]
TINY_YAML = REPO / "configs" / "tiny.yaml"

TEST_SR = "_test_tiny_sr"
TEST_DISC = "_test_tiny_disc"


def _registered(name: str) -> bool:
    try:
        get_model_class(name)
    except Exception:
        return False
    return True


class _TinySR(nn.Module):
    """Test-only: bicubic + a small residual CNN (``body`` is a Sequential of blocks)."""

    def __init__(self, in_channels=1, out_channels=None, num_features=8, num_blocks=2, scale=2):
        super().__init__()
        self.scale = scale
        self.in_channels = in_channels
        layers = [nn.Sequential(nn.Conv2d(in_channels, num_features, 3, padding=1), nn.ReLU())]
        for _ in range(num_blocks - 1):
            layers.append(
                nn.Sequential(nn.Conv2d(num_features, num_features, 3, padding=1), nn.ReLU())
            )
        self.body = nn.Sequential(*layers)
        self.tail = nn.Conv2d(num_features, in_channels, 3, padding=1)

    def forward(self, x):
        up = nn.functional.interpolate(
            x, scale_factor=self.scale, mode="bicubic", align_corners=False
        )
        return up + self.tail(self.body(up))


class _TinyDisc(nn.Module):
    """Test-only discriminator with ``features(x)``."""

    kind = "discriminator"

    def __init__(self, in_channels=1, num_features=8):
        super().__init__()
        self.stages = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(in_channels, num_features, 3, 2, 1), nn.LeakyReLU(0.2)),
                nn.Sequential(nn.Conv2d(num_features, num_features, 3, 2, 1), nn.LeakyReLU(0.2)),
            ]
        )
        self.head = nn.Conv2d(num_features, 1, 1)

    def features(self, x):
        out = []
        for s in self.stages:
            x = s(x)
            out.append(x)
        return out

    def forward(self, x):
        return self.head(self.features(x)[-1]).mean(dim=(1, 2, 3))[:, None]


@pytest.fixture(scope="package", autouse=True)
def test_models():
    """Register the test-only networks while this package's tests run, and remove them after,
    so other test packages (which check the exact registry contents) never see them."""
    from medsr.models import registry

    added = []
    for name, cls in ((TEST_SR, _TinySR), (TEST_DISC, _TinyDisc)):
        if not _registered(name):
            register_model(name)(cls)
            added.append(name)
    yield
    for name in added:
        registry._REGISTRY.pop(name, None)


def tiny_dict(tmp_path: Path | None = None, **sections) -> dict:
    """configs/tiny.yaml as a dict (model swapped for the test stand-in if needed), updated."""
    d = load_config(TINY_YAML).to_dict()
    if not _registered(d["model"]["name"]):
        d["model"] = {"name": TEST_SR, "kwargs": {"num_features": 16, "num_blocks": 3}}
    d["trainer"]["progress_bar"] = "none"
    if tmp_path is not None:
        d["trainer"]["out_dir"] = str(tmp_path)
    for sec, value in sections.items():
        if isinstance(value, dict) and isinstance(d.get(sec), dict):
            d[sec] = {**d[sec], **value}
        else:
            d[sec] = value
    return d


def tiny_config(tmp_path: Path | None = None, **sections) -> Config:
    return config_from_dict(tiny_dict(tmp_path, **sections))


def quick_config(tmp_path: Path, **sections) -> Config:
    """A few-step recipe with a test-only model (fast: Trainer plumbing tests)."""
    base = {
        "model": {"name": TEST_SR, "kwargs": {"num_features": 8, "num_blocks": 2}},
        "data": {"patches_per_epoch": 32, "batch_size": 8, "val_slices_per_file": 1},
        "trainer": {"max_epochs": 2, "log_every_n_steps": 1, "image_log_every_n_epochs": 1},
    }
    for sec, value in sections.items():
        base[sec] = {**base.get(sec, {}), **value} if isinstance(value, dict) else value
    return tiny_config(tmp_path, **base)


@pytest.fixture(scope="package")
def tiny_run(test_models, tmp_path_factory):
    """One tiny supervised training run on corpus NIfTI/npy patches, shared by several tests."""
    import time

    from medsr.training.run import train

    out = tmp_path_factory.mktemp("tiny_run")
    cfg = tiny_config(out)
    t0 = time.perf_counter()
    result = train(cfg)
    result.wall_seconds = time.perf_counter() - t0  # type: ignore[attr-defined]
    return cfg, result
