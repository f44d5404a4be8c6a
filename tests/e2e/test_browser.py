"""The example workflows in ComfyUI's own frontend, in headless Chromium: opened, queued with Run, pictures back.

One page of the frontend that the test server serves (ComfyUI's pinned comfyui-frontend-package) is loaded once and
used as a user would: the templates dialog that greets a new user is closed with its close button, each UI-format
example workflow (but those needing another extension's nodes, which this server lacks) is opened through the
frontend's Open Workflow command (what Ctrl+O and the menu run) and its file chooser, and the action bar's Run
button is clicked. The prompt the frontend posts must be the workflow's API twin
(which test_example_workflows.py runs and checks at the shipped settings), the server's /history for it must hold
its images, and the frontend must have received them. To stay fast, every workflow but text_to_image is queued
after the user-like edit of lowering its widgets `steps` and `calls` to 2 on the canvas; text_to_image runs as
shipped, and its canvas, picture shown, is the README's screenshot (written to docs/ when
DIFFUSION_BLOCKS_UPDATE_DOCS=1). The SD1.x workflows need a checkpoint that loads for about a minute on two CPU
cores: they are opened and their prompt (the frontend's graphToPrompt, what Run posts) compared with the API twin,
but not run here. The pack's nodes must reach the frontend with their display names, descriptions and input
tooltips (its node-definition store, compared with the pack's own schemas), and hovering over a widget on the
canvas must show its tooltip.

Chromium is Debian's `chromium` package, installed on first use by devtools/browser.py; where it cannot be
installed, these tests are skipped with the reason.
"""
import json
import os
import tempfile
import time

import pytest

from diffusion_blocks.devtools.paths import PACK_ROOT

pytestmark = pytest.mark.e2e
WORKFLOWS = PACK_ROOT / "example_workflows"
SCREENSHOT = PACK_ROOT / "docs" / "canvas_text_to_image.png"
SCREENSHOT_LIMIT = 300_000  # bytes
AS_SHIPPED = "text_to_image"
LOWERED = {"steps": 2, "calls": 2}  # widget -> at most this, on the canvas before Run
VIEWPORT = {"width": 1600, "height": 900}
RUN_TIMEOUT = 300  # seconds for one workflow on two busy cores
STORES = "document.querySelector('#vue-app').__vue_app__.config.globalProperties.$pinia._s"  # the frontend's Pinia
NODE_DEFS = f"{STORES}.get('nodeDef')"
# For the screenshot, as a user would set them: text drawn however small, no minimap.
SCREENSHOT_SETTINGS = {"LiteGraph.Canvas.MinFontSizeForLOD": 1, "Comfy.Minimap.Visible": False}


def load_api(name):
    return json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())


def needs_checkpoint(name):
    return any(node["class_type"] == "CheckpointLoaderSimple" for node in load_api(name).values())


UI_WORKFLOWS = sorted(p.stem for p in WORKFLOWS.glob("*.json"))
RUN_HERE = [name for name in UI_WORKFLOWS if name != AS_SHIPPED and not needs_checkpoint(name)]
SD1 = [name for name in UI_WORKFLOWS if needs_checkpoint(name)]


def nodes_and_inputs(prompt):
    """An API-format prompt without the frontend's extras (`_meta` titles)."""
    return {key: {"class_type": node["class_type"], "inputs": node["inputs"]} for key, node in prompt.items()}


def lowered(api):
    """The API twin after LOWERED, as the canvas edit makes it: each named widget value at most its limit."""
    def lower(name, value):
        return min(value, LOWERED[name]) if name in LOWERED and not isinstance(value, list) else value

    return {key: {"class_type": node["class_type"], "inputs": {k: lower(k, v) for k, v in node["inputs"].items()}}
            for key, node in api.items()}


@pytest.fixture(scope="module")
def known_nodes(comfy_server):
    return set(comfy_server.get("/object_info"))


