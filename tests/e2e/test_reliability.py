"""The reliability suite (issue 11): nothing silent, nothing unbounded, in a real ComfyUI server.

Bad inputs are generated from the node schemas the live server reports (/object_info): every numeric input of every
DB_ node at NaN, +inf, -inf, below its minimum and above its maximum; every combo with an unknown value; every linked
input given plain values or the wrong wire; every file loader given each malformed .safetensors file; hostile prompt
text; and the limits of issue 11 (latent memory, grid size, the adaptive sampler's calls, settings that make NaN).
Each case is its node's small good host workflow (the text_to_image example at 2 steps) with one input changed; all
are queued at once and judged from the HTTP answer (ComfyUI's own validation answers 400 with node_errors) or the
websocket. A case passes with a CLEAR error: the server answers, the message names the input, shows no server path and
no Python-internal error type (for prompt text the fragment at fault, a prompt weight or an embedding:name, also
names it). Where refusing would be wrong (legal but hostile prompt text) a picture that is not black is the sensible
documented result. Success where an error was due, or with a black picture (NaN shows black), is SILENT.

Then: the good prompt gives the same PNG bytes as before the bad inputs, POST /interrupt ends a long run within 1 s
(the next run byte-identical), 30 queued prompts all finish with the server's RSS growing under 5 %, and a second
server process gives the same PNG bytes (tests/e2e/test_text_to_image.py compares the generate script's process on the
default sampler; here the example and a stochastic sampler). One summary line is printed; the full table goes to
benchmarks/results/reliability.md (a generated report).
"""
import copy
import json
import math
import re
import struct
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffusion_blocks.devtools.paths import PACK_ROOT, comfyui_path

pytestmark = pytest.mark.e2e

EXAMPLE = PACK_ROOT / "example_workflows" / "api" / "text_to_image.json"
BUNDLED = PACK_ROOT / "models" / "diffusion_blocks_shapes.safetensors"
REPORT = PACK_ROOT / "benchmarks" / "results" / "reliability.md"
GOOD_STEPS, HOST_STEPS = 4, 2
TARGET, IMAGE_SOURCE, PLOT, PREVIEW = "100", "90", "101", "102"  # node ids the hosts add to the example
PRODUCERS = {"DB_UNET": "1", "DB_TEXT_ENCODER": "2", "CONDITIONING": "3", "LATENT": "5", "MODEL": "6", "SIGMAS": "7",
             "SAMPLER": "8", "IMAGE": IMAGE_SOURCE}  # a good output of each wire type in the host
CHEAP = {"steps": HOST_STEPS, "step": 1, "calls": 2, "cell_size": 32, "eta": 0.0, "rtol": 0.5, "atol": 0.1,
         "samplers": "euler", "schedules": "karras", "seeds": 1, "grid_size": 4,
         "teacher_substeps": 1}  # widget values that keep a host quick
LEFT_OPEN = {("DB_FitSchedule", "model")}  # it takes the pack's unet or a native model, not both: the host gives unet
KNOWN_HOST_FAILURES = {"DB_EncodeTextSDXL": "needs an SDXL text encoder; the suite has only the bundled one"}
HOST_SIZE = 32  # the hosts' pictures: 32x32 pixels, a quarter of the example's work per model call
WIDGETS = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")
INTERNAL = ("KeyError", "AttributeError", "TypeError", "IndexError", "OverflowError", "RuntimeError",
            "JSONDecodeError", "ZeroDivisionError", "UnboundLocalError", "NameError", "AssertionError", "Traceback",
            "DefaultCPUAllocator", "can't allocate", "Unable to allocate")
