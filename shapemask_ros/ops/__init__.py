"""NumPy ops shared by data, runtime and evaluation (boxes, masks). The model has keras.ops twins."""
