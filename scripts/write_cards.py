"""Complete the model cards of the shipped weights (``src/medsr/weights/*.safetensors``).

``medsr export`` writes the machine-made card (architecture, kwargs, scale, normalisation,
degradation, training files with sha256, validation metrics, steps, the recipe and default words:
:mod:`medsr.training.card`). This adds what a reader needs — a
summary, how and on what it was trained, the benchmark numbers of ``benchmarks/quality.py``
(``benchmarks/results/quality.json``) and the limitations — to the card inside the
safetensors file and writes it beside it as ``<name>.json`` with the report sections of
``scripts/card_sections.py`` (intended use, per-image validation, caveats, licences, checksum).

The slice interpolator ``interp-cnn`` gets the same keys (:func:`interp_card`): its training run
(the plain-PyTorch loop that ``task: slice-interpolation`` replaced, recorded in its first card),
the benchmark of record (``benchmarks/results/interpolation.json``) and a fresh evaluation of the
shipped weights on the held-out volumes with ``medsr evaluate --interpolation``'s protocol. Only
the card changes: the tensors are written back as they were.

    .venv/bin/python scripts/write_cards.py [--hardware "AMD EPYC, 2 cores, CPU only"] [--only interp-cnn]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from card_sections import twin  # the JSON twin: the card plus its report sections

from medsr.models.cards import TEXTURE_NOTE, architecture_summary
from medsr.models.pretrained import WEIGHTS_DIR, bundled_weights
from medsr.models.weights import load_model, read_card, save_model
from medsr.training.run import note_baseline

ROOT = Path(__file__).resolve().parents[1]
QUALITY = ROOT / "benchmarks" / "results" / "quality.json"
INTERP_BENCH = ROOT / "benchmarks" / "results" / "interpolation.json"
TP_BENCH = ROOT / "benchmarks" / "results" / "through_plane.json"

ROLE = {
    "default": "the default model: `medsr upscale` uses it when --model is omitted",
    "fast": "the efficient model, distilled from the default of the same scale (half width, half depth)",
}
#: the role of a model retrained with the faithful recipe (its card records ``low_band``)
ROLE_FAITHFUL = {
    "fast": "the efficient model (half the default's width and depth): distilled from the previous "
    "default, then retrained with the default's faithful recipe (scanner noise in HR and LR, low-band guard)",
}
LIMITATIONS = [
    "Trained on 12 development-corpus images only (shared/data/CORPUS.md), on 2 CPU cores (no GPU); "
    "validated on 4 images (CT, 2 MR, US): expect smaller gains on other scanners, anatomy and noise levels.",
    "One grayscale model for CT, MR, CR/DX, US and NM; colour inputs are processed per channel.",
    "CR and NM have a single image each in the corpus: their numbers come from images seen in training.",
    "A blind model: it assumes plain bicubic or the modality's typical physics; other degradations "
    "(motion, heavy noise, sparse-view streaks) are out of distribution.",
    TEXTURE_NOTE,
]

#: the role, training text and limitations of a default trained for one physics
#: (``default-x{s}-kspace``: its card's ``low_band.base`` is ``kspace``)
ROLE_KSPACE = (
    "the default for MR k-space data: with no --model, `medsr upscale --degradation kspace` (or `auto` on an MR "
    "DICOM header) runs it in place of default-x{s}; fine-tuned from default-x{s} on MR only, every patch "
    "k-space truncated as --degradation kspace states it"
)
#: ... and of the fast model trained for it (``fast-x{s}-kspace``)
ROLE_KSPACE_FAST = (
    "the fast model for MR k-space data (fast-x{s}'s network, about a quarter of default-x{s}-kspace's work): "
    "name it with --degradation kspace (a named model is never switched); fine-tuned from fast-x{s} on MR only, "
    "every patch k-space truncated as --degradation kspace states it"
)
#: a last stage a model's role names too
ROLE_LAST_STAGE = {
    "fast-x2-kspace": "; then distilled from default-x2-kspace's self-ensemble (the mean of its 8 flipped and "
    "rotated passes; L1 to it plus half the L1 to the target)",
}
DEGRADATION_KSPACE = (
    "every patch plain k-space truncation (the central 1/{s} of k-space per axis, no window, cell-centred grid, "
    "magnitude), degraded with 16 px of context (no wrap-around at the patch's edges); Rician scanner noise in "
    "HR and LR alike on 30 % of the patches; trained behind the low-band guard with zero-filled k-space as the "
    "base (the output's low band is zero-filled k-space's)"
)
LIMITATIONS_KSPACE = [
    "MR only: trained on the development corpus's MR (shared/data/CORPUS.md: T1 brains, noisy diffusion, FLAIR, "
    "cardiac, abdomen), validated on the six MR of the leave-one-source-out split (noisy PD brain slices, MR_small, "
    "aniso_vox; benchmarks/faithful.py's k-space set). Expect other gains on other scanners and sequences.",
    "It assumes the input is a truncated k-space measurement with no apodisation window; run it with "
    "--degradation kspace (the consistency projection then keeps what the scanner measured). On CT, radiographs, "
    "ultrasound, or MR without the stated physics, use the default.",
    "Learned models can change fine texture; check the consistency and uncertainty maps (--maps).",
]

LIMITATIONS_FAITHFUL = [
    "Trained on the development corpus and its added sources (shared/data/CORPUS.md; about 20 images and "
    "volumes; training.hardware says where); validated leave-one-source-out on 10 images of other packages/patients "
    "(benchmarks/faithful.py): expect other gains on other scanners, anatomy and noise levels.",
    *LIMITATIONS[1:],
]

#: what the benchmarks showed for one model (benchmarks/quality.py, seen images)
KNOWN_ISSUES = {
    "default-x2": [
        "On a smooth thin-slice head CT (pydicom J2K_pixelrep_mismatch.dcm, 0.43 mm, never trained on) the "
        "network alone adds ripples near the input's Nyquist frequency and rings at the bone and padding edges "
        "(14 dB below lanczos inside the reconstruction circle). medsr's padding mask and detail checks catch it: "
        "the output is lanczos plus the detail that holds up over it (+2.3 dB over lanczos); benchmarks/faithful.py.",
        "Named on k-space-truncated MR with --degradation kspace it gains only +0.36 dB over zero-filled k-space "
        "on average, and is 0.47 dB below it on one noisy brain slice: with no --model, that physics runs "
        "default-x2-kspace.",
    ],
    "fast-x2": [
        "On the smooth thin-slice head CT (never trained on) the detail self-check falls back to lanczos plus "
        "the detail that holds up over it; the default is still better there.",
        "Ultrasound gains less than with the default (benchmarks/faithful.py: about 1.6 dB less).",
    ],
    "fast-x4": [
        "On the chest CT scout (a projection radiograph, never trained on) it is 0.3 dB below lanczos without "
        "the stated physics (its detail passes the self-check), above it with --degradation bicubic.",
    ],
    "fast-x2-kspace": [
        "With --degradation kspace it gains +0.59 dB over zero-filled k-space on average and is 0.02 dB below "
        "it on one noisy PD brain slice (benchmarks/faithful.py; before its distillation, session 19: +0.45 "
        "and 0.32 below), 0.21 dB below default-x2-kspace on average.",
        "On native MR with --degradation kspace its detail fails the self-check one scale down on 1 of the "
        "corpus's 8 native MR (the noisy PD brain slice 16, alpha 0.40; before its distillation on 4): the "
        "output there is zero-filled k-space plus part of the detail (benchmarks/faithful.py --decisions).",
    ],
    "default-x4": [
        "On the NM bone scan (seen in training) it is 0.1 dB below bicubic over the whole image "
        "(benchmarks/quality.py; the weights before the kernel stages were 2.3 dB below).",
        "Trained without the CT detector-blur physics (CT and radiographs plain bicubic, with a range of "
        "reconstruction kernels in the target and the input alike): on CT degraded with an extra detector blur "
        "that the truth lacks it gains less than before (validation CT +2.39 against +2.82 dB, "
        "benchmarks/quality.py 'auto'); it no longer sharpens a soft-kernel CT to a bone kernel's edges.",
        "On k-space-truncated MR without the stated physics it is 0.2 dB below zero-filled k-space on the "
        "64x64 MR_small (16x16 input); with --degradation kspace it is above it on every validation image.",
    ],
}


def fixed_attention_note(reach: int) -> str:
    """The limitation every model with the size-independent attention shares (its card's kwargs say
    ``esa_spread: fixed``); ``reach``: the network's receptive radius in input pixels."""
    return (
        "Its attention spreads its coarse map by a fixed factor (esa_spread: fixed), so tiles reproduce a "
        f"whole-image pass; tiling therefore needs a wider overlap ({reach} input px each side), which costs "
        "more network time on planes larger than one tile (medsr.inference.tiling.tile_size_for; benchmarks/speed.py)."
    )


