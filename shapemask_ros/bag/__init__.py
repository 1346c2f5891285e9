"""Offline rosbag2 work without ROS, one subpackage a job (docs/bag_eval.md):

- `recording`: reading recordings (`reader`: sqlite3 / mcap, split into pieces by `pieces`, damaged ones read by
  `recover`) and writing outputs atomically (`writer`); `errors`: the one user-facing `BagError`;
- `evaluation`: `shapemask bag-eval` (`bag_eval`; its command line `eval_cli`), pairing messages into frames
  (`pairing`), model timing (`timing`), accuracy and the report (`report`, `eval_report`, `pooled_ap`);
- `scenes`: the synthetic camera bags with ground truth (`demo_bag`: moving shapes; `tote_bag`: the real ARC
  2017 tote; `scene_helpers`: their message builders and simulated detector);
- `fleet`: many bags evaluated as one run (docs/fleet_eval.md).
"""
