import pytest
import torch

from mnist_diffusion import ClassConditionedUNet

from .conftest import TINY_UNET
from .versions import DTYPE_ARGUMENT


def inputs(batch=3):
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, 1, 28, 28, generator=generator), torch.arange(batch) % 11


@pytest.mark.parametrize("timestep", [17, 17.0, torch.tensor(17), torch.tensor([17]), torch.tensor([17, 17, 17])])
def test_output_shape_and_timestep_forms(tiny_unet, timestep):
    sample, labels = inputs()
    out = tiny_unet(sample, timestep, labels)
    assert out.sample.shape == sample.shape
    torch.testing.assert_close(out.sample, tiny_unet(sample, torch.tensor([17, 17, 17]), labels).sample)
    assert tiny_unet(sample, timestep, labels, return_dict=False)[0].shape == sample.shape


def test_conditioning_changes_the_prediction(tiny_unet):
    sample, _ = inputs(2)
    same = torch.tensor([3, 3])
    base = tiny_unet(sample, 500, same).sample
    assert not torch.allclose(base, tiny_unet(sample, 500, torch.tensor([3, 10])).sample)
    assert not torch.allclose(base, tiny_unet(sample, 20, same).sample)
    # Per-sample conditioning: changing one label leaves the other image's prediction untouched.
    torch.testing.assert_close(base[0], tiny_unet(sample, 500, torch.tensor([3, 7])).sample[0])


def test_architecture_follows_config():
    unet = ClassConditionedUNet(**TINY_UNET)
    assert unet.class_embedding.num_embeddings == 11 and unet.null_class_label == 10
    assert [len(stage.blocks) for stage in unet.down_stages] == [1, 1, 1]
    assert [len(stage.blocks) for stage in unet.up_stages] == [2, 2, 2]
    assert unet.mid_blocks[0].attention is not None
    with_attention = [b.attention is not None for s in unet.down_stages for b in s.blocks]
    assert with_attention == [False, False, True]  # attention_resolutions=(7,): only the 7×7 level
    wider = ClassConditionedUNet(**{**TINY_UNET, "layers_per_block": 2, "attention_resolutions": (14, 7)})
    assert sum(p.numel() for p in wider.parameters()) > sum(p.numel() for p in unet.parameters())
    assert [b.attention is not None for s in wider.down_stages for b in s.blocks] == [False, False, True, True, True, True]


@pytest.mark.parametrize(
    "shape,match", [((2, 28, 28), "must have shape"), ((2, 3, 28, 28), "must have shape"), ((2, 1, 27, 27), "divisible by 4")]
)
def test_wrong_sample_shape_is_a_clear_error(tiny_unet, shape, match):
    with pytest.raises(ValueError, match=match):
        tiny_unet(torch.zeros(shape), 1, torch.zeros(shape[0], dtype=torch.long))


@pytest.mark.parametrize(
    "labels,match",
    [
        (torch.tensor([0.0, 1.0]), "integer tensor"),
        (torch.tensor([[0, 1]]), "1-d integer tensor"),
        (torch.tensor([0, 1, 2]), "one label per sample"),
    ],
)
def test_bad_labels_are_a_clear_error(tiny_unet, labels, match):
    with pytest.raises(ValueError, match=match):
        tiny_unet(torch.zeros(2, 1, 28, 28), 1, labels)


def test_save_load_round_trip_is_exact(tiny_unet, tmp_path):
    tiny_unet.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    loaded = ClassConditionedUNet.from_pretrained(tmp_path).eval()
    sample, labels = inputs()
    assert torch.equal(loaded(sample, 100, labels).sample, tiny_unet(sample, 100, labels).sample)


def test_bf16_autocast_and_channels_last_agree_with_fp32(tiny_unet):
    sample, labels = inputs()
    reference = tiny_unet(sample, 300, labels).sample
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low_precision = tiny_unet(sample, 300, labels).sample
    assert low_precision.dtype == torch.bfloat16
    assert (low_precision.float() - reference).abs().max() < 0.05 * reference.abs().max()
    channels_last = tiny_unet.to(memory_format=torch.channels_last)
    out = channels_last(sample.to(memory_format=torch.channels_last), 300, labels).sample
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-4)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_unet):
    sample, labels = inputs()
    tiny_unet.train()

    def gradients():
        tiny_unet.zero_grad()
        tiny_unet(sample, torch.tensor([1, 500, 999]), labels).sample.square().mean().backward()
        return [p.grad.clone() for p in tiny_unet.parameters()]

    plain = gradients()
    tiny_unet.enable_gradient_checkpointing()
    assert tiny_unet.is_gradient_checkpointing
    checkpointed = gradients()
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_torch_compile_matches_eager(tiny_unet):
    sample, labels = inputs()
    compiled = torch.compile(tiny_unet)
    torch.testing.assert_close(compiled(sample, 250, labels).sample, tiny_unet(sample, 250, labels).sample, atol=1e-4, rtol=1e-4)