BASELINE_NOTE = (
    "A seed baseline with a 7-15 minute CPU budget, far less than the default's: it is below bicubic "
    "on the validation images. Use it for comparison, not for images."
)


#: where a model's last stage ran, when not on --hardware (the earlier stages did)
LAST_STAGE_HARDWARE = {
    "fast-x2-kspace": "the last stage (distillation from default-x2-kspace's self-ensemble): an Intel Xeon with "
    "AMX, one CPU thread, 30 epochs in 55 min; the earlier stages: AMD EPYC, 2 CPU cores, one thread each",
    "default-x2": "the fixed-attention fine-tune: one NVIDIA H200, torch 2.11, fp32, 64 patches a batch; every "
    "other stage, the last (self-ensemble distillation) included: AMD EPYC, 2 CPU cores, one thread",
    "default-x4": "the fixed-attention fine-tune: one NVIDIA H200, torch 2.11, fp32, 64 patches a batch; every "
    "other stage, the last two (reconstruction kernels) included: 2 CPU cores (AMD EPYC for the earlier stages, "
    "an Intel Xeon with AMX for the kernel stages; one thread, then two)",
}

#: the recipes each shipped model comes from, in training order (scripts/train_defaults.sh)
RECIPES = {
    "default-x2": [
        "configs/default-x2.yaml",
        "configs/default-x2-stage2.yaml",
        "configs/default-x2-stage3.yaml",
        "configs/default-x2-faithful.yaml",
        "configs/default-x2-fixed-esa-gpu.yaml",
        "configs/default-x2-selfens.yaml",
    ],
    "default-x4": [
        "configs/default-x4.yaml",
        "configs/default-x4-stage2.yaml",
        "configs/default-x4-faithful.yaml",
        "configs/default-x4-fixed-esa-gpu.yaml",
        "configs/default-x4-kernels.yaml",
        "configs/default-x4-kernels-2.yaml",
    ],
    "fast-x2": [
        "configs/fast-x2.yaml",
        "configs/fast-x2-faithful.yaml",
        "configs/fast-x2-fixed-esa.yaml",
    ],
    "fast-x4": [
        "configs/fast-x4.yaml",
        "configs/fast-x4-faithful.yaml",
        "configs/fast-x4-fixed-esa.yaml",
    ],
    "default-x2-kspace": ["(default-x2's recipes)", "configs/mr-kspace-x2.yaml"],
    "default-x4-kspace": ["(default-x4's recipes)", "configs/mr-kspace-x4.yaml"],
    "fast-x2-kspace": [
        "(fast-x2's recipes)",
        "configs/mr-kspace-fast-x2.yaml",
        "configs/mr-kspace-fast-x2-distill.yaml",
    ],
    "fast-x4-kspace": ["(fast-x4's recipes)", "configs/mr-kspace-fast-x4.yaml"],
    "srcnn-x2": ["configs/baseline-srcnn-x2.yaml"],
    "residual5-x2": ["configs/baseline-residual5-x2.yaml"],
    "vdsr-x2": ["configs/baseline-vdsr-x2.yaml"],
    "srresnet-x2": ["configs/baseline-srresnet-x2.yaml"],
}


