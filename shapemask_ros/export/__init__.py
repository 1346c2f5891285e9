"""Export: model bundle (SavedModel + ONNX + priors + model.json), ONNX checks, TensorRT engine builds."""
