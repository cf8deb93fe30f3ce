"""Plan a sweep's jobs: which choose their own learning rate, and which wait for another job's choice.

With seeds, a variant's learning rate is tuned once, on its first seed, and its other seeds train at it.
With `tuning.method: scaled` and `tuning.reference: grid`, each optimizer's reference batch size is tuned
first and the other batch sizes train at its learning rate scaled by the rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from components.optimizers import batch_regime
from components.sweep import Variant
from components.tuning import scaled_rate
from pipelines.config import Config
from pipelines.tune import Chosen
from pipelines.workers import Job

SEARCHES = ("grid", "range_test")


@dataclass
class Plan:
    """Jobs that start at once, and jobs waiting for a leader's learning rate (by the leader's name)."""

    first: list[Job]
    waiting: dict[str, list[Job]] = field(default_factory=dict)
    n_train: int = 0

    @property
    def total(self) -> int:
        return len(self.first) + sum(len(jobs) for jobs in self.waiting.values())

    def release(self, leader: str, learning_rate: float | None, by: str, run_id: str) -> list[Job]:
        """The jobs that waited for `leader`, with the learning rate they take from it (None: it failed)."""
        jobs = self.waiting.pop(leader, [])
        if learning_rate is None:  # the leader failed: each follower chooses on its own
            return jobs
        return [replace(job, chosen=self._chosen(job, leader, learning_rate, by, run_id)) for job in jobs]

    def _chosen(self, job: Job, leader: str, learning_rate: float, by: str, run_id: str) -> Chosen:
        tu = job.cfg.tuning
        if tu.method == "scaled":
            size = batch_regime(job.cfg.training.batch_size, self.n_train).batch_size
            reference = batch_regime(tu.reference_batch_size, self.n_train).batch_size
            if size != reference:
                lr = scaled_rate(learning_rate, reference, size, tu.scaling)
                note = (
                    f"{tu.scaling} scaling from {learning_rate:g}, tuned by {by} at batch size {reference} ({leader})"
                )
                return Chosen(lr, "scaled", note)
        return Chosen(learning_rate, by, f"tuned on {leader} (run {run_id})")


def plan_jobs(cfg: Config, variants: list[Variant], n_train: int, parent_run_id: str, tags: dict) -> Plan:
    """One job per variant and seed, the longest (most updates per epoch) first so workers finish together."""
    child_tags = {**tags, "descent.kind": "variant", "descent.sweep_id": parent_run_id}
    seeds = cfg.sweep.seeds or [cfg.training.seed]
    tu = cfg.tuning
    by_reference = tu.method == "scaled" and tu.reference == "grid"
    reference = batch_regime(tu.reference_batch_size, n_train).batch_size if by_reference else None
    plan = Plan([], n_train=n_train)
    leaders: dict[str, str] = {}  # optimizer (scaled) or variant (seeds) -> the leader job's name
    ordered = sorted(variants, key=lambda v: -batch_regime(v.batch_size, n_train).updates_per_epoch)
    if by_reference:  # each optimizer's reference batch size leads the optimizer's other batch sizes
        ordered.sort(key=lambda v: batch_regime(v.batch_size, n_train).batch_size != reference)
    for variant in ordered:
        size = batch_regime(variant.batch_size, n_train).batch_size
        for seed in seeds:
            training = cfg.training.model_copy(
                update={"optimizer": variant.optimizer, "batch_size": variant.batch_size, "seed": seed}
            )
            job_cfg = cfg.model_copy(update={"training": training})
            name = variant.name(n_train) + (f"-seed{seed}" if len(seeds) > 1 else "")
            if by_reference and size == reference and seed == seeds[0]:
                job_cfg = job_cfg.model_copy(update={"tuning": tu.model_copy(update={"method": "grid"})})
            job = Job(job_cfg, name, parent_run_id, child_tags)
            key = variant.optimizer if by_reference else variant.name(n_train)
            if key in leaders:
                plan.waiting.setdefault(leaders[key], []).append(job)
            else:
                plan.first.append(job)
                if by_reference or tu.method in SEARCHES:
                    leaders[key] = name
    return plan