def evaluation(name: str, scale: int) -> dict:
    if not QUALITY.is_file():
        return {}
    q = json.loads(QUALITY.read_text())
    out = {"machine": q.get("machine"), "source": "benchmarks/quality.py"}
    for key, res in q["results"].items():
        if res["scale"] != scale or name not in res["models"]:
            continue
        e = res["models"][name]
        g = e["gain_psnr_vs_bicubic"]
        out[key] = {
            "images": res["files"],
            "psnr_db": round(e["psnr"], 3),
            "ssim": round(e["ssim"], 4),
            "gain_psnr_vs_bicubic_db": round(g["mean"], 3),
            "gain_psnr_ci95": [round(v, 3) for v in g["ci95"]],
            "gain_ssim_vs_bicubic": round(e["gain_ssim_vs_bicubic"], 4),
            "gain_psnr_per_modality_db": {
                k: round(v, 3) for k, v in e["gain_psnr_per_modality"].items()
            },
        }
    return out


# --------------------------------------------------------------------------- slice interpolator
#: how the shipped interp-cnn was trained (its first card, written by the plain-PyTorch loop of
#: benchmarks/interpolation.py --steps 1200 --ship before slice interpolation moved to Lightning)
INTERP_CNN_RUN = {
    "volumes": [
        "S0_10slices.nii.gz[0]",
        "anatomical.nii",
        "example4d.nii.gz[0]",
        "example4d.nii.gz[1]",
    ],
    "axes": ["z", "y", "x"],
    "steps": 1200,
    "patch": 32,
    "batch_size": 8,
    "lr": 2e-4,
    "seed": 0,
    "final_loss": 0.026467597857117654,
    "seconds": 89.32,
}
INTERP_TRAIN_FILES = ["S0_10slices.nii.gz", "anatomical.nii", "example4d.nii.gz"]
INTERP_VAL_FILES = ["aniso_vox.nii.gz", "emri_small.dcm"]
INTERP_LIMITATIONS = [
    "Trained 1200 steps on 3 small development-corpus MR volumes (shared/data/CORPUS.md) on a shared "
    "CPU: a pipeline check more than a trained prior; evaluated on 2 held-out volumes only.",
    "Trained on point-sampled triplets (the middle of three thin slices): it assumes slices much "
    "thinner than their spacing (gapped acquisitions). On thick contiguous slabs (the thick-slice "
    "protocol of medsr evaluate --interpolation) it is below linear and cubic interpolation along z; "
    "use medsr upscale --through-plane or cubic there.",
    "Output grid (medsr.slice_grid): cell-centred, f x N slices, same field of view; for even factors "
    "no output slice is a measured slice, and the f/2 slices beyond each end repeat the end slices.",
    "MR only (no CT in training); intensities normalised per volume (0.5-99.5 percentiles).",
    "x4 applies the x2 network three times (nested midpoints); errors compound.",
]


