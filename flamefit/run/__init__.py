"""Run many items: spec, items, workers, executors, skip-finished, error isolation, progress.

    from flamefit.run import RunSpec, image_items, run_items, PoolExecutor
    from flamefit.jobs.photo import FIT_WORKER
    spec = RunSpec(worker=FIT_WORKER, out_dir="out", assets=resolve_assets(), config=config_to_dict(cfg),
                   outputs=["npz", "json"])
    summary = run_items(spec, image_items(["photos/"]), executor=PoolExecutor(2))

See :mod:`flamefit.run.spec` (the serialisable spec), :mod:`flamefit.run.items` (sources),
:mod:`flamefit.run.worker` (protocol, records), :mod:`flamefit.run.executors` (in-process, process pool, Ray) and
:mod:`flamefit.run.runner` (the loop). The layer knows no domain: the jobs' workers (fit, detect, track segments,
texspace unwrap) live in :mod:`flamefit.jobs` and are named in the spec as ``module:attribute``.
"""

from flamefit.errors import ItemsFailed
from flamefit.run.executors import InProcessExecutor, PoolExecutor, RayExecutor
from flamefit.run.items import IMAGE_EXTENSIONS, Item, check_inputs, expand_inputs, image_items, output_names, shard
from flamefit.run.progress import Reporter
from flamefit.run.runner import RunSummary, run_items
from flamefit.run.spec import RunSpec, pin_environment, resolve_assets, resolve_cache_dir
from flamefit.run.worker import FAILED, OK, SKIPPED, Record, Worker, make_worker, process_safely

__all__ = [
    "FAILED", "IMAGE_EXTENSIONS", "OK", "SKIPPED", "InProcessExecutor", "Item", "ItemsFailed",
    "PoolExecutor", "RayExecutor", "Record", "Reporter", "RunSpec", "RunSummary", "Worker",
    "check_inputs", "expand_inputs", "image_items", "make_worker", "output_names", "pin_environment", "process_safely",
    "resolve_assets", "resolve_cache_dir", "run_items", "shard",
]