@pytest.fixture(scope="module")
def page(comfy_server, pack_nodes):
    """One page of ComfyUI's frontend in headless Chromium, templates dialog closed, shared by the module.

    (pack_nodes is made first: it runs asyncio, which cannot start inside playwright's running event loop.)
    """
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed: run `make setup`")
    from diffusion_blocks.devtools import browser

    executable, why_not = browser.chromium()
    if executable is None:
        pytest.skip(why_not)
    with tempfile.TemporaryDirectory() as profile, sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=str(executable), args=browser.ARGS, headless=True, viewport=VIEWPORT)
        try:
            page = context.new_page()
            page.goto(comfy_server.url)
            page.wait_for_function("window.app && window.app.graph", timeout=120_000)
            close_templates_dialog(page)
            yield page
        finally:
            context.close()


def close_templates_dialog(page):
    """Close the templates browser that greets a new user with its close button (its X, top right)."""
    dialog = page.get_by_role("dialog")
    dialog.first.wait_for(timeout=30_000)
    dialog.first.locator("button:has(i.pi-times), button:has(i[class*='lucide--x'])").first.click()
    dialog.first.wait_for(state="detached", timeout=10_000)


def open_workflow(page, name):
    """The frontend's Open Workflow command (what Ctrl+O and the menu's Open run), the file chosen in its chooser."""
    path = WORKFLOWS / f"{name}.json"
    with page.expect_file_chooser(timeout=10_000) as chooser:
        page.evaluate("window.app.extensionManager.command.execute('Comfy.OpenWorkflow')")
    chooser.value.set_files(str(path))
    count = len(json.loads(path.read_text())["nodes"])
    page.wait_for_function(f"window.app.graph.nodes.length === {count}", timeout=30_000)
    unknown = page.evaluate("window.app.graph.nodes.filter(n => !window.LiteGraph.registered_node_types[n.type])"
                            ".map(n => n.type)")
    assert not unknown, f"the frontend does not know {unknown}"


def lower_widgets(page):
    """LOWERED on the canvas: each named widget set to its limit where it is above, as a user would type it."""
    page.evaluate("""limits => { for (const node of window.app.graph.nodes) {
        for (const widget of node.widgets ?? []) {
            if (widget.name in limits && widget.value > limits[widget.name]) {
                widget.value = limits[widget.name];
                widget.callback?.(widget.value, window.app.canvas, node);
            }
        }
    } window.app.graph.setDirtyCanvas(true, true); }""", LOWERED)


def press_run(page):
    """Click the action bar's Run button; returns the prompt the frontend posted and the id the server gave it."""
    # The button itself carries the frontend's test id (1.49) or is the Run half of the split button that does (1.32).
    run = page.locator("button[data-testid='queue-button'], [data-testid='queue-button'] > button[aria-label='Run']")
    with page.expect_response(lambda r: r.url.endswith("/prompt") and r.request.method == "POST") as answer:
        run.click()
    response = answer.value
    assert response.ok, f"the server refused the frontend's prompt: {response.text()}"
    return response.request.post_data_json["prompt"], response.json()["prompt_id"]


def wait_for_history(server, prompt_id):
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        entry = server.get(f"/history/{prompt_id}").get(prompt_id)
        if entry and entry.get("status", {}).get("completed") is not None:
            assert entry["status"]["status_str"] == "success", entry["status"]["messages"]
            return entry
        time.sleep(0.25)
    raise TimeoutError(f"prompt {prompt_id} did not finish within {RUN_TIMEOUT} s")


def run_from_the_frontend(page, server, name, expected):
    """Run; the posted prompt is `expected`, and its pictures are in /history and reached the frontend."""
    prompt, prompt_id = press_run(page)
    assert nodes_and_inputs(prompt) == expected
    history = wait_for_history(server, prompt_id)
    savers = sorted(key for key, node in expected.items() if node["class_type"] == "SaveImage")
    assert sorted(key for key, output in history["outputs"].items() if output.get("images")) == savers
    assert all(path.stat().st_size > 0 for path in server.output_images(history))
    page.wait_for_function("ids => ids.every(id => window.app.nodeOutputs?.[id]?.images?.length)", arg=savers,
                           timeout=30_000)