def interp_evaluation() -> dict:
    """The benchmark of record and a fresh held-out evaluation of the shipped interp-cnn."""
    import tempfile

    from medsr.reports.interpolation import evaluate_interpolation
    from medsr.training.data import resolve_corpus

    out: dict = {}
    if INTERP_BENCH.is_file():
        b = json.loads(INTERP_BENCH.read_text())
        rows = {
            k: v for k, v in b["metrics"].items() if k in ("CNN (interp-cnn)", "linear", "cubic")
        }
        out["insert_between_x2"] = {
            "source": "benchmarks/interpolation.py (benchmarks/results/interpolation.json)",
            "protocol": "every other slice along z of the held-out volumes dropped and re-inserted between "
            "the kept ones (the grid rule before issue 19); metrics on the re-inserted slices only, volume units",
            "images": [t.removeprefix("corpus:") for t in b["test_volumes"]],
            "models": {
                k: {
                    "psnr_db": round(v["psnr"], 3),
                    "ssim": round(v["ssim"], 4),
                    "mae": round(v["mae"], 3),
                }
                for k, v in rows.items()
            },
        }
    files = [resolve_corpus(n) for n in INTERP_VAL_FILES]
    with tempfile.TemporaryDirectory() as tmp:
        s = evaluate_interpolation(files, ["interp-cnn", "cubic"], 2, tmp, figures=False)
    out["thick_slice_x2"] = {
        "source": "medsr evaluate --interpolation --scale 2 (medsr.reports.interpolation)",
        "protocol": "held-out volumes made thick-slice x2 along z (Gaussian profile, FWHM 2 thin slices), "
        "reconstructed on their own grid (cell-centred); 2 end slices and a 2-pixel border excluded",
        "images": INTERP_VAL_FILES,
        "models": {
            k: {
                "psnr_db": round(v["psnr"]["mean"], 3),
                "ssim": round(v["ssim"]["mean"], 4),
                "psnr_3d_db": round(v["psnr_3d"]["mean"], 3),
                "gain_psnr_vs_linear_db": round(v["gain_psnr_vs_linear"]["mean"], 3),
            }
            for k, v in s["models"].items()
        },
    }
    return out


