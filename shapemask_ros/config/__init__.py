"""Typed configuration of the runtime, one concept a module; each dataclass is the one source of its defaults:

- `model_config`: the model (BackboneConfig, AnchorConfig, DetectorConfig, PostprocessConfig, MaskConfig,
  ModelConfig);
- `node_config`: the node's and bag-eval's parameters (NodeConfig, GeometryConfig), their metadata and
  validation;
- `loading`: YAML values onto them (`merge`, `to_dict`, `load_model_config`).

The training package's configs (data, training, whole experiments) are `shapemask_training.config`.
"""
