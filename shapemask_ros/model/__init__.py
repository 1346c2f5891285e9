"""ShapeMask model in Keras 3: backbone, FPN, RetinaNet heads, anchors, ROI sampling, mask heads.

Imports nothing from runtime/, ros_bridge/, bag/, node or training/.
"""