ABSOLUTE_PATH = re.compile(r"(?<![\w.~])/(?:[\w.@+-]+/)+[\w.@+-]*")
HOSTILE_TEXT = {
    "weight 1e30": "(red circle:1e30) on a white background",
    "weight -1e30": "(red circle:-1e30) on a white background",
    "weight nan": "(red circle:nan) on a white background",
    "weight inf": "(red circle:inf) on a white background",
    "unbalanced (((": "((((((a red circle on a white background",
    "unbalanced )))": "a red circle)))))) on a white background:1.5)",
    "100k characters": ("a red circle left of a blue square " * 2900)[:100_000],
    "control characters": "a red \x00\x07\x1b[31m circle\u202e on a \r\n white\x7f background",
    "embedding:../../etc/passwd": "embedding:../../etc/passwd a red circle",
    "embedding:/etc/passwd": "embedding:/etc/passwd a red circle",
    "embedding:<deep ../>": "embedding:" + "../" * 30 + "etc/shadow",
}
TEXT_INPUTS = {("DB_EncodeText", "text"), ("DB_EncodeTextSDXL", "text"), ("DB_ShowTokens", "text")}
STRING_CASES = {  # other text inputs: values that must be refused (the generic ones below may also be accepted)
    ("DB_SigmasFromText", "text"): {"nan": "14.6, nan, 0", "1e400": "1e400, 1, 0", "words": "fourteen, one, zero"},
    ("DB_CompareAtEqualCost", "samplers"): {"unknown sampler": "euler, no_such_sampler"},
    ("DB_CompareAtEqualCost", "schedules"): {"unknown schedule": "karras, no_such_schedule"},
}
GENERIC_STRINGS = {"control characters": "a\x00b\x1b[31m\u202ec", "100k characters": "x, " * 33_334}


# ---- malformed model files -----------------------------------------------------------------------------------------

