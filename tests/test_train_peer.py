"""Tests of `benchmarks/train_peer.py` (diffusers' own `UNet2DModel` trained by our loop) and of `MNISTDDPMPipeline`
driving that UNet: the peer of the quality-per-CPU-minute comparison is sampled and evaluated exactly like ours."""

import json
import sys
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DModel

from mnist_diffusion import MNISTDDPMPipeline, MNISTDDPMScheduler
from mnist_diffusion.pipeline_mnist_ddpm_checks import null_class_label, num_class_labels

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import train_peer  # noqa: E402
from peer import PEER_UNET_CONFIG  # noqa: E402


def tiny_unet2d(**overrides) -> UNet2DModel:
    config = dict(sample_size=28, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                  down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                  norm_num_groups=4, num_class_embeds=11)
    torch.manual_seed(0)
    return UNet2DModel(**{**config, **overrides}).eval()


def test_the_pipeline_takes_diffusers_unet2d_with_its_last_class_embedding_as_the_null_label():
    unet = tiny_unet2d()
    assert num_class_labels(unet) == 10 and null_class_label(unet) == 10
    pipe = MNISTDDPMPipeline(unet=unet, scheduler=MNISTDDPMScheduler())
    pipe.set_progress_bar_config(disable=True)
    images = pipe([0, 9], num_inference_steps=3, guidance_scale=2.0, output_type="np").images
    assert images.shape == (2, 28, 28, 1)
    # Guidance is ε(x, null) + w (ε(x, y) − ε(x, null)), with 10 as the null label.
    x, t, y = torch.randn(2, 1, 28, 28), torch.tensor(500), torch.tensor([0, 9])
    with torch.no_grad():
        cond, uncond = unet(x, t, y).sample, unet(x, t, torch.tensor([10, 10])).sample
        guided = pipe.predict_noise(x, t, y, 2.0, torch.float32)
    torch.testing.assert_close(guided, uncond + 2.0 * (cond - uncond), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"values in 0–9.*10"):
        pipe([10], num_inference_steps=2)


def test_a_unet_without_class_labels_is_refused_by_name():
    pipe = MNISTDDPMPipeline(unet=tiny_unet2d(num_class_embeds=None), scheduler=MNISTDDPMScheduler())
    with pytest.raises(ValueError, match="class-conditional UNet.*UNet2DModel has neither"):
        pipe([1], num_inference_steps=2)


def test_peer_run_writes_a_folder_that_loads_with_diffusers_unet2d(tmp_path, synthetic_mnist):
    out = tmp_path / "peer"
    train_peer.main(["--data_dir", str(synthetic_mnist), "--output_dir", str(out), "--logger", "none",
                     "--train_batch_size", "16", "--max_train_steps", "2", "--checkpointing_steps", "2"])
    record = json.loads((out / "training_config.json").read_text())
    assert record["command"].startswith("benchmarks/train_peer.py ") and record["global_step"] == 2
    assert json.loads((out / "model_index.json").read_text())["unet"] == ["diffusers", "UNet2DModel"]
    pipe = MNISTDDPMPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.unet, UNet2DModel)
    assert {key: pipe.unet.config[key] for key in PEER_UNET_CONFIG} == {
        key: list(value) if isinstance(value, tuple) else value for key, value in PEER_UNET_CONFIG.items()}
    assert pipe([5], num_inference_steps=2, guidance_scale=1.5, output_type="np").images.shape == (1, 28, 28, 1)


def test_peer_architecture_options_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        train_peer.main(["--data_dir", str(tmp_path), "--output_dir", str(tmp_path / "run"),
                         "--block_out_channels", "64", "64", "64", "--layers_per_block", "2"])
    err = capsys.readouterr().err
    assert "train_peer.py: error: --block_out_channels, --layers_per_block cannot be changed" in err
