"""What the Prefect UI shows of the flow: run names with dataset, model and init; a typed,
described parameter form (no "Property is type None")."""

import asyncio

import pytest
from prefect.client.orchestration import get_client

from flows.flow import deployments, fame, run_name
from pipeline.registry import ORDER

TINY = {
    "data.synth.users": 100,
    "data.synth.items": 80,
    "data.synth.interactions": 1500,
}


def _typed(prop: dict) -> bool:
    """A JSON-schema property with a type that is never null (directly or in each anyOf)."""
    options = prop.get("anyOf", [prop])
    return all(o.get("type") not in (None, "null") for o in options)


def _check_schema(schema: dict) -> None:
    props = schema["properties"]
    assert list(props) == ["config", "overrides", "stages", "force", "data_dir", "run_id"]
    for name, prop in props.items():
        assert _typed(prop), (name, prop)
        assert prop.get("description"), name
        assert prop.get("default") is not None, name  # a None default renders as type None
    assert all(stage in " ".join(props["stages"]["description"].split()) for stage in ORDER)


def test_flow_parameters_are_typed_and_described():
    _check_schema(fame.parameters.model_dump_for_openapi())


def test_every_deployment_carries_the_described_schema():
    for dep in deployments():
        _check_schema(dep._parameter_openapi_schema.model_dump_for_openapi())


def test_run_name_of_a_config_that_does_not_load_is_the_name_given():
    assert run_name({"config": "no-such-config", "stages": "train"}) == "no-such-config [train]"


@pytest.mark.parametrize("model", ["sasrec", "fame"])
def test_flow_run_is_named_after_dataset_model_and_init(harness, tmp_path, model):
    overrides = {**TINY, "paths.artifacts": str(tmp_path), "model.name": model}
    state = fame(config="synthetic", overrides=overrides, stages=["ingest"], return_state=True)
    assert state.is_completed()

    async def name() -> str:
        async with get_client() as client:
            return (await client.read_flow_run(state.state_details.flow_run_id)).name

    assert asyncio.run(name()) == f"synthetic-{model}-facet_pretrain [ingest]"