def test_text_to_image_as_shipped_from_the_frontend_and_its_canvas(page, comfy_server, pack_nodes):
    open_workflow(page, AS_SHIPPED)
    run_from_the_frontend(page, comfy_server, AS_SHIPPED, nodes_and_inputs(load_api(AS_SHIPPED)))
    steps = next(i for i in pack_nodes["DB_KarrasSchedule"].GET_SCHEMA().inputs if i.id == "steps")
    hover_widget(page, "DB_KarrasSchedule", "steps")
    tooltip = page.get_by_text(steps.tooltip, exact=True)
    tooltip.wait_for(state="visible", timeout=10_000)
    page.mouse.move(5, VIEWPORT["height"] - 5)
    tooltip.wait_for(state="hidden", timeout=10_000)
    tidy_for_screenshot(page)
    picture = page.screenshot(type="png")
    assert len(picture) < SCREENSHOT_LIMIT
    if os.environ.get("DIFFUSION_BLOCKS_UPDATE_DOCS") == "1":
        SCREENSHOT.write_bytes(picture)


@pytest.mark.parametrize("name", RUN_HERE)
def test_example_workflow_queued_from_the_frontend_brings_its_pictures_back(page, comfy_server, known_nodes, name):
    missing = {node["class_type"] for node in load_api(name).values()} - known_nodes
    if missing:  # text_to_image_distributed: test_distributed.py runs it (test_example_workflows.py checks the list)
        pytest.skip(f"{name} needs {sorted(missing)} from another extension, which this test server does not have")
    open_workflow(page, name)
    lower_widgets(page)
    run_from_the_frontend(page, comfy_server, name, lowered(load_api(name)))


@pytest.mark.parametrize("name", SD1)
def test_sd1_workflow_opened_in_the_frontend_makes_its_api_twin(page, name):
    open_workflow(page, name)
    prompt = page.evaluate("async () => (await window.app.graphToPrompt()).output")
    assert nodes_and_inputs(prompt) == nodes_and_inputs(load_api(name))


def test_pack_nodes_reach_the_frontend_with_display_names_and_tooltips(page, pack_nodes):
    shown = page.evaluate(f"""ids => Object.fromEntries(ids.map(id => {{
        const definition = {NODE_DEFS}.nodeDefsByName[id];
        return [id, definition && {{
            display_name: definition.display_name, description: definition.description,
            title: window.LiteGraph.registered_node_types[id]?.title,
            tooltips: Object.fromEntries(Object.values(definition.inputs).map(i => [i.name, i.tooltip ?? null]))}}];
    }}))""", sorted(pack_nodes))
    assert len(shown) >= 44
    for node_id, cls in pack_nodes.items():
        schema = cls.GET_SCHEMA()
        assert shown[node_id], f"the frontend has no definition of {node_id}"
        assert shown[node_id]["display_name"] == shown[node_id]["title"] == schema.display_name != node_id
        assert shown[node_id]["description"] == schema.description
        assert shown[node_id]["tooltips"] == {i.id: i.tooltip for i in schema.inputs}, node_id
        assert all(shown[node_id]["tooltips"].values()), f"{node_id} has an input without a tooltip"


def hover_widget(page, node_type, widget_name):
    """Move the mouse over a widget of the first node of a type (graph coordinates -> canvas -> page)."""
    x, y = page.evaluate("""([type, name]) => {
        const node = window.app.graph.nodes.find(n => n.type === type);
        const widget = node.widgets.find(w => w.name === name);
        const [x, y] = window.app.canvas.ds.convertOffsetToCanvas(
            [node.pos[0] + node.size[0] / 2, node.pos[1] + (widget.last_y ?? widget.y) + 10]);
        const box = window.app.canvas.canvas.getBoundingClientRect();
        return [box.left + x, box.top + y];
    }""", [node_type, widget_name])
    page.mouse.move(x - 20, y)
    page.mouse.move(x, y, steps=4)


def tidy_for_screenshot(page):
    """SCREENSHOT_SETTINGS, the announcement banner closed where there is one, the whole graph in view."""
    page.evaluate(f"""async settings => {{ for (const [id, value] of Object.entries(settings))
        await {STORES}.get('setting').set(id, value); }}""", SCREENSHOT_SETTINGS)
    banner = page.locator("div:has(> button:has-text('Try it out')) ~ button:has(i[class*='lucide--x'])")
    if banner.count():
        banner.first.click()
    page.evaluate("window.app.extensionManager.command.execute('Comfy.Canvas.FitView')")
    page.wait_for_timeout(500)
