"""Fixtures: tiny fake datasets in the published AdaShare/AutoMTL on-disk layouts (nothing downloaded)."""

import json

import numpy as np
import pytest

from tests.data.fake_layouts import write_npy, write_png, sample_arrays, taskonomy_arrays


@pytest.fixture
def nyu_root(tmp_path):
    root = tmp_path / "nyu"
    info = {"train": [], "test": []}
    for i in range(7):
        name = f"{i:04d}"
        rgb, seg, normal, depth = sample_arrays(i)
        write_png(root / "img" / f"{name}.png", rgb)
        write_png(root / "seg" / f"{name}.png", seg)
        write_png(root / "normal_mask" / f"{name}.png", normal)
        write_npy(root / "depth" / f"{name}.npy", depth)
        split = "train" if i < 5 else "test"
        info[split].append([f"img/{name}.png", f"seg/{name}.png", f"normal_mask/{name}.png", f"depth/{name}.npy"])
    (root / "nyu_v2_3task.json").write_text(json.dumps(info))
    return root


@pytest.fixture
def cityscapes_root(tmp_path):
    root = tmp_path / "cityscapes"
    info = {"train": [], "test": []}
    for i in range(6):
        split = "train" if i < 4 else "test"
        rgb, seg, _, depth = sample_arrays(i)
        files = {
            "image": (rgb / 255.0).astype(np.float32),
            "depth": depth[..., None],
            "label_2": (seg.astype(np.int64) % 2),
            "label_7": (seg.astype(np.int64) % 7),
            "label_19": seg.astype(np.int64),
        }
        files["label_19"][0, 0] = -1
        files["label_7"][0, 0] = -1
        row = []
        for kind, array in files.items():
            rel = f"{split}/{kind}/{i}.npy"
            write_npy(root / rel, array)
            row.append(rel)
        info[split].append(row)
    (root / "cityscape.json").write_text(json.dumps(info))
    return root


@pytest.fixture
def taskonomy_root(tmp_path):
    root = tmp_path / "taskonomy"
    info = {"train": [], "test": []}
    folders = ("rgb", "segment_semantic", "normal", "depth_zbuffer", "keypoints2d", "edge_texture")
    for i in range(5):
        building = "allensville" if i < 3 else "collierville"
        split = "train" if i < 3 else "test"
        row = []
        for folder, array in zip(folders, taskonomy_arrays(i)):
            rel = f"{building}/{folder}/point_{i}_view_0_domain_{folder}.png"
            write_png(root / rel, array)
            row.append(rel)
        info[split].append(row)
    (root / "taskonomy.json").write_text(json.dumps(info))
    np.save(root / "semseg_prior_factor.npy", np.linspace(0.5, 2.0, 17))
    return root
