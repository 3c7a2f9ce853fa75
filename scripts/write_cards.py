"""Complete the model cards of the shipped weights (``src/medsr/weights/*.safetensors``).

``medsr export`` writes the machine-made card (architecture, kwargs, scale, normalisation,
degradation, training files, validation metrics, steps). This adds what a reader needs — a
summary, how and on what it was trained, the benchmark numbers of ``benchmarks/quality.py``
(``benchmarks/results/quality.json``) and the limitations — to the card inside the
safetensors file and writes it beside it as ``<name>.json``.

    .venv/bin/python scripts/write_cards.py [--hardware "AMD EPYC, 2 cores, CPU only"]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from medsr.models.pretrained import WEIGHTS_DIR, bundled_weights
from medsr.models.weights import load_model, read_card, save_model

ROOT = Path(__file__).resolve().parents[1]
QUALITY = ROOT / "benchmarks" / "results" / "quality.json"

ARCH = {
    "rlfn": "RLFN (Kong et al., CVPRW 2022: residual local feature blocks + ESA)",
    "srcnn": "SRCNN 9-1-5 (Dong et al., TPAMI 2016) on bicubic-upsampled input",
    "residual5": "light 5-layer residual CNN over bicubic",
    "vdsr": "VDSR (Kim et al., CVPR 2016: 20 conv layers, global residual over bicubic)",
    "srresnet": "SRResNet (Ledig et al., CVPR 2017: the SRGAN generator, 16 residual blocks)",
}
ROLE = {
    "default": "the default model: `medsr upscale` uses it when --model is omitted",
    "fast": "the efficient model, distilled from the default of the same scale (half width, half depth)",
}
LIMITATIONS = [
    "Trained on 12 development-corpus images only (shared/data/CORPUS.md), on 2 CPU cores (no GPU); "
    "validated on 4 images (CT, 2 MR, US): expect smaller gains on other scanners, anatomy and noise levels.",
    "One grayscale model for CT, MR, CR/DX, US and NM; colour inputs are processed per channel.",
    "CR and NM have a single image each in the corpus: their numbers come from images seen in training.",
    "A blind model: it assumes plain bicubic or the modality's typical physics; other degradations "
    "(motion, heavy noise, sparse-view streaks) are out of distribution.",
    "Learned models can change fine texture; check the consistency and uncertainty maps (--maps) and "
    "use --consistency on when the degradation is known.",
]

#: what the benchmarks showed for one model (benchmarks/quality.py, seen images)
KNOWN_ISSUES = {
    "default-x2": [
        "On an image that is already smooth (the corpus CT bad_sequence.dcm, itself interpolated) it "
        "sharpens bone edges beyond the truth: -3.6 dB against bicubic, max error 117 HU (bicubic 34 HU), "
        "although its mean absolute error is lower (1.30 vs 1.67 HU).",
    ],
    "default-x4": [
        "Overshoots the hottest uptake of the NM bone scan (-5.75 dB, max error 21 counts vs bicubic's 7): "
        "do not use the x4 model on NM.",
    ],
}
BASELINE_NOTE = (
    "A seed baseline with a 7-15 minute CPU budget, far less than the default's: it is below bicubic "
    "on the validation images. Use it for comparison, not for images."
)


#: the recipes each shipped model comes from, in training order (scripts/train_defaults.sh)
RECIPES = {
    "default-x2": ["configs/default-x2.yaml", "configs/default-x2-stage2.yaml", "configs/default-x2-stage3.yaml"],
    "default-x4": ["configs/default-x4.yaml", "configs/default-x4-stage2.yaml"],
    "fast-x2": ["configs/fast-x2.yaml"],
    "fast-x4": ["configs/fast-x4.yaml"],
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
            "gain_psnr_per_modality_db": {k: round(v, 3) for k, v in e["gain_psnr_per_modality"].items()},
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hardware", default="AMD EPYC, 2 CPU cores (one thread per run, two runs side by side); no GPU")
    args = ap.parse_args()
    for name, path in bundled_weights().items():
        card = read_card(path)
        family = name.split("-")[0]
        scale = int(card["scale"])
        arch = card["architecture"]
        kw = card["kwargs"]
        size = ", ".join(f"{k} {v}" for k, v in kw.items() if k in ("num_features", "num_blocks", "global_residual"))
        role = ROLE.get(family, "a seed baseline trained with the default's data, degradations, loss and optimiser")
        card.update(
            {
                "name": name,
                "summary": f"{ARCH.get(arch, arch)}{' (' + size + ')' if size else ''}, x{scale}; {role}.",
                "training": {
                    "recipe": RECIPES.get(name, [f"configs/{name}.yaml"]),
                    "how": "scripts/train_defaults.sh (`make train-defaults`)",
                    "warm_start": card.get("init"),
                    "steps": card.get("steps"),
                    "hardware": args.hardware,
                    "data": "development corpus only (shared/data/CORPUS.md); validation files never trained on",
                    "degradation": "half plain antialiased bicubic, half each modality's physics (CT detector blur, "
                    "MR k-space truncation, CR detector + quantum noise, US lateral blur, NM blur + Poisson)",
                },
                "evaluation": evaluation(name, scale),
                "limitations": LIMITATIONS
                + KNOWN_ISSUES.get(name, [])
                + ([] if family in ROLE else [BASELINE_NOTE]),
            }
        )
        net, _ = load_model(path)
        save_model(net, path, card)
        (WEIGHTS_DIR / f"{name}.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
        print(f"{name}: card written ({len(card['evaluation'])} evaluation entries)")


if __name__ == "__main__":
    main()
