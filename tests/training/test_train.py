"""End to end: a tiny CPU training run beats bicubic; resume; export; inference from safetensors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import medsr
from medsr.errors import InvalidParameterError, MedSRWarning
from medsr.io import load_image
from medsr.models.weights import load_model, read_card
from medsr.training.config import OptimConfig
from medsr.training.data import resolve_corpus
from medsr.training.run import export, train
from medsr.training.tasks import WarmupSchedule
from tests.training.conftest import quick_config

REQUIRED_CARD = (
    "architecture",
    "kwargs",
    "scale",
    "normalization",
    "degradation",
    "training_data",
    "metrics",
    "version",
    "date",
    "steps",
)


def test_tiny_training_beats_bicubic(tiny_run):
    cfg, result = tiny_run
    m = result.metrics
    summary = {
        "steps": result.global_step,
        "seconds": round(result.seconds, 1),
        "val_psnr": round(m["val/psnr"], 3),
        "val_psnr_bicubic": round(m["val/psnr_bicubic"], 3),
        "val_ssim": round(m["val/ssim"], 4),
        "val_ssim_bicubic": round(m["val/ssim_bicubic"], 4),
    }
    print("tiny training:", json.dumps(summary))
    steps_per_epoch = cfg.data.patches_per_epoch // cfg.data.batch_size
    assert result.global_step == steps_per_epoch * cfg.trainer.max_epochs
    # same LR inputs, same units (normalised, data_range 1, crop = scale)
    assert m["val/psnr"] > m["val/psnr_bicubic"] + 0.1
    assert m["val/psnr_gain"] == pytest.approx(m["val/psnr"] - m["val/psnr_bicubic"], abs=1e-4)
    assert m["val/ssim"] > m["val/ssim_bicubic"]
    assert result.best_checkpoint is not None and result.best_checkpoint.is_file()
    assert (result.out_dir / "checkpoints" / "last.ckpt").is_file()
    assert (result.out_dir / "config.yaml").is_file()
    events = list((result.out_dir / "tb").rglob("events.out.tfevents.*"))
    assert events


def test_export_round_trip_and_card(tiny_run, tmp_path):
    cfg, result = tiny_run
    out = export(result.last_checkpoint, tmp_path / "tiny.safetensors")
    card = read_card(out)
    for key in REQUIRED_CARD:
        assert key in card, key
    assert card["architecture"] == cfg.model.name and card["scale"] == 2
    assert card["kwargs"]["scale"] == 2 and card["kwargs"]["in_channels"] == 1
    assert card["normalization"] == {"kind": "minmax"}
    assert card["degradation"]["kind"] == "default"
    assert card["training_data"]["train_files"] == [
        "S0_10slices.nii.gz",
        "anatomical.nii",
        "t1_coronal_slice.npy",
    ]
    assert card["training_data"]["val_files"] == ["aniso_vox.nii.gz"]
    assert all("/" not in name for name in card["training_data"]["train_files"])
    assert card["steps"] == result.global_step
    assert card["version"] == medsr.__version__
    met = card["metrics"]
    assert met["val_psnr"] > met["val_psnr_bicubic"]

    net, _ = load_model(out)
    ref = result.task.eval_model().cpu().eval()
    x = torch.rand(2, 1, 20, 24)
    with torch.no_grad():
        assert torch.equal(net(x), ref(x))

    # inference straight from the safetensors file, with the card's normalisation
    image = load_image(resolve_corpus("aniso_vox.nii.gz"))
    sr = medsr.upscale(image, scale=2, model=str(out))
    assert sr.array.shape == (
        image.array.shape[0],
        image.array.shape[1] * 2,
        image.array.shape[2] * 2,
    )
    assert np.isfinite(sr.array).all()
    assert sr.spacing[1] == pytest.approx(image.spacing[1] / 2)
    assert sr.meta["derivation"]["method"] == "super-resolution"


def test_resume_continues_from_the_same_step(tmp_path):
    n = 4
    cfg = quick_config(
        tmp_path, trainer={"max_steps": n, "max_epochs": -1}, optim={"warmup_steps": 2}
    )
    first = train(cfg)
    assert first.global_step == n
    last = first.last_checkpoint
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == n and "medsr" in ckpt
    second = train(
        cfg.replace(trainer={**cfg.to_dict()["trainer"], "max_steps": 2 * n}), resume=last
    )
    assert second.global_step == 2 * n
    # the optimiser really continued (Adam's step counter)
    ckpt2 = torch.load(second.last_checkpoint, map_location="cpu", weights_only=True)
    steps = [int(s["step"]) for s in ckpt2["optimizer_states"][0]["state"].values()]
    assert steps and all(s == 2 * n for s in steps)


def test_resume_refuses_a_changed_recipe(tmp_path):
    """Resuming keeps the checkpoint's optimiser, network and data: a recipe that changes them
    is refused before anything is written (it used to keep the old learning rate while the run
    folder's config.yaml said the new one, or train a ×2 network as ×4, or fail on tensors of
    other shapes with a traceback)."""
    cfg = quick_config(tmp_path, trainer={"max_steps": 2, "max_epochs": -1})
    last = train(cfg).last_checkpoint
    saved = (tmp_path / "config.yaml").read_text()
    d = cfg.to_dict()
    for change, key in (
        ({"optim": {**d["optim"], "lr": 0.5}}, r"optim\.lr: 0\.002 there, 0\.5 here"),
        ({"scale": 4}, "scale: 2 there, 4 here"),
        ({"model": {**d["model"], "kwargs": {"num_features": 4, "num_blocks": 2}}}, "num_features"),
        ({"data": {**d["data"], "seed": 7}}, r"data\.seed"),
    ):
        with pytest.raises(InvalidParameterError, match=f"another recipe .*{key}"):
            train(cfg.replace(**change), resume=last)
    assert (tmp_path / "config.yaml").read_text() == saved  # the run folder's recipe is kept
    # how long and where it runs may change: the run goes on
    longer = cfg.replace(trainer={**d["trainer"], "max_steps": 3, "log_every_n_steps": 2})
    # ... and a cosine schedule keeps its length: the steps past it run at the final rate, said
    with pytest.warns(
        MedSRWarning, match=r"max_steps: 2 there, 3 here\): the schedule keeps the length"
    ):
        assert train(longer, resume=last).global_step == 3


def test_a_copied_run_folder_resumes_in_itself(tmp_path):
    """runs/A copied to runs/B and resumed with B's config.yaml and checkpoint trained in A: the
    run folder came from the recipe (its trainer.out_dir, or runs/<name>), both naming A, so the
    resume overwrote A's last.ckpt and config.yaml, deleted A's best checkpoint and named A's new
    one. Lightning's checkpoint callback, given a record from another folder, also kept the
    other folder's best path and forgot its score. Now a resume continues in the folder holding
    its checkpoint (said when the recipe names another), and the best record follows the copy."""
    import shutil

    from medsr.training.config import load_config

    def files(folder):
        return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}

    def best_record(ckpt):
        states = torch.load(ckpt, map_location="cpu", weights_only=True)["callbacks"]
        return next(v for k, v in states.items() if k.startswith("ModelCheckpoint{"))

    a, b = tmp_path / "A", tmp_path / "B"
    train(quick_config(a, trainer={"max_epochs": 1}))
    shutil.copytree(a, b)
    before = files(a)
    old = best_record(a / "checkpoints" / "last.ckpt")
    recipe = load_config(b / "config.yaml")
    longer = recipe.replace(trainer={**recipe.to_dict()["trainer"], "max_epochs": 2})
    with pytest.warns(MedSRWarning, match=r"resumes in its own run folder .*B, not in"):
        result = train(longer, resume=b / "checkpoints" / "last.ckpt")
    assert result.out_dir == b and result.global_step == 8
    assert files(a) == before  # the folder it was copied from is untouched
    assert list((b / "checkpoints").glob("best-*.ckpt")) == [result.best_checkpoint]
    record = best_record(result.last_checkpoint)
    assert Path(record["dirpath"]) == (b / "checkpoints").resolve()
    assert Path(record["best_model_path"]) == result.best_checkpoint.resolve()
    # the score of the copied best took part: the best is the better of the two epochs
    score = max(float(old["best_model_score"]), result.metrics["val/psnr"])
    assert float(record["best_model_score"]) == pytest.approx(score)
    assert load_config(b / "config.yaml").trainer.out_dir == str(b)

    # resumed into another folder (--out-dir), where the old best is not: said, and the best
    # there is that folder's own
    with pytest.warns(MedSRWarning, match=r"the best checkpoint of the run .* is not in .*C"):
        other = train(longer, resume=a / "checkpoints" / "last.ckpt", out_dir=tmp_path / "C")
    assert other.best_checkpoint.parent == tmp_path / "C" / "checkpoints"
    assert files(a) == before


def test_ctrl_c_keeps_the_state_of_that_step_and_resumes(tmp_path, monkeypatch):
    """Ctrl-C (a KeyboardInterrupt in a training step) writes last.ckpt at that step and raises
    TrainingInterrupted naming it; Ctrl-C works again afterwards. It used to end the process
    with sys.exit(1) and no checkpoint of a run that had not finished an epoch, and left SIGINT
    ignored in the calling process."""
    import signal

    from medsr.training.run import TrainingInterrupted
    from medsr.training.tasks import SupervisedSR

    cfg = quick_config(tmp_path, trainer={"max_epochs": 1})  # 4 steps, checkpoints at the end
    step = SupervisedSR.training_step

    def interrupted_at_3(self, batch, batch_idx):
        if self.global_step == 3:
            raise KeyboardInterrupt
        return step(self, batch, batch_idx)

    monkeypatch.setattr(SupervisedSR, "training_step", interrupted_at_3)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(
        TrainingInterrupted, match=r"at step 3; the state is in .*last\.ckpt"
    ) as exc:
        train(cfg)
    assert isinstance(exc.value, KeyboardInterrupt)
    assert signal.getsignal(signal.SIGINT) is before
    last = exc.value.checkpoint
    assert last == tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 3
    monkeypatch.setattr(SupervisedSR, "training_step", step)
    assert train(cfg, resume=last).global_step == 4  # the epoch's last step, then its end


def test_a_run_resumed_mid_epoch_trains_on_the_rest_of_that_epoch(tmp_path, monkeypatch):
    """Resumed from a step inside an epoch (Ctrl-C here), Lightning warned that the dataloader
    "is not resumable", and the rest of the epoch drew that epoch's first batches again (its
    loop skips the batches done, the loader started over); with loader workers, whose first
    keys are fetched before Lightning sets the epoch, a resumed epoch drew epoch 0's patches.
    Now the resumed steps train on exactly the patches of the run that was never stopped, and
    Lightning has nothing to warn about."""
    import warnings

    from medsr.training.run import TrainingInterrupted
    from medsr.training.tasks import SupervisedSR

    step = SupervisedSR.training_step
    seen: dict[int, torch.Tensor] = {}
    stop = {"at": None}

    def recording(self, batch, batch_idx):
        if self.global_step == stop["at"]:
            raise KeyboardInterrupt
        seen[self.global_step] = batch["hr"].detach().cpu().clone()
        return step(self, batch, batch_idx)

    monkeypatch.setattr(SupervisedSR, "training_step", recording)

    def config(folder):  # 2 epochs of 4 steps, one loader worker
        return quick_config(
            folder,
            trainer={"max_epochs": 2},
            data={"patches_per_epoch": 32, "batch_size": 8, "num_workers": 1},
        )

    train(config(tmp_path / "whole"))
    whole = dict(seen)
    assert sorted(whole) == list(range(8))
    seen.clear()
    stop["at"] = 6  # the third step of the second epoch
    with pytest.raises(TrainingInterrupted) as exc:
        train(config(tmp_path / "stopped"))
    stop["at"] = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(config(tmp_path / "stopped"), resume=exc.value.checkpoint)
    assert result.global_step == 8 and sorted(seen) == list(range(8))
    for k in range(8):  # the same patches at every step, before and after the stop
        assert torch.equal(seen[k], whole[k]), k
    said = [str(w.message) for w in caught]
    assert not [m for m in said if "not resumable" in m or "before the epoch ended" in m], said


def test_checkpoints_from_elsewhere_are_refused(tmp_path):
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(InvalidParameterError, match="not written by medsr"):
        export(foreign, tmp_path / "x.safetensors")

    class Evil:
        def __reduce__(self):
            return (print, ("unpickled!",))

    evil = tmp_path / "evil.ckpt"
    torch.save({"medsr": {}, "state_dict": {}, "x": Evil()}, evil)
    with pytest.raises(InvalidParameterError, match="not a medsr training checkpoint"):
        export(evil, tmp_path / "x.safetensors")
    cfg = quick_config(tmp_path)
    with pytest.raises(InvalidParameterError):
        train(cfg, resume=evil)
    with pytest.raises(InvalidParameterError, match=r"\.safetensors"):
        export(foreign, tmp_path / "x.pt")


def test_warmup_and_schedules():
    cos = WarmupSchedule(
        OptimConfig(schedule="cosine", warmup_steps=10, min_lr_ratio=0.1), total_steps=110
    )
    assert cos(0) == pytest.approx(0.1) and cos(9) == pytest.approx(1.0)
    assert cos(10) == pytest.approx(1.0) and cos(60) == pytest.approx(0.55)
    assert cos(110) == pytest.approx(0.1) and cos(500) == pytest.approx(0.1)
    step = WarmupSchedule(
        OptimConfig(schedule="step", step_size=5, gamma=0.5), total_steps=math.inf
    )
    assert [step(i) for i in (0, 4, 5, 10)] == [1.0, 1.0, 0.5, 0.25]
    const = WarmupSchedule(OptimConfig(schedule="cosine"), total_steps=math.inf)  # unknown length
    assert const(1000) == 1.0


def test_ema_weights_are_validated_and_exported(tmp_path):
    cfg = quick_config(tmp_path, trainer={"ema_decay": 0.5, "max_epochs": 1})
    result = train(cfg)
    task = result.task
    assert task.ema is not None and int(task.ema.n_averaged) == result.global_step
    out = export(result.last_checkpoint, tmp_path / "ema.safetensors")
    raw = export(result.last_checkpoint, tmp_path / "raw.safetensors", use_ema=False)
    assert read_card(out)["weights"] == "ema" and read_card(raw)["weights"] == "raw"
    x = torch.rand(1, 1, 16, 16)
    net, _ = load_model(out)
    raw_net, _ = load_model(raw)
    with torch.no_grad():
        assert torch.equal(net(x), task.ema.module.cpu().eval()(x))
        assert torch.equal(raw_net(x), task.model.cpu().eval()(x))
        assert not torch.equal(net(x), raw_net(x))


def test_max_time_stops_training_and_keeps_a_checkpoint(tmp_path):
    cfg = quick_config(tmp_path, trainer={"max_epochs": 100_000})
    result = train(cfg, max_time="00:00:02", devices="1", out_dir=tmp_path / "timed")
    assert result.out_dir == tmp_path / "timed"
    assert 0 < result.global_step < 100_000 * 4
    assert result.last_checkpoint is not None and result.last_checkpoint.is_file()


def test_model_init_warm_starts_a_x4_network_from_x2_weights(tiny_run, tmp_path):
    from medsr.models.registry import create_model
    from medsr.training.tasks import init_from

    cfg, result = tiny_run
    x2 = export(result.last_checkpoint, tmp_path / "x2.safetensors")
    state2 = load_model(x2)[0].state_dict()
    net4 = create_model(cfg.model.name, scale=4, in_channels=1, **cfg.model.kwargs)
    report = init_from(net4, x2, cfg.model.name)
    own = net4.state_dict()
    assert report["loaded"] == len(own) - len(report["skipped"]) and report["loaded"] > 0
    for k, v in own.items():  # every tensor that fits came from the ×2 network
        if k not in report["skipped"]:
            assert torch.equal(v, state2[k]), k
    with pytest.raises(InvalidParameterError, match="holds a"):
        init_from(create_model("srcnn", scale=4), x2, "srcnn")
    with pytest.raises(InvalidParameterError, match="does not exist"):
        init_from(net4, tmp_path / "missing.safetensors", cfg.model.name)

    # through the config: a recipe with model.init trains and records the warm start in its card
    cfg2 = quick_config(
        tmp_path / "run",
        model={"name": cfg.model.name, "kwargs": dict(cfg.model.kwargs), "init": str(x2)},
        trainer={"max_steps": 2, "max_epochs": -1},
    )
    res2 = train(cfg2)
    card = load_medsr_card(res2.last_checkpoint)
    assert card["init"]["from"] == "x2.safetensors"
    assert card["init"]["loaded"] == len(load_model(x2)[0].state_dict())


def test_model_init_refuses_weights_built_with_other_kwargs():
    """The shipped fast-x2 was built with esa_spread 'fixed': every tensor also fits a 'stretch'
    network, which computes something else, so a config that leaves esa_spread out is refused."""
    from pathlib import Path

    from medsr.models.registry import create_model
    from medsr.training.tasks import init_from

    shipped = Path(medsr.__file__).parent / "weights" / "fast-x2.safetensors"
    kwargs = {"num_features": 24, "num_blocks": 2, "global_residual": True, "in_channels": 1}
    stretch = create_model("rlfn", scale=2, **kwargs)
    before = {k: v.clone() for k, v in stretch.state_dict().items()}
    with pytest.raises(
        InvalidParameterError, match=r"esa_spread: 'stretch' here, 'fixed' in the init"
    ):
        init_from(stretch, shipped, "rlfn", {**kwargs, "scale": 2})
    assert all(torch.equal(v, before[k]) for k, v in stretch.state_dict().items())  # untouched
    fixed = {**kwargs, "esa_spread": "fixed"}
    report = init_from(
        create_model("rlfn", scale=2, **fixed), shipped, "rlfn", {**fixed, "scale": 2}
    )
    assert report["skipped"] == [] and report["loaded"] > 0
    # a x4 network warm-started from the x2 weights: scale may differ
    report4 = init_from(
        create_model("rlfn", scale=4, **fixed), shipped, "rlfn", {**fixed, "scale": 4}
    )
    assert report4["loaded"] > 0


def load_medsr_card(ckpt):
    from medsr.training.tasks import load_medsr_checkpoint

    return load_medsr_checkpoint(ckpt)["medsr"]


def test_export_of_a_folder_names_a_checkpoint_to_give(tmp_path):
    """`medsr export runs/x/checkpoints out.safetensors` said the folder "does not exist"."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best-000-0000004.ckpt").write_bytes(b"x")
    (run / "checkpoints" / "last.ckpt").write_bytes(b"x")
    for folder in (run, run / "checkpoints"):
        with pytest.raises(InvalidParameterError, match="is a folder") as err:
            export(folder, tmp_path / "m.safetensors")
        assert str(run / "checkpoints" / "last.ckpt") in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidParameterError, match=r"holds no \.ckpt"):
        export(tmp_path / "empty", tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


def test_export_refuses_an_existing_output_before_reading_the_checkpoint(tmp_path):
    """As every command: an existing output is refused first (without --overwrite), not after
    the work; a missing output folder is created, as `medsr upscale` does."""
    from medsr.errors import OutputExistsError

    (tmp_path / "m.safetensors").write_bytes(b"mine")
    with pytest.raises(OutputExistsError):
        export(tmp_path / "missing.ckpt", tmp_path / "m.safetensors", overwrite=False)
    assert (tmp_path / "m.safetensors").read_bytes() == b"mine"
