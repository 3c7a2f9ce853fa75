"""Evaluation reports and image rendering (figures, previews)."""
