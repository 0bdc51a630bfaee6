"""
The Hub round trip of `mnist_diffusion/lab/hub.py`, against the test Hub server of `tests/hub_server.py` on 127.0.0.1.

Each client runs in its own Python process, started with its Hub settings in the environment (HF_ENDPOINT, HF_HOME,
HF_HUB_CACHE, HF_HUB_OFFLINE), as a user's process would be. Monkeypatching this process would not do: huggingface_hub
reads those variables once, at import, into `huggingface_hub.constants`, and the `huggingface_hub.model_info` that
diffusers imports is bound to an `HfApi` made at import time, with the endpoint of that moment. A process of its own
also keeps the remote-code modules that diffusers imports out of this one, and can run without mnist_diffusion.
Starting one costs seconds (torch and diffusers), so there is one per kind of user, each doing several steps and
printing what it saw as JSON; the tests check those results and the server's state.
"""

import argparse
import inspect
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import LCMScheduler

from mnist_diffusion import ClassConditionedUNet, MNISTDDPMPipeline, MNISTDDPMScheduler
from mnist_diffusion.lab.card import render_model_card
from mnist_diffusion.lab.hub import card_images, check_hub_arguments, hub_model_index, push_pipeline_to_hub, source_file

from .conftest import TINY_UNET
from .hub_server import HubServer

# Shaped like a real user access token, so that the push's own check would catch it in a pushed file.
TOKEN = "hf_" + "TestTokenForTheLoopbackHub0123"
CARD_WITH_IMAGE = "---\nlibrary_name: diffusers\n---\n# mnist-ddpm\n\n![Samples](images/grid.png)\n"


def sample(pipe) -> np.ndarray:
    """The reference call of these tests: a 7, in five steps, from seed 0."""
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    return pipe(labels=[7], generator=generator, num_inference_steps=5, output_type="np").images


CLIENT_PRELUDE = f"""
import json, sys
from pathlib import Path
import numpy as np
import torch

{inspect.getsource(sample)}

def error_of(call):
    try:
        call()
    except Exception as error:
        return [type(error).__name__, str(error)]

args, result = json.loads(sys.argv[1]), {{}}
"""


def run_client(code: str, env: dict, cwd, **args) -> dict:
    """Run `code` in a new Python process with the environment `env`; return the `result` dict it filled."""
    program = CLIENT_PRELUDE + textwrap.dedent(code) + "\nprint(json.dumps(result, default=lambda a: a.tolist()))\n"
    process = subprocess.run(
        [sys.executable, "-c", program, json.dumps(args, default=str)],
        env=env, cwd=cwd, capture_output=True, text=True, timeout=300,
    )
    if process.returncode:
        pytest.fail(f"The client process failed:\n{process.stderr[-4000:]}")
    return json.loads(process.stdout.splitlines()[-1])


def client_env(hub: HubServer, home, **variables) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and "proxy" not in k.lower()}
    env.update(
        HF_ENDPOINT=hub.url,
        HF_HOME=str(home),
        HF_HUB_CACHE=str(home / "hub"),
        HF_HUB_DISABLE_TELEMETRY="1",
        HF_HUB_DISABLE_XET="1",  # the test server speaks the LFS upload protocol, not Xet's
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        OMP_NUM_THREADS="1",
        # A request for any other host goes to a closed local port and fails, rather than reaching the internet.
        HTTP_PROXY="http://127.0.0.1:9",
        HTTPS_PROXY="http://127.0.0.1:9",
        NO_PROXY="127.0.0.1,localhost",
    )
    env.update(variables)
    return env


