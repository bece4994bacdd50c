"""The demo report: its table holds the evaluator's numbers and its HTML stands alone."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from add3d.data.kitti import Object3D
from add3d.viz.report import plot_pr_curves, plot_side_by_side, results_table, write_report


def test_results_table_lists_every_model_and_value() -> None:
    results = {
        "baseline": {"0.7": {"Car": {"3d": {"R40": [1.0, 2.0, 3.0]}, "bev": {"R40": [4.0, 5.0, 6.0]}}},
                     "0.5": {"Car": {"3d": {"R40": [10.0, 20.0, 30.0]}, "bev": {"R40": [40.0, 50.0, 60.0]}}}},
        "teacher": {"0.7": {"Car": {"3d": {"R40": [7.125, 8.0, 9.0]}}}},
    }
    table = results_table(results, train_seconds={"baseline": 90.0})
    lines = table.splitlines()
    assert len(lines) == 4 and len(re.split(r"(?<!\\)\|", lines[0].strip().strip("|"))) == 6
    assert "| baseline | 1.00 / 2.00 / 3.00 | 4.00 / 5.00 / 6.00 | 10.00 / 20.00 / 30.00 | 40.00 / 50.00 / 60.00 | 1.5 min |" in table
    assert "| teacher | 7.12 / 8.00 / 9.00 | – | – | – | – |" in table


def test_report_html_embeds_pictures(tmp_path: Path) -> None:
    curves = {"baseline": {"Car": {"3d": {"moderate": list(np.linspace(1, 0, 41))}}},
              "ADD": {"Car": {"3d": {"moderate": list(np.linspace(1, 0.2, 41))}}}}
    plot_pr_curves(curves, "Car", tmp_path / "pr.png")
    image = np.zeros((60, 200, 3), np.uint8)
    P2 = np.array([[100.0, 0, 100, 0], [0, 100, 30, 0], [0, 0, 1, 0]])
    car = Object3D("Car", dims=[1.5, 1.6, 3.9], location=[1.0, 1.6, 15.0], rotation_y=0.3)
    det = Object3D("Car", dims=[1.5, 1.6, 3.9], location=[1.2, 1.6, 16.0], rotation_y=0.2, score=0.9)
    plot_side_by_side(image, P2, [car], {"baseline": [det], "ADD": [det]}, tmp_path / "side.png")
    markdown = "# Demo\n\n| model | AP |\n|---|---|\n| ADD | 1 \\| 2 |\n\n![pr](pr.png)\n![side](side.png)\n```\nadd3d train x\n```\n"
    md_path, html_path = write_report(tmp_path, markdown, "demo")
    text = html_path.read_text()
    assert md_path.read_text() == markdown
    assert text.count("data:image/png;base64,") == 2
    assert "<td>1 | 2</td>" in text and "<pre>add3d train x</pre>" in text and "<h1>Demo</h1>" in text
    assert not list(tmp_path.glob(".*tmp*"))
