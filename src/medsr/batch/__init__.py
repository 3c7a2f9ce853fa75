"""Batch processing of whole archives: discover, plan, resume, read ‖ model ‖ write, report.

``run_batch(IN_DIR_or_MANIFEST, OUT_DIR, model=..., scale=2, workers=2)`` upscales every DICOM
series, NIfTI and image found, mirrors the folder structure, writes ``batch_report.csv`` and a
resume journal, and skips up-to-date items on a rerun. ``engine="ray"`` runs the same per-item
function on Ray Data (optional extra ``medsr[batch]``). See the README's *Batch processing* section.
"""

from medsr.batch.discover import BatchItem, discover, read_manifest
from medsr.batch.runner import BatchSummary, plan_batch, run_batch
from medsr.batch.state import ItemResult, read_report

__all__ = [
    "BatchItem",
    "BatchSummary",
    "ItemResult",
    "discover",
    "plan_batch",
    "read_manifest",
    "read_report",
    "run_batch",
]
