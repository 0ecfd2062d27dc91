"""Geometric operators shared by codecs, losses and data pipelines (thin-plate-spline warps)."""
