"""Camera bags with known ground truth: `demo_bag` (synthetic moving shapes), `tote_bag` (the real ARC 2017
picking tote), and `scene_helpers` (their topics' message builders and the simulated detector)."""
