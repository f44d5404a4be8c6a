"""Saved workflows keep loading: every released node keeps its ID, inputs (name, type, optional stays optional) and
outputs (type, in order: links point at an output's index), and an input added since is optional. An input may come to
take more types (io.MultiType: "DB_UNET,MODEL" still takes a DB_UNET link), never fewer.

The released schemas are frozen in tests/data/released_nodes.json. A new node or a new optional input is fine;
add it there (`DIFFUSION_BLOCKS_UPDATE_SCHEMAS=1` rewrites the file from the pack, keeping every released entry)."""
import json
import os
from pathlib import Path

import pytest

RELEASED = Path(__file__).parents[1] / "data" / "released_nodes.json"
HOW = ("keep it (a renamed input: keep the old name too), or give a new input a default and make it optional, so "
       "that workflows saved before the change load with the old behaviour")


def current(pack_nodes):
    """Node ID -> {"inputs": {name: {"type", "optional"}}, "outputs": [type, ...]} of the pack as it is."""
    schemas = {}
    for node_id, cls in pack_nodes.items():
        schema = cls.GET_SCHEMA()
        schemas[node_id] = {
            "inputs": {i.id: {"type": str(i.get_io_type()), "optional": bool(i.optional)} for i in schema.inputs},
            "outputs": [str(o.get_io_type()) for o in schema.outputs]}
    return dict(sorted(schemas.items()))


def breaks(released, now):
    """What in `now` would break a workflow saved against `released`, one line each."""
    problems = []
    for node_id, old in released.items():
        if node_id not in now:
            problems.append(f"node {node_id} is gone")
            continue
        new = now[node_id]
        for name, spec in old["inputs"].items():
            if name not in new["inputs"]:
                problems.append(f"{node_id}: input {name!r} is gone")
            elif not set(spec["type"].split(",")) <= set(new["inputs"][name]["type"].split(",")):  # may widen
                problems.append(f"{node_id}: input {name!r} was {spec['type']}, is {new['inputs'][name]['type']}")
            elif spec["optional"] and not new["inputs"][name]["optional"]:
                problems.append(f"{node_id}: input {name!r} was optional, is required")
        for name, spec in new["inputs"].items():
            if name not in old["inputs"] and not spec["optional"]:
                problems.append(f"{node_id}: new input {name!r} is required")
        if new["outputs"][:len(old["outputs"])] != old["outputs"]:
            problems.append(f"{node_id}: outputs were {old['outputs']}, are {new['outputs']}")
    return problems


def test_released_nodes_keep_loading_saved_workflows(pack_nodes):
    released, now = json.loads(RELEASED.read_text()), current(pack_nodes)
    if os.environ.get("DIFFUSION_BLOCKS_UPDATE_SCHEMAS"):
        RELEASED.write_text(json.dumps({**now, **{k: v for k, v in released.items() if k not in now}}, indent=1) + "\n")
    problems = breaks(released, now)
    assert not problems, "A saved workflow would no longer load: " + "; ".join(problems) + f". {HOW}."
    unlisted = sorted(set(now) - set(released))
    assert not unlisted, f"nodes {unlisted} are not in {RELEASED.name}: add them (DIFFUSION_BLOCKS_UPDATE_SCHEMAS=1)"


@pytest.mark.parametrize("change, expected", [
    (lambda s: s.pop("DB_Sample"), "node DB_Sample is gone"),
    (lambda s: s["DB_Sample"]["inputs"].pop("seed"), "input 'seed' is gone"),
    (lambda s: s["DB_Sample"]["inputs"].update(strength={"type": "FLOAT", "optional": False}),
     "new input 'strength' is required"),
    (lambda s: s["DB_LoadUNet"]["inputs"]["speed"].update(optional=False), "'speed' was optional, is required"),
    (lambda s: s["DB_Sample"]["outputs"].__setitem__(0, "IMAGE"), "outputs were"),
    (lambda s: s["DB_Sample"]["inputs"]["unet"].update(type="MODEL"), "'unet' was DB_UNET, is MODEL"),
])
def test_a_breaking_change_is_named(pack_nodes, change, expected):
    now = current(pack_nodes)
    change(now)
    assert any(expected in problem for problem in breaks(json.loads(RELEASED.read_text()), now))


def test_adaptive_sampler_loads_a_workflow_saved_before_max_calls(pack_nodes):
    """Its max_calls came after release: a saved workflow without it runs with the sampler's own bound."""
    from diffusion_blocks.samplers.dpm_solver import DEFAULT_MAX_CALLS

    node = pack_nodes["DB_AdaptiveSampler"]
    spec = {i.id: i for i in node.GET_SCHEMA().inputs}["max_calls"]
    assert spec.optional and spec.default == DEFAULT_MAX_CALLS
    sampler = node.execute(rtol=0.05, atol=0.0078, eta=0.0, s_noise=1.0).result[0]
    assert "max_calls" not in sampler.extra_options
