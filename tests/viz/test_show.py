"""`automtl show`: the files it writes are valid PNG / SVG / HTML, the page is self-contained
and renders in headless Chromium with no console errors, and bad run directories are
refused with a clear message.

The browser tests skip where there is no ``chromium`` (with the reason); CI (.ci/run) installs it
and sets AUTOMTL_REQUIRE_BROWSER=1, which turns that skip into a failure (the
``chromium_binary`` fixture, tests/conftest.py)."""

import base64
import json
import os
import re
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from matplotlib.image import imread
from PIL import Image

from automtl.cli import main
from automtl.errors import CheckpointError
from automtl.policy import Policy
from automtl.search.run import RunDir
from automtl.viz import read_run, show
from automtl.viz.heatmap import CHOSEN_COLOUR, PolicyDistribution
from automtl.viz.show import learned_distribution
from viz_runs import chromium, console_messages, parse_page, png_size

EXPECTED = ["plots/policy_heatmap.png", "plots/policy_heatmap.svg", "plots/sharing_diagram.png", "plots/sharing_diagram.svg",
            "plots/curves_pretrain.png", "plots/curves_policy_train.png", "plots/curves_post_train.png", "report.html"]


@pytest.mark.slow  # draws the figures of the shared `shown` fixture
def test_show_writes_valid_figures(shown, toy_run):
    out, _ = toy_run
    assert [os.path.relpath(p, out) for p in shown.paths()] == EXPECTED
    assert shown.notes == []
    for path in shown.paths():
        if path.endswith(".png"):
            width, height = png_size(path)
            assert width >= 300 and height >= 200
            with Image.open(path) as image:
                image.verify()
            pixels = imread(path)
            assert pixels.shape[:2] == (height, width) and pixels.std() > 0.01  # not a blank canvas
        elif path.endswith(".svg"):
            root = ET.parse(path).getroot()
            assert root.tag == "{http://www.w3.org/2000/svg}svg"
            assert len(list(root.iter())) > 50


def test_report_is_self_contained(shown, toy_run):
    out, _ = toy_run
    page = parse_page(shown.report)
    tags = [t for t, _ in page.tags]
    assert tags[:2] == ["html", "head"] and "body" in tags
    assert not {"script", "link", "iframe", "object", "embed"} & set(tags)
    images = [attrs for tag, attrs in page.tags if tag == "img"]
    # heat map, diagram, three stages of curves, each the very bytes of its PNG file
    assert len(images) == 5
    files = [p for p in shown.paths() if p.endswith(".png")]
    for attrs, path in zip(images, files):
        prefix = "data:image/png;base64,"
        assert attrs["src"].startswith(prefix) and attrs["alt"]
        with open(path, "rb") as f:
            assert base64.b64decode(attrs["src"][len(prefix):]) == f.read()
    for _, attrs in page.tags:
        for name, value in attrs.items():
            if name in ("href", "src"):
                assert value.startswith(("#", "data:")), f"{name}={value[:60]!r} leaves the page"
    with open(shown.report, encoding="utf-8") as f:
        raw = f.read()
    assert not re.search(r"https?:|//[a-z]|url\(", re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", raw))
    text = " ".join(page.text)
    results = json.loads(open(os.path.join(out, "results.json")).read())
    assert f"{results['parameters']:,}" in text
    assert "AutoMTL" in text and "acc ↑" in text  # the results table of this run
    with open(os.path.join(out, "config.yaml")) as f:
        assert f.read().strip() in text  # the resolved config, verbatim
    assert "policy: 2 searchable operators × 2 tasks" in text


@pytest.mark.slow
def test_report_renders_in_headless_chromium(chromium_binary, shown, tmp_path):
    shot = tmp_path / "shot.png"
    done = chromium(shown.report, f"--screenshot={shot}", "--window-size=1200,2600", "--hide-scrollbars")
    assert done.returncode == 0, done.stderr[-2000:]
    assert console_messages(done.stderr) == []
    pixels = (imread(str(shot))[:, :, :3] * 255).round().astype(int)
    assert pixels.shape[:2] == (2600, 1200)
    # the heat map's outline colour appears only inside the embedded heat map: Chromium decoded it
    target = np.array([int(CHOSEN_COLOUR[i:i + 2], 16) for i in (1, 3, 5)])
    assert (np.abs(pixels - target).sum(axis=2) < 30).sum() > 50


def test_console_check_catches_script_errors(chromium_binary, tmp_path):
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><body><script>console.error("bad"); missing();</script></body></html>')
    done = chromium(str(page), "--dump-dom")
    messages = console_messages(done.stderr)
    assert len(messages) == 2 and '"bad"' in messages[0] and "Uncaught ReferenceError" in messages[1]


@pytest.mark.slow
def test_show_without_the_supermodel(toy_run, tmp_path):
    out, _ = toy_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("plots", "report.html"))
    result = show(copy)
    assert result.notes == [
        "this run searched a SuperModel built in Python, so the run directory cannot rebuild it: the diagram shows the "
        "choices but not which shared calls are computed once (automtl.viz.show(run_dir, supermodel=sm) draws them)"
    ]
    assert result.figures.layout.calls is None and result.figures.model is None
    assert len(result.figures.heatmap) == 2  # the distribution comes from policy.json
    text = " ".join(parse_page(result.report).text)
    assert "cannot rebuild it" in text


def test_distribution_from_the_checkpoint_when_the_policy_has_none(toy_run, tmp_path):
    out, sm = toy_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("plots", "report.html"))
    saved = Policy.load(sm, copy / "policy.json")
    assert saved.probs is not None
    Policy(saved.tasks, saved.nodes, saved.as_table()).save(copy / "policy.json")  # as a given policy file has it
    contents = read_run(copy, supermodel=sm)
    assert contents.policy.probs is None
    dist = learned_distribution(contents)
    # the probabilities post-train drew from are those of the policy-train checkpoint
    assert np.allclose(dist.probs, PolicyDistribution.from_policy(saved).probs, atol=1e-6)


def test_not_a_run_directory(tmp_path, capsys):
    with pytest.raises(CheckpointError) as info:
        show(tmp_path)
    assert str(info.value) == (
        f"{tmp_path} is not an automtl run directory (it has no config.yaml and no metrics.jsonl); "
        "give the folder that `automtl search --out DIR` wrote"
    )
    assert main(["show", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err == (
        f"automtl show: error: {tmp_path / 'missing'}: no such directory; give the run directory of `automtl search --out DIR`\n"
    )
    assert not os.path.exists(tmp_path / "report.html")


def test_broken_metrics_file_is_reported(toy_run, tmp_path):
    out, _ = toy_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("plots", "report.html", "checkpoints"))
    with open(copy / "metrics.jsonl", "a") as f:
        f.write("{not json\n")
    with pytest.raises(CheckpointError, match=r"metrics.jsonl holds a line that is not JSON .*; was it edited by hand\?"):
        read_run(copy)
    assert RunDir(copy).exists()
