"""``fuzz/run.py``: the seed corpus is a copy (the real files are never touched), the
libFuzzer dictionary is well formed, time is split among the targets, the number of inputs run
is read from libFuzzer's log - and a short real run of the atheris targets finds nothing."""

import hashlib
import json
import os
import stat
import subprocess
import sys

import pytest

from prototxt_corpus import BUNDLED
from run import _runs, copy_seeds, default_seeds, seed_files, split_time, write_dictionary


def _digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_the_seed_corpus_is_a_writable_copy(tmp_path):
    seeds = default_seeds()
    assert set(seed_files(BUNDLED)) <= set(seeds)  # the repository's files, whatever else a corpus adds
    originals = {os.path.basename(p): (p, _digest(p), os.stat(p).st_mode) for p in seeds}
    corpus = tmp_path / "corpus"
    assert copy_seeds(seeds, str(corpus)) == len(originals) >= 10
    for name, (path, digest, mode) in originals.items():
        copy = corpus / name
        assert _digest(copy) == digest
        assert os.stat(copy).st_mode & stat.S_IWUSR  # ours to mutate ...
        copy.write_text("mutated")
        assert (_digest(path), os.stat(path).st_mode) == (digest, mode)  # ... not theirs


def test_a_seed_folder_given_on_the_command_line(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "one.prototxt").write_text('name: "one"')
    (folder / "notes.txt").write_text("not a net")
    assert seed_files(str(folder)) == [str(folder / "one.prototxt")]
    assert copy_seeds(str(folder), str(tmp_path / "corpus")) == 1
    assert seed_files(str(tmp_path / "missing")) == []


def test_the_dictionary_holds_the_schema_words(tmp_path):
    path = tmp_path / "prototxt.dict"
    write_dictionary(str(path))
    lines = path.read_text().splitlines()
    assert all(line.startswith('"') and line.endswith('"') for line in lines)
    for word in ('"num_output:"', '"convolution_param {"', '"type: \\"Convolution\\""', '"WITHIN_CHANNEL"', '"4294967295"'):
        assert word in lines


def test_time_is_split_by_weight():
    assert split_time(60, ["prototxt", "prototxt_gen", "cnn"]) == {"prototxt": 30, "prototxt_gen": 15, "cnn": 15}
    assert split_time(60, ["cnn"]) == {"cnn": 60}
    assert split_time(4, ["prototxt", "cnn"]) == {"prototxt": 5, "cnn": 5}  # at least 5 s each


def test_inputs_run_are_read_from_the_log():
    log = "#1024\tpulse  cov: 80 ft: 90 corp: 5/1Kb exec/s: 50\n#1500\tDONE   cov: 80\nDone 1500 runs in 30 second(s)\n"
    assert _runs(log) == 1500
    assert _runs(log + "stat::number_of_executed_units: 1501\n") == 1501
    assert _runs("#77\tNEW    cov: 1\n") == 77  # killed before the summary
    assert _runs("") == 0


RUN = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "fuzz", "run.py")


@pytest.mark.slow
def test_a_short_atheris_run_of_every_target_finds_nothing(tmp_path):
    done = subprocess.run([sys.executable, RUN, "--seconds", "15", "--workdir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = {r["target"]: r for r in json.loads((tmp_path / "summary.json").read_text())}
    assert sorted(summary) == ["cnn", "prototxt", "prototxt_gen"]
    for target, result in summary.items():
        assert result["inputs"] > 0 and result["findings"] == [], (target, open(result["log"]).read()[-2000:])
    assert summary["prototxt"]["seeds"] >= 10  # seeded from the real files
    seed = sorted((tmp_path / "prototxt" / "corpus").iterdir())[0]
    replay = subprocess.run([sys.executable, RUN, "--targets", "prototxt", "--reproduce", str(seed)],
                            capture_output=True, text=True, timeout=300)
    assert replay.returncode == 0, replay.stderr
