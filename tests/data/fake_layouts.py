"""The content of the tiny fake datasets (deterministic per sample) and the file writers."""

import os

import numpy as np
from PIL import Image

H, W = 4, 6


def write_png(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


def write_npy(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.save(path, array)


def sample_arrays(i):
    """Deterministic per-sample content: sample i's pixels are offset by i."""
    rgb = ((np.arange(H * W * 3).reshape(H, W, 3) * 3 + i * 7) % 256).astype(np.uint8)
    seg = ((np.arange(H * W).reshape(H, W) + i) % 5).astype(np.uint8)
    seg[0, 0] = 255  # ignore
    normal = np.full((H, W, 3), 128, np.uint8)
    normal[..., 2] = 255 - i  # roughly +z
    normal[1, 1] = (0, 0, 0)  # no normal
    normal[2, 2] = (255, 10, 10)  # AdaShare's ignore value in one channel
    depth = (np.arange(H * W, dtype=np.float32).reshape(H, W) / 10 + i)
    depth[3, 5] = 0.0  # no measurement
    return rgb, seg, normal, depth


def taskonomy_arrays(i):
    rgb, _, normal, _ = sample_arrays(i)
    seg = ((np.arange(H * W).reshape(H, W) + i) % 18).astype(np.uint8)  # 0 = unlabelled, 1..17
    depth = (np.arange(H * W).reshape(H, W) * 1000 + i).astype(np.uint16)
    depth[0, 1] = 65535  # missing
    keypoint = (np.arange(H * W).reshape(H, W) * 20).astype(np.uint16)  # /2^16: up to 0.007 -> clipped at 0.005
    edge = (np.arange(H * W).reshape(H, W) * 200).astype(np.uint16)
    normal = normal.copy()
    return rgb, seg, normal, depth, keypoint, edge
