"""`scripts/export_checkpoint.py`: a train.py checkpoint's UNet (its EMA weights at that step) as a model folder."""

import json

import pytest
import torch
from safetensors.torch import load_file

from mnist_diffusion import ClassConditionedUNet
from mnist_diffusion.lab.training.ddpm import parse_args, train
from mnist_diffusion.lab.training.export import checkpoint_unet, export_checkpoint, main

from .test_training import tiny_args


@pytest.fixture(scope="module")
def run(tmp_path_factory, synthetic_mnist):
    out = tmp_path_factory.mktemp("export") / "run"
    train(parse_args(tiny_args(synthetic_mnist, out, "--max_train_steps", "4", "--checkpointing_steps", "2",
                               "--ema_max_decay", "0.9")))
    return out


def test_the_last_checkpoint_exports_the_weights_the_run_saved(run, tmp_path):
    record = export_checkpoint(run / "checkpoints" / "checkpoint-4", tmp_path / "step-4")
    assert record["weights"] == "ema" and record["global_step"] == 4 and record["images_seen"] == 64
    saved = load_file(run / "unet" / "diffusion_pytorch_model.safetensors")  # the run's EMA weights at its end
    exported = load_file(tmp_path / "step-4" / "diffusion_pytorch_model.safetensors")
    assert saved.keys() == exported.keys()
    for name in saved:
        torch.testing.assert_close(exported[name], saved[name], atol=0, rtol=0, msg=name)
    unet = ClassConditionedUNet.from_pretrained(tmp_path / "step-4")
    assert unet.config.block_out_channels == [8, 16, 16]
    assert json.loads((tmp_path / "step-4" / "export_record.json").read_text())["exported_from"].endswith("checkpoint-4")


def test_an_earlier_checkpoint_gives_the_earlier_weights(run):
    early, state = checkpoint_unet(run / "checkpoints" / "checkpoint-2")
    late, _ = checkpoint_unet(run / "checkpoints" / "checkpoint-4")
    assert state["global_step"] == 2 and not early.training
    assert any(not torch.equal(a, b) for a, b in zip(early.state_dict().values(), late.state_dict().values()))


def test_a_folder_that_is_not_a_checkpoint_is_a_usage_error_naming_it(run, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--checkpoint", str(run / "unet"), "--output_dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert f"--checkpoint {run / 'unet'}: training_state.json" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