def interp_card(card: dict, hardware: str) -> dict:
    """The complete card of the shipped slice interpolator ``interp-cnn`` (same keys as the
    in-plane models' cards; idempotent: built from constants, not from the previous card)."""
    kw = card["kwargs"]
    out = {
        "name": "interp-cnn",
        "kind": "slice-interpolator",
        "task": "slice-interpolation",
        "architecture": card["architecture"],
        "kwargs": kw,
        "in_channels": 2,
        "scale": 2,
        "normalization": card["normalization"],
        "degradation": {
            "kind": "slice-removal",
            "description": "the middle slice of three consecutive slices is removed; the network "
            "predicts it from its two neighbours (point sampling along the slice axis)",
            "axes": list(INTERP_CNN_RUN["axes"]),
        },
        "training_data": {
            "train_files": INTERP_TRAIN_FILES,
            "val_files": INTERP_VAL_FILES,
            "modalities": ["MR"],
            "patch_size": INTERP_CNN_RUN["patch"],
            "volumes": INTERP_CNN_RUN["volumes"],
        },
        "summary": f"Residual slice-interpolation CNN ({kw.get('num_features')} features, "
        f"{kw.get('num_blocks')} EDSR residual blocks, global residual over the neighbours' mean; "
        "Peng et al. SAINT-style supervised slice synthesis): predicts the slice between two, x2 per "
        "pass along the slice axis; the default model of `medsr interpolate`.",
        "training": {
            **INTERP_CNN_RUN,
            "recipe": "configs/interp-cnn.yaml with model.kwargs.num_features 32, data.patch_size 32, "
            "data.batch_size 8, trainer.max_steps 1200 (task: slice-interpolation reproduces the loop: "
            "L1, Adam betas (0.9, 0.99), lr 2e-4, triplets along z, y and x, flips and slice-order reversal)",
            "how": "benchmarks/interpolation.py --steps 1200 --ship (plain-PyTorch loop, before the Lightning task)",
            "hardware": hardware,
            "data": "development corpus only (shared/data/CORPUS.md); validation volumes never trained on",
        },
        "evaluation": interp_evaluation(),
        "limitations": INTERP_LIMITATIONS,
        "version": card.get("version"),
        "steps": INTERP_CNN_RUN["steps"],
    }
    return out


