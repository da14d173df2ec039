"""Train keys: what changes the trained weights is in the key, what does not is left out."""

import pytest

from pipeline.runner import plan_keys
from pipeline.stages.train import KEY_ONLY_IF_SET, key_config


def test_later_model_fields_enter_the_key_only_when_set(make_config):
    base = make_config("beauty")
    model = key_config(base)["model"]
    assert KEY_ONLY_IF_SET.isdisjoint(model) and "facet_scale" in model
    # stating the default explicitly is the same run: same key, artifacts reused
    same = make_config("beauty", {"model.residual": "slice", "model.router_top_k": 0})
    assert plan_keys(same)["train"] == plan_keys(base)["train"]
    keys = {plan_keys(base)["train"]}
    for over in ({"model.residual": "proj"}, {"model.router_top_k": 2}):
        cfg = make_config("beauty", over)
        assert key_config(cfg)["model"].keys() - model.keys() == {k.split(".")[1] for k in over}
        keys.add(plan_keys(cfg)["train"])
        assert plan_keys(cfg)["ingest"] == plan_keys(base)["ingest"]
    assert len(keys) == 3


def test_sasrec_key_ignores_fame_only_fields(make_config):
    sasrec = make_config("beauty", {"model.name": "sasrec"})
    changed = make_config(
        "beauty",
        {"model.name": "sasrec", "model.experts": 2, "model.gate": False, "model.residual": "proj"},
    )
    assert plan_keys(sasrec)["train"] == plan_keys(changed)["train"]
    assert plan_keys(sasrec)["train"] != plan_keys(make_config("beauty"))["train"]


@pytest.mark.parametrize(
    ("field", "default", "value"), [("freeze_epochs", 0, 5), ("gain", 1.0, 5.0)]
)
def test_later_init_fields_enter_the_key_only_when_set(make_config, field, default, value):
    base = make_config("beauty")
    assert field not in key_config(base)["init"]
    same = make_config("beauty", {f"init.{field}": default})
    assert plan_keys(same)["train"] == plan_keys(base)["train"]
    changed = make_config("beauty", {f"init.{field}": value})
    assert key_config(changed)["init"][field] == value
    assert plan_keys(changed)["train"] != plan_keys(base)["train"]
    assert plan_keys(changed)["pretrain"] == plan_keys(base)["pretrain"]
