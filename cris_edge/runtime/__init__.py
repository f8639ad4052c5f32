"""Deployment-side runtime: pre/post-processing (numpy + OpenCV). Never imports torch."""