TP_LIMITATIONS = [
    "Trained on about a dozen development-corpus images and volumes (CT neck, pancreas and head slices; "
    "a T1 head average, diffusion, FLAIR, cardiac and abdominal MR) on 2 CPU cores: a small prior. "
    "Validated on three volumes it never saw (Colin27 T1 at 1 mm and 0.5 mm, one head CT): "
    "expect other numbers on other anatomy, scanners and slice profiles.",
    "The network restores one axis of 2-D reformats (sagittal and coronal, averaged); it does not "
    "model motion between slices, slice gaps wider than the profile, or 3-D context.",
    "When the slice profile is not in the header it is estimated from the volume's spectra "
    "(about +-0.3 of the slice spacing; the shape, Gaussian or box, follows the modality).",
    "--adapt fine-tunes the prior on the volume's own in-plane data for a fixed number of seeded "
    "steps: reproducible on one machine and thread count, and it assumes in-plane and through-plane "
    "anatomy look alike (SMORE's assumption).",
]


def tp_evaluation(scale: int) -> dict:
    """The through-plane benchmark rows of this factor (benchmarks/results/through_plane.json)."""
    if not TP_BENCH.is_file():
        return {}
    bench = json.loads(TP_BENCH.read_text())
    rows = [r for r in bench.get("rows", []) if int(r["scale"]) == scale]
    return {
        "through_plane": {
            "source": "benchmarks/through_plane.py (benchmarks/results/through_plane.json)",
            "machine": bench.get("machine"),
            "adapt_steps": bench.get("adapt_steps"),
            "protocol": "volumes never trained on, degraded along z (thick-slice), reconstructed on the "
            "reference grid; 3-D PSNR in each volume's own units, f slices at each end and an f-pixel "
            "border excluded",
            "volumes": {
                f"{r['volume']} / {r['protocol']}": {
                    m: round(v["psnr_3d"], 3) for m, v in r["metrics"].items() if "psnr_3d" in v
                }
                for r in rows
            },
        }
    }


