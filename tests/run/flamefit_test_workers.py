"""Light workers for the run-layer tests (no model, no torch): importable by spawned processes and Ray actors
because tests/conftest.py (run_test_workers_importable) puts this folder on sys.path and $PYTHONPATH."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from flamefit.errors import ConfigError
from flamefit.io.outputs import OutputSet
from flamefit.run.worker import OK, Record


class EchoWorker:
    """Writes NAME.txt (the item's source and the spec's ``options["tag"]``) as an atomic set."""

    def __init__(self, spec):
        self.spec = spec
        self.ready = False

    def setup(self):
        self.ready = True

    def process(self, item):
        assert self.ready, "process() before setup()"
        if "boom" in item.name:
            raise ValueError("boom\nwith a second line")
        if "config" in item.name:
            raise ConfigError(f"{item.source}: a bad value")
        outputs = []
        if self.spec.out_dir:
            with OutputSet(self.spec.out_dir, item.name, kind="echo", source=item.source,
                           overwrite=self.spec.overwrite) as outs:
                outs.write_text(f"{item.name}.txt", f"{item.source} {self.spec.options.get('tag', '')}")
                outs.publish(outputs=self.spec.outputs)
                outputs = [str(p) for p in outs.published.values()]
        return Record(item.name, item.source, OK, outputs=outputs,
                      data={"pid": os.getpid(), "env_flame": os.environ.get("FLAMEFIT_FLAME_MODEL"),
                            "env_config": os.environ.get("FLAMEFIT_CONFIG")})


class CrashWorker(EchoWorker):
    """Kills its own process on items named ``crash*`` (every time), ``once*`` (first attempt only: a marker
    file in ``options["marker_dir"]`` remembers it) and ``kill*`` (SIGKILL, every time)."""

    def process(self, item):
        if item.name.startswith("crash"):
            os._exit(3)
        if item.name.startswith("kill"):
            os.kill(os.getpid(), signal.SIGKILL)
        if item.name.startswith("once"):
            marker = Path(self.spec.options["marker_dir"]) / f"{item.name}.seen"
            if not marker.exists():
                marker.write_text("x")
                os._exit(3)
        return super().process(item)


class SetupFailWorker(EchoWorker):
    def setup(self):
        raise ConfigError("the spec is bad: this worker never starts")


class ResolveWorker(EchoWorker):
    """Reports what the library's own asset resolution sees inside the worker."""

    def process(self, item):
        from flamefit.assets import resolve_asset

        rec = super().process(item)
        rec.data["resolved_flame"] = str(resolve_asset("flame", None))
        found = resolve_asset("landmarks_static", None, required=False)
        rec.data["resolved_static"] = None if found is None else str(found)
        return rec

