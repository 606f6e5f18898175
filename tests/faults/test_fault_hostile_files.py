"""Files handed to thermojax that are hostile before a number is read (README: Faults and
hostile input): a path that is not a regular file (a FIFO must not hang a reader, a device must not
be read until memory runs out), JSON nested or sized absurdly or not strict, and tool arguments
that would write an absurd checkpoint. Each is one line naming the file, or a failed row in
``compare``; never a hang, a traceback or a half-written folder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from faultlib import assert_one_error, assert_one_line, command, command_env

from thermojax.errors import UserInputError
from thermojax.files import UnreadableJSON, read_json_file
from thermojax.models.digits.checkpoint import SHIPPED_CHECKPOINT, load_checkpoint
from thermojax.pipeline.checkpoint.reload import load_quantized
from thermojax.pipeline.measure.activation_stats import read_activation_stats

TEMPLATE = Path(__file__).resolve().parents[1] / "fixtures" / "compare" / "report_template.json"

# ---------------------------------------------------------------------------- JSON for compare


@pytest.mark.timeout(60)
def test_json_reader_refuses_what_is_not_a_regular_file(tmp_path):
    fifo = tmp_path / "baseline_metrics.json"
    os.mkfifo(fifo)  # no writer: a plain open() would wait forever
    link = tmp_path / "zero.json"
    link.symlink_to("/dev/zero")  # read() would never end
    for path, kind in [
        (fifo, "a FIFO"),
        (link, "a character device"),
        (Path("/dev/zero"), "a character device"),
        (tmp_path, "a folder"),
    ]:
        with pytest.raises(UnreadableJSON) as err:
            read_json_file(path)
        assert_one_line(err.value, str(path), f"not a regular file ({kind})")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested deeper than 64"),
        ('{"a": ' * 65 + "1" + "}" * 65, "nested deeper than 64"),
        ('{"x": NaN}', "NaN is not strict JSON"),
        ('{"x": 1e400}', "1e400 overflows"),
        ('{"x": -Infinity}', "-Infinity is not strict JSON"),
        ("\udcff{}", "not valid JSON ('utf-8' codec can't decode byte 0xff"),
        ("{" + '"k": 1,' * 10, "not valid JSON (Expecting"),
    ],
    ids=["deep-100000", "deep-65", "nan", "overflow", "infinity", "not-utf8", "cut-short"],
)
def test_json_reader_refuses_hostile_documents(tmp_path, text, problem):
    path = tmp_path / "report.json"
    path.write_bytes(text.encode("utf-8", "surrogateescape"))
    with pytest.raises(UnreadableJSON) as err:
        read_json_file(path)
    assert_one_line(err.value, str(path), problem)


def test_json_reader_caps_the_size_and_reads_a_real_report(tmp_path):
    path = tmp_path / "big.json"
    path.write_text("[" + "0," * 2000 + "0]")
    with pytest.raises(UnreadableJSON, match="larger than 1000 bytes"):
        read_json_file(path, max_bytes=1000)
    assert read_json_file(TEMPLATE) == json.loads(TEMPLATE.read_text())
    assert read_json_file(path) == [0] * 2001


@pytest.mark.timeout(120)
def test_compare_given_files_that_are_not_reports(tmp_path):
    """A FIFO (which would hang a plain read), /dev/zero (which would exhaust memory), nesting
    past the cap, a failure record that is a list or whose ``overrides`` is not a list: each a
    failed row with its reason, beside the one real report."""
    sweep = tmp_path / "sweep"
    for job in ("0", "fifo", "zero", "deep", "failure-overrides", "failure-list"):
        (sweep / job).mkdir(parents=True)
    (sweep / "0" / "baseline_metrics.json").write_text(TEMPLATE.read_text())
    os.mkfifo(sweep / "fifo" / "baseline_metrics.json")
    (sweep / "zero" / "baseline_metrics.json").symlink_to("/dev/zero")
    (sweep / "deep" / "baseline_metrics.json").write_text("[" * 100_000 + "]" * 100_000)
    (sweep / "failure-overrides" / "failure.json").write_text(
        json.dumps({"overrides": 5, "error_type": "X", "message": "m"})
    )
    (sweep / "failure-list" / "failure.json").write_text("[1]")
    proc = command(
        "thermojax.compare",
        [str(sweep)],
        cwd=tmp_path,
        env=command_env(tmp_path / "home", tmp_path / "cache"),
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert "1 configurations compared, 5 failed" in proc.stdout
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    reasons = {failure["job"]: failure["message"] for failure in summary["failures"]}
    assert "not a regular file (a FIFO)" in reasons["fifo"]
    assert "not a regular file (a character device)" in reasons["zero"]
    assert "nested deeper than 64" in reasons["deep"]
    assert "overrides is a JSON int, not a list" in reasons["failure-overrides"]
    assert "holds a JSON list, not a failure record object" in reasons["failure-list"]


# ---------------------------------------------------------------------------- other readers


@pytest.mark.timeout(60)
def test_checkpoint_files_that_are_fifos_do_not_hang_their_readers(tmp_path):
    digits = Path(shutil.copytree(SHIPPED_CHECKPOINT, tmp_path / "digits"))
    (digits / "denoiser.safetensors").unlink()
    os.mkfifo(digits / "denoiser.safetensors")
    with pytest.raises(UserInputError) as err:
        load_checkpoint(digits)
    assert_one_line(err.value, "denoiser.safetensors", str(digits), "not a regular file")
    export = tmp_path / "export"
    export.mkdir()
    os.mkfifo(export / "quantization.json")
    with pytest.raises(UserInputError) as err:
        load_quantized(export)
    assert_one_line(err.value, "quantization.json", "not a regular file (a FIFO)")


def test_activation_stats_path_that_is_not_a_regular_file(tmp_path):
    fifo = tmp_path / "stats.fifo"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero"), tmp_path):
        with pytest.raises(UserInputError) as err:
            read_activation_stats(path)
        assert_one_line(err.value, str(path), "not a regular file")


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--shard-gb", "nan"], "--shard-gb nan"),
        (["--shard-gb", "-1"], "--shard-gb -1"),
        (["--layers", "100000000"], "layers must be at most 1000"),
        (["--scale", "0"], "scale must be a positive integer"),
    ],
    ids=["shard-gb-nan", "shard-gb-negative", "layers-absurd", "scale-zero"],
)
def test_synthetic_tool_sizes_are_one_line(tmp_path, flags, named):
    out = tmp_path / "synthetic"
    proc = command(
        "thermojax.models.hf.synthetic",
        [str(out), *flags],
        cwd=tmp_path,
        env=command_env(tmp_path / "home", tmp_path / "cache"),
        timeout=120,
    )
    assert_one_error(proc, 2, named)
    assert not out.exists()


def test_synthetic_checkpoint_larger_than_the_disk_is_refused_first(tmp_path, monkeypatch):
    from thermojax.models.hf import synthetic

    monkeypatch.setattr(synthetic, "_free_bytes", lambda out: 100_000)
    out = tmp_path / "synthetic"
    with pytest.raises(UserInputError) as err:
        synthetic.write_dream_like(out, scale=64, layers=2)
    assert_one_line(err.value, str(out), "GB and its disk has 0.0001 GB free")
    assert not out.exists()