def tp_card(name: str, card: dict, hardware: str) -> dict:
    """The complete card of a shipped through-plane prior (``tp-x2``/``tp-x4``)."""
    scale = int(card["scale"])
    kw = card["kwargs"]
    out = dict(card)
    out.update(
        {
            "name": name,
            "kind": "through-plane",
            "summary": f"One-axis EDSR (edsr-1d: {kw.get('num_features')} features, {kw.get('num_blocks')} "
            f"residual blocks at the input resolution, sub-pixel step along z, global residual over cubic "
            f"interpolation), x{scale} along z: the through-plane prior of `medsr upscale --through-plane` "
            "(run on sagittal and coronal reformats, averaged; `--adapt STEPS` adapts it to the volume).",
            "training": {
                "recipe": [f"configs/{name}.yaml", f"configs/{name}-stage2.yaml"],
                "how": f"medsr train configs/{name}.yaml (stopped early for time), then configs/{name}-stage2.yaml "
                "warm-started from it (a fresh cosine schedule); medsr export of the stage-2 best checkpoint (EMA)",
                "steps": card.get("steps"),
                "warm_start": card.get("init"),
                "hardware": hardware,
                "data": "development corpus and its added sources (shared/data/CORPUS.md); the validation "
                "volumes of benchmarks/through_plane.py (Colin27 ch2/ch2better, InVesalius Cranium) are neither "
                "trained on nor used to choose the checkpoint",
                "degradation": "rows of 2-D planes made thick: Gaussian (MR excitation) or box (CT binning) "
                "slice profile of random width, decimation by the factor; scanner noise in input and target "
                "alike on 20 % of the patches",
            },
            "evaluation": tp_evaluation(scale),
            "limitations": TP_LIMITATIONS,
        }
    )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--hardware",
        default="AMD EPYC, 2 CPU cores (one thread per run, two runs side by side); no GPU",
    )
    ap.add_argument(
        "--only", action="append", help="write only this shipped model's card (repeatable)"
    )
    args = ap.parse_args()
    from medsr.models.resolver import list_pretrained

    kinds = {m.name: m.kind for m in list_pretrained()}
    for name, path in bundled_weights().items():
        if args.only and name not in args.only:
            continue
        card = read_card(path)
        if kinds.get(name) == "through-plane":
            card = tp_card(name, card, args.hardware)
            net, _ = load_model(path)
            save_model(net, path, card)
            (WEIGHTS_DIR / f"{name}.json").write_text(twin(name, path))
            print(f"{name}: card written")
            continue
        if kinds.get(name) == "slice-interpolator":
            if name != "interp-cnn":
                print(f"{name}: no card template for this slice interpolator; skipped")
                continue
            card = interp_card(card, args.hardware)
            net, _ = load_model(path)
            save_model(net, path, card)
            (WEIGHTS_DIR / f"{name}.json").write_text(twin(name, path))
            print(f"{name}: card written ({len(card['evaluation'])} evaluation entries)")
            continue
        net, _ = load_model(path)
        family = name.split("-")[0]
        scale = int(card["scale"])
        kspace = (card.get("low_band") or {}).get("base") == "kspace"
        role = (ROLE_FAITHFUL.get(family) if card.get("low_band") else None) or ROLE.get(
            family,
            "a seed baseline trained with the default's data, degradations, loss and optimiser",
        )
        if kspace:
            role = (ROLE_KSPACE_FAST if family == "fast" else ROLE_KSPACE).format(s=scale)
            role += ROLE_LAST_STAGE.get(name, "")
            # validation measured the gain over zero-filled k-space (cards exported before the
            # export said so themselves)
            card["metrics"] = note_baseline(dict(card.get("metrics") or {}), "kspace")
        card.update(
            {
                "name": name,
                "summary": f"{architecture_summary(card['architecture'], card['kwargs'], scale)}; {role}.",
                "training": {
                    "recipe": RECIPES.get(name, [f"configs/{name}.yaml"]),
                    "how": "scripts/train_defaults.sh (`make train-defaults`)",
                    "warm_start": card.get("init"),
                    "steps": card.get("steps"),
                    "hardware": LAST_STAGE_HARDWARE.get(name, args.hardware),
                    "data": "development corpus only (shared/data/CORPUS.md); validation files never trained on"
                    + (
                        "; the last stage MR only (T1 brains, noisy diffusion, FLAIR, cardiac and abdomen MR), "
                        "validated on the leave-one-source-out split's MR (noisy PD brain slices, MR_small, aniso_vox)"
                        if kspace
                        else ""
                    )
                    + (
                        "; last stage adds the corpus's added sources (make corpus: head CT volume, T1 brains, "
                        "noisy diffusion MR, FLAIR and cardiac MR) and validates leave-one-source-out (noisy PD "
                        "brain MR, CT scout radiograph, head CT, CT_small, MR_small, aniso_vox, US)"
                        if card.get("low_band") and not kspace
                        else ""
                    ),
                    "degradation": DEGRADATION_KSPACE.format(s=scale)
                    if kspace
                    else "half plain antialiased bicubic, half each modality's physics (CT detector blur, "
                    "MR k-space truncation, CR detector + quantum noise, US lateral blur, NM blur + Poisson)"
                    + (
                        "; scanner noise added to the high-resolution target on 30 % of the patches (MR Rician, CT "
                        "FBP-correlated Gaussian, radiograph Poisson), and trained behind the low-band guard "
                        "(the output's low band is bicubic's)"
                        if card.get("low_band")
                        else ""
                    ),
                },
                "evaluation": evaluation(name, scale),
                "limitations": (
                    LIMITATIONS_KSPACE
                    if kspace
                    else LIMITATIONS_FAITHFUL
                    if card.get("low_band")
                    else LIMITATIONS
                )
                + KNOWN_ISSUES.get(name, [])
                + ([fixed_attention_note(int(net.reach))] if getattr(net, "reach", None) else [])
                + ([] if family in ROLE else [BASELINE_NOTE]),
            }
        )
        save_model(net, path, card)
        (WEIGHTS_DIR / f"{name}.json").write_text(twin(name, path))
        print(f"{name}: card written ({len(card['evaluation'])} evaluation entries)")


if __name__ == "__main__":
    main()
