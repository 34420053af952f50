"""The jobs: each binds one domain (photos, videos, texture spaces) to the generic run layer (:mod:`flamefit.run`).

One module per job, each with its workers (named in a :class:`~flamefit.run.spec.RunSpec` as ``module:attribute``),
the spec helpers they share and the job's driver:

- :mod:`flamefit.jobs.photo`: ``flamefit fit`` / ``flamefit detect`` (``FitWorker``, ``DetectWorker``,
  ``config_from_dict``, ``fitter_from_spec``);
- :mod:`flamefit.jobs.track`: a long video as overlapping segments on many workers (``TrackWorker``,
  ``track_parallel``);
- :mod:`flamefit.jobs.texspace`: the texture-space build (``UnwrapWorker``, ``UnwrapJob``, ``build``), which drives
  the stages of :mod:`flamefit.texspace.pipeline` and runs the unwrap stage on the run layer.

The run layer below knows none of them; the commands (and benches) above pick the job.
"""
