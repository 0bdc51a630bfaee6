from mnist_diffusion.lab.redaction import REDACTED, find_secrets, redact, redact_command

TOKEN = "hf_" + "aBcDeFgHiJkLmNoPqRsTuVwXyZ01234567"


def test_redact_command_hides_secret_option_values_whatever_their_shape():
    argv = ["scripts/train.py", "--hub_token", "not-token-shaped", "--token=also-not", "--seed", "3",
            f"--note={TOKEN}", TOKEN]
    assert redact_command(argv) == ["scripts/train.py", "--hub_token", REDACTED, f"--token={REDACTED}", "--seed", "3",
                                    f"--note={REDACTED}", REDACTED]


def test_redact_command_keeps_a_trailing_secret_option_and_ordinary_arguments():
    assert redact_command(["train.py", "--hub_model_id", "org/x", "--hub_token"]) == [
        "train.py", "--hub_model_id", "org/x", "--hub_token"]


def test_redact_and_find_secrets_catch_a_token_anywhere_and_never_echo_it():
    text = f'{{"command": "train.py --hub_token {TOKEN}", "old": "api_org_{"x" * 30}"}}'
    assert TOKEN not in redact(text) and "api_org_" not in redact(text)
    found = find_secrets(text)
    assert len(found) == 2 and all(TOKEN not in item and len(item) <= 7 for item in found)
    assert find_secrets("hf_short and mnist_diffusion and org/hf_model") == []
