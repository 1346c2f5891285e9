"""Recordings in and out: rosbag2 bags read (`reader`, split bags `pieces`, damaged ones `recover`) and written
atomically (`writer`); `errors` holds the user-facing `BagError` they all raise."""
