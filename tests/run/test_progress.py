"""Per-item lines: one line each, on stderr, never wrapped, also while the progress bar is live."""

from __future__ import annotations

import io
import re

from rich.console import Console

from flamefit.run import Item, Record, Reporter, RunSpec, run_items
from flamefit.run.worker import FAILED, OK

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\r")


def test_error_lines_are_not_wrapped_while_the_bar_is_live():
    buf = io.StringIO()
    reporter = Reporter(enabled=True, console=Console(file=buf, width=40, force_terminal=True, soft_wrap=True))
    source = "/data/" + "a_long_folder_name/" * 8 + "face.png"
    reason = "Cannot read it: not a recognised image format, or the file is damaged.\nUse PNG or JPEG."
    reporter.start(2)
    reporter.record(Record("face", source, FAILED, message=reason))
    reporter.record(Record("other", "/x/other.png", OK, message="1.0 s"))
    reporter.stop()
    lines = [_ANSI.sub("", ln) for ln in buf.getvalue().split("\n")]
    errors = [ln for ln in lines if "error:" in ln]
    assert len(errors) == 1
    assert errors[0].endswith(f"error: {source}: Cannot read it: not a recognised image format, or the file is "
                              "damaged. Use PNG or JPEG.")
    assert any(ln.endswith("ok: /x/other.png -> other (1.0 s)") for ln in lines)


def test_per_item_lines_go_to_stderr(tmp_path, capsys):
    spec = RunSpec(worker="flamefit_test_workers:EchoWorker", out_dir=str(tmp_path), outputs=["txt"])
    run_items(spec, [Item("boom", "/in/boom.png"), Item("a", "/in/a.png")], reporter=Reporter(enabled=True))
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "error: /in/boom.png: unexpected ValueError: boom with a second line" in captured.err
    assert "ok: /in/a.png" in captured.err and "\n\n" not in captured.err


def test_a_retry_is_reported(tmp_path, capsys):
    from flamefit.run import PoolExecutor

    spec = RunSpec(worker="flamefit_test_workers:CrashWorker", out_dir=str(tmp_path), outputs=["txt"],
                   options={"marker_dir": str(tmp_path)}, retries=1)
    summary = run_items(spec, [Item("once1", "/in/once1.png")], executor=PoolExecutor(1),
                        reporter=Reporter(enabled=False))
    err = capsys.readouterr().err
    assert summary.n_ok == 1
    assert "retry: /in/once1.png (worker died (exit code 3); attempt 2 of 2)" in err and "ok: /in/once1.png" in err
