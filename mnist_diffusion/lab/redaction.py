"""Keep secrets out of what the project writes: recorded command lines, logs, model cards and pushed files.

A Hub token reaches a command line as the value of an option (`--hub_token hf_...`, `--token=hf_...`); any text
can also carry one pasted by hand. `redact_command` blanks the value of every secret option whatever its shape, and
`redact` and `find_secrets` catch what looks like a token anywhere else.
"""

import re

REDACTED = "<redacted>"
# The options whose value is a secret, however it is spelled.
SECRET_OPTIONS = ("--hub_token", "--token")
# User access tokens (`hf_` + ~34 letters and digits) and the older organisation API tokens (`api_org_...`).
TOKEN_PATTERN = re.compile(r"\b(?:hf|api_org)_[A-Za-z0-9]{16,}\b")


def redact(text: str) -> str:
    """`text` with every token-shaped string replaced by `<redacted>`."""
    return TOKEN_PATTERN.sub(REDACTED, text)


def redact_command(argv: list[str]) -> list[str]:
    """
    A command line safe to record: the value of each option in `SECRET_OPTIONS` (as `--hub_token VALUE` or
    `--hub_token=VALUE`) and any token-shaped argument replaced by `<redacted>`.

    Args:
        argv (`list[str]`): the command line, e.g. `sys.argv`.

    Returns:
        `list[str]`: the same arguments, secrets replaced.
    """
    redacted, hide_next = [], False
    for argument in argv:
        option = argument.split("=", 1)[0]
        if hide_next:
            redacted.append(REDACTED)
        elif option in SECRET_OPTIONS and "=" in argument:
            redacted.append(f"{option}={REDACTED}")
        else:
            redacted.append(redact(argument))
        hide_next = not hide_next and argument in SECRET_OPTIONS
    return redacted


def find_secrets(text: str) -> list[str]:
    """The token-shaped strings in `text`, each shortened to its first characters so that reporting it leaks nothing."""
    return [match[:6] + "…" for match in TOKEN_PATTERN.findall(text)]
