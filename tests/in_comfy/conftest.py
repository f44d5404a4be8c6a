"""Node-tier fixtures: the pack's nodes loaded in a ComfyUI imported in this process."""
import pytest


@pytest.fixture(scope="session")
def native_model(comfy):
    """Build a real ComfyUI ModelPatcher around a module that carries the given model_sampling."""
    import torch
    import comfy.model_patcher

    def make(model_sampling):
        module = torch.nn.Module()
        module.model_sampling = model_sampling
        return comfy.model_patcher.ModelPatcher(module, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))

    return make


@pytest.fixture(scope="session")
def sd1_sampling(comfy):
    """ComfyUI's own SD1.x model sampling (discrete, eps, scaled-linear betas)."""
    from diffusion_blocks.devtools.comfy_host import sd1_model_sampling

    return sd1_model_sampling()


@pytest.fixture(scope="session")
def flow_sampling(comfy):
    """ComfyUI's own rectified-flow model sampling with shift 3 (SD3's)."""
    import comfy.model_sampling as ms

    class FlowConfig:
        sampling_settings = {"shift": 3.0, "multiplier": 1000}

    class FlowSampling(ms.ModelSamplingDiscreteFlow, ms.CONST):
        pass

    return FlowSampling(FlowConfig())


@pytest.fixture(scope="module")
def kd(comfy):
    """ComfyUI's k-diffusion sampling module: the reference samplers."""
    import comfy.k_diffusion.sampling as sampling

    return sampling


@pytest.fixture(scope="module")
def sigmas(kd):
    """The parity tests' schedule: Karras, 10 steps from 14.6 to 0.03, then 0."""
    return kd.get_sigmas_karras(10, 0.03, 14.6)  # float32, ends in 0
