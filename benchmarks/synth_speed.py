"""Speed of `add3d synth` on one core: frames/s end to end (files written) and per stage.

Goal (issue 4): >= 20 frames/s at --scale 0.25 with one worker, so tests can make data on the fly.
Prints one JSON object, with wall-clock and CPU-time rates (on a shared machine the wall clock
also measures the other users; CPU time is what one free core would give). Usage: python benchmarks/synth_speed.py [--frames 100] [--scale 0.25]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--scale", type=float, action="append", default=None,
                        help="image scale(s) to time (default 0.25 and 1.0)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import cv2

    cv2.setNumThreads(1)
    from add3d.data.synthetic.camera import build_rig, sample_rig_parameters
    from add3d.data.synthetic.generate import (
        TAN_HALF_FOV, SyntheticFrame, frame_rngs, generate_dataset, image_size, write_frame,
    )
    from add3d.data.synthetic.labels import make_labels
    from add3d.data.synthetic.lidar import scan
    from add3d.data.synthetic.render import render
    from add3d.data.synthetic.scene import sample_scene

    results = {"cpu_count": os.cpu_count(), "load_average_1min": os.getloadavg()[0], "frames": args.frames,
               "goal_frames_per_s_at_scale_0.25": 20.0, "scales": {}}
    for scale in args.scale or [0.25, 1.0]:
        width, height = image_size(scale=scale)
        stages = {"scene": 0.0, "render": 0.0, "labels": 0.0, "lidar": 0.0, "write": 0.0}
        points = []
        with tempfile.TemporaryDirectory() as tmp:
            for index in range(args.frames):
                clock = time.perf_counter()
                scene_rng, render_rng, lidar_rng = frame_rngs(args.seed, index)
                rig = build_rig(sample_rig_parameters(scene_rng), width, height)
                scene = sample_scene(scene_rng, rig.ground, TAN_HALF_FOV)
                t1 = time.perf_counter()
                rendered = render(scene, rig, render_rng)
                t2 = time.perf_counter()
                labels, facts = make_labels(scene, rig, rendered)
                t3 = time.perf_counter()
                lidar = scan(scene, rig, lidar_rng)
                t4 = time.perf_counter()
                write_frame(Path(tmp), f"{index:06d}",
                            SyntheticFrame(rig, scene, rendered, lidar, labels, facts))
                t5 = time.perf_counter()
                for name, start, end in (("scene", clock, t1), ("render", t1, t2), ("labels", t2, t3),
                                         ("lidar", t3, t4), ("write", t4, t5)):
                    stages[name] += end - start
                points.append(len(lidar))
            start, cpu_start = time.perf_counter(), time.process_time()
            generate_dataset(os.path.join(tmp, "root"), frames=args.frames, scale=scale, seed=args.seed,
                             workers=1, progress=False)
            end_to_end = time.perf_counter() - start
            cpu = time.process_time() - cpu_start
        results["scales"][str(scale)] = {
            "image_size": [width, height],
            "frames_per_s_end_to_end": round(args.frames / end_to_end, 2),
            # CPU seconds of this process: what one free core would give when the machine is shared.
            "frames_per_cpu_s_end_to_end": round(args.frames / cpu, 2),
            "ms_per_frame_by_stage": {name: round(1000 * total / args.frames, 2) for name, total in stages.items()},
            "lidar_points_per_frame": int(np.mean(points)),
        }
    quarter = results["scales"].get("0.25", {})
    results["meets_goal_wall_clock"] = quarter.get("frames_per_s_end_to_end", 0) >= 20.0
    results["meets_goal_cpu_time"] = quarter.get("frames_per_cpu_s_end_to_end", 0) >= 20.0
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
