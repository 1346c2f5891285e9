"""Datasets without a training stack: COCO JSON reading and the synthetic shapes renderer."""
