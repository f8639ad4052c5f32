"""Evaluation with the official CRIS protocol: mIoU, overall IoU, Prec@0.5..0.9."""