def safetensors_bytes(header, data=b"", length=None):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def malformed_files():
    """name -> bytes of each malformed file the loaders must refuse clearly (and one with NaN weights)."""
    import torch
    from safetensors.torch import load_file, save

    bundled = BUNDLED.read_bytes()
    (size,) = struct.unpack("<Q", bundled[:8])
    header = json.loads(bundled[8:8 + size])
    bad_metadata = {**header, "__metadata__": {k: "{not json" for k in header.get("__metadata__", {})}}
    bad_metadata_raw = json.dumps(bad_metadata).encode()
    tensors = load_file(str(BUNDLED))
    nan = {k: torch.full_like(v, math.nan) if v.is_floating_point() else v for k, v in tensors.items()}
    w = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
    eight = struct.pack("<2f", 1.0, 2.0)
    return {
        "truncated": bundled[:len(bundled) // 2],
        "header_not_an_object": safetensors_bytes(b"[1, 2, 3]", eight),
        "missing_data_offsets": safetensors_bytes({"w": {"dtype": "F32", "shape": [2]}}, eight),
        "offsets_out_of_range": safetensors_bytes({"w": {**w, "data_offsets": [8, 4]}}, eight),
        "lying_shape": safetensors_bytes({"w": {**w, "shape": [1000, 1000]}}, eight),
        "unknown_dtype": safetensors_bytes({"w": {**w, "dtype": "F42"}}, eight),
        "metadata_not_json": struct.pack("<Q", len(bad_metadata_raw)) + bad_metadata_raw + bundled[8 + size:],
        "header_larger_than_file": safetensors_bytes({"w": w}, eight, length=10**9),
        "nan_weights": save(nan, metadata=header.get("__metadata__")),
    }


# ---- talking to the server ----------------------------------------------------------------------------------------

class Session:
    """POST /prompt without waiting, and a websocket reader that notes how each queued prompt ended."""

    def __init__(self, server):
        import websocket  # websocket-client

        self.server, self.client_id = server, uuid.uuid4().hex
        self.ws = websocket.create_connection(f"ws://127.0.0.1:{server.port}/ws?clientId={self.client_id}",
                                              timeout=600)
        self.ended, self.errors, self.interrupted, self.progress = {}, {}, {}, {}
        self.changed = threading.Condition()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        while True:
            try:
                frame = self.ws.recv()
            except Exception:
                return
            if not isinstance(frame, str):
                continue  # binary preview images
            if not frame:
                return  # closed
            message = json.loads(frame)
            kind, data = message.get("type"), message.get("data") or {}
            prompt_id = data.get("prompt_id")
            with self.changed:
                if kind == "execution_error":
                    self.errors[prompt_id] = data
                elif kind == "execution_interrupted":
                    self.interrupted[prompt_id] = data
                elif kind == "progress":
                    self.progress.setdefault(prompt_id, []).append((data.get("node"), data["value"], data["max"]))
                if (kind in ("execution_error", "execution_interrupted", "execution_success")
                        or kind == "executing" and data.get("node") is None and prompt_id):
                    self.ended.setdefault(prompt_id, time.monotonic())
                self.changed.notify_all()

    def post(self, path, payload):
        """(HTTP status or None when the server did not answer, the decoded body)."""
        request = urllib.request.Request(self.server.url + path, data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                body = response.read()
                return response.status, json.loads(body) if body else None
        except urllib.error.HTTPError as error:
            body = error.read().decode(errors="replace")
            try:
                return error.code, json.loads(body)
            except ValueError:
                return error.code, body
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            return None, str(error)

    def submit(self, workflow):
        return self.post("/prompt", {"prompt": workflow, "client_id": self.client_id})

    def queue(self, workflow):
        status, body = self.submit(workflow)
        assert status == 200 and not body.get("node_errors"), body
        return body["prompt_id"]

    def wait(self, prompt_ids, timeout):
        """Wait until every prompt has ended; returns those that did not within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                left = [p for p in prompt_ids if p not in self.ended]
                if not left or time.monotonic() > deadline:
                    return left
                self.changed.wait(timeout=1)

    def images(self, prompt_id):
        """The pictures a finished prompt showed or saved, as (H, W, 3) uint8 arrays, and the bytes of each PNG."""
        deadline = time.monotonic() + 30  # ComfyUI files the history just after it reports the end
        while not (history := self.server.get(f"/history/{prompt_id}").get(prompt_id)) and time.monotonic() < deadline:
            time.sleep(0.05)
        found = []
        for output in (history or {}).get("outputs", {}).values():
            for item in output.get("images", []):
                query = urllib.parse.urlencode({k: item.get(k, "") for k in ("filename", "subfolder", "type")})
                with urllib.request.urlopen(f"{self.server.url}/view?{query}", timeout=60) as response:
                    data = response.read()
                found.append((np.asarray(Image.open(BytesIO(data)).convert("RGB")), data))
        return found

    def run(self, workflow, timeout=300):
        prompt_id = self.queue(workflow)
        assert not self.wait([prompt_id], timeout), f"prompt did not finish within {timeout} s"
        assert prompt_id not in self.errors, self.errors.get(prompt_id, {}).get("exception_message")
        return prompt_id

    def close(self):
        self.ws.close()


def rss_kib(pid):
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))


# ---- workflows -----------------------------------------------------------------------------------------------------

def good_workflow(steps=GOOD_STEPS, seed=0, sampler="dpmpp_2m"):
    """The text_to_image example (SaveImage, enlarged 4x) at a few steps."""
    workflow = {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in
                json.loads(EXAMPLE.read_text()).items()}
    workflow["7"]["inputs"]["steps"] = steps
    workflow["9"]["inputs"]["seed"] = seed
    workflow["8"]["inputs"]["sampler"] = sampler
    workflow["12"]["inputs"]["filename_prefix"] = "reliability"
    return workflow


def base_host():
    """The example at 2 steps and 32x32, previewed, with an IMAGE source (the empty latent as a picture)."""
    workflow = good_workflow(steps=HOST_STEPS)
    workflow["5"]["inputs"].update(width=HOST_SIZE, height=HOST_SIZE)
    del workflow["11"]
    workflow["12"] = {"class_type": "PreviewImage", "inputs": {"images": ["10", 0]}}
    workflow[IMAGE_SOURCE] = {"class_type": "DB_LatentToImage", "inputs": {"latent": ["5", 0]}}
    return workflow


def schema_inputs(schema):
    """(name, kind, options, optional) of every input of a node schema from /object_info."""
    for section in ("required", "optional"):
        for name, spec in schema["input"].get(section, {}).items():
            kind = spec[0]
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if isinstance(kind, list):
                kind, options = "COMBO", {**options, "options": kind}
            yield name, kind, options, section == "optional"


def widget_value(name, kind, options):
    low, high = options.get("min", -math.inf), options.get("max", math.inf)
    cheap = CHEAP.get(name)
    if isinstance(cheap, str) and kind == "STRING" or isinstance(cheap, (int, float)) and low <= cheap <= high:
        return cheap
    if kind == "COMBO":
        return options.get("default", (options.get("options") or [""])[0])
    if kind == "STRING" and not options.get("default"):
        return "a red circle on a white background"
    return options.get("default", 0 if kind in ("INT", "FLOAT") else "")


def producer(kind):
    """The host's node giving a good output for an input of this kind ("A,B": a socket of several types, the first
    the host has), None for none."""
    return next((PRODUCERS[one] for one in kind.split(",") if one in PRODUCERS), None)


def host_for(node, schema):
    """A small good workflow holding `node` (the example's own, or one added and wired to an output): (workflow, id)."""
    workflow = base_host()
    present = sorted((k for k, v in workflow.items() if v["class_type"] == node), key=int)
    if present:
        return workflow, present[0]
    inputs = {}
    for name, kind, options, _ in schema_inputs(schema):
        if kind in WIDGETS:
            inputs[name] = widget_value(name, kind, options)
        elif producer(kind) and (node, name) not in LEFT_OPEN:
            inputs[name] = [producer(kind), 0]
    workflow[TARGET] = {"class_type": node, "inputs": inputs}
    first = schema["output"][0]
    into_sample = {"SAMPLER": "sampler", "CONDITIONING": "positive", "LATENT": "latent"}
    if first in into_sample:
        workflow["9"]["inputs"][into_sample[first]] = [TARGET, 0]
        return workflow, TARGET
    del workflow["12"]  # the node's own output only: ComfyUI's validation then refuses the whole prompt
    if first == "SIGMAS":
        workflow[PLOT] = {"class_type": "DB_PlotSigmas", "inputs": {"sigmas_1": [TARGET, 0], "labels": "",
                                                                   "log_scale": True, "width": 256, "height": 256}}
        workflow[PREVIEW] = {"class_type": "PreviewImage", "inputs": {"images": [PLOT, 0]}}
    elif first == "IMAGE":
        workflow[PREVIEW] = {"class_type": "PreviewImage", "inputs": {"images": [TARGET, 0]}}
    else:
        return None, None
    return workflow, TARGET


@dataclass
class Case:
    node: str
    input: str
    label: str
    workflow: dict
    target: str
    expect: str = "error"  # "error": only a clear error passes; "either": a sensible picture also does
    names: tuple = ()  # words of which the message must contain one (default: the input's name)
    value: object = None  # the bad value itself (not counted as a path the server shows)

    @property
    def hints(self):
        return self.names or (self.input,)


def with_input(workflow, node_id, name, value):
    workflow = copy.deepcopy(workflow)
    workflow[node_id]["inputs"][name] = value
    return workflow


def wrong_wire(kind):
    other = next(k for k in ("SIGMAS", "SAMPLER") if k != kind)
    return [PRODUCERS[other], 0]


def generated_cases(object_info, files):
    """Every bad input the schemas call for, each on its node's host; and the hosts as controls."""
    controls, cases = [], []
    for node, schema in sorted(object_info.items()):
        if not node.startswith("DB_"):
            continue
        host, target = host_for(node, schema)
        if host is None:
            continue
        controls.append(Case(node, "(none)", "control: the good host", host, target, expect="success"))

        def add(name, label, value, **extra):
            if node in KNOWN_HOST_FAILURES and not refused_by_comfyui(label, schema_kind(schema, name)):
                return  # its host fails anyway: only what ComfyUI's own validation refuses can be judged
            cases.append(Case(node, name, label, with_input(host, target, name, value), target, value=value, **extra))

        for name, kind, options, _ in schema_inputs(schema):
            if kind in ("INT", "FLOAT"):
                add(name, "NaN", math.nan)
                add(name, "+inf", math.inf)
                add(name, "-inf", -math.inf)
                if "min" in options:
                    add(name, f"below min {options['min']}", options["min"] - 1)
                if "max" in options:
                    add(name, f"above max {options['max']}", options["max"] + 1)
            elif kind == "COMBO":
                add(name, "unknown option", "no_such_option")
            elif kind == "STRING" and (node, name) in TEXT_INPUTS:
                for label, text in HOSTILE_TEXT.items():  # the fragment at fault may name it: (word:w), embedding:x
                    fragment = "prompt weight" if label.startswith("weight") else label.partition(":")[0]
                    add(name, label, text, expect="either", names=(name, fragment))
            elif kind == "STRING":
                for label, text in STRING_CASES.get((node, name), {}).items():
                    add(name, label, text)
                for label, text in GENERIC_STRINGS.items():
                    add(name, label, text, expect="either")
            elif kind not in WIDGETS:
                add(name, "plain text where a link belongs", "foo")
                if kind == "LATENT":
                    add(name, "plain dict where a link belongs", {"samples": "foo"})
                else:
                    add(name, "plain number where a link belongs", 1.5)
                add(name, f"wrong wire ({'SAMPLER' if kind == 'SIGMAS' else 'SIGMAS'})", wrong_wire(kind))
        # metadata that is not JSON matters only to the U-Net loader, which reads its diffusion_blocks.* entries
        if node == "DB_LoadUNet":
            for kind in files:
                add("unet_name", f"file {kind}", f"diffusion_models/bad_{kind}.safetensors",
                    names=("unet_name", f"bad_{kind}"))
        if node == "DB_LoadTextEncoder":
            for kind in files:
                either = "either" if kind == "metadata_not_json" else "error"
                add("file", f"file {kind}", f"text_encoders/bad_{kind}.safetensors", names=("file", f"bad_{kind}"),
                    expect=either)
                add("second_file", f"file {kind}", f"text_encoders/bad_{kind}.safetensors",
                    names=("second_file", f"bad_{kind}"), expect=either)
        if node == "DB_EncodeText":
            for kind in files:
                add("text", f"embedding {kind}", f"embedding:bad_{kind} a red circle", names=("text", f"bad_{kind}"),
                    expect="either" if kind == "metadata_not_json" else "error")
    return controls, cases + issue_cases()


def schema_kind(schema, name):
    return next(kind for input_name, kind, _, _ in schema_inputs(schema) if input_name == name)


def refused_by_comfyui(label, kind):
    """Whether ComfyUI 0.3.75's own validation refuses this case (so the node never runs)."""
    numeric = kind == "INT" or kind == "FLOAT" and label != "NaN"
    out_of_range = label.split(" ")[0] in ("NaN", "+inf", "-inf", "below", "above")
    return numeric and out_of_range or label.startswith("wrong wire")


def issue_cases():
    """The cases issue 11 names that no schema limit catches (values inside every input's range)."""
    cases = []
    host = base_host()
    first_zero = copy.deepcopy(host)
    first_zero[TARGET] = {"class_type": "DB_SetFirstSigma", "inputs": {"sigmas": ["7", 0], "sigma": 0.0}}
    first_zero["9"]["inputs"]["sigmas"] = [TARGET, 0]
    cases.append(Case("DB_SetFirstSigma", "sigma", "0 feeding Sample", first_zero, TARGET, names=("sigma",), value=0.0))

    vp = copy.deepcopy(host)
    del vp["12"]
    vp[TARGET] = {"class_type": "DB_VPSchedule", "inputs": {"steps": 4, "denoise": 1.0, "beta_d": 5000.0,
                                                            "beta_min": 0.1, "eps_s": 0.001}}
    vp[PLOT] = {"class_type": "DB_PlotSigmas", "inputs": {"sigmas_1": [TARGET, 0], "labels": "", "log_scale": True,
                                                          "width": 256, "height": 256}}
    vp[PREVIEW] = {"class_type": "PreviewImage", "inputs": {"images": [PLOT, 0]}}
    cases.append(Case("DB_VPSchedule", "beta_d", "5000 (sigmas overflow) into Plot Sigmas", vp, TARGET, value=5000.0))

    adaptive = copy.deepcopy(host)
    adaptive["7"]["inputs"]["steps"] = 4
    adaptive[TARGET] = {"class_type": "DB_AdaptiveSampler", "inputs": {"rtol": 1e-4, "atol": 1e-4, "eta": 0.0,
                                                                       "s_noise": 1.0, "max_calls": 24}}
    adaptive["9"]["inputs"]["sampler"] = [TARGET, 0]
    cases.append(Case("DB_AdaptiveSampler", "max_calls", "rtol = atol = 1e-4 on 4 steps, max_calls 24", adaptive,
                      TARGET, names=("max_calls",), value=24))

    large = with_input(with_input(host, "5", "width", 8192), "5", "height", 8192)
    cases.append(Case("DB_Sample", "latent", "8192x8192 from Empty Latent (64x64 model)", large, "9", value=8192))
    huge = with_input(with_input(with_input(host, "5", "width", 16384), "5", "height", 16384), "5", "batch_size", 4096)
    cases.append(Case("DB_EmptyLatent", "width", "16384x16384 x 4096 (13 TB)", huge, "5",
                      names=("width", "height", "batch_size"), value=16384))

    grid = copy.deepcopy(host)
    del grid["12"]
    grid["7"]["inputs"]["steps"] = 20
    grid[TARGET] = {"class_type": "DB_DenoisingTrajectory", "inputs": {
        "unet": ["1", 0], "sampler": ["8", 0], "sigmas": ["7", 0], "latent": ["5", 0], "seed": 0, "cfg": 5.0,
        "positive": ["3", 0], "negative": ["4", 0], "steps_shown": 1000, "noisy_view": "x / sqrt(1 + sigma^2)",
        "cell_size": 2048}}
    grid[PREVIEW] = {"class_type": "PreviewImage", "inputs": {"images": [TARGET, 0]}}
    cases.append(Case("DB_DenoisingTrajectory", "cell_size", "steps_shown 1000, cell_size 2048 on 20 steps", grid,
                      TARGET, names=("cell_size", "steps_shown"), value=2048))
    return cases


# ---- judging -------------------------------------------------------------------------------------------------------

def server_paths(server):
    return sorted({str(p) for p in (server.base, Path(server.base).resolve(), comfyui_path(), PACK_ROOT, Path.home())},
                  key=len, reverse=True)


def unclear(case, message, exception_type, paths):
    """Why an error is not clear (None when it is)."""
    if not any(re.search(rf"(?<![\w]){re.escape(h)}(?![\w])", message) for h in case.hints):
        return f"does not name {' or '.join(case.hints)}"
    shown = message
    for own in (ABSOLUTE_PATH.findall(case.value) + [case.value]) if isinstance(case.value, str) else ():
        shown = shown.replace(own, "")  # the sender's own text echoed back is not the server's
    leaked = [p for p in paths if p in shown] or ABSOLUTE_PATH.findall(shown)
    if leaked:
        return f"shows a server path ({leaked[0]})"
    internal = [t for t in INTERNAL if t in message or t in (exception_type or "")]
    if internal or "/" in (exception_type or "") or "custom_nodes" in (exception_type or ""):
        return f"a Python-internal error ({(internal or [exception_type])[0]})"
    return None


def validation_message(case, body):
    """ComfyUI's validation answer for the case's node, and whether one of its errors is about the input."""
    if not isinstance(body, dict):
        return str(body), False
    errors = (body.get("node_errors") or {}).get(case.target, {}).get("errors", [])
    if not errors:
        error = body.get("error") or {}
        return f"{error.get('message', body)}: {error.get('details', '')}", False
    about = any((e.get("extra_info") or {}).get("input_name") in case.hints for e in errors)
    return "; ".join(f"{e.get('message')}: {e.get('details')}" for e in errors), about


def judge(session, case, status, body, prompt_id, paths):
    """(outcome, message) of one case."""
    if status is None or status >= 500:
        return "crash", f"HTTP {status}: {str(body)[:300]}"
    if status != 200 or (isinstance(body, dict) and body.get("node_errors")):
        message, about = validation_message(case, body)
        why = None if about and not ABSOLUTE_PATH.findall(message) else unclear(case, message, None, paths)
        return ("clear error", message) if why is None else ("unclear error", f"{why}: {message}")
    if prompt_id not in session.ended:
        return "unbounded", "still running at the deadline"
    if prompt_id in session.errors:
        error = session.errors[prompt_id]
        message = f"{error.get('node_type')}: {error.get('exception_message', '').strip()}"
        why = unclear(case, message, error.get("exception_type"), paths)
        return ("clear error", message) if why is None else ("unclear error", f"{why} [{error.get('exception_type')}]: "
                                                                             f"{message}")
    if prompt_id in session.interrupted:
        return "unclear error", "interrupted"
    blank = [i for i, (pixels, _) in enumerate(session.images(prompt_id)) if pixels.max() == 0]  # NaN shows black
    if case.expect == "success":
        return ("ok", "ran") if not blank else ("silent", "a black picture")
    if case.expect == "either" and not blank:
        return "sensible result", "accepted: a picture that is not blank"
    return "silent", "accepted without an error" + (": a black picture" if blank else "")


def run_cases(session, cases, timeout):
    """Queue every case without waiting, then judge each: [(case, outcome, message)]."""
    answers = [(case, *session.submit(case.workflow)) for case in cases]
    queued = [body["prompt_id"] for _, status, body in answers if status == 200 and isinstance(body, dict)]
    late = session.wait(queued, timeout)
    if late:
        session.post("/queue", {"clear": True})
        session.post("/interrupt", {})
        session.wait(late, 60)
    paths = server_paths(session.server)
    results = []
    for case, status, body in answers:
        prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
        results.append((case, *judge(session, case, status, body, prompt_id, paths)))
    return results


def shorten(value, limit=60):
    text = repr(value) if not isinstance(value, str) else value
    text = text.encode("unicode_escape").decode()
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


def write_report(summary, results, checks):
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    cell = lambda text: str(text).replace("|", "\\|").replace("\n", " ")[:400]  # noqa: E731
    lines = ["# Reliability: bad inputs through a real ComfyUI server", "",
             "Generated by `tests/e2e/test_reliability.py` (issue 11); not committed.", "", f"`{summary}`", ""]
    lines += [f"- {name}: {outcome}" for name, outcome in checks.items()]
    lines += ["", "| node | input | value | outcome | message |", "|---|---|---|---|---|"]
    lines += [f"| {case.node} | {case.input} | {cell(case.label)} | {outcome} | {cell(message)} |"
              for case, outcome, message in results]
    REPORT.write_text("\n".join(lines) + "\n")


# ---- fixtures ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def second_server(tmp_path_factory):
    """A second server process, started in the background while the first one takes the bad inputs."""
    from diffusion_blocks.devtools.server import ComfyServer

    server = ComfyServer(tmp_path_factory.mktemp("second_server"))
    failure = []
    starting = threading.Thread(target=lambda: _start(server, failure), daemon=True)
    starting.start()
    yield server, starting, failure
    starting.join(timeout=200)
    server.stop()


def _start(server, failure):
    try:
        server.start()
    except Exception as error:  # reported by the test that uses it
        failure.append(error)


@pytest.fixture(scope="module")
def session(comfy_server):
    opened = Session(comfy_server)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def report():
    """What the module found, written to benchmarks/results/reliability.md at its end."""
    found = {"summary": "reliability: not run", "results": [], "checks": {}}
    yield found
    if found["results"]:  # a run of the whole suite, not of a few of its tests
        write_report(found["summary"], found["results"], found["checks"])


@pytest.fixture(scope="module")
def good_png(session, second_server):
    """The good prompt's PNG bytes before anything bad was sent."""
    (_, data), = session.images(session.run(good_workflow()))
    return data


@pytest.fixture(scope="module")
def bad_files(comfy_server):
    """The malformed files, in the server's diffusion_models, text_encoders and embeddings folders."""
    written = []
    for kind, data in malformed_files().items():
        for folder in ("diffusion_models", "text_encoders", "embeddings"):
            path = Path(comfy_server.base) / "models" / folder / f"bad_{kind}.safetensors"
            path.write_bytes(data)
            written.append(path)
    yield sorted({p.stem.removeprefix("bad_") for p in written})
    for path in written:
        path.unlink(missing_ok=True)


# ---- the tests -----------------------------------------------------------------------------------------------------

def test_bad_inputs_get_clear_errors(comfy_server, session, good_png, bad_files, report, capsys):
    controls, cases = generated_cases(session.server.get("/object_info"), bad_files)
    assert len(cases) >= 150
    started = time.monotonic()
    results = run_cases(session, controls + cases, timeout=300)
    report["results"] = results
    counted = results[len(controls):]
    tally = {outcome: sum(1 for _, o, _ in counted if o == outcome) for outcome in
             ("clear error", "sensible result", "unclear error", "crash", "unbounded", "silent")}
    alive = comfy_server.process.poll() is None
    crashes = tally["crash"] + (0 if alive else 1)
    report["summary"] = (f"reliability: {len(counted)} bad inputs, {tally['clear error']} clear errors, {crashes} "
                         f"crashes, {tally['silent']} silent ({tally['sensible result']} sensible documented results, "
                         f"{tally['unclear error']} unclear errors, {tally['unbounded']} unbounded; "
                         f"{time.monotonic() - started:.0f} s)")
    failed_controls = [f"{c.node}: {m}" for c, o, m in results[:len(controls)] if o != "ok"
                       and c.node not in KNOWN_HOST_FAILURES]
    report["checks"]["hosts (good workflows) that failed"] = "; ".join(failed_controls) or "none"
    with capsys.disabled():
        print(f"\n{report['summary']}")
    assert alive, "the server died"
    bad = [f"{c.node}.{c.input} = {shorten(c.label)}: {o}: {m}" for c, o, m in counted
           if o not in ("clear error", "sensible result")]
    assert not bad, f"{len(bad)} of {len(counted)} bad inputs without a clear error:\n" + "\n".join(bad)


def test_the_good_prompt_is_unchanged_after_the_bad_ones(session, good_png, report):
    (_, data), = session.images(session.run(good_workflow()))
    report["checks"]["good prompt after the bad inputs"] = "same PNG bytes" if data == good_png else "DIFFERENT bytes"
    assert data == good_png


def test_interrupt_ends_a_long_run_within_a_second(session, good_png, report):
    long_run = base_host()
    long_run["7"]["inputs"]["steps"] = 1000
    prompt_id = session.queue(long_run)
    deadline = time.monotonic() + 120
    with session.changed:
        while len(session.progress.get(prompt_id, [])) < 2 and prompt_id not in session.ended:
            assert time.monotonic() < deadline, "the long run never reported progress"
            session.changed.wait(timeout=1)
    asked = time.monotonic()
    session.post("/interrupt", {})
    assert not session.wait([prompt_id], 30)
    took = session.ended[prompt_id] - asked
    report["checks"]["POST /interrupt during a 1000-step run"] = f"ended after {took:.2f} s"
    assert prompt_id in session.interrupted and took < 1.0
    (_, data), = session.images(session.run(good_workflow()))
    assert data == good_png, "the run after an interrupt gives the same PNG"


def test_adaptive_sampler_progress_bar_moves(session, report):
    """dpm_adaptive reports progress in the schedule's steps, so ComfyUI's bar moves instead of sitting at 4/4."""
    workflow = base_host()
    workflow["7"]["inputs"]["steps"] = 4
    workflow[TARGET] = {"class_type": "DB_AdaptiveSampler", "inputs": {"rtol": 0.5, "atol": 0.1, "eta": 0.0,
                                                                       "s_noise": 1.0, "max_calls": 500}}
    workflow["9"]["inputs"]["sampler"] = [TARGET, 0]
    prompt_id = session.run(workflow)
    bar = [(value, total) for node, value, total in session.progress.get(prompt_id, []) if node == "9"]
    report["checks"]["dpm_adaptive's progress bar on 4 steps"] = " ".join(f"{v}/{t}" for v, t in bar)
    values = [value for value, _ in bar]
    assert {total for _, total in bar} == {4} and values == sorted(values) and values[-1] == 4
    assert len(set(values)) >= 3, "the bar moves through the steps"


def test_thirty_queued_prompts_none_lost_no_memory_growth(comfy_server, session, good_png, report):
    def seeded(seed):
        workflow = base_host()
        workflow["9"]["inputs"]["seed"] = seed
        return workflow

    for seed in (1000, 1001, 1002):  # warm: the memory a run of this kind settles at
        session.run(seeded(seed))
    before = rss_kib(comfy_server.process.pid)
    ids = [session.queue(seeded(2000 + k)) for k in range(30)]
    assert not session.wait(ids, 240), "queued prompts did not all finish"
    after = rss_kib(comfy_server.process.pid)
    finished = [p for p in ids if p not in session.errors and len(session.images(p)) == 1]
    growth = (after - before) / before
    report["checks"]["30 queued prompts"] = (f"{len(finished)} of 30 finished with their picture; server RSS "
                                             f"{before / 1024:.0f} -> {after / 1024:.0f} MiB ({growth:+.1%})")
    assert len(finished) == 30
    assert growth < 0.05


def test_same_seed_same_png_in_a_second_server_process(session, second_server, good_png, report):
    server, starting, failure = second_server
    starting.join(timeout=200)
    assert not failure and server.process is not None, failure
    other = Session(server)
    try:
        (_, theirs), = other.images(other.run(good_workflow()))
        (_, stochastic_here), = session.images(session.run(good_workflow(sampler="euler_ancestral", seed=11)))
        (_, stochastic_there), = other.images(other.run(good_workflow(sampler="euler_ancestral", seed=11)))
    finally:
        other.close()
    same = theirs == good_png and stochastic_here == stochastic_there
    report["checks"]["a second server process, same seeds"] = "same PNG bytes" if same else "DIFFERENT bytes"
    assert theirs == good_png and stochastic_here == stochastic_there
