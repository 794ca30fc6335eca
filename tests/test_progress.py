"""Progress with rate and ETA: plain lines off a terminal (SLURM, gcloud
logs), a tqdm bar on one, and messages that do not break the bar. The
training and evaluation lines of a real run are checked in test_tracking.py
(one tiny run serves both files)."""

from __future__ import annotations

import io
import logging
import re
import sys

import pytest

from tests.test_teachers_resume import GENERATION, ScriptedBackend, builder, examples
from tinyllm_jax import progress as progress_lib
from tinyllm_jax.progress import Progress, echo
from tinyllm_jax.teachers.generate import generate_split

# "<desc> 4/8 step (50%) 2.00 step/s elapsed 0:00:02 ETA 0:00:02"
LINE = re.compile(r"^(?P<desc>.+) (?P<done>\d+)/(?P<total>\d+) (?P<unit>\w+) \((?P<pct>\d+)%\) "
                  r"(?P<rate>[\d.]+) (?:(?P=unit)/s|s/(?P=unit)) elapsed \d+:\d\d:\d\d ETA (?P<eta>\d+:\d\d:\d\d)")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(progress_lib.time, "perf_counter", c)
    return c


def test_plain_lines_carry_rate_and_eta(clock):
    out = io.StringIO()
    bar = Progress(8, initial=2, unit="step", desc="train", stream=out, terminal=False,
                   interval_s=0)
    clock.now += 2
    bar.update(to=4, text="loss 1.000")  # 2 steps in 2 s since the start (the resumed step 2)
    clock.now += 2
    bar.update(to=8, text="loss 0.500")
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines == [
        "train 4/8 step (50%) 1.00 step/s elapsed 0:00:02 ETA 0:00:04 | loss 1.000",
        "train 8/8 step (100%) 1.50 step/s elapsed 0:00:04 ETA 0:00:00 | loss 0.500",
    ]  # closing after a line at the end adds none


def test_plain_lines_are_spaced_by_the_interval_and_a_short_loop_is_quiet(clock, monkeypatch):
    monkeypatch.setenv(progress_lib.INTERVAL_ENV, "10")
    out = io.StringIO()
    with Progress(100, unit="ex", desc="eval valid generate", stream=out, terminal=False) as bar:
        for _ in range(25):
            clock.now += 1
            bar.update(4)
    lines = out.getvalue().splitlines()
    # At 10 s and 20 s, then the end line (100 examples after 25 s).
    assert [LINE.match(x)["done"] for x in lines] == ["40", "80", "100"]
    assert LINE.match(lines[0])["rate"] == "4.00" and LINE.match(lines[0])["eta"] == "0:00:15"
    quiet = io.StringIO()
    with Progress(10, stream=quiet, terminal=False) as bar:
        clock.now += 3
        bar.update(10)
    assert quiet.getvalue() == ""


def test_slow_rates_and_unknown_eta():
    assert progress_lib.rate_text(0.25, "ex") == "4.00 s/ex"
    assert progress_lib.duration_text(float("inf")) == "?"
    assert progress_lib.status_line("x", 0, 5, "ex", 3.0, 0).endswith("ETA ?")


def test_bad_interval_environment_falls_back(monkeypatch, caplog):
    monkeypatch.setenv(progress_lib.INTERVAL_ENV, "soon")
    with caplog.at_level(logging.WARNING):
        assert progress_lib.default_interval() == 30.0
    assert "TINYLLM_PROGRESS_INTERVAL_S='soon' is not a number" in caplog.text


def test_messages_and_log_records_go_above_an_active_bar(capsys):
    out = sys.stderr  # capsys's: the console handler tqdm's redirection looks for
    handler = logging.StreamHandler(out)
    logger = logging.getLogger()
    logger.addHandler(handler)
    try:
        with Progress(4, unit="step", desc="train", stream=out, terminal=True) as bar:
            bar.update(1)
            echo("step 1: valid accuracy 0.5", file=out)
            logging.getLogger("tinyllm_jax.test").warning("a warning while the bar is shown")
            bar.update(1)
        echo("after the bar", file=out)
    finally:
        logger.removeHandler(handler)
    text = capsys.readouterr().err
    # tqdm.write clears the bar's line first, so each message starts a line of its own.
    for message in ("step 1: valid accuracy 0.5\n", "a warning while the bar is shown\n"):
        at = text.index(message)
        assert text[at - 1] in "\r\n", repr(text[max(at - 40, 0): at + len(message)])
    assert "2/4" in text and text.endswith("after the bar\n")
    assert not progress_lib._ACTIVE


def test_teacher_generation_prints_rate_and_eta_lines(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(progress_lib.INTERVAL_ENV, "0")
    targets = examples(6)
    result = generate_split(
        teacher="t", split="train", examples=targets, builder=builder(targets),
        backend=ScriptedBackend, out_path=tmp_path / "train.jsonl", model="m",
        generation=GENERATION, batch_size=2, add_special_tokens=False, progress=True,
    )
    assert result.generated == 6
    lines = [m for x in capsys.readouterr().err.splitlines() if (m := LINE.match(x))]
    assert [(m["desc"], m["done"], m["total"], m["unit"]) for m in lines] == [
        ("t/train", "2", "6", "ex"), ("t/train", "4", "6", "ex"), ("t/train", "6", "6", "ex")]


def test_absl_log_records_go_above_an_active_bar(capsys):
    """The command line logs through absl's handler, which tqdm's own
    redirection does not know."""
    from absl import logging as absl_logging

    handler, root = absl_logging.get_absl_handler(), logging.getLogger()
    added = handler not in root.handlers
    if added:
        root.addHandler(handler)
    old = handler.python_handler.setStream(sys.stderr)
    # absl's once-per-process "Logging before flag parsing" notice (unparsed
    # flags: tests, not the command line) is printed before the bar.
    logging.getLogger("tinyllm_jax.test").warning("before the bar")
    try:
        with Progress(4, unit="step", desc="train", stream=sys.stderr, terminal=True) as bar:
            bar.update(1)
            logging.getLogger("tinyllm_jax.test").warning("an absl-formatted warning")
            bar.update(1)
    finally:
        if old is not None:
            handler.python_handler.setStream(old)
        if added:
            root.removeHandler(handler)
    text = capsys.readouterr().err
    assert re.search(r"W\d{4} [^\r\n]*\] an absl-formatted warning\n", text), repr(text)
    # Without the redirection the record is glued to the bar: "...step/s]WARNING: ...".
    assert not re.search(r"step/s\][^\r\n]", text), repr(text)
