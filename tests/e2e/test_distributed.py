"""Scale-out on ComfyUI-Distributed 1.4.4: a master and one worker ComfyUI run text_to_image_distributed together.

Both are real servers on the CPU (one OpenMP thread each: two processes share the cores), each with the pack and
its own copy of the extension (it reads gpu_config.json from its own folder; the master's lists the worker).
The workflow is queued through the extension's `POST /distributed/queue`; the worker must really run its part
(its /history), the master must collect both pictures, and each must equal, pixel for pixel, a single-server run
with its seed (worker k uses seed + k). The archive is in ../shared/hosts/ (not part of the pack); without it
the test is skipped.
"""
import concurrent.futures
import copy
import json
import os
import shutil
import tarfile

import numpy as np
import pytest
from PIL import Image

from diffusion_blocks.devtools.paths import CACHE, PACK_ROOT
from diffusion_blocks.devtools.server import ComfyServer

pytestmark = pytest.mark.e2e
ARCHIVE = PACK_ROOT.parent / "shared" / "hosts" / "comfyui-distributed-1.4.4.tar.gz"
UNPACKED = CACHE / "comfyui-distributed-1.4.4"
EXTENSION = "ComfyUI-Distributed"  # the archive's top folder, and the folder name in custom_nodes/
WORKFLOWS = PACK_ROOT / "example_workflows"
SEED, STEPS = 5, 4
SETTINGS = {"websocket_orchestration": True, "auto_launch_workers": False}


def unpacked_extension():
    """The extension's folder in .cache/, unpacked from the archive the first time."""
    if not (UNPACKED / EXTENSION / "__init__.py").exists():
        partial = UNPACKED.with_name(f"{UNPACKED.name}.partial-{os.getpid()}")  # test runs in parallel each their own
        shutil.rmtree(partial, ignore_errors=True)
        with tarfile.open(ARCHIVE) as archive:
            archive.extractall(partial, filter="data")
        try:
            partial.rename(UNPACKED)
        except OSError:  # another run got there first
            shutil.rmtree(partial)
    return UNPACKED / EXTENSION


def install_extension(base, workers):
    """Copy the extension into a server's custom_nodes/ with a gpu_config.json listing `workers`."""
    folder = base / "custom_nodes" / EXTENSION
    shutil.copytree(unpacked_extension(), folder, ignore=shutil.ignore_patterns("tests", "docs", "workflows"))
    config = {"master": {"host": ""}, "workers": workers, "settings": SETTINGS}
    (folder / "gpu_config.json").write_text(json.dumps(config, indent=1))


class DistributedMaster(ComfyServer):
    """The master: a workflow with distributed nodes goes through the extension, which sends each worker its part
    and queues the master's; any other goes to /prompt, a single-server run."""

    worker_ids = ()

    def queue(self, workflow):
        if not any(node["class_type"] == "DistributedCollector" for node in workflow.values()):
            return super().queue(workflow)
        answer = self.post("/distributed/queue", {"prompt": workflow, "client_id": self.client_id,
                                                  "enabled_worker_ids": list(self.worker_ids), "delegate_master": False})
        assert answer["worker_count"] == len(self.worker_ids) and not answer["node_errors"], answer
        return answer["prompt_id"]


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """(master, worker), started together, each with one OpenMP thread."""
    if not ARCHIVE.exists():
        pytest.skip(f"ComfyUI-Distributed is not here ({ARCHIVE}): the scale-out test needs that archive")
    worker = ComfyServer(tmp_path_factory.mktemp("distributed_worker"))
    master = DistributedMaster(tmp_path_factory.mktemp("distributed_master"))
    master.worker_ids = ["w1"]
    install_extension(worker.base, [])
    install_extension(master.base, [{"id": "w1", "host": "127.0.0.1", "port": worker.port, "enabled": True,
                                     "type": "remote", "cuda_device": 0, "extra_args": ""}])
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        try:
            with pytest.MonkeyPatch.context() as env:
                env.setenv("OMP_NUM_THREADS", "1")  # read by each server when it starts
                for started in [pool.submit(server.start) for server in (worker, master)]:
                    started.result()
            yield master, worker
        finally:  # the extension's own SIGTERM handler makes the exit code 1: harmless
            for stopped in [pool.submit(server.stop) for server in (master, worker)]:
                stopped.result()


