"""Evaluation shared by training and the runtime (COCO metrics with pycocotools)."""
