"""ComfyUI's two workflow formats: API (what /prompt runs) <-> UI (what the canvas saves), and workflow edits.

`object_info` is what a running ComfyUI answers at /object_info (the widget order of every node).
"""
import copy


def widget_names(node_info):
    """Names of a node's widget inputs in the order ComfyUI stores their values."""
    names = []
    for group in ("required", "optional"):
        for name in node_info["input_order"].get(group, []):
            spec = node_info["input"][group][name]
            kind = spec[0]
            if isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"):
                names.append(name)
    return names


def has_seed_control(spec, name):
    """The canvas adds a 'control after generate' value right after seed widgets (flagged, or named seed/noise_seed)."""
    options = spec[1] if len(spec) > 1 else {}
    return spec[0] == "INT" and bool(options.get("control_after_generate", name in ("seed", "noise_seed")))


def api_to_ui(api, object_info):
    """A UI-format workflow with the same nodes, links and widget values as `api`."""
    ids = {key: int(key) for key in api}
    depth = {}

    def node_depth(key):
        if key not in depth:
            parents = [v[0] for v in api[key]["inputs"].values() if isinstance(v, list)]
            depth[key] = 1 + max((node_depth(p) for p in parents), default=-1)
        return depth[key]

    nodes, links, rows = [], [], {}
    for key, node in sorted(api.items(), key=lambda kv: ids[kv[0]]):
        info = object_info[node["class_type"]]
        column = node_depth(key)
        row = rows.get(column, 0)
        rows[column] = row + 1
        inputs, widgets = [], []
        for group in ("required", "optional"):
            for name in info["input_order"].get(group, []):
                value = node["inputs"].get(name)
                is_widget = name in widget_names(info)
                if isinstance(value, list):
                    link_id = len(links) + 1
                    origin, slot = value
                    links.append([link_id, ids[origin], slot, ids[key], len(inputs), info["input"][group][name][0]])
                    inputs.append({"name": name, "type": info["input"][group][name][0], "link": link_id,
                                   **({"widget": {"name": name}} if is_widget else {})})
                if is_widget:  # a widget fed by a link keeps a value too, as the canvas saves it
                    spec = info["input"][group][name]
                    widgets.append(value if value is not None and not isinstance(value, list) else spec[1].get("default"))
                    if has_seed_control(spec, name):
                        widgets.append("fixed")
        outputs = [{"name": info["output_name"][i], "type": kind, "links": []} for i, kind in enumerate(info["output"])]
        nodes.append({"id": ids[key], "type": node["class_type"], "pos": [40 + 380 * column, 40 + 260 * row],
                      "size": [340, 200], "flags": {}, "order": 0, "mode": 0, "inputs": inputs,
                      "outputs": outputs, "properties": {"Node name for S&R": node["class_type"]},
                      "widgets_values": widgets, "title": node.get("_meta", {}).get("title")})
    for node in nodes:
        for slot, output in enumerate(node["outputs"]):
            output["links"] = [l[0] for l in links if l[1] == node["id"] and l[2] == slot]
            output["slot_index"] = slot
    for order, node in enumerate(sorted(nodes, key=lambda n: depth[str(n["id"])])):
        node["order"] = order
    return {"last_node_id": max(ids.values()), "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": {}, "version": 0.4}


def ui_to_api(ui, object_info):
    """The API-format graph a UI-format workflow describes (what the canvas would queue)."""
    link_origin = {l[0]: (str(l[1]), l[2]) for l in ui["links"]}
    api = {}
    for node in ui["nodes"]:
        info = object_info[node["type"]]
        inputs = {i["name"]: list(link_origin[i["link"]]) for i in node.get("inputs", []) if i.get("link") is not None}
        values = iter(node.get("widgets_values", []))
        for name in widget_names(info):
            inputs.setdefault(name, next(values))  # a widget fed by a link keeps the link
            spec = info["input"]["required"].get(name) or info["input"].get("optional", {})[name]
            if has_seed_control(spec, name):
                next(values)  # 'fixed', 'randomize', ...
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return api


def text_to_image_workflow(workflow, prompt, seed, steps, sampler, scheduler, cfg):
    """The text-to-image workflow with its prompt, seed, cfg, sampler and schedule replaced."""
    workflow = copy.deepcopy(workflow)
    sample = next(node["inputs"] for node in workflow.values() if node["class_type"] == "DB_Sample")
    sample.update(seed=seed, cfg=cfg)
    workflow[sample["positive"][0]]["inputs"]["text"] = prompt
    workflow[sample["sampler"][0]] = {"class_type": "DB_Sampler", "inputs": {"sampler": sampler}}
    schedule = workflow[sample["sigmas"][0]]["inputs"]
    workflow[sample["sigmas"][0]] = {"class_type": "DB_Schedule", "inputs": {
        "schedule": scheduler, "steps": steps, "denoise": 1.0, "sigma_max": schedule["sigma_max"],
        "sigma_min": schedule["sigma_min"], "model": schedule["model"]}}
    return workflow
