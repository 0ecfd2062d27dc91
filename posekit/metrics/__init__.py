"""Metrics: PCK/PCKh, COCO OKS AP, MPJPE/P-MPJPE, landmark NME."""
