"""The Ray Data adapter: label a Dataset's text column with one model per actor.

Each actor of a ``map_batches`` pool loads the model once; every batch it receives goes through
the same Classifier as the local engine (token-budget batch planning included), and comes back
with exactly the columns ``structsent label`` adds: ``label``, ``score``, one ``prob_<label>``
per label, ``error``. Ray is imported only inside this package, when it is used.

>>> import ray, structsent.ray                                         # doctest: +SKIP
>>> ds = ray.data.read_parquet("s3://bucket/reviews/")                 # doctest: +SKIP
>>> structsent.ray.label_dataset(ds, model="default", concurrency=4).write_parquet("out/")  # doctest: +SKIP

The modules, each importing only those listed before it: ``cluster`` (reaching Ray, sizing the
pool), ``inputs`` (files in), ``failures`` (Ray's errors in the user's words), ``outputs`` (files
out, whole or not at all), ``labeller`` (the Dataset API), ``job`` (`structsent label --engine ray`).
"""

from __future__ import annotations

from .failures import InputTypesDisagreeError, RayJobFailedError, RayJobInterrupted
from .inputs import InputFiles, resolve_input
from .job import RayLabelSpec, run_label_job
from .labeller import DatasetLabeller, label_dataset

__all__ = ["DatasetLabeller", "InputFiles", "InputTypesDisagreeError", "RayJobFailedError", "RayJobInterrupted",
           "RayLabelSpec", "label_dataset", "resolve_input", "run_label_job"]
