"""Group by in the MLflow UI: the tags each variant run carries, and links that open a sweep's runs grouped.

The runs view's *Group by* draws one line per group in the chart view (the mean, with a band from the group's
minimum to its maximum). A link can carry that choice: MLflow's UI loads a view saved as the experiment tag
`mlflow.sharedViewState.<key>` when the URL says `?viewStateShareKey=<key>` (its own *Share* button does the same).
"""

from __future__ import annotations

import json

from components.optimizers import BatchRegime
from pipelines import tracking

REGIME_WORDS = {"batch": "batch", "minibatch": "mini-batch", "stochastic": "stochastic"}
SHARED_VIEW = "mlflow.sharedViewState."


def group_tags(optimizer: str, regime: BatchRegime, variant: str) -> dict[str, str]:
    """The tags a person groups a sweep's variant runs by: optimizer, batch_size, batch_regime, variant (all seeds)."""
    return {
        "optimizer": optimizer,
        "batch_size": str(regime.batch_size),
        "batch_regime": REGIME_WORDS[regime.regime],
        "variant": variant,
    }


def view_state(sweep_run_id: str, tag: str) -> dict:
    """The runs view of one sweep's variants grouped by `tag`, as MLflow's UI stores a shared view."""
    return {
        "searchFilter": f"tags.`descent.sweep_id` = '{sweep_run_id}'",
        "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": tag}]},
        "useGroupedValuesInCharts": True,
        "runsHiddenMode": "SHOW_ALL",
    }


def grouped_link(experiment_id: str, sweep_run_id: str, tag: str) -> str:
    """Save the grouped view on the experiment; the runs-view URL that opens it (in the chart view)."""
    key = f"descent-{sweep_run_id}-{tag}"
    tracking.store().set_experiment_tag(experiment_id, SHARED_VIEW + key, json.dumps(view_state(sweep_run_id, tag)))
    return f"{tracking.runs_page(experiment_id)}?viewStateShareKey={key}&compareRunsMode=CHART"


def hint(experiment_id: str, sweep_run_id: str, seeds: list[int] | None) -> str:
    """The end-of-sweep lines with the grouped links: by optimizer and batch size, by variant when there are seeds."""
    tags = ["optimizer", "batch_size"] + (["variant"] if seeds and len(seeds) > 1 else [])
    links = {tag: grouped_link(experiment_id, sweep_run_id, tag) for tag in tags}
    return "\n".join(f"or open it grouped by {tag}: {link}" for tag, link in links.items())
