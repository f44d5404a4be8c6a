"""The pack on each ComfyUI the tests run on (0.3.75 under `make test`, 0.33.0 under `make test-e2e-0.33`): the server
is the provisioned one, every node loads, newer schema features (search_aliases) reach the frontend where the host has
them and are left out where it does not, and the example workflows' thumbnails are served to the template browser."""
import json
import re
import urllib.request

import pytest

from diffusion_blocks.devtools.paths import PACK_NAME, PACK_ROOT, comfyui_path

pytestmark = pytest.mark.e2e


def host_version():
    """The version the provisioned ComfyUI's own comfyui_version.py states."""
    text = (comfyui_path() / "comfyui_version.py").read_text()
    return re.search(r"^__version__\s*=\s*[\"']([^\"']+)[\"']", text, re.M).group(1)


def test_the_server_is_the_provisioned_comfyui(comfy_server):
    running = comfy_server.get("/system_stats")["system"]["comfyui_version"]
    print(f"ComfyUI {running} at {comfyui_path()}")
    assert running == host_version()


def test_every_node_loads_with_or_without_the_newer_schema_fields(comfy_server, pack_nodes):
    from diffusion_blocks.nodes.compat import NEWER_SCHEMA_FIELDS, SCHEMA_FIELDS

    object_info = comfy_server.get("/object_info")
    ours = {node_id for node_id in object_info if object_info[node_id].get("category", "").startswith("diffusion_blocks/")}
    assert ours == set(pack_nodes) and len(ours) >= 44
    if "search_aliases" not in SCHEMA_FIELDS:  # 0.3.75: the field is left out, not passed
        assert "search_aliases" in NEWER_SCHEMA_FIELDS
        assert all(not object_info[node_id].get("search_aliases") for node_id in ours)


def finds(object_info, query):
    """The pack's nodes whose display name or search aliases contain the query (what the node search matches on)."""
    query = query.lower()
    return {node_id for node_id, info in object_info.items() if node_id.startswith("DB_")
            and any(query in text.lower() for text in [info["display_name"], *info.get("search_aliases", [])])}


def test_search_aliases_reach_object_info_where_comfyui_has_them(comfy_server):
    from diffusion_blocks.nodes.compat import SCHEMA_FIELDS

    if "search_aliases" not in SCHEMA_FIELDS:
        pytest.skip(f"ComfyUI {host_version()}'s io.Schema has no search_aliases (0.33 has)")
    object_info = comfy_server.get("/object_info")
    schedules = {n for n, info in object_info.items() if info["category"] == "diffusion_blocks/schedules"}
    samplers = {n for n, info in object_info.items() if info["category"] == "diffusion_blocks/samplers"}
    assert len(schedules) >= 13 and len(samplers) >= 7
    assert schedules <= finds(object_info, "noise schedule")
    assert samplers <= finds(object_info, "k-diffusion") and samplers <= finds(object_info, "sampler")
    assert {"DB_KarrasSchedule", "DB_Schedule"} <= finds(object_info, "karras")
    assert {"DB_MultistepSampler", "DB_Sampler"} <= finds(object_info, "dpmpp_2m")
    assert "DB_Sample" in finds(object_info, "ksampler") and "DB_EncodeText" in finds(object_info, "clip text encode")
    assert "DB_KarrasSchedule" not in finds(object_info, "k-diffusion")  # aliases are specific, not everything


def test_each_example_workflow_thumbnail_is_served_beside_its_workflow(comfy_server):
    """The template browser asks for /api/workflow_templates/<pack>/<name>.jpg next to <name>.json."""
    workflows = PACK_ROOT / "example_workflows"
    names = sorted(comfy_server.get("/workflow_templates")[PACK_NAME])
    assert names and names == sorted(p.stem for p in workflows.glob("*.json"))
    for name in names:
        for suffix, check in ((".json", lambda body: json.loads(body) == json.loads((workflows / f"{name}.json").read_text())),
                              (".jpg", lambda body: body == (workflows / f"{name}.jpg").read_bytes())):
            with urllib.request.urlopen(f"{comfy_server.url}/api/workflow_templates/{PACK_NAME}/{name}{suffix}",
                                        timeout=30) as response:
                assert check(response.read()), f"{name}{suffix}"
