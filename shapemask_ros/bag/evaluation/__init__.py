"""`shapemask bag-eval`: the node's frame processor over a recorded bag (`bag_eval`, command line `eval_cli`):
pairing images with their detections and depth (`pairing`), model timing (`timing`), accuracy against ground
truth and the report (`report`, `eval_report`; AP pooled over bags: `pooled_ap`)."""