def as_image(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


@pytest.fixture(scope="module")
def hub():
    server = HubServer(tokens=(TOKEN,)).start()
    yield server
    server.stop()
    assert server.failures == []


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Two tiny pipelines: `a` laid out like scripts/train.py's output folder, `b` as `save_pretrained` writes it."""
    root = tmp_path_factory.mktemp("pipelines")
    for name, seed in (("a", 0), ("b", 1)):
        torch.manual_seed(seed)
        MNISTDDPMPipeline(ClassConditionedUNet(**TINY_UNET).eval(), MNISTDDPMScheduler()).save_pretrained(root / name)
    a = root / "a"
    fp16_unet = ClassConditionedUNet.from_pretrained(a / "unet", torch_dtype=torch.float16)
    fp16_unet.save_pretrained(a / "unet", variant="fp16")
    (a / "training_config.json").write_text(json.dumps({
        "command": "scripts/train.py --max_train_steps 10", "global_step": 10, "images_seen": 1280, "train_minutes": 0.2,
        "num_processes": 1, "mixed_precision": "no",
        "args": {"train_batch_size": 128, "learning_rate": 0.001, "lr_scheduler": "cosine", "lr_warmup_steps": 5,
                 "cond_drop_prob": 0.1, "use_ema": True, "ema_max_decay": 0.9995},
    }))
    for by_product in ("checkpoints/checkpoint-10/optimizer.bin", "logs/events.out.tfevents.1", "samples/step-10.png"):
        (a / by_product).parent.mkdir(parents=True)
        (a / by_product).write_bytes(b"\0training by-product")
    (a / "images").mkdir()
    (a / "images" / "grid.png").write_bytes(b"\x89PNG\r\n\x1a\n\0grid")
    (a / "evaluation").mkdir()
    (a / "evaluation" / "inpainting.json").write_text('{"per_class": 1}\n')  # a results file the card does not read
    return {name: root / name for name in ("a", "b")}


@pytest.fixture(scope="module")
def leaky_folder(folders, tmp_path_factory):
    """Folder `a` as an older train.py left it after `--hub_token TOKEN`: the token in the recorded command."""
    leaky = tmp_path_factory.mktemp("leaky") / "a"
    shutil.copytree(folders["a"], leaky)
    config = json.loads((leaky / "training_config.json").read_text())
    config["command"] += f" --push_to_hub --hub_model_id org/leaky --hub_token {TOKEN}"
    (leaky / "training_config.json").write_text(json.dumps(config))
    return leaky


@pytest.fixture(scope="module")
def local_images(folders):
    return {name: sample(MNISTDDPMPipeline.from_pretrained(folder)) for name, folder in folders.items()}


@pytest.fixture(scope="module")
def uploads(hub, folders, leaky_folder, tmp_path_factory):
    """
    The uploader: pushes with `push_pipeline_to_hub` (and the CLI), holding a token in HF_TOKEN; last, it tries to
    push a folder that holds that token, to a new repo and to an existing one.
    """
    home = tmp_path_factory.mktemp("uploader")
    return run_client(
        """
        from huggingface_hub import HfApi
        from mnist_diffusion.lab.hub import main, push_pipeline_to_hub

        a, b = args["a"], args["b"]
        result["main"] = push_pipeline_to_hub(a, "org/mnist-ddpm").oid
        result["first"] = push_pipeline_to_hub(a, "org/mnist-ddpm-history", card_text=args["card"]).oid
        result["second"] = push_pipeline_to_hub(b, "org/mnist-ddpm-history").oid
        result["second_again"] = push_pipeline_to_hub(b, "org/mnist-ddpm-history").oid
        result["branch"] = push_pipeline_to_hub(a, "org/mnist-ddpm-history", revision="v1", card_text=args["card"]).oid
        main(["--model_dir", a, "--repo_id", "org/mnist-ddpm-private", "--private"])

        api = HfApi()
        api.create_repo("org/ddpm-cifar10")
        index = {"_class_name": "DDPMPipeline", "unet": ["diffusers", "UNet2DModel"],
                 "scheduler": ["diffusers", "DDPMScheduler"]}
        api.upload_file(path_or_fileobj=json.dumps(index).encode(), path_in_repo="model_index.json",
                        repo_id="org/ddpm-cifar10")

        import contextlib, io

        leaky = args["leaky"]
        result["leaky_new_repo"] = error_of(lambda: push_pipeline_to_hub(leaky, "org/leaky"))
        result["leaky_existing_repo"] = error_of(lambda: push_pipeline_to_hub(leaky, "org/mnist-ddpm-history"))
        with contextlib.redirect_stderr(io.StringIO()) as stderr:
            try:
                main(["--model_dir", leaky, "--repo_id", "org/leaky"])
            except SystemExit as error:
                result["leaky_cli"] = [error.code, stderr.getvalue()]
        """,
        client_env(hub, home, HF_TOKEN=TOKEN), home, card=CARD_WITH_IMAGE, leaky=leaky_folder, **folders,
    )


@pytest.fixture(scope="module")
def package_user(hub, uploads, folders, tmp_path_factory):
    """A user with mnist_diffusion installed, a fresh cache and no saved token."""
    home = tmp_path_factory.mktemp("package-user")
    result = run_client(
        """
        from huggingface_hub import scan_cache_dir
        from mnist_diffusion import MNISTDDPMPipeline
        from mnist_diffusion.lab.hub import push_pipeline_to_hub

        result["fresh"] = sample(MNISTDDPMPipeline.from_pretrained("org/mnist-ddpm"))
        cached = scan_cache_dir().repos
        result["downloaded"] = sorted(f.file_name for repo in cached for rev in repo.revisions for f in rev.files)
        bf16 = MNISTDDPMPipeline.from_pretrained("org/mnist-ddpm", torch_dtype=torch.bfloat16)
        result["bf16_dtype"], result["bf16"] = str(bf16.unet.dtype), sample(bf16)
        result["local_files_only"] = sample(MNISTDDPMPipeline.from_pretrained("org/mnist-ddpm", local_files_only=True))

        load = MNISTDDPMPipeline.from_pretrained
        history = "org/mnist-ddpm-history"
        result["history_main"] = sample(load(history))
        result["history_first"] = sample(load(history, revision=args["first"]))
        result["history_branch"] = sample(load(history, revision="v1", cache_dir=args["cache"]))
        result["variant"] = sample(load(history, revision="v1", variant="fp16", cache_dir=args["cache"]))
        result["cache_dir"] = sorted(p.name for p in Path(args["cache"]).rglob("*.safetensors"))

        result["private_without_token"] = error_of(lambda: load("org/mnist-ddpm-private"))
        result["private_with_token"] = sample(load("org/mnist-ddpm-private", token=args["token"]))

        result["missing_repo"] = error_of(lambda: load("org/no-such-repo"))
        result["missing_revision"] = error_of(lambda: load("org/mnist-ddpm", revision="no-such-branch"))
        result["other_pipeline"] = error_of(lambda: load("org/ddpm-cifar10"))
        result["push_without_token"] = error_of(lambda: push_pipeline_to_hub(args["b"], "org/never-pushed"))
        """,
        client_env(hub, home), home, first=uploads["first"], cache=home / "explicit-cache", token=TOKEN, **folders,
    )
    result["home"] = home
    return result


@pytest.fixture(scope="module")
def remote_code_user(hub, uploads, tmp_path_factory):
    """A user without mnist_diffusion, loading with `trust_remote_code=True` into a fresh cache, then a snapshot."""
    home = tmp_path_factory.mktemp("remote-code-user")
    result = run_client(
        """
        sys.modules["mnist_diffusion"] = None  # as if it were not installed: importing it now raises ImportError
        result["import_error"] = error_of(lambda: __import__("mnist_diffusion"))
        from diffusers import DiffusionPipeline

        pipe = DiffusionPipeline.from_pretrained("org/mnist-ddpm", trust_remote_code=True)
        result["classes"] = [type(pipe).__module__, type(pipe.unet).__module__, type(pipe.scheduler).__module__]
        result["image"] = sample(pipe)

        from huggingface_hub import snapshot_download

        folder = snapshot_download("org/mnist-ddpm")  # online, to load the same folder offline later
        result["python_files"] = sorted(p.name for p in Path(folder).rglob("*.py"))
        """,
        client_env(hub, home), home,
    )
    result["home"] = home
    return result


def hub_files(hub, repo_id, revision="main"):
    repo = hub.repos[repo_id]
    return repo.commits[repo.commit_of(revision)]


def test_push_uploads_the_pipeline_its_sources_and_the_card_only(hub, uploads, folders):
    files = hub_files(hub, "org/mnist-ddpm")
    assert sorted(files) == [
        ".gitattributes", "README.md", "evaluation/inpainting.json", "model_index.json", "pipeline_mnist_ddpm.py",
        "pipeline_mnist_ddpm_checks.py", "scheduler/scheduler_config.json", "scheduler/scheduling_mnist_ddpm.py", "training_config.json",
        "unet/config.json", "unet/diffusion_pytorch_model.fp16.safetensors", "unet/diffusion_pytorch_model.safetensors",
        "unet/unet_mnist.py",
    ]
    model_index = json.loads(files["model_index.json"].content)
    assert model_index["_class_name"] == ["pipeline_mnist_ddpm", "MNISTDDPMPipeline"]
    assert model_index["unet"] == ["unet_mnist", "ClassConditionedUNet"]
    assert model_index["scheduler"] == ["scheduling_mnist_ddpm", "MNISTDDPMScheduler"]
    for path, cls in [("pipeline_mnist_ddpm.py", MNISTDDPMPipeline), ("unet/unet_mnist.py", ClassConditionedUNet),
                      ("scheduler/scheduling_mnist_ddpm.py", MNISTDDPMScheduler)]:
        assert files[path].content == source_file(cls).read_bytes()
    checks = source_file(MNISTDDPMPipeline).with_name("pipeline_mnist_ddpm_checks.py")
    assert files["pipeline_mnist_ddpm_checks.py"].content == checks.read_bytes()
    # With no card given, the card of the pushed folder itself, rendered from its files.
    assert files["README.md"].content.decode() == render_model_card(folders["a"], "org/mnist-ddpm")
    assert files["unet/config.json"].content == (folders["a"] / "unet" / "config.json").read_bytes()
    # What the client sends as LFS (through the batch API) and what inline in the commit, as the Hub decides.
    assert files["unet/diffusion_pytorch_model.safetensors"].lfs and not files["model_index.json"].lfs
    assert not files["unet/unet_mnist.py"].lfs and not files["README.md"].lfs
    assert uploads["main"] == hub.repos["org/mnist-ddpm"].branches["main"]


def test_push_takes_the_images_the_card_shows_and_updates_the_repo(hub, uploads):
    first = hub_files(hub, "org/mnist-ddpm-history", uploads["first"])
    assert first["README.md"].content.decode() == CARD_WITH_IMAGE
    assert first["images/grid.png"].lfs  # binary, so LFS although .gitattributes does not name *.png
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in first
    second = hub_files(hub, "org/mnist-ddpm-history")
    assert "unet/diffusion_pytorch_model.fp16.safetensors" not in second  # stale in unet/ after pushing `b`
    weights = "unet/diffusion_pytorch_model.safetensors"
    assert second[weights].content != first[weights].content
    assert uploads["second_again"] == uploads["second"]  # nothing changed, so no new commit
    assert hub.repos["org/mnist-ddpm-history"].branches["v1"] == uploads["branch"]
    assert hub.repos["org/mnist-ddpm-private"].private


def test_round_trip_a_fresh_cache_gives_the_local_image(package_user, local_images):
    np.testing.assert_array_equal(as_image(package_user["fresh"]), local_images["a"])
    # Only what the package route needs: no Python files, no README, not the fp16 variant.
    assert package_user["downloaded"] == [
        "config.json", "diffusion_pytorch_model.safetensors", "model_index.json", "scheduler_config.json"
    ]
    np.testing.assert_array_equal(as_image(package_user["local_files_only"]), local_images["a"])


def test_torch_dtype_bfloat16_from_a_warm_cache(package_user, local_images):
    assert package_user["bf16_dtype"] == "torch.bfloat16"
    assert 0 < np.abs(as_image(package_user["bf16"]) - local_images["a"]).max() < 0.1  # the same model, rounded


def test_with_the_server_stopped_and_hf_hub_offline_it_loads_from_the_cache(hub, package_user, local_images):
    home = package_user["home"]
    with hub.stopped():
        result = run_client(
            """
            from mnist_diffusion import MNISTDDPMPipeline

            result["image"] = sample(MNISTDDPMPipeline.from_pretrained("org/mnist-ddpm"))
            result["uncached"] = error_of(lambda: MNISTDDPMPipeline.from_pretrained("org/never-downloaded"))
            """,
            client_env(hub, home, HF_HUB_OFFLINE="1"), home,
        )
    np.testing.assert_array_equal(as_image(result["image"]), local_images["a"])
    assert result["uncached"][0] == "LocalEntryNotFoundError" and "org/never-downloaded" in result["uncached"][1]


def test_without_the_package_trust_remote_code_gives_the_same_image(remote_code_user, local_images):
    assert remote_code_user["import_error"][0] == "ModuleNotFoundError"
    assert all(module.startswith("diffusers_modules.") for module in remote_code_user["classes"])
    np.testing.assert_array_equal(as_image(remote_code_user["image"]), local_images["a"])


def test_without_the_package_offline_the_documented_form_loads_from_the_cache(hub, remote_code_user, local_images):
    # Offline, `DiffusionPipeline.from_pretrained(repo_id, trust_remote_code=True)` still asks the Hub for the repo's
    # commit (diffusers' dynamic_modules_utils calls model_info); the documented offline form loads a snapshot that
    # `snapshot_download` fetched while online.
    home = remote_code_user["home"]
    with hub.stopped():
        result = run_client(
            """
            sys.modules["mnist_diffusion"] = None
            from diffusers import DiffusionPipeline
            from huggingface_hub import snapshot_download

            folder = snapshot_download("org/mnist-ddpm")
            result["image"] = sample(DiffusionPipeline.from_pretrained(folder, trust_remote_code=True))
            """,
            client_env(hub, home, HF_HUB_OFFLINE="1"), home,
        )
    np.testing.assert_array_equal(as_image(result["image"]), local_images["a"])


def test_the_package_loads_from_a_cache_the_remote_code_route_filled(hub, remote_code_user, local_images):
    home = remote_code_user["home"]
    result = run_client(
        """
        from huggingface_hub import snapshot_download
        from mnist_diffusion import MNISTDDPMPipeline

        result["by_repo_id"] = sample(MNISTDDPMPipeline.from_pretrained("org/mnist-ddpm"))
        result["by_snapshot"] = sample(MNISTDDPMPipeline.from_pretrained(snapshot_download("org/mnist-ddpm")))
        """,
        client_env(hub, home), home,
    )
    assert remote_code_user["python_files"] == ["pipeline_mnist_ddpm.py", "pipeline_mnist_ddpm_checks.py",
                                                "scheduling_mnist_ddpm.py", "unet_mnist.py"]
    np.testing.assert_array_equal(as_image(result["by_repo_id"]), local_images["a"])
    np.testing.assert_array_equal(as_image(result["by_snapshot"]), local_images["a"])


def test_revision_loads_an_earlier_commit_or_a_branch(package_user, local_images):
    np.testing.assert_array_equal(as_image(package_user["history_main"]), local_images["b"])
    np.testing.assert_array_equal(as_image(package_user["history_first"]), local_images["a"])
    np.testing.assert_array_equal(as_image(package_user["history_branch"]), local_images["a"])
    assert not np.array_equal(local_images["a"], local_images["b"])


def test_cache_dir_and_variant_are_honoured(package_user, local_images):
    assert package_user["cache_dir"] == [
        "diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.safetensors"
    ]
    assert 0 < np.abs(as_image(package_user["variant"]) - local_images["a"]).max() < 0.01  # the fp16 weights


def test_a_private_repo_needs_the_token(package_user, local_images):
    assert package_user["private_without_token"][0] == "RepositoryNotFoundError"
    np.testing.assert_array_equal(as_image(package_user["private_with_token"]), local_images["a"])


def test_a_missing_repo_is_a_repository_not_found_error(package_user):
    name, message = package_user["missing_repo"]
    assert name == "RepositoryNotFoundError" and "org/no-such-repo" in message


def test_a_missing_revision_is_a_revision_not_found_error(package_user):
    name, message = package_user["missing_revision"]
    assert name == "RevisionNotFoundError" and "no-such-branch" in message


def test_a_repo_of_another_pipeline_is_refused_by_name(package_user):
    name, message = package_user["other_pipeline"]
    assert name == "ValueError"
    assert "org/ddpm-cifar10 holds a DDPMPipeline" in message and "DiffusionPipeline.from_pretrained" in message


def test_push_without_a_token_fails_before_any_request(hub, package_user):
    name, message = package_user["push_without_token"]
    assert name == "LocalTokenNotFoundError" and "HF_TOKEN" in message
    assert ("POST", "/api/repos/create", False) not in hub.requests


def test_a_folder_holding_a_token_is_refused_before_anything_is_uploaded(hub, uploads):
    for name, message in (uploads["leaky_new_repo"], uploads["leaky_existing_repo"]):
        assert name == "ValueError"
        assert "training_config.json: hf_Tes…" in message and "Nothing was uploaded" in message
        assert TOKEN not in message  # only the start of the token, to say which one
    assert "org/leaky" not in hub.repos  # not even created
    history = hub.repos["org/mnist-ddpm-history"]
    assert history.branches["main"] == uploads["second"] and len(history.commits) == 4  # create, first, second, v1
    code, stderr = uploads["leaky_cli"]
    assert code == 2 and "push_to_hub.py: error: Not pushing" in stderr and "Traceback" not in stderr


def test_no_file_of_any_repo_holds_the_token_the_pushes_used(hub, uploads):
    files = [(repo_id, path, stored) for repo_id, repo in hub.repos.items() for commit in repo.commits.values()
             for path, stored in commit.items()]
    assert len(files) > 40
    assert [(repo_id, path) for repo_id, path, stored in files if TOKEN.encode() in stored.content] == []


def test_a_card_holding_a_token_is_refused_before_any_request(folders, monkeypatch):
    def no_request(*args, **kwargs):
        raise AssertionError("the push reached the Hub")

    monkeypatch.setattr("mnist_diffusion.lab.hub.HfApi", no_request)
    with pytest.raises(ValueError, match=r"the model card \(README.md\): hf_Tes…") as error:
        push_pipeline_to_hub(folders["b"], "org/x", token=TOKEN, card_text=f"# x\n\nPushed with {TOKEN}.\n")
    assert TOKEN not in str(error.value)


def test_the_push_script_without_a_token_prints_the_message_and_exits_2(hub, folders, tmp_path):
    process = subprocess.run(
        [sys.executable, "scripts/push_to_hub.py", "--model_dir", str(folders["b"]), "--repo_id", "org/no-token"],
        # Without the import-time warnings of others' code (diffusers 0.36 on a CUDA build of torch without a GPU
        # warns of its CUDA autocast decorators), so that the message is what stderr starts with.
        env=client_env(hub, tmp_path, PYTHONWARNINGS="ignore::UserWarning"), cwd=Path(__file__).resolve().parents[1],
        capture_output=True, text=True,
        timeout=300,
    )
    assert process.returncode == 2, process.stderr
    assert process.stderr.startswith("push_to_hub.py: error: Pushing to the Hub needs a token")
    assert "HF_TOKEN" in process.stderr
    assert "Traceback" not in process.stderr
    assert "org/no-token" not in hub.repos


def test_hub_model_index_keeps_diffusers_classes_and_refuses_foreign_code():
    saved = {"_class_name": "MNISTDDPMPipeline", "_diffusers_version": "0.42.1", "default_guidance_scale": 2.0,
             "unet": ["mnist_diffusion.unet_mnist", "ClassConditionedUNet"],
             "scheduler": ["diffusers", "DPMSolverMultistepScheduler"]}
    index, sources = hub_model_index(saved)
    assert index["unet"] == ["unet_mnist", "ClassConditionedUNet"] and index["scheduler"] == saved["scheduler"]
    assert sorted(sources) == ["pipeline_mnist_ddpm.py", "pipeline_mnist_ddpm_checks.py", "unet/unet_mnist.py"]
    assert hub_model_index(index) == (index, sources)  # a folder downloaded from the Hub pushes unchanged
    with pytest.raises(ValueError, match="my_package.unet"):
        hub_model_index({**saved, "unet": ["my_package.unet", "ClassConditionedUNet"]})
    with pytest.raises(ValueError, match="'StableDiffusionPipeline'"):
        hub_model_index({**saved, "_class_name": "StableDiffusionPipeline"})


def test_train_py_hub_options_fail_before_training():
    def problems(**options):
        return check_hub_arguments(argparse.Namespace(**{"push_to_hub": True, "hub_model_id": None, **options}))

    assert check_hub_arguments(argparse.Namespace(push_to_hub=False, hub_model_id=None, hub_token=None)) == []
    assert problems(hub_token="hf_x") == ["--push_to_hub needs --hub_model_id, e.g. --hub_model_id org/mnist-ddpm"]
    assert problems(hub_model_id="org/mnist-ddpm", hub_token="hf_x") == []


def test_card_images_never_come_from_training_by_products(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "grid.png").write_bytes(b"png")
    card = "![a](images/grid.png) ![b](https://example.com/x.png) <img src='images/grid.png'> ![c](missing.png)"
    assert card_images(card, tmp_path) == ["images/grid.png"]
    with pytest.raises(ValueError, match="samples/ is never pushed"):
        card_images("![progress](samples/step-1000.png)", tmp_path)


@pytest.fixture(scope="module")
def student_folder(tmp_path_factory):
    """A tiny consistency-distilled student's folder: diffusers' LCMScheduler, 4 steps and guidance 1 stored."""
    folder = tmp_path_factory.mktemp("student") / "mnist-lcm"
    torch.manual_seed(2)
    scheduler = LCMScheduler(beta_start=1e-4, beta_end=0.02, beta_schedule="linear", clip_sample=True)
    MNISTDDPMPipeline(ClassConditionedUNet(**TINY_UNET).eval(), scheduler, default_guidance_scale=1.0,
                      default_num_inference_steps=4).save_pretrained(folder)
    return folder


def test_a_distilled_student_loads_from_the_hub_with_and_without_the_package(hub, student_folder, tmp_path):
    local = MNISTDDPMPipeline.from_pretrained(student_folder)
    local.set_progress_bar_config(disable=True)
    expected = local(labels=[7], generator=torch.Generator().manual_seed(0), output_type="np").images
    default_call = textwrap.dedent("""
        def default_call(pipe):  # the stored defaults: 4 LCM steps, guidance 1
            pipe.set_progress_bar_config(disable=True)
            return pipe(labels=[7], generator=torch.Generator().manual_seed(0), output_type="np").images
        """)
    pushed = run_client(
        'from mnist_diffusion.lab.hub import push_pipeline_to_hub\n'
        'result["oid"] = push_pipeline_to_hub(args["folder"], "org/mnist-lcm").oid\n',
        client_env(hub, tmp_path / "uploader", HF_TOKEN=TOKEN), tmp_path, folder=student_folder,
    )
    assert pushed["oid"]
    files = hub_files(hub, "org/mnist-lcm")
    index = json.loads(files["model_index.json"].content)
    assert index["scheduler"] == ["diffusers", "LCMScheduler"] and index["unet"] == ["unet_mnist", "ClassConditionedUNet"]
    assert "scheduler/scheduling_mnist_ddpm.py" not in files and "unet/unet_mnist.py" in files

    with_package = run_client(
        default_call + 'from mnist_diffusion import MNISTDDPMPipeline\n'
        'pipe = MNISTDDPMPipeline.from_pretrained("org/mnist-lcm")\n'
        'result["scheduler"], result["image"] = type(pipe.scheduler).__name__, default_call(pipe)\n',
        client_env(hub, tmp_path / "package-user"), tmp_path,
    )
    without_package = run_client(
        default_call + 'sys.modules["mnist_diffusion"] = None\n'
        'from diffusers import DiffusionPipeline\n'
        'pipe = DiffusionPipeline.from_pretrained("org/mnist-lcm", trust_remote_code=True)\n'
        'result["scheduler"], result["image"] = type(pipe.scheduler).__name__, default_call(pipe)\n',
        client_env(hub, tmp_path / "remote-code-user"), tmp_path,
    )
    for user in (with_package, without_package):
        assert user["scheduler"] == "LCMScheduler"
        np.testing.assert_allclose(as_image(user["image"]), expected, atol=1e-6)


def test_the_pipelines_checks_are_the_one_relative_import_diffusers_follows_and_import_nothing_relative():
    from diffusers.utils.dynamic_modules_utils import get_relative_imports

    pipeline_file = source_file(MNISTDDPMPipeline)
    # diffusers fetches exactly these from the repo beside the pipeline file; anything else relative would be missing.
    assert get_relative_imports(pipeline_file) == ["pipeline_mnist_ddpm_checks"]
    assert get_relative_imports(pipeline_file.with_name("pipeline_mnist_ddpm_checks.py")) == []


def test_a_guider_and_a_guidance_unet_load_from_the_hub_with_and_without_the_package(hub, tmp_path):
    from diffusers.guiders import AdaptiveProjectedGuidance

    torch.manual_seed(0)
    main, weak = ClassConditionedUNet(**TINY_UNET).eval(), ClassConditionedUNet(**TINY_UNET).eval()
    folder = tmp_path / "autoguided"
    local = MNISTDDPMPipeline(main, MNISTDDPMScheduler(), default_num_inference_steps=5,
                              guider=AdaptiveProjectedGuidance(guidance_scale=2.0, eta=0.0), guidance_unet=weak)
    local.save_pretrained(folder)
    local.set_progress_bar_config(disable=True)
    expected = local(labels=[7], generator=torch.Generator().manual_seed(0), output_type="np").images
    default_call = textwrap.dedent("""
        def default_call(pipe):
            pipe.set_progress_bar_config(disable=True)
            return pipe(labels=[7], generator=torch.Generator().manual_seed(0), output_type="np").images
        """)
    run_client('from mnist_diffusion.lab.hub import push_pipeline_to_hub\n'
               'push_pipeline_to_hub(args["folder"], "org/autoguided")\n',
               client_env(hub, tmp_path / "uploader", HF_TOKEN=TOKEN), tmp_path, folder=folder)
    files = hub_files(hub, "org/autoguided")
    index = json.loads(files["model_index.json"].content)
    assert index["guider"] == ["diffusers", "AdaptiveProjectedGuidance"] and "guider/guider_config.json" in files
    assert index["guidance_unet"] == ["unet_mnist", "ClassConditionedUNet"] and "guidance_unet/unet_mnist.py" in files
    load = {"with_package": 'from mnist_diffusion import MNISTDDPMPipeline\n'
                            'pipe = MNISTDDPMPipeline.from_pretrained("org/autoguided")\n',
            "without_package": 'sys.modules["mnist_diffusion"] = None\nfrom diffusers import DiffusionPipeline\n'
                               'pipe = DiffusionPipeline.from_pretrained("org/autoguided", trust_remote_code=True)\n'}
    for user, code in load.items():
        result = run_client(default_call + code + 'result["guider"] = type(pipe.guider).__name__\n'
                            'result["image"] = default_call(pipe)\n', client_env(hub, tmp_path / user), tmp_path)
        assert result["guider"] == "AdaptiveProjectedGuidance", user
        np.testing.assert_allclose(as_image(result["image"]), expected, atol=1e-6, err_msg=user)