def test_the_forward_pass_never_reads_a_tensor_back_to_the_host(tiny_unet, monkeypatch):
    # On a GPU, turning a tensor into a Python value makes the host wait for the device: at every denoising step and
    # every training batch. Label values are checked where they enter (pipeline, data set), not here.
    sample, labels = inputs()

    def host_read(self, *args, **kwargs):
        raise AssertionError("the forward pass read a tensor's value on the host")

    for name in ("__bool__", "item", "tolist", "__int__", "__float__", "__index__"):
        monkeypatch.setattr(torch.Tensor, name, host_read)
    with torch.no_grad():
        prediction = tiny_unet(sample, torch.tensor([1, 500, 999]), labels).sample
    monkeypatch.undo()
    assert prediction.shape == sample.shape


@pytest.mark.parametrize("offload_type", ["block_level", "leaf_level"])
@pytest.mark.parametrize("to_disk", [False, True], ids=["memory", "disk"])
def test_group_offloading_gives_the_same_prediction(tiny_unet, tmp_path, offload_type, to_disk):
    sample, labels = inputs()
    with torch.no_grad():
        reference = tiny_unet(sample, 300, labels).sample
    offloaded = ClassConditionedUNet.from_config(tiny_unet.config).eval()
    offloaded.load_state_dict(tiny_unet.state_dict())
    offloaded.enable_group_offload(onload_device=torch.device("cpu"), offload_device=torch.device("cpu"),
                                   offload_type=offload_type, num_blocks_per_group=1,
                                   offload_to_disk_path=str(tmp_path) if to_disk else None)
    with torch.no_grad():
        for _ in range(2):  # the second pass onloads what the first offloaded
            torch.testing.assert_close(offloaded(sample, 300, labels).sample, reference, atol=0, rtol=0)


# What diffusers expects of a model (in the spirit of its ModelTesterMixin) ------------------------------------------


@pytest.mark.parametrize("load_kwargs, dtype", [
    ({}, torch.float32),
    ({DTYPE_ARGUMENT: torch.bfloat16}, torch.bfloat16),
    ({"device_map": "cpu"}, torch.float32),
    ({"low_cpu_mem_usage": False}, torch.float32),
])
def test_from_pretrained_takes_diffusers_model_arguments(tiny_unet, tmp_path, load_kwargs, dtype):
    tiny_unet.save_pretrained(tmp_path)
    loaded = ClassConditionedUNet.from_pretrained(tmp_path, **load_kwargs)
    assert loaded.dtype == dtype and not loaded.training
    sample, labels = inputs()
    with torch.no_grad():
        expected = tiny_unet(sample, 100, labels).sample
        prediction = loaded(sample.to(dtype), 100, labels).sample.float()
    torch.testing.assert_close(prediction, expected, atol=0.05 if dtype == torch.bfloat16 else 0, rtol=0)


def test_variants_and_pickle_weights_round_trip(tiny_unet, tmp_path):
    tiny_unet.save_pretrained(tmp_path / "variant", variant="fp16")
    tiny_unet.save_pretrained(tmp_path / "pickled", safe_serialization=False)
    assert (tmp_path / "variant" / "diffusion_pytorch_model.fp16.safetensors").is_file()
    assert (tmp_path / "pickled" / "diffusion_pytorch_model.bin").is_file()
    for loaded in (ClassConditionedUNet.from_pretrained(tmp_path / "variant", variant="fp16"),
                   ClassConditionedUNet.from_pretrained(tmp_path / "pickled", use_safetensors=False)):
        for name, weight in tiny_unet.state_dict().items():
            assert torch.equal(loaded.state_dict()[name], weight), name
    with pytest.raises(EnvironmentError, match="fp16"):
        ClassConditionedUNet.from_pretrained(tmp_path / "pickled", variant="fp16")


def test_a_batch_predicts_what_each_sample_predicts_alone(tiny_unet):
    sample, labels = inputs()
    timesteps = torch.tensor([1, 500, 999])
    with torch.no_grad():
        batched = tiny_unet(sample, timesteps, labels).sample
        alone = torch.cat([tiny_unet(sample[i : i + 1], timesteps[i : i + 1], labels[i : i + 1]).sample
                           for i in range(len(sample))])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-5)


def test_compiles_as_one_graph_that_the_denoising_steps_never_recompile(tiny_unet):
    sample, labels = inputs()
    torch.compiler.reset()
    compiled = torch.compile(tiny_unet, fullgraph=True, backend="eager")  # fullgraph: a graph break is an error
    with torch.no_grad(), torch._dynamo.config.patch(error_on_recompile=True):
        for t in (999, 500, 1):  # a new timestep each step, as in the pipeline's loop
            compiled(sample, torch.tensor(t), labels)
