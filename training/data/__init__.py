"""Data: COCO loading, TFRecords, tf.data parser + targets, synthetic dataset."""