def load(path):
    return json.loads(path.read_text())


def quick(workflow, seed):
    """The workflow with fewer steps and `seed` on whichever node holds it."""
    workflow = copy.deepcopy(workflow)
    for node in workflow.values():
        if node["class_type"] == "DB_KarrasSchedule":
            node["inputs"]["steps"] = STEPS
        if node["class_type"] == "DistributedSeed" or (node["class_type"] == "DB_Sample"
                                                        and not isinstance(node["inputs"]["seed"], list)):
            node["inputs"]["seed"] = seed
    return workflow


def pixels(path):
    return np.asarray(Image.open(path).convert("RGB"))


def test_ui_workflow_is_the_api_twin(servers):
    from diffusion_blocks.devtools.workflow_format import ui_to_api

    master, _ = servers
    twin = load(WORKFLOWS / "api" / "text_to_image_distributed.json")
    queued = ui_to_api(load(WORKFLOWS / "text_to_image_distributed.json"), master.get("/object_info"))
    assert queued == {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in twin.items()}


def distributed(plain):
    """text_to_image with DistributedSeed feeding DB_Sample's seed and DistributedCollector before SaveImage."""
    graph = {k: {"class_type": v["class_type"], "inputs": dict(v["inputs"])} for k, v in plain.items()}
    seed, collector = (str(max(map(int, graph)) + n) for n in (1, 2))
    sample, = [v["inputs"] for v in graph.values() if v["class_type"] == "DB_Sample"]
    save, = [v["inputs"] for v in graph.values() if v["class_type"] == "SaveImage"]
    graph[seed] = {"class_type": "DistributedSeed", "inputs": {"seed": sample["seed"]}}
    graph[collector] = {"class_type": "DistributedCollector", "inputs": {"images": save["images"], "load_balance": False}}
    sample["seed"], save["images"], save["filename_prefix"] = [seed, 0], [collector, 0], "text_to_image_distributed"
    return graph


def test_it_is_text_to_image_with_the_distributed_seed_and_collector():
    plain, shipped = (load(WORKFLOWS / "api" / f"{name}.json") for name in ("text_to_image", "text_to_image_distributed"))
    assert {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in shipped.items()} == distributed(plain)


def test_master_and_worker_each_make_the_picture_of_their_seed(servers):
    master, worker = servers
    history = master.run(quick(load(WORKFLOWS / "api" / "text_to_image_distributed.json"), SEED), timeout=300)
    collected = master.output_images(history)
    assert len(collected) == 2, f"the master saved {len(collected)} pictures, expected its own and the worker's"

    worker_runs = [entry for entry in worker.get("/history").values()
                   if any(node["class_type"] == "DistributedSeed" and node["inputs"].get("is_worker")
                          for node in entry["prompt"][2].values())]
    assert len(worker_runs) == 1 and worker_runs[0]["status"]["completed"], "the worker did not run its part"

    plain = load(WORKFLOWS / "api" / "text_to_image.json")
    expected = [pixels(master.output_images(master.run(quick(plain, SEED + k)))[0]) for k in range(2)]
    assert np.abs(expected[0].astype(int) - expected[1].astype(int)).max() > 50, "two seeds, two pictures"
    for k, (path, wanted) in enumerate(zip(collected, expected)):
        assert np.array_equal(pixels(path), wanted), f"picture {k} is not the single-server picture of seed {SEED + k}"

    # As README.md says: the worker's picture, saved by the master, records the master's prompt (its seed), not SEED + 1.
    recorded = json.loads(Image.open(collected[1]).info["prompt"])
    assert [node["inputs"]["seed"] for node in recorded.values() if node["class_type"] == "DistributedSeed"] == [SEED]
