"""A variant trained on a kept network and optimizer learns exactly what it would on new ones."""

import numpy as np

from components import networks
from pipelines.fitting import make_trainer
from pipelines.prepare import prepare
from tests.conftest import tiny


def _losses(cfg, prepared, optimizer, batch_size):
    variant = cfg.model_copy(update={"training": cfg.training.model_copy(update={"optimizer": optimizer})})
    trainer = make_trainer(variant, prepared, variant.hyperparameters(optimizer), batch_size)
    fit = trainer.train(trainer.start(), 3)
    return trainer, [h["loss"] for h in fit.history] + [c["val_loss"] for c in fit.checks]


def test_a_kept_network_and_optimizer_start_each_variant_as_new_ones_would():
    cfg = tiny(**{"model.dropout": 0.2})  # the dropout masks' seed state is put back too
    prepared = prepare(cfg)
    networks.forget()
    new = {name: _losses(cfg, prepared, *name)[1] for name in [("adam", 16), ("adagrad", 16)]}
    networks.forget()
    first, _ = _losses(cfg, prepared, "adagrad", 8)
    again = {}
    for name in [("adam", 16), ("adagrad", 16)]:  # after another variant, on the kept network and optimizers
        trainer, again[name] = _losses(cfg, prepared, *name)
        assert trainer.model is first.model
    assert again == new
    assert np.isfinite(new[("adam", 16)]).all()
    kept = _losses(cfg, prepared, "adagrad", 16)[0].model.optimizer
    assert kept is first.model.optimizer  # the same optimizer object: its training graph is not traced again
