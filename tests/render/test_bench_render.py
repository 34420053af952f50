"""`flamefit bench render` runs and prints one JSON object (tiny sizes; no timing asserts)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from flamefit.bench.render import command


def test_bench_render_json_smoke():
    result = CliRunner().invoke(command, ["--resolutions", "48", "--batches", "1,2", "--repeats", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [(r["resolution"], r["batch"]) for r in report["results"]] == [(48, 1), (48, 2)]
    for row in report["results"]:
        assert row["fwd_bwd_ms"] > 0 and 0.2 < row["coverage"] < 0.8
    assert report["faces"] > 1000
