"""Inference runtime: Predictor + Instances, backends (TensorFlow, ONNX Runtime, TensorRT), engine cache."""
