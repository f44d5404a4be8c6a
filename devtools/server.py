"""A real ComfyUI server with this pack loaded: start, run API-format workflows, read outputs, stop.

Shared by the end-to-end tests, `make demo`, `make comfyui`, scripts/ and benchmarks/. The server
gets its own base directory (models, custom_nodes, input, output, user), with the pack linked
into its custom_nodes/, so nothing in ComfyUI's own folder is touched.
"""
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

from .paths import PACK_NAME, PACK_ROOT, comfyui_path

MODEL_FOLDERS = ("checkpoints", "diffusion_models", "text_encoders", "embeddings", "vae", "loras", "controlnet")


# OpenMP threads wait for the next parallel region spinning briefly (about 20 k polls, microseconds), then
# asleep: long spinning (the default) slowed each U-Net step several-fold when processes share two cores,
# sleeping at once (PASSIVE alone) cost the shapes model a third of its speed in wake-ups between operators.
OPENMP_WAITING = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "20000"}
# ComfyUI 0.33 colours every log line ("\x1b[32m[INFO]\x1b[0m ..."), even into a file; 0.3.75 writes plain text.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


class WorkflowError(RuntimeError):
    """ComfyUI refused a workflow or failed while running it; the message is ComfyUI's."""


class WorkflowInterrupted(RuntimeError):
    """The workflow was stopped (POST /interrupt, the Stop button) before it finished."""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_base_directory(base):
    """A ComfyUI base directory with the pack linked into custom_nodes/ and empty model folders."""
    base = Path(base)
    for folder in ("custom_nodes", "input", "output", "user", "temp", *[f"models/{m}" for m in MODEL_FOLDERS]):
        (base / folder).mkdir(parents=True, exist_ok=True)
    link = base / "custom_nodes" / PACK_NAME
    if not link.exists():
        link.symlink_to(PACK_ROOT, target_is_directory=True)
    return base


class ComfyServer:
    """One ComfyUI server process on a free loopback port."""

    def __init__(self, base_directory, port=None, python=sys.executable, extra_args=()):
        self.base = prepare_base_directory(base_directory)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.python = python
        self.extra_args = list(extra_args)
        self.client_id = uuid.uuid4().hex
        self.log_path = self.base / "server.log"
        self.process = None
        self.startup_log = ""  # what the server printed until it answered: loading, import times

    @property
    def output_dir(self):
        return self.base / "output"

    def command(self, headless=True):
        cmd = [self.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
               "--base-directory", str(self.base), "--database-url", "sqlite:///:memory:",
               "--disable-api-nodes", *self.extra_args]
        if headless:
            cmd += ["--disable-auto-launch", "--dont-print-server"]
        return cmd

    def start(self, timeout=180):
        log = open(self.log_path, "w")
        env = {**os.environ, **{k: os.environ.get(k, v) for k, v in OPENMP_WAITING.items()}}
        self.process = subprocess.Popen(self.command(), cwd=comfyui_path(), stdout=log, env=env,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited during start-up:\n{self.log()}")
            try:
                self.get("/system_stats")
                self.startup_log = self.log()
                return self
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"ComfyUI did not answer within {timeout} s:\n{self.log()}")

    def __enter__(self):
        return self.start()

    def __exit__(self, kind, error, traceback):
        """Stop the server; when the block failed, first show what the server said."""
        if error is not None and not isinstance(error, KeyboardInterrupt):
            print(self.log(), file=sys.stderr)
        self.stop()

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self):
        """What the server printed so far, as plain text (colour codes removed, level tags kept)."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return ANSI_ESCAPE.sub("", text)

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())

    def post(self, path, payload):
        request = urllib.request.Request(self.url + path, data=json.dumps(payload).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                body = response.read()
        except urllib.error.HTTPError as error:
            raise WorkflowError(error.read().decode(errors="replace")) from None
        return json.loads(body) if body else None

    def queue(self, workflow):
        """POST /prompt; returns the prompt id. Raises WorkflowError when validation fails."""
        return self.post("/prompt", {"prompt": workflow, "client_id": self.client_id})["prompt_id"]

    def run(self, workflow, timeout=600, on_message=None):
        """Run an API-format workflow to completion; returns its /history entry."""
        import websocket  # websocket-client

        ws = websocket.create_connection(f"ws://127.0.0.1:{self.port}/ws?clientId={self.client_id}",
                                         timeout=timeout)
        try:
            prompt_id = self.queue(workflow)
            error = interrupted = None
            while True:
                frame = ws.recv()
                if not isinstance(frame, str):
                    continue  # binary preview images
                message = json.loads(frame)
                data = message.get("data", {})
                if data.get("prompt_id") not in (None, prompt_id):
                    continue
                if on_message:
                    on_message(message)
                if message["type"] == "execution_error":
                    error = data
                if message["type"] == "execution_interrupted":
                    interrupted = data
                if message["type"] == "executing" and data.get("node") is None and data.get("prompt_id") == prompt_id:
                    break
                if message["type"] in ("execution_error", "execution_interrupted"):
                    break
        finally:
            ws.close()
        history = self.get(f"/history/{prompt_id}").get(prompt_id, {})
        if error:
            raise WorkflowError(f"{error.get('node_type')}: {error.get('exception_message')}")
        if interrupted:
            raise WorkflowInterrupted(f"interrupted at node {interrupted.get('node_id')} ({interrupted.get('node_type')})")
        return history

    def interrupt(self):
        """What the Stop button does: POST /interrupt."""
        self.post("/interrupt", {})

    def output_images(self, history):
        """Paths of the images a finished prompt wrote, in node then batch order."""
        return self.output_files(history, "images")

    def output_files(self, history, kind):
        """Paths of the files of one kind ("images", "latents", ...) that a finished prompt saved."""
        paths = []
        for node_output in history.get("outputs", {}).values():
            for item in node_output.get(kind, []):
                if item.get("type") == "output":
                    paths.append(self.output_dir / item.get("subfolder", "") / item["filename"])
        return paths
